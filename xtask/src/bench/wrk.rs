//! Load with wrk (Debian's package, installed when missing) and its results parsed.

use std::path::Path;
use std::process::Command;

use serde::Serialize;

/// What one wrk run measured.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Throughput {
    pub requests_per_second: f64,
    pub p50_us: f64,
    pub p99_us: f64,
    /// Responses wrk counted as errors (non-2xx/3xx, sockets).
    pub errors: u64,
}

pub fn ensure_installed() -> anyhow::Result<()> {
    if Command::new("wrk").arg("--version").output().is_ok() {
        return Ok(());
    }
    crate::step("installing wrk (apt-get install wrk)");
    crate::setup::apt_install(&["wrk"])
}

/// `wrk` against `url` for `seconds`, optionally with a Lua script.
pub fn run(
    url: &str,
    seconds: u64,
    connections: u32,
    script: Option<&Path>,
) -> anyhow::Result<Throughput> {
    let mut command = Command::new("wrk");
    command
        .args(["--latency", "-t", "1", "-c", &connections.to_string()])
        .args(["-d", &format!("{seconds}s")]);
    if let Some(script) = script {
        command.arg("-s").arg(script);
    }
    let output = command.arg(url).output()?;
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    anyhow::ensure!(
        output.status.success(),
        "wrk failed: {text}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    parse(&text).ok_or_else(|| anyhow::anyhow!("cannot read wrk's output:\n{text}"))
}

/// The field-wise median of repeated runs of one setup (errors are summed): a single
/// run on a shared 2-core machine can land tens of microseconds off at p50.
pub fn median(runs: &[Throughput]) -> Option<Throughput> {
    let mid = |field: fn(&Throughput) -> f64| middle(runs.iter().map(field).collect());
    Some(Throughput {
        requests_per_second: mid(|t| t.requests_per_second)?,
        p50_us: mid(|t| t.p50_us)?,
        p99_us: mid(|t| t.p99_us)?,
        errors: runs.iter().map(|t| t.errors).sum(),
    })
}

/// The middle of `values` (the upper one of an even count); `None` if there are none.
pub fn middle(mut values: Vec<f64>) -> Option<f64> {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied()
}

/// One setup to measure: a URL and the wrk script its requests are made by.
#[derive(Clone)]
pub struct Target {
    pub name: &'static str,
    pub url: String,
    pub script: std::path::PathBuf,
}

impl Target {
    /// One throughput run of this setup: the plan's length and connections.
    pub fn saturate(&self, plan: &Plan) -> anyhow::Result<Throughput> {
        run(
            &self.url,
            plan.seconds,
            plan.connections,
            Some(&self.script),
        )
    }

    /// [`Target::saturate`], with the CPU time (seconds, all threads) process `pid` used
    /// during the run, read from `/proc`.
    pub fn saturate_timed(&self, plan: &Plan, pid: u32) -> anyhow::Result<(Throughput, f64)> {
        use livegate_tests::procfs::{cpu_ticks, TICKS_PER_SECOND};
        let before = cpu_ticks(pid).unwrap_or(0);
        let run = self.saturate(plan)?;
        let ticks = cpu_ticks(pid).unwrap_or(0).saturating_sub(before);
        Ok((run, ticks as f64 / TICKS_PER_SECOND as f64))
    }
}

/// One setup measured both ways (medians over the rounds).
pub struct Run {
    pub name: &'static str,
    /// With many connections: saturation.
    pub throughput: Throughput,
    /// With few: the latency a request pays, not queueing.
    pub latency: Throughput,
}

/// How the setups are measured: connections both ways, rounds, seconds per run.
pub struct Plan {
    pub connections: u32,
    pub latency_connections: u32,
    pub rounds: usize,
    pub seconds: u64,
}

impl Plan {
    /// Throughput with 16 connections (saturation); latency with one, where p50 is the work
    /// itself and not queueing; every setup measured 3 times, interleaved, the median kept,
    /// so drift on the machine shows up in every row alike instead of in one.
    pub fn interleaved(seconds: u64) -> Plan {
        Plan {
            connections: 16,
            latency_connections: 1,
            rounds: 3,
            seconds,
        }
    }
}

/// Runs every target once per round, both ways, interleaved so drift on the machine shows
/// in every row alike, and keeps the medians.
pub fn measure(targets: &[Target], plan: &Plan) -> anyhow::Result<Vec<Run>> {
    let mut samples = vec![(Vec::new(), Vec::new()); targets.len()];
    for round in 1..=plan.rounds {
        for (target, (throughput, latency)) in targets.iter().zip(&mut samples) {
            crate::step(&format!("round {round}/{}: {}", plan.rounds, target.name));
            let script = Some(target.script.as_path());
            throughput.push(target.saturate(plan)?);
            latency.push(run(
                &target.url,
                plan.seconds,
                plan.latency_connections,
                script,
            )?);
        }
    }
    targets
        .iter()
        .zip(samples)
        .map(|(target, (throughput, latency))| {
            Ok(Run {
                name: target.name,
                throughput: median(&throughput).ok_or_else(|| anyhow::anyhow!("no run"))?,
                latency: median(&latency).ok_or_else(|| anyhow::anyhow!("no run"))?,
            })
        })
        .collect()
}

/// Reads wrk's `--latency` report.
pub fn parse(text: &str) -> Option<Throughput> {
    let mut rps = None;
    let mut p50 = None;
    let mut p99 = None;
    let mut errors = 0;
    for line in text.lines().map(str::trim) {
        let mut words = line.split_whitespace();
        match (words.next(), words.next()) {
            (Some("Requests/sec:"), Some(value)) => rps = value.parse().ok(),
            (Some("50.000%" | "50%"), Some(value)) => p50 = duration_us(value),
            (Some("99.000%" | "99%"), Some(value)) => p99 = duration_us(value),
            (Some("Non-2xx"), _) => errors += line.rsplit(' ').next()?.parse::<u64>().ok()?,
            (Some("Socket"), _) => {
                errors += line
                    .split(',')
                    .filter_map(|part| part.split_whitespace().last()?.parse::<u64>().ok())
                    .sum::<u64>()
            }
            _ => {}
        }
    }
    Some(Throughput {
        requests_per_second: rps?,
        p50_us: p50?,
        p99_us: p99?,
        errors,
    })
}

/// `245.00us`, `1.20ms`, `2.00s` → microseconds.
fn duration_us(text: &str) -> Option<f64> {
    let (number, scale) = if let Some(n) = text.strip_suffix("us") {
        (n, 1.0)
    } else if let Some(n) = text.strip_suffix("ms") {
        (n, 1e3)
    } else if let Some(n) = text.strip_suffix('s') {
        (n, 1e6)
    } else {
        return None;
    };
    number.parse::<f64>().ok().map(|n| n * scale)
}

#[cfg(test)]
mod tests {
    use super::*;

    const REPORT: &str = "Running 10s test @ http://127.0.0.1:4000/health/liveliness
  1 threads and 16 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency   245.12us  100.00us   5.00ms   90.00%
  Latency Distribution
     50%  210.00us
     75%  300.00us
     90%  400.00us
     99%    1.20ms
  400000 requests in 10.00s, 50.00MB read
  Socket errors: connect 0, read 2, write 0, timeout 1
  Non-2xx or 3xx responses: 5
Requests/sec:  40000.12
Transfer/sec:      5.00MB
";

    #[test]
    fn a_latency_report_is_read_in_microseconds() {
        let parsed = parse(REPORT).unwrap();
        assert_eq!(parsed.requests_per_second, 40000.12);
        assert_eq!(parsed.p50_us, 210.0);
        assert_eq!(parsed.p99_us, 1200.0);
        assert_eq!(parsed.errors, 8);
    }

    #[test]
    fn the_median_of_runs_is_taken_field_by_field_and_errors_add_up() {
        let run = |rps, p50, p99, errors| Throughput {
            requests_per_second: rps,
            p50_us: p50,
            p99_us: p99,
            errors,
        };
        let runs = [
            run(300.0, 10.0, 90.0, 1),
            run(100.0, 30.0, 70.0, 0),
            run(200.0, 20.0, 80.0, 2),
        ];
        assert_eq!(median(&runs), Some(run(200.0, 20.0, 80.0, 3)));
        assert_eq!(median(&[]), None);
    }

    #[test]
    fn a_report_without_requests_per_second_is_not_a_result() {
        assert_eq!(parse("  Latency Distribution\n     50%  1.00ms\n"), None);
    }
}
