//! The changes in a job's health that are worth telling someone about, and
//! their stable names.
//!
//! A run reports changes, not repeats (`--report changes`), and runs the
//! `--on-change` hook once per change: an instance starts failing, is still
//! failing after `--remind`, recovers, or is no longer paused; most of a
//! run's instances fail at once (a widespread failure, most likely a shared
//! service), or that ends. The names are what the hook reads in
//! `SCATTER_EVENT` and what the pending queue and the JSON report keep; a
//! name this build does not know (written by a newer release) reads as
//! `Unknown` and is never fired.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// One kind of change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Transition {
    /// An instance failed `--failures-before-report` times in a row.
    Failing,
    /// It is still failing, `--remind` after the last word about it (or, for
    /// no instance, the widespread failure still lasts).
    Reminder,
    /// It succeeded again after a failure that was reported.
    Recovered,
    /// Its pause ended (`scatter resume`, or `--for` ran out).
    Unpaused,
    /// Most instances of a run failed.
    Widespread,
    /// The first healthy run after a widespread failure.
    WidespreadRecovered,
    /// A name this build does not know. Never written, never fired.
    #[default]
    Unknown,
}

impl Transition {
    pub const ALL: [Transition; 6] = [
        Transition::Failing,
        Transition::Reminder,
        Transition::Recovered,
        Transition::Unpaused,
        Transition::Widespread,
        Transition::WidespreadRecovered,
    ];

    /// The name in `SCATTER_EVENT`, the queue and the JSON report.
    pub fn name(self) -> &'static str {
        match self {
            Transition::Failing => "failing",
            Transition::Reminder => "reminder",
            Transition::Recovered => "recovered",
            Transition::Unpaused => "unpaused",
            Transition::Widespread => "widespread",
            Transition::WidespreadRecovered => "widespread-recovered",
            Transition::Unknown => "unknown",
        }
    }

    pub fn from_name(name: &str) -> Transition {
        Transition::ALL
            .into_iter()
            .find(|t| t.name() == name)
            .unwrap_or(Transition::Unknown)
    }
}

impl fmt::Display for Transition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl Serialize for Transition {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

impl<'de> Deserialize<'de> for Transition {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Transition, D::Error> {
        let name = String::deserialize(d)?;
        Ok(Transition::from_name(&name))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_unknown_ones_degrade() {
        for t in Transition::ALL {
            let json = serde_json::to_string(&t).unwrap();
            assert_eq!(serde_json::from_str::<Transition>(&json).unwrap(), t);
        }
        assert_eq!(Transition::from_name("exploded"), Transition::Unknown);
        assert_eq!(Transition::from_name("unknown"), Transition::Unknown);
    }
}
