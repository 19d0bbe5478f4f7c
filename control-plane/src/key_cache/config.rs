//! The key cache's policy, validated by `config` from the cache flags.

use std::time::Duration;

/// How long records answer, and how many are held.
#[derive(Debug, Clone, Copy)]
pub struct CacheConfig {
    pub fresh: Duration,
    pub staleness: Duration,
    pub max_entries: usize,
    /// A record older than `fresh` lets a key in only if the change log was read within
    /// this (`fresh` ≤ it < the filters' revocation hold).
    pub max_silence: Duration,
}
