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
//! (b) The drain: with Postgres frozen, `RECORDS` records are posted to
//! `/v1/spend/records` in batches of 100 (the intake rate, every batch synced); Postgres
//! thawed, the time from the first drained record to an empty spool (the drain rate).
//! (c) A database outage of `outage_seconds` under steady metered streaming: records
//! spooled, drained after, lost.
//! (d) The paced runs' table (`paced`).

use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use livegate_tests::envoy::{prometheus_value, Envoy, BASELINE_TEMPLATE, TEMPLATE};
use livegate_tests::http;
use livegate_tests::stack::{Stack, StackOptions};
use serde_json::{json, Value};

use super::wrk::{self, Plan, Run, Target};
use super::{envoy_beside, floor_beside, floor_beside_with, PASSTHROUGH_V1};
use crate::step;

mod paced;

/// Content chunks per streamed answer (plus the stop and usage chunks and `[DONE]`).
const STREAM_EVENTS: u64 = 200;
/// Records of the drain run, posted in batches of the contract's largest size.
const RECORDS: usize = 50_000;
const BATCH: usize = 100;
const PATIENCE: Duration = Duration::from_secs(600);
/// Connections of the CPU-per-answer runs: few enough that no core is saturated, so a
/// process's CPU time is its work and not its wait for a contended core.
const CPU_CONNECTIONS: u32 = 2;
/// Rounds of the CPU-per-answer runs: a paired difference of a few tens of µs needs more
/// than three on a VM whose speed drifts from minute to minute.
const CPU_ROUNDS: usize = 5;
/// The floor filter's two setups in the CPU-per-answer runs.
const FLOOR: &str = "(v) the least Wasm filter, bare listener";
const FLOOR_READING: &str =
    "(vi) the least Wasm filter copying every response chunk into the VM, bare listener";

/// CPU time per answer of one setup, in µs (medians over the rounds): its Envoy's, and
/// the ledger's (the control plane; every Postgres process).
struct Cpu {
    name: &'static str,
    envoy_us: f64,
    /// Envoy's CPU per answer, round by round (for differences paired by round).
    envoy_rounds: Vec<f64>,
    /// With its database engine.
    control_plane_us: f64,
    postgres_us: f64,
}

/// What one setup adds to another's Envoy CPU per answer: each round's run against the
/// other's run of the same round (so a slower hour of the machine cancels out).
struct AddedCpu {
    median_us: f64,
    low_us: f64,
    high_us: f64,
}

struct Drain {
    records: usize,
    /// Records a statement sent before the freeze committed at the thaw.
    duplicates: f64,
    intake: Duration,
    reconnect: Duration,
    drain: Duration,
    drained: f64,
}

struct Outage {
    seconds: u64,
    requests: f64,
    spooled_peak: f64,
    drained: f64,
    duplicates: f64,
    rows: f64,
    after_resume: Duration,
    dropped: f64,
}

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
    let pinned = pinned(&stack, &targets[1..], &envoys[..3], &plan)?;
    let drain = drain(&stack, &token)?;
    let outage = outage(&stack, &targets[3].url, &script, outage_seconds)?;
    let mut table = table(&plan, &runs, &cpu, &pinned, &drain, &outage);
    paced::table(&mut table, &paced);
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

/// CPU ticks so far of the ledger's two halves: the control plane with its database engine
/// (its child), and Postgres (every process of it).
fn ledger_ticks(stack: &Stack) -> (u64, u64) {
    use livegate_tests::procfs::{cpu_ticks, descendants};
    let tree = |root: Option<u32>| -> u64 {
        root.into_iter()
            .flat_map(|pid| std::iter::once(pid).chain(descendants(pid)))
            .filter_map(cpu_ticks)
            .sum()
    };
    (
        tree(stack.control_plane.as_ref().map(|c| c.pid())),
        tree(stack.postgres.as_ref().and_then(|p| p.pid())),
    )
}

