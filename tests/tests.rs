//! The fast test suite, as one binary with a module per area: it links the
//! crate once, where one binary per file linked it once per file. The slow
//! and soak suites (`tests/slow.rs`, `tests/soak.rs`) are binaries of their
//! own, run by hand; see the README.

mod util;

mod architecture;
mod catch_up;
mod cost;
mod deploy;
mod docs;
mod dry_run;
mod errors;
mod files;
mod health;
mod hostile;
mod limits;
mod locks;
mod names;
mod observe;
mod pressure;
mod properties;
mod records;
mod run;
mod shard;
mod signals;
mod stall;
mod supervise;
mod url;
