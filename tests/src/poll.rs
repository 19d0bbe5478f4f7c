//! Waiting for a condition by polling it, never by sleeping a guessed time.

use std::time::{Duration, Instant};

/// How often conditions are re-checked.
pub const POLL_INTERVAL: Duration = Duration::from_millis(20);

/// Polls `condition` until it returns `Some`, or fails after `timeout` naming `what`.
pub fn until<T>(
    what: &str,
    timeout: Duration,
    mut condition: impl FnMut() -> Option<T>,
) -> anyhow::Result<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = condition() {
            return Ok(value);
        }
        if Instant::now() >= deadline {
            anyhow::bail!("timed out after {timeout:?} waiting for {what}");
        }
        std::thread::sleep(POLL_INTERVAL);
    }
}

/// Answers in a row, each on a new connection, that show the state of every worker of an
/// Envoy (two here): the kernel spreads connections between the workers at random, and a
/// poll may try hundreds of times while one worker lags (a worker reads the change feed
/// on its own tick), so a run of answers all from the worker that has caught up must be
/// too unlikely to ever happen: 40 in a row from one of two workers is once in 2^39
/// tries. (With 12, once in 2,048 tries: a poll through a 10 s tick made that often
/// enough to fail CI.)
pub const EVERY_WORKER_IN_A_ROW: usize = 40;
