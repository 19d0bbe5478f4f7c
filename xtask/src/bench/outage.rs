//! `cargo xtask bench outage`: every scenario at full length, the liveness ceilings,
//! then the table in docs/benchmarks.md, the raw JSON and a PNG per scenario.

use livegate_tests::envoy::{Endpoint, Envoy, EnvoyConfig, BASELINE_TEMPLATE};
use livegate_tests::lab::scenario::{self, Fault, ScenarioReport, Timing};
use livegate_tests::process::Scratch;
use livegate_tests::stack::{Stack, StackOptions};
use serde::Serialize;

use super::wrk::{self, Throughput};
use crate::step;

/// Liveness throughput from Envoy's native reply down to livegate's filter on each listener.
#[derive(Debug, Serialize)]
struct Ceilings {
    seconds: u64,
    /// Envoy's native `direct_response`: the physical limit.
    direct_response: Throughput,
    /// The least a Wasm filter does (xtask/floor-filter) on the same bare listener: what
    /// Envoy's Wasm host costs, whatever the filter.
    wasm_floor: Throughput,
    /// livegate's filter on the same bare listener: what its own code adds.
    bare_listener: Throughput,
    /// livegate's filter on its probe listener, where the kubelet asks (path
    /// normalisation, the local reply mappers).
    probe_listener: Throughput,
    /// livegate's filter on the gateway's listener (its access log, header mutations).
    gateway_listener: Throughput,
}

impl Ceilings {
    /// The headline: the probe listener's liveness against the native reply.
    fn ratio(&self) -> f64 {
        self.probe_listener.requests_per_second / self.direct_response.requests_per_second
    }
}

#[derive(Serialize)]
struct Results<'a> {
    machine: String,
    ceilings: &'a Ceilings,
    scenarios: &'a [ScenarioReport],
}

