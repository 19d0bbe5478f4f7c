//! `cargo xtask bench limits`: on 2 Envoys × 2 control planes, a key flooded at ten times
//! its `rpm_limit` for several windows: admitted per 60 s window against the limit (and
//! the most in any sliding 60 s), then the same with Postgres frozen for one window.

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use livegate_tests::fleet::{Fleet, FleetOptions};
use livegate_tests::http;
use serde_json::json;

/// A rate limit's window (the contract's `WINDOW_MS`).
const WINDOW_MS: u64 = 60_000;

/// Requests per window: ten times the limit.
const FLOOD_FACTOR: u64 = 10;

/// One request's time since the flood began and whether it reached the upstream.
struct Sent {
    at_ms: u64,
    admitted: bool,
    status: u16,
}

pub fn run(limit: u64, windows: u64) -> anyhow::Result<()> {
    let fleet = Fleet::start(FleetOptions::new(2, 2))?;
    let key = generate(&fleet, limit)?;
    let shared = flood(&fleet, &key, limit, windows)?;
    let fresh = generate(&fleet, limit)?;
    fleet.postgres.pause()?;
    let frozen = flood(&fleet, &fresh, limit, 1);
    fleet.postgres.resume()?;
    let frozen = frozen?;
    let table = table(
        limit,
        &[("Postgres up", &shared), ("Postgres frozen", &frozen)],
    );
    eprintln!("{table}");
    super::markdown::update_benchmarks_doc("limits", &table)
}

fn generate(fleet: &Fleet, limit: u64) -> anyhow::Result<String> {
    let created = fleet.admin_via(0, "/key/generate", &json!({"rpm_limit": limit}))?;
    created["key"]
        .as_str()
        .map(str::to_string)
        .ok_or_else(|| anyhow::anyhow!("no key in {created}"))
}

/// `FLOOD_FACTOR × limit` requests per window, evenly paced, alternating Envoys.
fn flood(fleet: &Fleet, key: &str, limit: u64, windows: u64) -> anyhow::Result<Vec<Sent>> {
    let bearer = format!("Bearer {key}");
    let body = json!({"model": "livegate-demo", "messages": [{"role": "user", "content": "abcd"}]})
        .to_string();
    let total = FLOOD_FACTOR * limit * windows;
    let gap = Duration::from_millis(WINDOW_MS / (FLOOD_FACTOR * limit).max(1));
    let start = Instant::now();
    let mut sent = Vec::new();
    for i in 0..total {
        let due = start + gap * u32::try_from(i)?;
        std::thread::sleep(due.saturating_duration_since(Instant::now()));
        let base = fleet.envoys[usize::try_from(i)? % fleet.envoys.len()].url();
        let at_ms = u64::try_from(start.elapsed().as_millis())?;
        let response = http::post_raw(
            &format!("{base}/v1/chat/completions"),
            &[("authorization", bearer.as_str())],
            "application/json",
            &body,
        )?;
        let admitted = response.status == 200 && response.body.contains("\"choices\"");
        sent.push(Sent {
            at_ms,
            admitted,
            status: response.status,
        });
    }
    Ok(sent)
}

/// The most admissions in any 60 s span.
fn most_in_any_window(sent: &[Sent]) -> usize {
    let times: Vec<u64> = sent
        .iter()
        .filter(|s| s.admitted)
        .map(|s| s.at_ms)
        .collect();
    (0..times.len())
        .map(|i| {
            times[i..]
                .iter()
                .take_while(|&&t| t < times[i] + WINDOW_MS)
                .count()
        })
        .max()
        .unwrap_or(0)
}

fn table(limit: u64, runs: &[(&str, &Vec<Sent>)]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "Measured by `cargo xtask bench limits` on: {}.",
        super::machine::describe()
    );
    let _ = writeln!(
        out,
        "2 Envoys (2 workers each) × 2 control planes over one Postgres; one key with \
         `rpm_limit` {limit} flooded at {FLOOD_FACTOR}× its limit ({} requests per 60 s, \
         evenly paced, alternating Envoys); each control plane balanced by every Envoy. \
         Windows are counted from the flood's first request.\n",
        FLOOD_FACTOR * limit
    );
    let _ = writeln!(
        out,
        "| run | window | sent | admitted | limit | over-admitted | 429 | other |"
    );
    let _ = writeln!(out, "|---|---|---|---|---|---|---|---|");
    for (name, sent) in runs {
        let windows = sent.last().map_or(0, |s| s.at_ms / WINDOW_MS + 1);
        for w in 0..windows {
            let inside: Vec<&Sent> = sent.iter().filter(|s| s.at_ms / WINDOW_MS == w).collect();
            let admitted = inside.iter().filter(|s| s.admitted).count() as u64;
            let limited = inside.iter().filter(|s| s.status == 429).count();
            let other = inside.len() - limited - admitted as usize;
            let _ = writeln!(
                out,
                "| {name} | {} | {} | {admitted} | {limit} | {} | {limited} | {other} |",
                w + 1,
                inside.len(),
                admitted.saturating_sub(limit),
            );
        }
        let _ = writeln!(
            out,
            "| {name} | most in any 60 s | | {} | {limit} | {} | | |",
            most_in_any_window(sent),
            (most_in_any_window(sent) as u64).saturating_sub(limit)
        );
    }
    let _ = writeln!(
        out,
        "\nTargets: over-admission 0 with Postgres up (each admission is a compare and swap of \
         the key's window row); with Postgres frozen each control plane admits from what it \
         knows, so at most the limit per control plane (here 2 × {limit}), plus each \
         Envoy worker's outage share for checks answered later than the filter waits."
    );
    out
}
