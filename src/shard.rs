//! Splitting the instances between hosts or pods: `--shard K/N`.
//!
//! When one host cannot run every instance, N hosts (for example the pods of
//! a Kubernetes Indexed Job) each run the instances of their shard. The
//! assignment is rendezvous (highest-random-weight) hashing: every shard
//! scores every id, and the id goes to the highest score. Each id lands in
//! exactly one shard, the shards are even, and going from N to N+1 shards
//! moves only the ids the new shard wins, about 1/(N+1) of them, so most
//! tenants stay on their host.
//!
//! The score is derived from the id's SHA-256 (as for `--order hash`) mixed
//! with the shard number by SplitMix64's finaliser: fixed arithmetic, stable
//! across releases and machines, and one digest per id however many shards.

use std::ffi::OsStr;
use std::fmt;

use crate::exit::Fatal;
use crate::idhash::hash_key;

/// Shard `index` of `count` (0-based, as `JOB_COMPLETION_INDEX`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    pub index: u32,
    pub count: u32,
}

impl fmt::Display for Shard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

impl Shard {
    /// Parses `K/N`.
    pub fn parse(s: &str) -> Result<Shard, String> {
        let (k, n) = s.split_once('/').ok_or_else(|| {
            format!("{s:?} is not K/N; write the shard as index/count, such as 0/4")
        })?;
        let index: u32 = k
            .trim()
            .parse()
            .map_err(|_| format!("{k:?} in {s:?} is not a shard index (0, 1, 2, ...)"))?;
        let count = parse_count(n.trim())?;
        Shard::new(index, count)
    }

    pub fn new(index: u32, count: u32) -> Result<Shard, String> {
        if index >= count {
            return Err(format!(
                "shard index {index} is out of range for {count} shards; indexes run from 0 to {}",
                count - 1
            ));
        }
        Ok(Shard { index, count })
    }

    /// `--shard`, or else `JOB_COMPLETION_INDEX` with `--shards`.
    pub fn select(shard: Option<Shard>, shards: Option<u32>) -> Result<Option<Shard>, Fatal> {
        if let Some(shard) = shard {
            if let Some(n) = shards
                && n != shard.count
            {
                return Err(
                    Fatal::usage(format!("--shard {shard} disagrees with --shards {n}"))
                        .hint("give one of them"),
                );
            }
            return Ok(Some(shard));
        }
        let Some(count) = shards else { return Ok(None) };
        let index = std::env::var("JOB_COMPLETION_INDEX").map_err(|_| {
            Fatal::usage(format!("--shards {count} needs this run's shard index"))
                .hint("run it in a Kubernetes Indexed Job (which sets JOB_COMPLETION_INDEX) or pass --shard K/N")
        })?;
        let index: u32 = index.trim().parse().map_err(|_| {
            Fatal::usage(format!(
                "JOB_COMPLETION_INDEX={index:?} is not a shard index"
            ))
        })?;
        Shard::new(index, count).map(Some).map_err(|e| {
            Fatal::usage(format!("JOB_COMPLETION_INDEX: {e}"))
                .hint("set --shards to the Job's completions")
        })
    }

    /// Whether this shard runs `id`.
    pub fn owns(&self, id: &OsStr) -> bool {
        assign(hash_key(id), self.count) == self.index
    }
}

/// Parses a shard count (at least 1).
pub fn parse_count(s: &str) -> Result<u32, String> {
    match s.parse::<u32>() {
        Ok(0) => Err("0 shards would run nothing; give at least 1".into()),
        Ok(n) => Ok(n),
        Err(_) => Err(format!("{s:?} is not a number of shards")),
    }
}

/// The shard of an id (given its hash key) among `count`.
pub fn assign(key: u64, count: u32) -> u32 {
    (0..count)
        .max_by_key(|shard| (score(key, *shard), std::cmp::Reverse(*shard)))
        .unwrap_or(0)
}

/// The rendezvous score of an id for one shard.
fn score(key: u64, shard: u32) -> u64 {
    mix(key ^ mix(u64::from(shard).wrapping_add(0x9e37_79b9_7f4a_7c15)))
}

/// SplitMix64's finaliser: a fixed, well-mixing 64-bit permutation.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(n: usize) -> Vec<u64> {
        (0..n)
            .map(|i| hash_key(OsStr::new(&format!("tenant-{i}"))))
            .collect()
    }

    #[test]
    fn parsing() {
        assert_eq!(Shard::parse("0/4").unwrap(), Shard { index: 0, count: 4 });
        assert_eq!(
            Shard::parse(" 3 / 4 ").unwrap(),
            Shard { index: 3, count: 4 }
        );
        assert!(Shard::parse("4/4").unwrap_err().contains("out of range"));
        assert!(Shard::parse("1/0").unwrap_err().contains("at least 1"));
        assert!(Shard::parse("1").unwrap_err().contains("K/N"));
        assert!(Shard::parse("a/2").is_err());
    }

    #[test]
    fn shards_are_even_over_100k_ids() {
        let keys = keys(100_000);
        // Up to 10 shards; beyond, 100k ids are too few for ±3 % to hold
        // for any hash (one standard deviation is already 1.9 % at 16).
        for n in [2u32, 3, 4, 5, 8, 10] {
            let mut sizes = vec![0usize; n as usize];
            for k in &keys {
                sizes[assign(*k, n) as usize] += 1;
            }
            let expected = keys.len() as f64 / f64::from(n);
            for (shard, size) in sizes.iter().enumerate() {
                let off = (*size as f64 - expected).abs() / expected;
                assert!(
                    off <= 0.03,
                    "{n} shards: shard {shard} has {size}, {:.1}% off",
                    off * 100.0
                );
            }
        }
    }

    #[test]
    fn adding_a_shard_moves_about_one_share() {
        let keys = keys(100_000);
        for n in [1u32, 2, 3, 4, 7, 10] {
            let moved = keys
                .iter()
                .filter(|k| assign(**k, n) != assign(**k, n + 1))
                .count();
            let limit = 1.2 / f64::from(n + 1) * keys.len() as f64;
            assert!(
                (moved as f64) <= limit,
                "{n} -> {} shards moved {moved} ids (limit {limit:.0})",
                n + 1
            );
            // Every moved id goes to the new shard, never between old ones.
            assert!(keys.iter().all(|k| {
                let (before, after) = (assign(*k, n), assign(*k, n + 1));
                before == after || after == n
            }));
        }
    }

    #[test]
    fn every_id_is_in_exactly_one_shard() {
        for key in keys(2_000) {
            for n in 1..=6u32 {
                let owners = (0..n)
                    .filter(|i| {
                        Shard {
                            index: *i,
                            count: n,
                        }
                        .owns_key(key)
                    })
                    .count();
                assert_eq!(owners, 1);
            }
        }
    }

    #[test]
    fn assignment_is_pinned() {
        // A change here would move tenants between hosts on upgrade.
        let got: Vec<u32> = ["acme", "globex", "initech", "umbrella"]
            .iter()
            .map(|id| assign(hash_key(OsStr::new(id)), 4))
            .collect();
        assert_eq!(got, PINNED);
    }

    const PINNED: [u32; 4] = [2, 2, 3, 0];

    impl Shard {
        fn owns_key(&self, key: u64) -> bool {
            assign(key, self.count) == self.index
        }
    }
}