pub fn run(names: &[String], seconds: u64, ceilings_only: bool) -> anyhow::Result<()> {
    let faults = select(names)?;
    super::plot::ensure_font()?;
    wrk::ensure_installed()?;
    let machine = super::machine::describe();
    if ceilings_only {
        step("liveness ceilings alone");
        let ceilings = ceilings(seconds)?;
        return super::markdown::update_benchmarks_doc(
            "ceilings",
            &ceilings_text(&ceilings, &machine),
        );
    }
    let dir = super::results_dir()?;
    let mut reports = Vec::new();
    for fault in faults {
        step(&format!("scenario {}", fault.name()));
        let report = scenario::run(fault, Timing::full(fault))?;
        super::plot::timeline(&report, &dir.join(format!("outage-{}.png", fault.name())))?;
        eprintln!("    {}", row(&report));
        reports.push(report);
    }
    step("liveness ceilings: Envoy's direct_response, the floor filter, livegate's filter");
    let ceilings = ceilings(seconds)?;
    let results = Results {
        machine: machine.clone(),
        ceilings: &ceilings,
        scenarios: &reports,
    };
    std::fs::write(dir.join("outage.json"), serde_json::to_string(&results)?)?;
    super::markdown::update_benchmarks_doc("outage", &table(&reports, &machine))?;
    super::markdown::update_benchmarks_doc("ceilings", &ceilings_text(&ceilings, &machine))
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
    let floor_wasm = crate::build::floor_filter()?;
    let stack = Stack::start(StackOptions::envoy_only())?;
    let scratch = Scratch::new("livegate-baseline-")?;
    let nowhere = Endpoint::loopback(livegate_tests::ports::free_port()?);
    let bare = || EnvoyConfig::on_free_ports(nowhere.clone(), nowhere.clone());
    let baseline = Envoy::start_from(BASELINE_TEMPLATE, bare()?, scratch.path())?;
    let floor = Envoy::start_from(
        super::BARE_WASM_TEMPLATE,
        EnvoyConfig {
            filter_wasm: floor_wasm,
            ..bare()?
        },
        scratch.path(),
    )?;
    let livegate_bare = Envoy::start_from(super::BARE_WASM_TEMPLATE, bare()?, scratch.path())?;
    // Each Envoy's one worker alone on CPU 0, wrk (started by this process) on CPU 1: the
    // ratio is then Envoy's own cost per request, not how the two share the cores.
    let mut pins = super::pinning::Pinned::new();
    if let Some(pins) = &mut pins {
        for envoy in [&baseline, &floor, &livegate_bare, &stack.envoy] {
            pins.tree(envoy.pid(), "0")?;
        }
        pins.process(std::process::id(), "1")?;
    }
    let liveness = |envoy: &Envoy| format!("{}/health/liveliness", envoy.url());
    let urls = [
        liveness(&baseline),
        liveness(&floor),
        liveness(&livegate_bare),
        format!("{}/health/liveliness", stack.envoy.probe_url()),
        stack.url("/health/liveliness"),
    ];
    let mut runs: [Vec<Throughput>; 5] = Default::default();
    for _ in 0..CEILING_ROUNDS {
        for (url, runs) in urls.iter().zip(runs.iter_mut()) {
            let run = wrk::run(url, seconds, 32, None)?;
            // A 503 is the bare listener's route: the filter did not answer.
            anyhow::ensure!(run.errors == 0, "{url}: {} errors", run.errors);
            runs.push(run);
        }
    }
    drop(pins);
    let [Some(direct_response), Some(wasm_floor), Some(bare_listener), Some(probe_listener), Some(gateway_listener)] =
        runs.map(|runs| wrk::median(&runs))
    else {
        anyhow::bail!("no ceiling run");
    };
    Ok(Ceilings {
        seconds,
        direct_response,
        wasm_floor,
        bare_listener,
        probe_listener,
        gateway_listener,
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

fn table(reports: &[ScenarioReport], machine: &str) -> String {
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
    out.push_str("\nTimelines: ");
    let links: Vec<String> = reports
        .iter()
        .map(|r| format!("[{0}](benchmarks/outage-{0}.png)", r.scenario))
        .collect();
    out.push_str(&links.join(", "));
    out.push_str(". Raw numbers: [benchmarks/outage.json](benchmarks/outage.json).\n");
    out
}

/// The ceilings' paragraph: each setup's throughput and latency, and the ratios.
fn ceilings_text(ceilings: &Ceilings, machine: &str) -> String {
    let native = ceilings.direct_response.requests_per_second;
    let setup = |name: &str, run: &Throughput| {
        format!(
            "| {name} | {:.0} | {:.2}× | {:.1} µs | {:.0} µs | {:.0} µs |\n",
            run.requests_per_second,
            run.requests_per_second / native,
            1e6 / run.requests_per_second,
            run.p50_us,
            run.p99_us,
        )
    };
    let mut out = format!(
        "Measured by `cargo xtask bench outage` (or `--ceilings-only`) on: {machine}.\nwrk with 32 connections on `GET /health/liveliness`, the median of {CEILING_ROUNDS} runs of {} s each, interleaved; 1 Envoy worker each, the Envoys pinned to CPU 0 and wrk to CPU 1, so a request's worker time is the inverse of the throughput.\n\n",
        ceilings.seconds
    );
    out.push_str("| liveness answered by | requests/s | vs native | worker time per request | p50 | p99 |\n|---|---|---|---|---|---|\n");
    out.push_str(&setup(
        "Envoy's native `direct_response`",
        &ceilings.direct_response,
    ));
    out.push_str(&setup("the least Wasm filter (`xtask/floor-filter`: one header read, a local reply), bare listener", &ceilings.wasm_floor));
    out.push_str(&setup(
        "livegate's filter, the same bare listener",
        &ceilings.bare_listener,
    ));
    out.push_str(&setup(
        "livegate's filter, its probe listener (the kubelet's)",
        &ceilings.probe_listener,
    ));
    out.push_str(&setup(
        "livegate's filter, the gateway's listener (access log, header mutations)",
        &ceilings.gateway_listener,
    ));
    out.push_str(&format!(
        "\nWhere the kubelet asks: **{:.2}×** the native ceiling.\n",
        ceilings.ratio()
    ));
    out
}
