//! Metering at a provider's pace: a stream written one event at a time, so that every
//! event reaches the filter as a body chunk of its own (a callback, and a copy when metered).

use std::fmt::Write as _;

use livegate_tests::envoy::Envoy;
use livegate_tests::stack::Stack;
use serde_json::json;

use super::cpu::{added, cpu_per_answer, Cpu, CPU_ROUNDS};
use super::stream_script;
use crate::bench::wrk::{Plan, Target};

/// Content chunks of a paced answer (plus the stop and usage chunks and `[DONE]`).
const PACED_EVENTS: u64 = 50;
/// The demo's gap between two events: far longer than Envoy takes to pass one on, so
/// each arrives alone.
const GAP_MS: u64 = 2;
/// Connections: enough answers in flight for the CPU counters' 10 ms ticks to resolve a
/// few µs per answer, few enough that no core is saturated.
const PACED_CONNECTIONS: u32 = 32;

/// The paced runs' CPU per answer.
pub(super) struct Paced {
    plan: Plan,
    cpu: Vec<Cpu>,
}

/// The same setups (the same Envoys), each answer paced; runs twice the plan's length.
pub(super) fn run(
    stack: &Stack,
    key: &str,
    targets: &[Target],
    envoys: &[&Envoy],
    plan: &Plan,
) -> anyhow::Result<Paced> {
    let fields = json!({"livegate_events": PACED_EVENTS, "livegate_event_gap_ms": GAP_MS});
    let script = stream_script(stack, key, "paced.lua", fields)?;
    let targets: Vec<Target> = targets
        .iter()
        .map(|t| Target {
            name: t.name,
            url: t.url.clone(),
            script: script.clone(),
        })
        .collect();
    let plan = Plan {
        connections: PACED_CONNECTIONS,
        // As many rounds as the one-chunk CPU table: paired differences need them.
        rounds: CPU_ROUNDS,
        seconds: plan.seconds * 2,
        ..*plan
    };
    let cpu = cpu_per_answer(stack, &targets, envoys, &plan)?;
    Ok(Paced { plan, cpu })
}

/// The paced runs' section of the metering table.
pub(super) fn table(out: &mut String, paced: &Paced) {
    let events = PACED_EVENTS + 3;
    let Plan {
        connections,
        rounds,
        seconds,
        ..
    } = paced.plan;
    let _ = writeln!(
        out,
        "\n**(d) At a provider's pace.** Providers write each event as its tokens are generated, \
         so a stream reaches Envoy as many body chunks: each one a call into the filter and, \
         metered, a copy of it into the filter. The demo answered `livegate_events: {PACED_EVENTS}` \
         with `livegate_event_gap_ms: {GAP_MS}` ({events} events, each written on its own \
         {GAP_MS} ms after the last, chunked); {connections} connections, {rounds} runs of \
         {seconds} s each, interleaved; CPU per answer (medians).\n"
    );
    let _ = writeln!(out, "| run | Envoy CPU per answer | per event |");
    let _ = writeln!(out, "|---|---|---|");
    for c in &paced.cpu {
        let _ = writeln!(
            out,
            "| {} | {:.0} µs | {:.1} µs |",
            c.name,
            c.envoy_us,
            c.envoy_us / events as f64,
        );
    }
    let [_, unmetered, metered, floor, floor_reading] = paced.cpu.as_slice() else {
        return;
    };
    let (Some(metering), Some(reading)) = (added(unmetered, metered), added(floor, floor_reading))
    else {
        return;
    };
    let _ = writeln!(
        out,
        "\nAt this pace metering adds {} of Envoy CPU per answer ({:.1} µs per event), {:.1} % \
         of the metered run's Envoy CPU. Copying each chunk into the VM, and nothing more, adds \
         {} to the least Wasm filter ({:.1} µs per event).",
        metering.described(),
        metering.median_us / events as f64,
        metering.median_us / metered.envoy_us.max(1e-9) * 100.0,
        reading.described(),
        reading.median_us / events as f64,
    );
}
