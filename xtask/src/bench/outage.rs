//! `cargo xtask bench outage`: every scenario at full length, the liveness ceilings,
//! then the table in docs/benchmarks.md, the raw JSON and a PNG per scenario.

use livegate_tests::envoy::{Endpoint, Envoy, EnvoyConfig, BASELINE_TEMPLATE};
use livegate_tests::lab::scenario::{self, Fault, ScenarioReport, Timing};
use livegate_tests::process::Scratch;
use livegate_tests::stack::{Stack, StackOptions};
use serde::Serialize;

use super::wrk::{self, Throughput};
use crate::step;

/// Liveness answered by our filter against Envoy's native direct_response.
#[derive(Debug, Serialize)]
struct Ceilings {
    seconds: u64,
    direct_response: Throughput,
    filter: Throughput,
    ratio: f64,
}

#[derive(Serialize)]
struct Results<'a> {
    machine: String,
    ceilings: &'a Ceilings,
    scenarios: &'a [ScenarioReport],
}

pub fn run(names: &[String], seconds: u64) -> anyhow::Result<()> {
    let faults = select(names)?;
    super::plot::ensure_font()?;
    wrk::ensure_installed()?;
    let dir = super::results_dir()?;
    let mut reports = Vec::new();
    for fault in faults {
        step(&format!("scenario {}", fault.name()));
        let report = scenario::run(fault, Timing::full(fault))?;
        super::plot::timeline(&report, &dir.join(format!("outage-{}.png", fault.name())))?;
        eprintln!("    {}", row(&report));
        reports.push(report);
    }
    step("liveness ceilings: Envoy's direct_response against the filter's local reply");
    let ceilings = ceilings(seconds)?;
    let machine = super::machine::describe();
    let results = Results {
        machine: machine.clone(),
        ceilings: &ceilings,
        scenarios: &reports,
    };
    std::fs::write(dir.join("outage.json"), serde_json::to_string(&results)?)?;
    super::markdown::update_benchmarks_doc("outage", &table(&reports, &ceilings, &machine))?;
    Ok(())
}

fn select(names: &[String]) -> anyhow::Result<Vec<Fault>> {
    if names.is_empty() {
        return Ok(Fault::ALL.to_vec());
    }
    names
        .iter()
        .map(|name| {
            Fault::ALL
                .into_iter()
                .find(|fault| fault.name() == name)
                .ok_or_else(|| {
                    anyhow::anyhow!(
                        "no scenario `{name}`; known: {:?}",
                        Fault::ALL.map(Fault::name)
                    )
                })
        })
        .collect()
}

/// Runs of each ceiling, interleaved; the median is kept.
const CEILING_ROUNDS: usize = 3;

fn ceilings(seconds: u64) -> anyhow::Result<Ceilings> {
    let stack = Stack::start(StackOptions::envoy_only())?;
    let scratch = Scratch::new("livegate-baseline-")?;
    let nowhere = Endpoint::loopback(livegate_tests::ports::free_port()?);
    let baseline = Envoy::start_from(
        BASELINE_TEMPLATE,
        EnvoyConfig::on_free_ports(nowhere.clone(), nowhere)?,
        scratch.path(),
    )?;
    // Each Envoy's one worker alone on CPU 0, wrk (started by this process) on CPU 1: the
    // ratio is then Envoy's own cost per request, not how the two share the cores.
    let mut pins = super::pinning::Pinned::new();
    if let Some(pins) = &mut pins {
        pins.tree(baseline.pid(), "0")?;
        pins.tree(stack.envoy.pid(), "0")?;
        pins.process(std::process::id(), "1")?;
    }
    let (mut native, mut local) = (Vec::new(), Vec::new());
    for _ in 0..CEILING_ROUNDS {
        let url = format!("{}/health/liveliness", baseline.url());
        native.push(wrk::run(&url, seconds, 32, None)?);
        local.push(wrk::run(
            &stack.url("/health/liveliness"),
            seconds,
            32,
            None,
        )?);
    }
    drop(pins);
    let (Some(direct_response), Some(filter)) = (wrk::median(&native), wrk::median(&local)) else {
        anyhow::bail!("no ceiling run");
    };
    Ok(Ceilings {
        seconds,
        ratio: filter.requests_per_second / direct_response.requests_per_second,
        direct_response,
        filter,
    })
}

