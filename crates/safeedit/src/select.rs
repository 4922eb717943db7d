//! Filters, deterministic subsets and statistics over records.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::category::CategoryKind;
use crate::record::Record;

/// Which records of a split a run covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Subset {
    /// Every record.
    All,
    /// The first `n` records.
    First {
        /// How many.
        n: usize,
    },
    /// `n` records drawn without replacement with [`SplitMix64`] from `seed`, kept in file order.
    Sample {
        /// How many.
        n: usize,
        /// The seed.
        seed: u64,
    },
    /// Records whose position `p` satisfies `p % count == index` (for spreading a run over processes).
    Shard {
        /// This shard, 0-based.
        index: usize,
        /// Number of shards.
        count: usize,
    },
}

impl std::fmt::Display for Subset {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Subset::All => write!(f, "all"),
            Subset::First { n } => write!(f, "first {n}"),
            Subset::Sample { n, seed } => write!(f, "sample {n} (seed {seed})"),
            Subset::Shard { index, count } => write!(f, "shard {index} of {count}"),
        }
    }
}

/// The SplitMix64 generator (Steele, Lea and Flood, 2014), spelled out here so that seeded samples stay the
/// same across versions of this crate and of its dependencies.
#[derive(Debug, Clone)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    /// A generator from `seed`.
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A uniform integer in `0..bound` (`bound > 0`), by rejection so that it is unbiased.
    pub fn below(&mut self, bound: u64) -> u64 {
        let zone = u64::MAX - u64::MAX % bound;
        loop {
            let x = self.next_u64();
            if x < zone {
                return x % bound;
            }
        }
    }
}

/// A subset that cannot select anything meaningful.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SubsetError {
    /// `Shard { count: 0, .. }`.
    #[error("a shard needs at least one shard in all (count is 0)")]
    NoShards,
    /// A shard written as text is not `i/n` with whole numbers.
    #[error("shard `{0}`: expected i/n with whole numbers (0-based i below n), e.g. 0/4")]
    BadShard(String),
    /// `Shard { index, count }` with `index >= count`.
    #[error("shard index {index} is out of range for {count} shard(s) (indices are 0-based)")]
    ShardOutOfRange {
        /// The index given.
        index: usize,
        /// The number of shards.
        count: usize,
    },
}

impl Subset {
    /// Reads a shard as users write it, `i/n` (0-based `i` below `n`), and checks it.
    ///
    /// ```
    /// use safeedit::Subset;
    /// assert_eq!(Subset::parse_shard("1/4").unwrap(), Subset::Shard { index: 1, count: 4 });
    /// assert!(Subset::parse_shard("4/4").is_err());
    /// ```
    pub fn parse_shard(spec: &str) -> Result<Self, SubsetError> {
        let bad = || SubsetError::BadShard(spec.to_string());
        let (i, n) = spec.split_once('/').ok_or_else(bad)?;
        let index = i.trim().parse().map_err(|_| bad())?;
        let count = n.trim().parse().map_err(|_| bad())?;
        let shard = Subset::Shard { index, count };
        shard.check()?;
        Ok(shard)
    }

    /// Checks the subset's parameters; call it on user input before [`Subset::positions`], which selects nothing
    /// for an impossible shard.
    ///
    /// # Errors
    ///
    /// [`SubsetError`] for a shard count of zero or a shard index past the count.
    pub fn check(&self) -> Result<(), SubsetError> {
        match *self {
            Subset::Shard { count: 0, .. } => Err(SubsetError::NoShards),
            Subset::Shard { index, count } if index >= count => {
                Err(SubsetError::ShardOutOfRange { index, count })
            }
            _ => Ok(()),
        }
    }

    /// The positions (into a list of `len` items) this subset keeps, ascending.
    ///
    /// `Sample` is a partial Fisher-Yates shuffle driven by [`SplitMix64`]: for `i` in `0..min(n, len)`, swap
    /// position `i` with `i + below(len - i)`; the first `min(n, len)` positions, sorted, are the sample. The
    /// same `(n, seed, len)` always gives the same positions.
    pub fn positions(&self, len: usize) -> Vec<usize> {
        match *self {
            Subset::All => (0..len).collect(),
            Subset::First { n } => (0..n.min(len)).collect(),
            Subset::Sample { n, seed } => {
                let mut order: Vec<usize> = (0..len).collect();
                let mut rng = SplitMix64::new(seed);
                let take = n.min(len);
                for i in 0..take {
                    let j = i + rng.below((len - i) as u64) as usize;
                    order.swap(i, j);
                }
                let mut chosen = order[..take].to_vec();
                chosen.sort_unstable();
                chosen
            }
            Subset::Shard { index, count } => {
                (0..len).filter(|p| count > 0 && p % count == index).collect()
            }
        }
    }

