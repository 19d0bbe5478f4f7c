//! `cargo xtask bench auth`: the cost of the filter on the hot path. Three runs of
//! wrk against the demo upstream: (a) Envoy without the filter, (b) a cached key,
//! (c) every request a cache miss through the control plane and Postgres.

use std::fmt::Write as _;

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

/// One setup measured both ways.
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

    let baseline = Envoy::start_from(
        BASELINE_TEMPLATE,
        EnvoyConfig::on_free_ports(control_plane.clone(), upstream.clone())?,
        stack.scratch.path(),
    )?;
    // A one-entry cache and keys used in turn: every request misses.
    let mut missing = EnvoyConfig::on_free_ports(control_plane, upstream)?;
    missing.filter_config = r#"{"cache": {"max_entries": 1}}"#.to_string();
    let missing = Envoy::start(missing, stack.scratch.path())?;

    let path = "/v1/models";
    let cached_script = script(&stack, &keys[..1])?;
    let miss_script = script(&stack, &keys)?;
    let targets = [
        // The same wrk script everywhere: its Lua request hook has a cost of its own.
        (
            "(a) no filter",
            format!("{}{path}", baseline.url()),
            Some(cached_script.clone()),
        ),
        ("(b) cached key", stack.url(path), Some(cached_script)),
        (
            "(c) cache miss → control plane",
            format!("{}{path}", missing.url()),
            Some(miss_script),
        ),
    ];
    let mut runs = Vec::new();
    for (name, url, script) in targets {
        step(name);
        runs.push(Run {
            name,
            throughput: wrk::run(&url, seconds, CONNECTIONS, script.as_deref())?,
            latency: wrk::run(&url, seconds, LATENCY_CONNECTIONS, script.as_deref())?,
        });
    }
    let table = table(seconds, &runs);
    eprintln!("{table}");
    super::markdown::update_benchmarks_doc("auth", &table)
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
        "wrk with 1 thread, {seconds} s per run, `GET /v1/models` on the demo upstream, Envoy with 1 worker; \
         throughput with {CONNECTIONS} connections, latency with {LATENCY_CONNECTIONS} (no queueing). \
         wrk, Envoy, the upstream and the control plane share the 2 cores.\n"
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
    if let [none, cached, miss] = runs {
        let _ = writeln!(
            out,
            "\nAdded by a cached auth at p50: {:.0} µs (target ≤ 30 µs); cached throughput {:.2}× the no-filter run (target ≥ 0.85×); a cache miss end to end at p50: {:.2} ms (target ≤ 1 ms).",
            cached.latency.p50_us - none.latency.p50_us,
            cached.throughput.requests_per_second / none.throughput.requests_per_second,
            miss.latency.p50_us / 1e3
        );
    }
    out
}