/// The setups again (the plan's connections and rounds, interleaved), with the CPU time
/// their Envoy and the ledger used per answer: where an answer's time goes when everything
/// shares the cores.
fn cpu_per_answer(
    stack: &Stack,
    targets: &[Target],
    envoys: &[&Envoy],
    plan: &Plan,
) -> anyhow::Result<Vec<Cpu>> {
    use livegate_tests::procfs::{cpu_ticks, TICKS_PER_SECOND};
    let us_per_tick = 1e6 / TICKS_PER_SECOND as f64;
    let mut samples: Vec<[Vec<f64>; 3]> = targets.iter().map(|_| Default::default()).collect();
    for round in 1..=plan.rounds {
        for ((target, envoy), [envoy_us, control_plane_us, postgres_us]) in
            targets.iter().zip(envoys).zip(&mut samples)
        {
            step(&format!(
                "CPU per answer, round {round}/{}: {}",
                plan.rounds, target.name
            ));
            settle(stack)?;
            let envoy_before = cpu_ticks(envoy.pid()).unwrap_or(0);
            let ledger_before = ledger_ticks(stack);
            let run = target.saturate(plan)?;
            // The records of the last answers reach the ledger within a tick or two.
            settle(stack)?;
            let answers = (run.requests_per_second * plan.seconds as f64).max(1.0);
            let per_answer = |ticks: u64| ticks as f64 * us_per_tick / answers;
            let envoy_ticks = cpu_ticks(envoy.pid()).unwrap_or(0);
            let ledger = ledger_ticks(stack);
            envoy_us.push(per_answer(envoy_ticks.saturating_sub(envoy_before)));
            control_plane_us.push(per_answer(ledger.0.saturating_sub(ledger_before.0)));
            postgres_us.push(per_answer(ledger.1.saturating_sub(ledger_before.1)));
        }
    }
    let cpu = targets
        .iter()
        .zip(samples)
        .map(|(target, [envoy, control_plane, postgres])| Cpu {
            name: target.name,
            envoy_us: wrk::middle(envoy.clone()).unwrap_or(0.0),
            envoy_rounds: envoy,
            control_plane_us: wrk::middle(control_plane).unwrap_or(0.0),
            postgres_us: wrk::middle(postgres).unwrap_or(0.0),
        });
    Ok(cpu.collect())
}

/// What `with` adds to `base`'s Envoy CPU per answer, round by round; `None` without rounds.
fn added(base: &Cpu, with: &Cpu) -> Option<AddedCpu> {
    let added: Vec<f64> = with
        .envoy_rounds
        .iter()
        .zip(&base.envoy_rounds)
        .map(|(w, b)| w - b)
        .collect();
    Some(AddedCpu {
        median_us: wrk::middle(added.clone())?,
        low_us: added.iter().copied().fold(f64::INFINITY, f64::min),
        high_us: added.iter().copied().fold(f64::NEG_INFINITY, f64::max),
    })
}

/// Where the time goes: CPU per answer, and what metering adds to Envoy's.
fn cpu_table(out: &mut String, plan: &Plan, cpu: &[Cpu]) {
    let _ = writeln!(
        out,
        "\nWhere the time goes: the setups again ({CPU_CONNECTIONS} connections, so that no core \
         is saturated; {CPU_ROUNDS} runs of {} s each, interleaved), and the least Wasm filter \
         (`xtask/floor-filter`, on the bare listener of (i)) without and with reading the \
         stream, with the CPU time each process used, per answer (medians). The ledger is \
         the control plane and Postgres taking the records (intake, `fdatasync`, drain, \
         insert): on this machine it shares the cores with Envoy, so its work lowers the \
         metered run's throughput too.\n",
        plan.seconds
    );
    let _ = writeln!(
        out,
        "| run | Envoy CPU per answer | control plane and its engine, per answer | Postgres CPU per answer |"
    );
    let _ = writeln!(out, "|---|---|---|---|");
    for c in cpu {
        let _ = writeln!(
            out,
            "| {} | {:.0} µs | {:.0} µs | {:.0} µs |",
            c.name, c.envoy_us, c.control_plane_us, c.postgres_us
        );
    }
    let [_, unmetered, metered, floor, floor_reading] = cpu else {
        return;
    };
    let (Some(metering), Some(reading)) = (added(unmetered, metered), added(floor, floor_reading))
    else {
        return;
    };
    let ledger = |c: &Cpu| c.control_plane_us + c.postgres_us;
    let _ = writeln!(
        out,
        "\nMetering adds {} of Envoy CPU per answer, {:.1} % of the metered run's Envoy CPU; \
         and {:.0} µs in the ledger. Reading the stream into the VM, and nothing more, adds {} \
         to the least Wasm filter: what any meter pays through proxy-wasm before it reads a \
         byte.",
        metering.described(),
        metering.median_us / metered.envoy_us.max(1e-9) * 100.0,
        ledger(metered) - ledger(unmetered),
        reading.described(),
    );
}

