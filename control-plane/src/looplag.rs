//! The loop-lag probe: a task that measures how late its own timer ticks fire.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;

/// How late a tick fired: zero if on time.
pub fn lag(expected: Instant, fired: Instant) -> Duration {
    fired.saturating_duration_since(expected)
}

/// Runs until `stop`. Anything that blocks the runtime thread delays the next tick, and the
/// delay lands in `livegate_loop_lag_seconds`. Each tick is measured against its own deadline
/// (no catch-up), so one stall is counted once.
pub async fn probe(metrics: Arc<Metrics>, period: Duration, stop: CancellationToken) {
    loop {
        let expected = Instant::now() + period;
        tokio::select! {
            _ = tokio::time::sleep_until(expected) => {}
            _ = stop.cancelled() => return,
        }
        metrics.loop_lag.observe(lag(expected, Instant::now()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "current_thread")]
    async fn a_blocking_call_on_the_runtime_shows_up_as_lag() {
        let m = Arc::new(Metrics::default());
        let stop = CancellationToken::new();
        let task = tokio::spawn(probe(m.clone(), Duration::from_millis(5), stop.clone()));
        tokio::time::sleep(Duration::from_millis(20)).await;
        // Deliberately block the only runtime thread: exactly what the control plane must never do.
        std::thread::sleep(Duration::from_millis(80));
        tokio::time::sleep(Duration::from_millis(20)).await;
        stop.cancel();
        task.await.unwrap();
        assert!(
            m.loop_lag.max() >= Duration::from_millis(60),
            "{:?}",
            m.loop_lag.max()
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
