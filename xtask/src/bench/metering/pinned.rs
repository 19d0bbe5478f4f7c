//! The setups with Envoy on a core of its own (`taskset`): its throughput, not mixed with
//! the ledger's or the load generator's work on the same cores.

use std::fmt::Write as _;

use livegate_tests::envoy::Envoy;
use livegate_tests::stack::Stack;

use super::settle;
use crate::bench::wrk::{self, Plan, Target};
use crate::step;

/// Answers/s of one setup with Envoy on a core of its own, and how busy that core was.
pub(super) struct PinnedRun {
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
pub(super) fn pinned(
    stack: &Stack,
    targets: &[Target],
    envoys: &[&Envoy],
    plan: &Plan,
) -> anyhow::Result<Vec<PinnedRun>> {
    let Some(mut pins) = crate::bench::pinning::Pinned::new() else {
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

/// The runs with Envoy on a core of its own.
pub(super) fn pinned_table(out: &mut String, plan: &Plan, pinned: &[PinnedRun]) {
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