impl AddedCpu {
    /// "42 µs (each round's … : 40 to 45 µs)".
    fn described(&self) -> String {
        format!(
            "{:.0} µs (each round's run less the other's in the same round: {:.0} to {:.0} µs)",
            self.median_us, self.low_us, self.high_us
        )
    }
}

/// Answers/s of one setup with Envoy on a core of its own, and how busy that core was.
struct PinnedRun {
    name: &'static str,
    answers_per_second: f64,
    /// The share of its core the setup's Envoy used (median over the rounds): near 1, the
    /// run measured Envoy; well below, something on the other core held it back.
    envoy_busy: f64,
}

/// The setups again (throughput only, the plan's rounds interleaved) with the Envoys alone
/// on CPU 0 and everything else (the ledger: the control plane, its engine, Postgres; the
/// upstream; wrk) on CPU 1: the throughput is then Envoy's, and what metering costs it is
/// not mixed with the ledger's or the load generator's work. Empty on a machine with one
/// core.
fn pinned(
    stack: &Stack,
    targets: &[Target],
    envoys: &[&Envoy],
    plan: &Plan,
) -> anyhow::Result<Vec<PinnedRun>> {
    let Some(mut pins) = super::pinning::Pinned::new() else {
        return Ok(Vec::new());
    };
    for envoy in envoys {
        pins.tree(envoy.pid(), "0")?;
    }
    if let Some(control_plane) = &stack.control_plane {
        pins.tree(control_plane.pid(), "1")?;
    }
    if let Some(postgres) = stack.postgres.as_ref().and_then(|p| p.pid()) {
        pins.tree(postgres, "1")?;
    }
    if let Some(upstream) = &stack.upstream {
        pins.tree(upstream.pid(), "1")?;
    }
    // wrk is started by this process: it inherits the pin.
    pins.process(std::process::id(), "1")?;
    let mut samples: Vec<(Vec<f64>, Vec<f64>)> = vec![(Vec::new(), Vec::new()); targets.len()];
    for round in 1..=plan.rounds {
        for ((target, envoy), (runs, busy)) in targets.iter().zip(envoys).zip(&mut samples) {
            step(&format!(
                "pinned, round {round}/{}: {}",
                plan.rounds, target.name
            ));
            settle(stack)?;
            let (run, cpu_seconds) = target.saturate_timed(plan, envoy.pid())?;
            runs.push(run.requests_per_second);
            busy.push(cpu_seconds / plan.seconds as f64);
        }
    }
    drop(pins);
    let median = |values: Vec<f64>| wrk::middle(values).unwrap_or(0.0);
    Ok(targets
        .iter()
        .zip(samples)
        .map(|(target, (runs, busy))| PinnedRun {
            name: target.name,
            answers_per_second: median(runs),
            envoy_busy: median(busy),
        })
        .collect())
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

/// Rows of `livegate_spend_logs` from real requests (the drain run's ids start `bench-`),
/// counted by Postgres itself: the ground truth, whatever the counters say.
fn metered_rows(stack: &Stack) -> anyhow::Result<u64> {
    let postgres = stack
        .postgres
        .as_ref()
        .ok_or_else(|| anyhow::anyhow!("no Postgres"))?;
    let output = std::process::Command::new(livegate_tests::postgres::bin_dir()?.join("psql"))
        .arg(postgres.url())
        .args([
            "-tAc",
            "SELECT count(*) FROM livegate_spend_logs WHERE request_id NOT LIKE 'bench-%'",
        ])
        .output()?;
    let text = String::from_utf8_lossy(&output.stdout);
    text.trim()
        .parse()
        .map_err(|_| anyhow::anyhow!("psql: {text}{}", String::from_utf8_lossy(&output.stderr)))
}

fn records_batch(token: &str, run: &str, first: usize) -> Value {
    // Times near now: the intake refuses a record far from its clock (issue #24).
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(0));
    let records: Vec<Value> = (first..first + BATCH)
        .map(|i| {
            json!({
                "request_id": format!("bench-{run}-{i}"),
                "key_hash": token,
                "key_alias": "bench-metering",
                "team_id": null,
                "model_requested": livegate_demo_upstream::MODEL,
                "model_returned": livegate_demo_upstream::MODEL,
                "prompt_tokens": 100,
                "completion_tokens": 200,
                "total_tokens": 300,
                "usage_known": true,
                "status": 200,
                "streamed": true,
                "start_time_ms": now,
                "end_time_ms": now + 100,
            })
        })
        .collect();
    json!({ "records": records })
}

