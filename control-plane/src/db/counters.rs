//! The supervisor's counters: heartbeats and the engines' lifecycle. The supervisor counts,
//! `metrics` renders; db knows nothing of the exposition.

use std::sync::atomic::AtomicU64;

use crate::histogram::Histogram;

const HEARTBEAT_BUCKETS: &[f64] = &[0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5];

pub struct DbCounters {
    /// Round trip of successful heartbeats.
    pub heartbeat: Histogram,
    /// Heartbeats that failed or missed their deadline.
    pub heartbeat_failures: AtomicU64,
    pub engine_spawns: AtomicU64,
    pub engine_sigterms: AtomicU64,
    /// SIGKILLs sent to engines that outlived the grace period.
    pub engine_sigkills: AtomicU64,
}

impl Default for DbCounters {
    fn default() -> Self {
        DbCounters {
            heartbeat: Histogram::new(HEARTBEAT_BUCKETS),
            heartbeat_failures: AtomicU64::new(0),
            engine_spawns: AtomicU64::new(0),
            engine_sigterms: AtomicU64::new(0),
            engine_sigkills: AtomicU64::new(0),
        }
    }
}
