//! Which located layer an editor uses for each record.

use serde::{Deserialize, Serialize};

/// How the layer to edit is chosen across records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum LayerSelection {
    /// Every record is edited at its own toxic layer (the paper).
    PerRecord,
    /// The layer located for the first record is reused for every later record, as the reference
    /// implementation does (it writes the first located layer into its hyper-parameters and never locates
    /// again while that field is set). The default, so that results compare with published runs.
    #[default]
    FirstRecordSticky,
}

/// Applies a [`LayerSelection`] over a sequence of records.
#[derive(Debug, Clone, Default)]
pub struct LayerPolicy {
    selection: LayerSelection,
    sticky: Option<usize>,
}

impl LayerPolicy {
    /// A policy with nothing located yet.
    pub fn new(selection: LayerSelection) -> Self {
        Self { selection, sticky: None }
    }

    /// The selection in force.
    pub fn selection(&self) -> LayerSelection {
        self.selection
    }

    /// The layer fixed by an earlier record, when the policy is sticky and one was located; the caller can then
    /// skip locating.
    pub fn fixed_layer(&self) -> Option<usize> {
        match self.selection {
            LayerSelection::PerRecord => None,
            LayerSelection::FirstRecordSticky => self.sticky,
        }
    }

    /// The layer to edit for a record whose own toxic layer is `located`.
    pub fn choose(&mut self, located: usize) -> usize {
        match self.selection {
            LayerSelection::PerRecord => located,
            LayerSelection::FirstRecordSticky => *self.sticky.get_or_insert(located),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sticky_keeps_the_first_layer_and_per_record_does_not() {
        let mut sticky = LayerPolicy::new(LayerSelection::FirstRecordSticky);
        assert_eq!(sticky.fixed_layer(), None);
        assert_eq!(sticky.choose(5), 5);
        assert_eq!(sticky.choose(2), 5);
        assert_eq!(sticky.fixed_layer(), Some(5));
        let mut per = LayerPolicy::new(LayerSelection::PerRecord);
        assert_eq!(per.choose(5), 5);
        assert_eq!(per.choose(2), 2);
        assert_eq!(per.fixed_layer(), None);
    }
}
