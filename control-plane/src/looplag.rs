//! The loop-lag probe: a task that measures how late its own timer ticks fire.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::histogram::Histogram;

/// Loop-lag buckets include 20 ms, the bound the fault tests hold the control plane to.
const LAG_BUCKETS: &[f64] = &[
    0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
];

/// What the probe measured: `livegate_loop_lag_seconds` and its max.
pub struct LoopLag {
    pub ticks: Histogram,
}

impl Default for LoopLag {
    fn default() -> Self {
        LoopLag {
            ticks: Histogram::new(LAG_BUCKETS),
        }
    }
}

/// How late a tick fired: zero if on time.
pub fn lag(expected: Instant, fired: Instant) -> Duration {
    fired.saturating_duration_since(expected)
}

/// Runs until `stop`. Anything that blocks the runtime thread delays the next tick, and the
/// delay lands in `livegate_loop_lag_seconds`. Each tick is measured against its own deadline
/// (no catch-up), so one stall is counted once.
pub async fn probe(lag_seen: Arc<LoopLag>, period: Duration, stop: CancellationToken) {
    loop {
        let expected = Instant::now() + period;
        tokio::select! {
            _ = tokio::time::sleep_until(expected) => {}
            _ = stop.cancelled() => return,
        }
        lag_seen.ticks.observe(lag(expected, Instant::now()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "current_thread")]
    async fn a_blocking_call_on_the_runtime_shows_up_as_lag() {
        let m = Arc::new(LoopLag::default());
        let stop = CancellationToken::new();
        let task = tokio::spawn(probe(m.clone(), Duration::from_millis(5), stop.clone()));
        tokio::time::sleep(Duration::from_millis(20)).await;
        // Deliberately block the only runtime thread: exactly what the control plane must never do.
        std::thread::sleep(Duration::from_millis(80));
        tokio::time::sleep(Duration::from_millis(20)).await;
        stop.cancel();
        task.await.unwrap();
        assert!(
            m.ticks.max() >= Duration::from_millis(60),
            "{:?}",
            m.ticks.max()
        );
    }

    #[test]
    fn an_early_tick_has_no_lag() {
        let t = Instant::now();
        assert_eq!(lag(t + Duration::from_millis(5), t), Duration::ZERO);
        assert_eq!(
            lag(t, t + Duration::from_millis(7)),
            Duration::from_millis(7)
        );
    }
}
