//! The nine unsafety categories of SafeEdit.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// An unsafety category kind, independent of spelling.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum CategoryKind {
    /// `offensiveness`
    Offensiveness,
    /// `unfairness and bias`
    UnfairnessAndBias,
    /// `physical harm`
    PhysicalHarm,
    /// `mental harm`
    MentalHarm,
    /// `illegal activities`
    IllegalActivities,
    /// `ethics and morality`
    EthicsAndMorality,
    /// `privacy and property`
    PrivacyAndProperty,
    /// `Pornography`
    Pornography,
    /// `Political Sensitivity`
    PoliticalSensitivity,
}

impl CategoryKind {
    /// All nine, in the order the paper lists them.
    pub const ALL: [CategoryKind; 9] = [
        CategoryKind::Offensiveness,
        CategoryKind::UnfairnessAndBias,
        CategoryKind::PhysicalHarm,
        CategoryKind::MentalHarm,
        CategoryKind::IllegalActivities,
        CategoryKind::EthicsAndMorality,
        CategoryKind::PrivacyAndProperty,
        CategoryKind::Pornography,
        CategoryKind::PoliticalSensitivity,
    ];

    /// The spelling the published data uses.
    pub fn canonical(self) -> &'static str {
        match self {
            CategoryKind::Offensiveness => "offensiveness",
            CategoryKind::UnfairnessAndBias => "unfairness and bias",
            CategoryKind::PhysicalHarm => "physical harm",
            CategoryKind::MentalHarm => "mental harm",
            CategoryKind::IllegalActivities => "illegal activities",
            CategoryKind::EthicsAndMorality => "ethics and morality",
            CategoryKind::PrivacyAndProperty => "privacy and property",
            CategoryKind::Pornography => "Pornography",
            CategoryKind::PoliticalSensitivity => "Political Sensitivity",
        }
    }

    /// Recognises a spelling, ignoring case and surrounding whitespace.
    pub fn parse(text: &str) -> Option<Self> {
        let t = text.trim();
        Self::ALL.into_iter().find(|k| k.canonical().eq_ignore_ascii_case(t))
    }
}

/// An unsafety category as it appears in a file: its kind plus the original spelling, written back unchanged.
///
/// Equality and ordering compare the spelling too (so that round trips can be checked exactly); compare
/// [`UnsafetyCategory::kind`] to ask whether two records share a category.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct UnsafetyCategory {
    kind: CategoryKind,
    spelling: String,
}

impl UnsafetyCategory {
    /// Parses a spelling; `None` if it names none of the nine categories.
    pub fn parse(text: &str) -> Option<Self> {
        CategoryKind::parse(text).map(|kind| Self { kind, spelling: text.to_string() })
    }

    /// The category in its canonical spelling.
    pub fn new(kind: CategoryKind) -> Self {
        Self { kind, spelling: kind.canonical().to_string() }
    }

    /// The kind.
    pub fn kind(&self) -> CategoryKind {
        self.kind
    }

    /// The spelling found in the data.
    pub fn spelling(&self) -> &str {
        &self.spelling
    }
}

impl fmt::Display for UnsafetyCategory {
    /// The canonical spelling (as most of the data writes it).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.kind.canonical())
    }
}

impl Serialize for UnsafetyCategory {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.spelling)
    }
}

impl<'de> Deserialize<'de> for UnsafetyCategory {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        Self::parse(&text)
            .ok_or_else(|| serde::de::Error::custom(format!("unknown unsafety category {text:?}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_any_capitalisation_and_keeps_it() {
        let c = UnsafetyCategory::parse("pornography").unwrap();
        assert_eq!(c.kind(), CategoryKind::Pornography);
        assert_eq!(c.spelling(), "pornography");
        assert_eq!(c.to_string(), "Pornography");
        assert_eq!(serde_json::to_string(&c).unwrap(), "\"pornography\"");
        assert!(UnsafetyCategory::parse("cooking").is_none());
        assert_eq!(
            CategoryKind::ALL
                .iter()
                .filter_map(|k| CategoryKind::parse(&k.canonical().to_uppercase()))
                .count(),
            9
        );
    }
}
