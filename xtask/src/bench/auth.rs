//! `cargo xtask bench auth`: the cost of the filter on the hot path. wrk against the
//! demo upstream through four Envoys: (a) without the filter, (a′) with the filter
//! passing `/v1/` through (what any Wasm filter costs, plus routing and header
//! hygiene), (b) a cached key, (c) every request a cache miss through the control
//! plane and Postgres.

use std::fmt::Write as _;
use std::path::PathBuf;

use livegate_tests::envoy::{Endpoint, Envoy, EnvoyConfig, BASELINE_TEMPLATE};
use livegate_tests::stack::{Stack, StackOptions};
use serde_json::json;

use super::wrk::{self, Throughput};
use crate::step;

/// Keys the cache-miss run cycles through, with a filter cache of one entry.
const MISS_KEYS: usize = 16;
/// Throughput is measured with many connections (saturation); the latency a request
/// pays is measured with one, where p50 is the work itself and not queueing.
const CONNECTIONS: u32 = 16;
const LATENCY_CONNECTIONS: u32 = 1;
/// Every setup is measured this many times, interleaved, and the median reported, so
/// drift on the machine shows up in every row alike instead of in one.
const ROUNDS: usize = 3;

/// One setup to measure.
struct Target {
    name: &'static str,
    url: String,
    script: PathBuf,
}

/// One setup measured both ways (medians over the rounds).
struct Run {
    name: &'static str,
    throughput: Throughput,
    latency: Throughput,
}

pub fn run(seconds: u64) -> anyhow::Result<()> {
    wrk::ensure_installed()?;
    let stack = Stack::start(StackOptions {
        concurrency: 1,
        ..StackOptions::full()
    })?;
    let keys: Vec<String> = (0..MISS_KEYS)
        .map(|i| generate(&stack, i))
        .collect::<anyhow::Result<_>>()?;
    let upstream = Endpoint::loopback(stack.upstream.as_ref().map_or(0, |u| u.port()));
    let control_plane = Endpoint::loopback(stack.control_plane_port);
    let config = || EnvoyConfig::on_free_ports(control_plane.clone(), upstream.clone());

    let baseline = Envoy::start_from(BASELINE_TEMPLATE, config()?, stack.scratch.path())?;
    let mut passthrough = config()?;
    passthrough.filter_config = r#"{"passthrough_prefixes": ["/v1/"]}"#.to_string();
    let passthrough = Envoy::start(passthrough, stack.scratch.path())?;
    // A one-entry cache and keys used in turn: every request misses.
    let mut missing = config()?;
    missing.filter_config = r#"{"cache": {"max_entries": 1}}"#.to_string();
    let missing = Envoy::start(missing, stack.scratch.path())?;

    let path = "/v1/models";
    // The same wrk script everywhere: its Lua request hook has a cost of its own.
    let cached_script = script(&stack, &keys[..1])?;
    let targets = [
        Target {
            name: "(a) no filter",
            url: format!("{}{path}", baseline.url()),
            script: cached_script.clone(),
        },
        Target {
            name: "(a′) filter, the route passed through",
            url: format!("{}{path}", passthrough.url()),
            script: cached_script.clone(),
        },
        Target {
            name: "(b) cached key",
            url: stack.url(path),
            script: cached_script,
        },
        Target {
            name: "(c) cache miss → control plane",
            url: format!("{}{path}", missing.url()),
            script: script(&stack, &keys)?,
        },
    ];
    let runs = measure(&targets, seconds)?;
    let table = table(seconds, &runs);
    eprintln!("{table}");
    super::markdown::update_benchmarks_doc("auth", &table)
}

/// Runs every target once per round, both ways, and keeps the medians.
fn measure(targets: &[Target], seconds: u64) -> anyhow::Result<Vec<Run>> {
    let mut samples = vec![(Vec::new(), Vec::new()); targets.len()];
    for round in 1..=ROUNDS {
        for (target, (throughput, latency)) in targets.iter().zip(&mut samples) {
            step(&format!("round {round}/{ROUNDS}: {}", target.name));
            let script = Some(target.script.as_path());
            throughput.push(wrk::run(&target.url, seconds, CONNECTIONS, script)?);
            latency.push(wrk::run(&target.url, seconds, LATENCY_CONNECTIONS, script)?);
        }
    }
    targets
        .iter()
        .zip(samples)
        .map(|(target, (throughput, latency))| {
            Ok(Run {
                name: target.name,
                throughput: wrk::median(&throughput).ok_or_else(|| anyhow::anyhow!("no run"))?,
                latency: wrk::median(&latency).ok_or_else(|| anyhow::anyhow!("no run"))?,
            })
        })
        .collect()
}

fn generate(stack: &Stack, index: usize) -> anyhow::Result<String> {
    let created = stack.admin(
        "/key/generate",
        &json!({"key_alias": format!("bench-{index}")}),
    )?;
    Ok(created["key"].as_str().unwrap_or_default().to_string())
}

/// A wrk Lua script sending the keys in turn.
fn script(stack: &Stack, keys: &[String]) -> anyhow::Result<std::path::PathBuf> {
    let list: Vec<String> = keys.iter().map(|k| format!("\"{k}\"")).collect();
    let text = format!(
        "local keys = {{{}}}\nlocal i = 0\nrequest = function()\n  i = i % #keys + 1\n  return wrk.format(\"GET\", nil, {{[\"authorization\"] = \"Bearer \" .. keys[i]}})\nend\n",
        list.join(", ")
    );
    let path = stack
        .scratch
        .path()
        .join(format!("keys-{}.lua", keys.len()));
    std::fs::write(&path, text)?;
    Ok(path)
}

fn table(seconds: u64, runs: &[Run]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "Measured by `cargo xtask bench auth` on: {}.",
        super::machine::describe()
    );
    let _ = writeln!(
        out,
        "wrk with 1 thread, `GET /v1/models` on the demo upstream, Envoy with 1 worker; \
         throughput with {CONNECTIONS} connections, latency with {LATENCY_CONNECTIONS} (no queueing). \
         Each figure is the median of {ROUNDS} runs of {seconds} s, the setups interleaved. \
         wrk, the Envoys, the upstream and the control plane share the machine's cores.\n"
    );
    let _ = writeln!(out, "| run | requests/s ({CONNECTIONS} conns) | vs no filter | p50 (1 conn) | p99 (1 conn) | errors |");
    let _ = writeln!(out, "|---|---|---|---|---|---|");
    for run in runs {
        let _ = writeln!(
            out,
            "| {} | {:.0} | {:.2}× | {:.0} µs | {:.0} µs | {} |",
            run.name,
            run.throughput.requests_per_second,
            run.throughput.requests_per_second / runs[0].throughput.requests_per_second,
            run.latency.p50_us,
            run.latency.p99_us,
            run.throughput.errors + run.latency.errors
        );
    }
    if let [none, passthrough, cached, miss] = runs {
        let ratio =
            |run: &Run| run.throughput.requests_per_second / none.throughput.requests_per_second;
        let _ = writeln!(
            out,
            "\nAdded by a cached auth at p50: {:.0} µs (target ≤ 30 µs); cached throughput {:.2}× the no-filter run (target ≥ 0.85×); a cache miss end to end at p50: {:.2} ms (target ≤ 1 ms). \
             The filter with no auth to do already costs {:.2}× and {:.0} µs at p50.",
            cached.latency.p50_us - none.latency.p50_us,
            ratio(cached),
            miss.latency.p50_us / 1e3,
            ratio(passthrough),
            passthrough.latency.p50_us - none.latency.p50_us,
        );
    }
    out
}