fn ms(value: Option<f64>) -> String {
    value.map_or("—".to_string(), |v| format!("{v:.1} ms"))
}

fn row(report: &ScenarioReport) -> String {
    let (max, p99, p999, ok) = report.liveness.map_or(
        ("—".into(), "—".into(), "—".into(), "—".into()),
        |l| {
            (
                format!("{:.2} ms", l.max_ms),
                format!("{:.2} ms", l.p99_ms),
                format!("{:.2} ms", l.p999_ms),
                format!("{:.2} %", l.percent_2xx),
            )
        },
    );
    let auth = &report.auth;
    format!(
        "| {} | {max} | {p99} | {p999} | {ok} | {}/{} | {}/{} | {} | {} | {} | {} | {} | {} |",
        report.scenario,
        auth.known_served,
        auth.known_served + auth.known_refused,
        auth.unknown_admitted,
        auth.unknown_admitted + auth.unknown_refused,
        ms(report.readiness_noticed_ms),
        ms(report.reconnected_ms),
        if report.key_list_after {
            "200"
        } else {
            "failed"
        },
        report
            .loop_lag_during
            .max_at_most_ms
            .map_or("> 5 s".to_string(), |v| format!("≤ {v:.0} ms")),
        ms(report.loop_lag_max_ms),
        report.engines_left,
    )
}

fn table(reports: &[ScenarioReport], ceilings: &Ceilings, machine: &str) -> String {
    let mut out = String::new();
    out.push_str(&format!(
        "Measured by `cargo xtask bench outage` on: {machine}.\n\n"
    ));
    out.push_str("| scenario | liveness max | p99 | p99.9 | liveness 2xx | known keys served | unknown keys admitted | readiness noticed | back to `connected` | `/key/list` after | loop lag during | loop lag max since start | engines left |\n");
    out.push_str("|---|---|---|---|---|---|---|---|---|---|---|---|---|\n");
    // The incident's published figures; the columns it did not measure stay empty.
    let empty = " |".repeat(8);
    out.push_str(&format!(
        "| *reference proxy, before its fix* | *10006 ms* | | | *99.7 %* |{empty}\n"
    ));
    out.push_str(&format!(
        "| *reference proxy, after its fix* | *52.7 ms* | | | *100 %* |{empty}\n"
    ));
    for report in reports {
        out.push_str(&row(report));
        out.push('\n');
    }
    out.push_str(&format!(
        "\nLiveness ceilings (wrk with 32 connections, the median of {CEILING_ROUNDS} runs of {} s each, interleaved; 1 Envoy worker each, the Envoys pinned to CPU 0 and wrk to CPU 1): Envoy's native `direct_response` {:.0} req/s (p50 {:.0} µs, p99 {:.0} µs); the filter's local reply {:.0} req/s (p50 {:.0} µs, p99 {:.0} µs): **{:.2}×** the native ceiling.\n",
        ceilings.seconds,
        ceilings.direct_response.requests_per_second,
        ceilings.direct_response.p50_us,
        ceilings.direct_response.p99_us,
        ceilings.filter.requests_per_second,
        ceilings.filter.p50_us,
        ceilings.filter.p99_us,
        ceilings.ratio,
    ));
    out.push_str("\nTimelines: ");
    let links: Vec<String> = reports
        .iter()
        .map(|r| format!("[{0}](benchmarks/outage-{0}.png)", r.scenario))
        .collect();
    out.push_str(&links.join(", "));
    out.push_str(". Raw numbers: [benchmarks/outage.json](benchmarks/outage.json).\n");
    out
}
