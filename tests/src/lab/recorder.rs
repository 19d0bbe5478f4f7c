//! Every latency recorded with its time, and the summary a benchmark reports.

use std::time::Duration;

use serde::Serialize;

/// One probe: when it started (since the recording began), how long it took, how it ended.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Sample {
    pub at_ms: f64,
    pub latency_ms: f64,
    /// The HTTP status, or `None` when nothing answered (timeout, refused).
    pub status: Option<u16>,
}

impl Sample {
    pub fn new(at: Duration, latency: Duration, status: Option<u16>) -> Sample {
        // Microseconds are all a loopback probe can tell apart, and keep the JSON small.
        let ms = |d: Duration| (d.as_secs_f64() * 1e6).round() / 1e3;
        Sample {
            at_ms: ms(at),
            latency_ms: ms(latency),
            status,
        }
    }

    pub fn is_2xx(&self) -> bool {
        self.status
            .is_some_and(|status| (200..300).contains(&status))
    }
}

/// What the table shows for a set of samples.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Summary {
    pub count: usize,
    pub percent_2xx: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
}

/// Summarises `samples`; `None` when there are none.
pub fn summarize(samples: &[Sample]) -> Option<Summary> {
    if samples.is_empty() {
        return None;
    }
    let mut latencies: Vec<f64> = samples.iter().map(|s| s.latency_ms).collect();
    latencies.sort_by(f64::total_cmp);
    let ok = samples.iter().filter(|s| s.is_2xx()).count();
    Some(Summary {
        count: samples.len(),
        percent_2xx: 100.0 * ok as f64 / samples.len() as f64,
        p50_ms: percentile(&latencies, 50.0),
        p99_ms: percentile(&latencies, 99.0),
        p999_ms: percentile(&latencies, 99.9),
        max_ms: latencies.last().copied().unwrap_or(0.0),
    })
}

/// Nearest-rank percentile of sorted values.
pub fn percentile(sorted: &[f64], percent: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    // The epsilon keeps 99.9 % of 1000 at rank 999 despite binary floating point.
    let rank = (percent / 100.0 * sorted.len() as f64 - 1e-9).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(latency_ms: u64, status: Option<u16>) -> Sample {
        Sample::new(Duration::ZERO, Duration::from_millis(latency_ms), status)
    }

    #[test]
    fn percentiles_use_the_nearest_rank() {
        let sorted: Vec<f64> = (1..=1000).map(f64::from).collect();
        assert_eq!(percentile(&sorted, 50.0), 500.0);
        assert_eq!(percentile(&sorted, 99.0), 990.0);
        assert_eq!(percentile(&sorted, 99.9), 999.0);
        assert_eq!(percentile(&sorted, 100.0), 1000.0);
        assert_eq!(percentile(&[7.0], 99.9), 7.0);
    }

    #[test]
    fn a_timeout_counts_against_2xx_and_sets_the_max() {
        let samples = [
            sample(1, Some(200)),
            sample(2, Some(204)),
            sample(10_000, None),
            sample(3, Some(503)),
        ];
        let summary = summarize(&samples).unwrap();
        assert_eq!(summary.count, 4);
        assert_eq!(summary.percent_2xx, 50.0);
        assert_eq!(summary.max_ms, 10_000.0);
    }

    #[test]
    fn no_samples_have_no_summary() {
        assert_eq!(summarize(&[]), None);
    }
}