/// (b): intake with Postgres frozen, then the backlog's drain.
fn drain(stack: &Stack, token: &str) -> anyhow::Result<Drain> {
    step(&format!(
        "drain: {RECORDS} records into a frozen Postgres, then drained"
    ));
    let postgres = stack
        .postgres
        .as_ref()
        .ok_or_else(|| anyhow::anyhow!("no Postgres"))?;
    let base = stack
        .control_plane
        .as_ref()
        .map(|c| c.base_url())
        .ok_or_else(|| anyhow::anyhow!("no control plane"))?;
    settle(stack)?;
    let drained_before = control_plane_metric(stack, "livegate_spend_drained_total")?;
    let duplicates_before = control_plane_metric(stack, "livegate_spend_duplicates_total")?;
    let run = format!("{}", std::process::id());
    postgres.pause()?;
    let started = Instant::now();
    // Four posting threads: the intake syncs every batch, so one client would measure
    // fdatasync latency rather than the intake.
    let url = format!("{base}/v1/spend/records");
    let results: Vec<anyhow::Result<()>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..4)
            .map(|t| {
                let (url, run) = (&url, &run);
                s.spawn(move || -> anyhow::Result<()> {
                    for first in (t * BATCH..RECORDS).step_by(4 * BATCH) {
                        let r = http::post_json(
                            url,
                            &[livegate_tests::internal_token::header()],
                            &records_batch(token, run, first),
                        )?;
                        anyhow::ensure!(r.status == 200, "intake: {} {}", r.status, r.body);
                    }
                    Ok(())
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(anyhow::anyhow!("a poster panicked")))
            })
            .collect()
    });
    results.into_iter().collect::<anyhow::Result<Vec<()>>>()?;
    let intake = started.elapsed();
    let spooled = control_plane_metric(stack, "livegate_spend_spool_records")?;
    anyhow::ensure!(
        spooled as usize == RECORDS,
        "spooled {spooled}, posted {RECORDS}"
    );
    postgres.resume()?;
    let mut first = drained_before;
    let reconnect = wait("the first drained record", || {
        first = control_plane_metric(stack, "livegate_spend_drained_total")?;
        Ok(first > drained_before)
    })?;
    let drain = wait("an empty spool", || {
        Ok(control_plane_metric(stack, "livegate_spend_spool_records")? == 0.0)
    })?;
    let total = control_plane_metric(stack, "livegate_spend_drained_total")? - drained_before;
    // A batch sent to the frozen backend may commit at the thaw after its engine was
    // replaced: the next engine finds those rows there (duplicates, not drained again).
    let duplicates =
        control_plane_metric(stack, "livegate_spend_duplicates_total")? - duplicates_before;
    anyhow::ensure!(
        (total + duplicates) as usize == RECORDS,
        "drained {total} and found {duplicates} already in Postgres, of {RECORDS}"
    );
    // The rate from the first record seen drained: what was drained after it, over the time.
    let drained = total - (first - drained_before);
    Ok(Drain {
        records: RECORDS,
        duplicates,
        intake,
        reconnect,
        drain,
        drained,
    })
}