    /// The kept items, in their original order.
    pub fn apply<T: Clone>(&self, items: &[T]) -> Vec<T> {
        self.positions(items.len()).into_iter().map(|p| items[p].clone()).collect()
    }
}

/// Records of the given categories, in their original order.
pub fn by_category<'a, R: Record>(records: &'a [R], kinds: &[CategoryKind]) -> Vec<&'a R> {
    records.iter().filter(|r| kinds.contains(&r.category().kind())).collect()
}

/// Records whose attack name or attack category equals `attack` (ASCII case-insensitive), in their original
/// order. For the NLPCC variant, `"None"` selects the bare questions.
pub fn by_attack<'a, R: Record>(records: &'a [R], attack: &str) -> Vec<&'a R> {
    records
        .iter()
        .filter(|r| {
            r.attack_name().eq_ignore_ascii_case(attack)
                || r.attack_category().is_some_and(|c| c.eq_ignore_ascii_case(attack))
        })
        .collect()
}

/// Counts per category.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CategoryStats {
    /// Records per category (canonical spelling, so differently capitalised spellings count together).
    pub records: BTreeMap<String, usize>,
    /// Distinct attack names per category.
    pub attacks: BTreeMap<String, usize>,
    /// Records with a generalisation test.
    pub with_generalization_test: usize,
}

/// Per-category statistics of a set of records.
pub fn stats<R: Record>(records: &[R]) -> CategoryStats {
    let mut s = CategoryStats::default();
    let mut attacks: BTreeMap<String, BTreeSet<&str>> = BTreeMap::new();
    for r in records {
        let key = r.category().to_string();
        *s.records.entry(key.clone()).or_default() += 1;
        attacks.entry(key).or_default().insert(r.attack_name());
        s.with_generalization_test += usize::from(r.has_generalization_test());
    }
    s.attacks = attacks.into_iter().map(|(k, v)| (k, v.len())).collect();
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subsets_are_deterministic_and_partition() {
        assert_eq!(Subset::First { n: 3 }.positions(10), vec![0, 1, 2]);
        assert_eq!(Subset::First { n: 30 }.positions(4).len(), 4);
        let a = Subset::Sample { n: 4, seed: 7 }.positions(20);
        assert_eq!(a, Subset::Sample { n: 4, seed: 7 }.positions(20));
        assert_ne!(a, Subset::Sample { n: 4, seed: 8 }.positions(20));
        assert!(a.windows(2).all(|w| w[0] < w[1]) && a.len() == 4);
        let mut all: Vec<usize> =
            (0..3).flat_map(|i| Subset::Shard { index: i, count: 3 }.positions(10)).collect();
        all.sort();
        assert_eq!(all, (0..10).collect::<Vec<_>>());
        // SplitMix64's published first output for seed 0.
        assert_eq!(SplitMix64::new(0).next_u64(), 0xe220_a839_7b1d_cdaf);
        // Pinned so that a change to the sampling procedure cannot go unnoticed: published subsets depend on it.
        assert_eq!(Subset::Sample { n: 5, seed: 42 }.positions(100), pinned_sample());
    }

    /// `Subset::Sample { n: 5, seed: 42 }` over 100 items, computed by an independent Python transcription of
    /// the documented procedure (SplitMix64, rejection sampling, partial Fisher-Yates, sorted).
    fn pinned_sample() -> Vec<usize> {
        vec![2, 9, 13, 83, 86]
    }

    #[test]
    fn impossible_shards_are_refused() {
        assert_eq!(Subset::Shard { index: 0, count: 0 }.check(), Err(SubsetError::NoShards));
        assert_eq!(
            Subset::Shard { index: 3, count: 3 }.check(),
            Err(SubsetError::ShardOutOfRange { index: 3, count: 3 })
        );
        assert!(Subset::Shard { index: 2, count: 3 }.check().is_ok());
        assert!(Subset::Sample { n: 0, seed: 1 }.check().is_ok());
    }
}
