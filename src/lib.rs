//! scatter: spread one task per instance directory evenly across a time
//! window, each under its own non-blocking lock.
//!
//! The binary (`main.rs`) only parses flags and maps results to exit codes;
//! everything else is in these modules, one responsibility each, in layers
//! that depend only downwards (the README's module table lists them):
//!
//! * top: `app`, `status`, `pause`, `docs`, `config` (the one module that
//!   knows both the flags and the domain) and `cli` (the clap definition);
//! * engine and records: `supervise`, `reclaim`, `history`, `health`,
//!   `hook`, `state`, `metrics`, `report`, `dryrun`;
//! * domain: `plan`, `filter`, `discovery`, `template`, `shard`, `lock`,
//!   `output`, `http`, `spawn`, `pressure`, `priority`;
//! * leaves: `outcome`, `transition`, `safedir`, `relay`, `logging`,
//!   `platform`, `idcode`, `idhash`, `lenient`, `display`, `exit`.

// A panic on a runtime path leaves tasks unsupervised: outside tests,
// fallible calls are handled, never unwrapped.
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

pub mod app;
pub mod cli;
pub mod config;
pub mod discovery;
pub mod display;
pub mod docs;
pub mod dryrun;
pub mod exit;
pub mod filter;
pub mod health;
pub mod history;
pub mod hook;
pub mod http;
pub mod idcode;
pub mod idhash;
pub mod lenient;
pub mod lock;
pub mod logging;
pub mod metrics;
pub mod outcome;
pub mod output;
pub mod pause;
pub mod plan;
pub mod platform;
pub mod pressure;
pub mod priority;
pub mod reclaim;
pub mod relay;
pub mod report;
#[cfg(test)]
mod roundtrip;
pub mod safedir;
pub mod shard;
pub mod spawn;
pub mod state;
pub mod status;
pub mod supervise;
pub mod template;
pub mod transition;