/// (c): steady metered streaming for `outage + 20` s, Postgres frozen from 10 s to
/// 10 + `outage` s; then every record accounted for.
fn outage(
    stack: &Stack,
    url: &str,
    script: &std::path::Path,
    outage: u64,
) -> anyhow::Result<Outage> {
    step(&format!(
        "outage: {outage} s of frozen Postgres under metered streaming"
    ));
    let postgres = stack
        .postgres
        .as_ref()
        .ok_or_else(|| anyhow::anyhow!("no Postgres"))?;
    settle(stack)?;
    let drained_before = control_plane_metric(stack, "livegate_spend_drained_total")?;
    let rows_before = metered_rows(stack)?;
    let duplicates_before = control_plane_metric(stack, "livegate_spend_duplicates_total")?;
    let queued_before = stack
        .envoy
        .prometheus_counter("livegate_spend_records_queued_total")?;
    let dropped_before = stack
        .envoy
        .prometheus_counter("livegate_spend_records_dropped_total")?;
    let total = outage + 20;
    let spooled_peak = std::thread::scope(|s| -> anyhow::Result<(f64, Duration)> {
        let wrk = s.spawn(|| wrk::run(url, total, 4, Some(script)));
        std::thread::sleep(Duration::from_secs(10));
        postgres.pause()?;
        let mut peak: f64 = 0.0;
        let frozen = Instant::now();
        while frozen.elapsed() < Duration::from_secs(outage) {
            peak = peak.max(control_plane_metric(stack, "livegate_spend_spool_records")?);
            std::thread::sleep(Duration::from_millis(500));
        }
        peak = peak.max(control_plane_metric(stack, "livegate_spend_spool_records")?);
        postgres.resume()?;
        // The backlog is drained when what waits is down to about one filter batch.
        let after_resume = wait("the backlog drained", || {
            Ok(control_plane_metric(stack, "livegate_spend_spool_records")? <= 100.0)
        })?;
        wrk.join()
            .map_err(|_| anyhow::anyhow!("wrk's thread panicked"))??;
        Ok((peak, after_resume))
    })?;
    let (spooled_peak, after_resume) = spooled_peak;
    settle(stack)?;
    let queued = stack
        .envoy
        .prometheus_counter("livegate_spend_records_queued_total")?
        - queued_before;
    let drained = control_plane_metric(stack, "livegate_spend_drained_total")? - drained_before;
    let duplicates =
        control_plane_metric(stack, "livegate_spend_duplicates_total")? - duplicates_before;
    let rows = metered_rows(stack)?.saturating_sub(rows_before) as f64;
    let dropped = stack
        .envoy
        .prometheus_counter("livegate_spend_records_dropped_total")?
        - dropped_before;
    Ok(Outage {
        seconds: outage,
        requests: queued,
        spooled_peak,
        drained,
        duplicates,
        rows,
        after_resume,
        dropped,
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
    let rate = drain.drained / drain.drain.as_secs_f64().max(1e-9);
    let verdict = if rate >= 5000.0 { "met" } else { "not met" };
    let _ = writeln!(
        out,
        "\n**(b) The drain.** {} records posted to `/v1/spend/records` by 4 clients in batches of {BATCH} \
         with Postgres frozen (SIGSTOP): intake {:.0} records/s (each batch `fdatasync`ed before its 200). \
         Postgres thawed: the first record drained after {:.1} s (the supervisor's reconnect), then \
         {:.0} records drained in {:.2} s: **{:.0} records/s** (batches of 500, the default \
         `--spend-drain-batch`; target ≥ 5,000/s: {verdict}). {:.0} of them were found in \
         Postgres already (a batch sent to the frozen backend, committed at the thaw).",
        drain.records,
        drain.records as f64 / drain.intake.as_secs_f64().max(1e-9),
        drain.reconnect.as_secs_f64(),
        drain.drained,
        drain.drain.as_secs_f64(),
        rate,
        drain.duplicates,
    );
    let _ = writeln!(
        out,
        "\n**(c) A database outage under load.** Streamed answers through (iv) with 4 connections \
         for {} s, Postgres frozen for {} s of them: {:.0} responses metered (records queued by the \
         filter), at most {:.0} records waiting in the spool, down to at most 100 (one batch) {:.1} s \
         after the thaw. Afterwards Postgres holds {:.0} new rows: **lost {:.0}** (target 0); \
         dropped by the filter {:.0}. The counters: drained {:.0}, duplicates {:.0} (records the drain found in \
         Postgres already: a statement the frozen backend committed after the thaw, its engine \
         replaced meanwhile, or a filter's retry: the drained counter does not count them).",
        outage.seconds + 20,
        outage.seconds,
        outage.requests,
        outage.spooled_peak,
        outage.after_resume.as_secs_f64(),
        outage.rows,
        (outage.requests - outage.rows).max(0.0),
        outage.dropped,
        outage.drained,
        outage.duplicates,
    );
    out
}

/// The runs with Envoy on a core of its own.
fn pinned_table(out: &mut String, plan: &Plan, pinned: &[PinnedRun]) {
    let [passthrough, unmetered, metered] = pinned else {
        return;
    };
    let _ = writeln!(
        out,
        "\nEnvoy on a core of its own: the Envoys pinned to CPU 0, everything else (the \
         control plane, its engine and Postgres, the upstream, wrk) to CPU 1 (`taskset`); \
         throughput with {} connections, the median of {} runs of {} s each, interleaved. \
         Envoy's core busy near 100 % means the run measured Envoy.\n",
        plan.connections, plan.rounds, plan.seconds
    );
    let _ = writeln!(
        out,
        "| run (pinned) | answers/s | vs passed through | Envoy's core busy |"
    );
    let _ = writeln!(out, "|---|---|---|---|");
    let base = passthrough.answers_per_second.max(1e-9);
    for run in pinned {
        let _ = writeln!(
            out,
            "| {} | {:.0} | {:.2}× | {:.0} % |",
            run.name,
            run.answers_per_second,
            run.answers_per_second / base,
            run.envoy_busy * 100.0
        );
    }
    let cost = (unmetered.answers_per_second - metered.answers_per_second) / base * 100.0;
    let least_busy = pinned
        .iter()
        .map(|run| run.envoy_busy)
        .fold(f64::INFINITY, f64::min);
    if least_busy < SATURATED {
        let _ = writeln!(
            out,
            "\nEnvoy's core was not saturated (down to {:.0} % busy): the other core set the \
             pace, so these runs do not say what metering costs Envoy's throughput (the \
             metered and unmetered runs differ by {cost:.1} %); the CPU per answer above does.",
            least_busy * 100.0
        );
        return;
    }
    let verdict = if cost <= 5.0 { "met" } else { "not met" };
    let _ = writeln!(
        out,
        "\nWith Envoy on a core of its own, metering costs {cost:.1} % of the pass-through \
         filter's streaming throughput (target ≤ 5 %: {verdict})."
    );
}

/// How busy Envoy's core must be for a pinned run to measure Envoy.
const SATURATED: f64 = 0.9;
