//! The id's stable hash, shared by `--order hash` and sharding.
//!
//! The first 64 bits of the SHA-256 of the id's bytes: fixed arithmetic, so
//! every release on every machine orders and shards the same ids the same
//! way. A change here would reshuffle every deployment's schedule and move
//! tenants between hosts, so a test pins it.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;

use sha2::{Digest, Sha256};

/// The first 64 bits of the SHA-256 of the id, big-endian.
pub fn hash_key(id: &OsStr) -> u64 {
    let digest = Sha256::digest(id.as_bytes());
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    u64::from_be_bytes(first)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_key_is_pinned() {
        // SHA-256("acme") starts with these bytes; a change would reshuffle
        // every deployment's schedule.
        assert_eq!(hash_key(OsStr::new("acme")), 0x822b_33ad_87c1_48a0);
    }
}
