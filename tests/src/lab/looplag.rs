//! The control plane's loop lag *during* a scenario, from its Prometheus histogram:
//! the difference between two snapshots bounds the worst tick in between.

use serde::Serialize;

const HISTOGRAM: &str = "livegate_loop_lag_seconds";

/// Cumulative bucket counts (`le` in seconds) and the total count.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LagSnapshot {
    buckets: Vec<(f64, u64)>,
    count: u64,
}

/// What the lab reports about the loop lag within a scenario.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct LagDuring {
    pub ticks: u64,
    pub ticks_over_20ms: u64,
    /// The smallest bucket bound every tick fell under (`None`: beyond the last bucket).
    pub max_at_most_ms: Option<f64>,
}

impl LagSnapshot {
    /// Reads the histogram out of Prometheus text; empty when it is absent.
    pub fn parse(text: &str) -> LagSnapshot {
        let mut snapshot = LagSnapshot::default();
        let bucket_prefix = format!("{HISTOGRAM}_bucket{{le=\"");
        let count_prefix = format!("{HISTOGRAM}_count");
        for line in text.lines() {
            let value = line.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok());
            let Some(value) = value else { continue };
            if let Some(rest) = line.strip_prefix(&bucket_prefix) {
                if let Some(le) = rest.split('"').next().and_then(|le| le.parse::<f64>().ok()) {
                    snapshot.buckets.push((le, value as u64));
                }
            } else if line.starts_with(&count_prefix) {
                snapshot.count = value as u64;
            }
        }
        snapshot.buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
        snapshot
    }

    fn bucket(&self, le: f64) -> u64 {
        self.buckets
            .iter()
            .find(|(bound, _)| *bound == le)
            .map_or(0, |(_, count)| *count)
    }

    /// What happened between `self` (earlier) and `later`.
    pub fn until(&self, later: &LagSnapshot) -> LagDuring {
        let ticks = later.count.saturating_sub(self.count);
        let within = |le: f64| later.bucket(le).saturating_sub(self.bucket(le));
        let max_at_most_ms = if ticks == 0 {
            Some(0.0)
        } else {
            later
                .buckets
                .iter()
                .find(|(le, _)| within(*le) == ticks)
                .map(|(le, _)| le * 1e3)
        };
        LagDuring {
            ticks,
            ticks_over_20ms: ticks.saturating_sub(within(0.02)),
            max_at_most_ms,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(buckets: &[(f64, u64)], count: u64) -> String {
        let mut out = String::from("# TYPE livegate_loop_lag_seconds histogram\n");
        for (le, n) in buckets {
            out.push_str(&format!(
                "livegate_loop_lag_seconds_bucket{{le=\"{le}\"}} {n}\n"
            ));
        }
        out.push_str(&format!(
            "livegate_loop_lag_seconds_bucket{{le=\"+Inf\"}} {count}\n"
        ));
        out.push_str(&format!("livegate_loop_lag_seconds_count {count}\n"));
        out
    }

    #[test]
    fn the_worst_tick_between_two_snapshots_is_bounded_by_a_bucket() {
        let before = LagSnapshot::parse(&text(
            &[(0.001, 90), (0.005, 100), (0.02, 100), (0.05, 100)],
            100,
        ));
        let after = LagSnapshot::parse(&text(
            &[(0.001, 150), (0.005, 199), (0.02, 199), (0.05, 200)],
            200,
        ));
        let during = before.until(&after);
        assert_eq!(during.ticks, 100);
        assert_eq!(during.ticks_over_20ms, 1);
        assert_eq!(during.max_at_most_ms, Some(50.0));
    }

    #[test]
    fn a_slow_tick_before_the_scenario_does_not_count_in_it() {
        // One tick over 20 ms at start-up, then ten quick ones.
        let before = LagSnapshot::parse(&text(&[(0.005, 9), (0.02, 9), (0.05, 10)], 10));
        let after = LagSnapshot::parse(&text(&[(0.005, 19), (0.02, 19), (0.05, 20)], 20));
        let during = before.until(&after);
        assert_eq!(during.ticks, 10);
        assert_eq!(during.ticks_over_20ms, 0);
        assert_eq!(during.max_at_most_ms, Some(5.0));
    }

    #[test]
    fn a_missing_histogram_parses_empty() {
        assert_eq!(LagSnapshot::parse("nothing here"), LagSnapshot::default());
    }
}
