//! The CPU-per-answer runs: where an answer's time goes, process by process, and what
//! one setup adds to another's Envoy round by round.

use std::fmt::Write as _;

use livegate_tests::envoy::Envoy;
use livegate_tests::stack::Stack;

use super::settle;
use crate::bench::wrk::{self, Plan, Target};
use crate::step;

/// Connections of the CPU-per-answer runs: few enough that no core is saturated, so a
/// process's CPU time is its work and not its wait for a contended core.
pub(super) const CPU_CONNECTIONS: u32 = 2;
/// Rounds of the CPU-per-answer runs: a paired difference of a few tens of µs needs more
/// than three on a VM whose speed drifts from minute to minute.
pub(super) const CPU_ROUNDS: usize = 5;

/// CPU time per answer of one setup, in µs (medians over the rounds): its Envoy's, and
/// the ledger's (the control plane; every Postgres process).
pub(super) struct Cpu {
    pub(super) name: &'static str,
    pub(super) envoy_us: f64,
    /// Envoy's CPU per answer, round by round (for differences paired by round).
    envoy_rounds: Vec<f64>,
    /// With its database engine.
    control_plane_us: f64,
    postgres_us: f64,
}

/// What one setup adds to another's Envoy CPU per answer: each round's run against the
/// other's run of the same round (so a slower hour of the machine cancels out).
pub(super) struct AddedCpu {
    pub(super) median_us: f64,
    low_us: f64,
    high_us: f64,
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
pub(super) fn cpu_per_answer(
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
pub(super) fn added(base: &Cpu, with: &Cpu) -> Option<AddedCpu> {
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
pub(super) fn cpu_table(out: &mut String, plan: &Plan, cpu: &[Cpu]) {
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
    pub(super) fn described(&self) -> String {
        format!(
            "{:.0} µs (each round's run less the other's in the same round: {:.0} to {:.0} µs)",
            self.median_us, self.low_us, self.high_us
        )
    }
}
