//! `cargo xtask bench metering`: what metering costs and how fast the ledger drains.
//!
//! (a) wrk streams answers of `STREAM_EVENTS` SSE events (the demo's `livegate_events`)
//! through four Envoys: no filter, the filter passing `/v1/` through, a cached key with
//! metering off, and a cached key with metering on (the stack's Envoy); then the last
//! three, with the floor filter without and with copying the stream into the VM, in
//! interleaved rounds with the CPU their Envoy, the control plane and Postgres used per
//! answer, again with each event of a stream written on its own (`paced`), and the three
//! again with Envoy pinned to a core of its own (the ledger, the upstream and wrk on the
//! other).
//! (b) The drain: with Postgres frozen, `ledger::RECORDS` records are posted to
//! `/v1/spend/records` in batches of 100 (the intake rate, every batch synced); Postgres
//! thawed, the time from the first drained record to an empty spool (the drain rate).
//! (c) A database outage of `outage_seconds` under steady metered streaming: records
//! spooled, drained after, lost.
//! (d) The paced runs' table (`paced`).
//! (e) Envoy's own SSE extraction against no filter, in CPU per answer (`native`).
//!
//! This file runs them and writes (a); the CPU tables are `cpu`'s and `pinned`'s, (b) and
//! (c) `ledger`'s.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use livegate_tests::envoy::{prometheus_value, BASELINE_TEMPLATE, TEMPLATE};
use livegate_tests::http;
use livegate_tests::stack::{Stack, StackOptions};
use serde_json::{json, Value};

use super::wrk::{self, Plan, Run, Target};
use super::{envoy_beside, floor_beside, floor_beside_with, PASSTHROUGH_V1};
use cpu::{cpu_per_answer, cpu_table, Cpu, CPU_CONNECTIONS, CPU_ROUNDS};
use ledger::{drain, drain_paragraph, outage, outage_paragraph, Drain, Outage};
use pinned::{pinned, pinned_table, PinnedRun};

mod cpu;
mod ledger;
mod native;
mod paced;
mod pinned;

/// Content chunks per streamed answer (plus the stop and usage chunks and `[DONE]`).
const STREAM_EVENTS: u64 = 200;
const PATIENCE: Duration = Duration::from_secs(600);
/// The floor filter's two setups in the CPU-per-answer runs.
const FLOOR: &str = "(v) the least Wasm filter, bare listener";
const FLOOR_READING: &str =
    "(vi) the least Wasm filter copying every response chunk into the VM, bare listener";

