//! `cargo xtask bench limits`' hot-key run: one key whose `rpm_limit` is far above what the
//! machine can send, flooded through 2 Envoys × 2 control planes at once, against a key
//! with no limit on the same fleet; once with leased admissions (the default) and once
//! with `--rate-limit-max-lease 1` (every admission a write to Postgres, as before leases).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use livegate_tests::envoy::prometheus_value;
use livegate_tests::fleet::{Fleet, FleetOptions};
use livegate_tests::http;
use serde_json::json;

use super::wrk::{self, Throughput};

/// Far above what 2 cores can send in a minute.
const HOT_LIMIT: u64 = 1_000_000_000;

/// Connections per Envoy.
const CONNECTIONS: u32 = 16;

const ROUNDS: usize = 3;

/// Metering off: this measures admission, not the ledger.
const FILTER_CONFIG: &str = r#"{"metering": {"enabled": false}}"#;

struct Measured {
    fleet: &'static str,
    unlimited: Throughput,
    hot: Throughput,
    /// Of the hot key's admissions: served from an Envoy worker's share, from a control
    /// plane's lease (no round trip to Postgres).
    leased_at_envoys: f64,
    leased_at_control_planes: f64,
}

pub fn run(seconds: u64) -> anyhow::Result<()> {
    wrk::ensure_installed()?;
    let measured = [
        measure("leases (default)", &[], seconds)?,
        measure(
            "no leases (`--rate-limit-max-lease 1`)",
            &["--rate-limit-max-lease", "1"],
            seconds,
        )?,
    ];
    let table = table(&measured, seconds);
    eprintln!("{table}");
    super::markdown::update_benchmarks_doc("limits_hot_key", &table)
}

fn measure(
    fleet_name: &'static str,
    control_plane_args: &[&str],
    seconds: u64,
) -> anyhow::Result<Measured> {
    let fleet = Fleet::start(FleetOptions {
        filter_config: FILTER_CONFIG.to_string(),
        control_plane_args: control_plane_args.iter().map(|a| a.to_string()).collect(),
        ..FleetOptions::new(2, 2)
    })?;
    let unlimited = generate(&fleet, json!({"key_alias": "bench-unlimited"}))?;
    let hot = generate(
        &fleet,
        json!({"key_alias": "bench-hot", "rpm_limit": HOT_LIMIT}),
    )?;
    let unlimited_script = script(fleet.scratch.path(), "unlimited", &unlimited)?;
    let hot_script = script(fleet.scratch.path(), "hot", &hot)?;
    let (mut unlimited_runs, mut hot_runs) = (Vec::new(), Vec::new());
    for round in 1..=ROUNDS {
        crate::step(&format!("{fleet_name}: round {round}/{ROUNDS}"));
        unlimited_runs.push(both_envoys(&fleet, &unlimited_script, seconds)?);
        hot_runs.push(both_envoys(&fleet, &hot_script, seconds)?);
    }
    let leased_at_envoys = fleet
        .envoys
        .iter()
        .map(|e| e.prometheus_counter("livegate_cache_leased_total"))
        .sum::<anyhow::Result<f64>>()?;
    let mut leased_at_control_planes = 0.0;
    for cp in fleet.control_planes.iter().flatten() {
        let metrics = http::get(&cp.metrics_url(), &[])?.body;
        leased_at_control_planes +=
            prometheus_value(&metrics, "livegate_rate_limit_leased_admissions_total")
                .unwrap_or(0.0);
    }
    Ok(Measured {
        fleet: fleet_name,
        unlimited: median(&unlimited_runs)?,
        hot: median(&hot_runs)?,
        leased_at_envoys,
        leased_at_control_planes,
    })
}

fn median(runs: &[Throughput]) -> anyhow::Result<Throughput> {
    wrk::median(runs).ok_or_else(|| anyhow::anyhow!("no run"))
}

/// wrk on both Envoys at once: requests/s summed, the slower p50 and p99, errors summed.
fn both_envoys(fleet: &Fleet, script: &Path, seconds: u64) -> anyhow::Result<Throughput> {
    let runs: Vec<anyhow::Result<Throughput>> = std::thread::scope(|s| {
        let handles: Vec<_> = fleet
            .envoys
            .iter()
            .map(|envoy| {
                let url = format!("{}/v1/models", envoy.url());
                s.spawn(move || wrk::run(&url, seconds, CONNECTIONS, Some(script)))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(anyhow::anyhow!("wrk thread panicked")))
            })
            .collect()
    });
    let runs = runs.into_iter().collect::<anyhow::Result<Vec<_>>>()?;
    Ok(Throughput {
        requests_per_second: runs.iter().map(|r| r.requests_per_second).sum(),
        p50_us: runs.iter().map(|r| r.p50_us).fold(0.0, f64::max),
        p99_us: runs.iter().map(|r| r.p99_us).fold(0.0, f64::max),
        errors: runs.iter().map(|r| r.errors).sum(),
    })
}

fn generate(fleet: &Fleet, body: serde_json::Value) -> anyhow::Result<String> {
    let created = fleet.admin_via(0, "/key/generate", &body)?;
    created["key"]
        .as_str()
        .map(str::to_string)
        .ok_or_else(|| anyhow::anyhow!("no key in {created}"))
}

fn script(dir: &Path, name: &str, key: &str) -> anyhow::Result<PathBuf> {
    let path = dir.join(format!("hot-key-{name}.lua"));
    std::fs::write(
        &path,
        format!("wrk.headers[\"authorization\"] = \"Bearer {key}\"\n"),
    )?;
    Ok(path)
}

fn table(measured: &[Measured], seconds: u64) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "Measured by `cargo xtask bench limits` (hot-key run) on: {}.",
        super::machine::describe()
    );
    let _ = writeln!(
        out,
        "2 Envoys (2 workers each) × 2 control planes over one Postgres; wrk (1 thread, \
         {CONNECTIONS} connections) on each Envoy at once, `GET /v1/models`, metering off; \
         each figure the median of {ROUNDS} runs of {seconds} s, the two keys interleaved. \
         The hot key's `rpm_limit` is {HOT_LIMIT}: it never refuses, so the run shows what \
         admitting it costs. wrk, both Envoys, both control planes, Postgres and the upstream \
         share the machine's cores.\n"
    );
    let _ = writeln!(
        out,
        "| fleet | unlimited key, requests/s | hot key, requests/s | hot ÷ unlimited | hot key p50 | errors | hot admissions from a worker's share | from a control plane's lease |"
    );
    let _ = writeln!(out, "|---|---|---|---|---|---|---|---|");
    for m in measured {
        let _ = writeln!(
            out,
            "| {} | {:.0} | {:.0} | {:.2}× | {:.0} µs | {} | {:.0} | {:.0} |",
            m.fleet,
            m.unlimited.requests_per_second,
            m.hot.requests_per_second,
            m.hot.requests_per_second / m.unlimited.requests_per_second,
            m.hot.p50_us,
            m.unlimited.errors + m.hot.errors,
            m.leased_at_envoys,
            m.leased_at_control_planes,
        );
    }
    let _ = writeln!(
        out,
        "\nTarget: the hot key at ≥ 0.8× the unlimited key's throughput with leases; the \
         exactness of a key flooded past its limit is the table below (over-admission 0)."
    );
    out
}