pub fn run(seconds: u64, outage_seconds: u64) -> anyhow::Result<()> {
    wrk::ensure_installed()?;
    let stack = Stack::start(StackOptions {
        concurrency: 1,
        control_plane_args: vec![
            "--prices-file".into(),
            livegate_tests::artifacts::demo_prices_file()
                .display()
                .to_string(),
        ],
        ..StackOptions::full()
    })?;
    let created = stack.admin("/key/generate", &json!({"key_alias": "bench-metering"}))?;
    let key = created["key"].as_str().unwrap_or_default().to_string();
    let token = created["token"].as_str().unwrap_or_default().to_string();
    anyhow::ensure!(!key.is_empty() && !token.is_empty(), "no key: {created}");

    let baseline = envoy_beside(&stack, BASELINE_TEMPLATE, "{}")?;
    let passthrough = envoy_beside(&stack, TEMPLATE, PASSTHROUGH_V1)?;
    let unmetered = envoy_beside(&stack, TEMPLATE, r#"{"metering": {"enabled": false}}"#)?;
    let floor = floor_beside(&stack)?;
    let floor_reading = floor_beside_with(&stack, "read_response_body")?;

    let path = "/v1/chat/completions";
    let script = script(&stack, &key)?;
    let targets = [
        Target {
            name: "(i) no filter",
            url: format!("{}{path}", baseline.url()),
            script: script.clone(),
        },
        Target {
            name: "(ii) filter, the route passed through",
            url: format!("{}{path}", passthrough.url()),
            script: script.clone(),
        },
        Target {
            name: "(iii) filter, cached key, metering off",
            url: format!("{}{path}", unmetered.url()),
            script: script.clone(),
        },
        Target {
            name: "(iv) filter, cached key, metering on",
            url: stack.url(path),
            script: script.clone(),
        },
    ];
    let plan = Plan::interleaved(seconds);
    let runs = wrk::measure(&targets, &plan)?;
    // Where the time goes: the filter's setups, and the floor filter without and with
    // reading the stream (what any meter pays per chunk before reading a byte).
    let floors = [
        Target {
            name: FLOOR,
            url: format!("{}{path}", floor.url()),
            script: script.clone(),
        },
        Target {
            name: FLOOR_READING,
            url: format!("{}{path}", floor_reading.url()),
            script: script.clone(),
        },
    ];
    let cpu_targets: Vec<Target> = targets[1..].iter().chain(&floors).cloned().collect();
    let envoys = [
        &passthrough,
        &unmetered,
        &stack.envoy,
        &floor,
        &floor_reading,
    ];
    let cpu_plan = Plan {
        connections: CPU_CONNECTIONS,
        rounds: CPU_ROUNDS,
        ..plan
    };
    let cpu = cpu_per_answer(&stack, &cpu_targets, &envoys, &cpu_plan)?;
    let paced = paced::run(&stack, &key, &cpu_targets, &envoys, &plan)?;
    let native = native::run(&stack, &key, &baseline, &plan)?;
    let pinned = pinned(&stack, &targets[1..], &envoys[..3], &plan)?;
    let drain = drain(&stack, &token)?;
    let outage = outage(&stack, &targets[3].url, &script, outage_seconds)?;
    let mut table = table(&plan, &runs, &cpu, &pinned, &drain, &outage);
    paced::table(&mut table, &paced);
    native::paragraph(&mut table, &native);
    eprintln!("{table}");
    super::markdown::update_benchmarks_doc("metering", &table)
}

/// A wrk Lua script posting one streamed chat completion of `STREAM_EVENTS` chunks.
fn script(stack: &Stack, key: &str) -> anyhow::Result<PathBuf> {
    stream_script(
        stack,
        key,
        "stream.lua",
        json!({"livegate_events": STREAM_EVENTS}),
    )
}

/// A wrk Lua script (`name`, in the stack's scratch directory) posting one streamed chat
/// completion with the demo's `fields` (its events, their pace).
fn stream_script(stack: &Stack, key: &str, name: &str, fields: Value) -> anyhow::Result<PathBuf> {
    let mut body = json!({
        "model": livegate_demo_upstream::MODEL,
        "messages": [{"role": "user", "content": "benchmark"}],
        "stream": true,
    });
    if let (Some(body), Value::Object(fields)) = (body.as_object_mut(), fields) {
        body.extend(fields);
    }
    let body = body.to_string();
    let text = format!(
        "wrk.method = \"POST\"\nwrk.body = '{body}'\nwrk.headers[\"content-type\"] = \"application/json\"\nwrk.headers[\"authorization\"] = \"Bearer {key}\"\n"
    );
    let path = stack.scratch.path().join(name);
    std::fs::write(&path, text)?;
    Ok(path)
}

fn control_plane_metric(stack: &Stack, name: &str) -> anyhow::Result<f64> {
    let url = stack
        .control_plane
        .as_ref()
        .map(|c| c.metrics_url())
        .ok_or_else(|| anyhow::anyhow!("no control plane"))?;
    let text = http::get(&url, &[])?.body;
    prometheus_value(&text, name).ok_or_else(|| anyhow::anyhow!("no {name} in /metrics"))
}

/// Polls `condition` every 20 ms until it holds; the time it took.
fn wait(
    what: &str,
    mut condition: impl FnMut() -> anyhow::Result<bool>,
) -> anyhow::Result<Duration> {
    let start = Instant::now();
    while !condition()? {
        anyhow::ensure!(start.elapsed() < PATIENCE, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(start.elapsed())
}

/// Waits until nothing is left in the filter's queue nor in the spool, twice in a row half
/// a second apart (a batch may be on its way between the two).
fn settle(stack: &Stack) -> anyhow::Result<Duration> {
    let empty = || -> anyhow::Result<bool> {
        Ok(stack
            .envoy
            .prometheus_counter("livegate_spend_queue_records")?
            == 0.0
            && control_plane_metric(stack, "livegate_spend_spool_records")? == 0.0)
    };
    wait("the filter's queue and the spool empty", || {
        if !empty()? {
            return Ok(false);
        }
        std::thread::sleep(Duration::from_millis(500));
        empty()
    })
}

fn table(
    plan: &Plan,
    runs: &[Run],
    cpu: &[Cpu],
    pinned: &[PinnedRun],
    drain: &Drain,
    outage: &Outage,
) -> String {
    let Plan {
        connections,
        latency_connections,
        rounds,
        seconds,
    } = plan;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "Measured by `cargo xtask bench metering` on: {}.",
        super::machine::describe()
    );
    let _ = writeln!(
        out,
        "\n**(a) Streaming.** wrk with 1 thread, `POST /v1/chat/completions` with `stream: true` and \
         `livegate_events: {STREAM_EVENTS}` (the demo answers {STREAM_EVENTS} content chunks, a stop chunk, the usage chunk, `[DONE]`: \
         about {} KiB per answer), Envoy with 1 worker; throughput with {connections} connections, latency with {latency_connections}. \
         Each figure is the median of {rounds} runs of {seconds} s, the setups interleaved. \
         wrk, the Envoys, the upstream, the control plane and Postgres share the machine's cores.\n",
        livegate_demo_upstream::stream_events(9, true, STREAM_EVENTS as usize).len() / 1024
    );
    let _ = writeln!(out, "| run | answers/s ({connections} conns) | vs no filter | vs passed through | p50 (1 conn) | p99 (1 conn) | errors |");
    let _ = writeln!(out, "|---|---|---|---|---|---|---|");
    for run in runs {
        let rps = run.throughput.requests_per_second;
        let _ = writeln!(
            out,
            "| {} | {:.0} | {:.2}× | {:.2}× | {:.2} ms | {:.2} ms | {} |",
            run.name,
            rps,
            rps / runs[0].throughput.requests_per_second,
            rps / runs[1].throughput.requests_per_second,
            run.latency.p50_us / 1e3,
            run.latency.p99_us / 1e3,
            run.throughput.errors + run.latency.errors
        );
    }
    if let [_, passthrough, unmetered, metered] = runs {
        let pt = passthrough.throughput.requests_per_second;
        let cost = (unmetered.throughput.requests_per_second
            - metered.throughput.requests_per_second)
            / pt;
        let verdict = if cost <= 0.05 { "met" } else { "not met" };
        let _ = writeln!(
            out,
            "\nMetering's cost (iii − iv) is {:.1} % of the pass-through filter's streaming throughput \
             (target ≤ 5 %: {verdict}); it adds {:.0} µs at p50 per answer. Auth and metering together \
             (ii → iv) cost {:.1} % of it.",
            cost * 100.0,
            metered.latency.p50_us - unmetered.latency.p50_us,
            (pt - metered.throughput.requests_per_second) / pt * 100.0,
        );
    }
    cpu_table(&mut out, plan, cpu);
    pinned_table(&mut out, plan, pinned);
    drain_paragraph(&mut out, drain);
    outage_paragraph(&mut out, outage);
    out
}
