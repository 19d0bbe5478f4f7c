//! `cargo xtask bench disconnects`: a million clients that leave while their auth check is
//! in flight (issue #14, item 12), against the real stack in release mode; the filter VM's
//! memory is read as it goes, so a leak per disconnect would show as a steady climb.

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use livegate_tests::disconnects::{held_batch, measure, VmState};
use livegate_tests::stack::{Stack, StackOptions};

use crate::step;

const PATIENCE: Duration = Duration::from_secs(120);
/// Clients per batch (each batch held by a stopped control plane, then drained).
const BATCH: usize = 500;
/// Batches before the first reading: the VM's memory is a high-water mark.
const WARM_UP: u64 = 10;
/// Readings taken over the run.
const READINGS: u64 = 10;

pub fn run(disconnects: u64) -> anyhow::Result<()> {
    let stack = Stack::start(StackOptions {
        filter_config: r#"{"auth_timeout_ms": 3000}"#.to_string(),
        ..StackOptions::full()
    })?;
    let control_plane = stack
        .control_plane
        .as_ref()
        .ok_or_else(|| anyhow::anyhow!("no control plane"))?;
    let batches = disconnects.div_ceil(BATCH as u64).max(READINGS);
    let per_reading = batches.div_ceil(READINGS);
    step(&format!(
        "{WARM_UP} warm-up batches, then {batches} batches of {BATCH} clients"
    ));
    for seed in 0..WARM_UP {
        held_batch(&stack.envoy, control_plane, BATCH, seed, PATIENCE)?;
    }
    let first = measure(&stack.envoy, PATIENCE)?;
    let started = Instant::now();
    let mut readings = Vec::new();
    let (mut done, mut in_flight) = (0u64, 0usize);
    while done < batches {
        let seed = WARM_UP + done;
        in_flight += held_batch(&stack.envoy, control_plane, BATCH, seed, PATIENCE)?;
        done += 1;
        if done % per_reading == 0 || done == batches {
            let state = measure(&stack.envoy, PATIENCE)?;
            eprintln!(
                "   {} disconnects: VM memory {} bytes",
                done * BATCH as u64,
                state.memory_bytes
            );
            readings.push((done * BATCH as u64, in_flight, state));
        }
    }
    let table = table(&first, &readings, started.elapsed());
    eprintln!("{table}");
    super::markdown::update_benchmarks_doc("disconnects", &table)
}

fn table(first: &VmState, readings: &[(u64, usize, VmState)], elapsed: Duration) -> String {
    let mut out = String::new();
    let total = readings.last().map_or(0, |(n, _, _)| *n);
    let _ = writeln!(
        out,
        "Measured by `cargo xtask bench disconnects` on: {}.",
        super::machine::describe()
    );
    let _ = writeln!(
        out,
        "The real stack in release mode, Envoy with 1 worker, `auth_timeout_ms` 3000. Batches \
         of {BATCH} clients, each sent while the control plane is stopped, each client closing \
         once every check of its batch is dispatched; the control plane is then resumed to \
         answer the checks of clients that are gone. {total} disconnects after {WARM_UP} \
         warm-up batches took {:.0} s ({:.0} disconnects/s). The gauge \
         `livegate_vm_memory_bytes` after the warm-up: {} bytes.\n",
        elapsed.as_secs_f64(),
        total as f64 / elapsed.as_secs_f64().max(f64::EPSILON),
        first.memory_bytes,
    );
    let _ = writeln!(
        out,
        "| disconnects after the warm-up | with the check in flight | VM memory | growth |"
    );
    let _ = writeln!(out, "|---|---|---|---|");
    for (disconnects, in_flight, state) in readings {
        let _ = writeln!(
            out,
            "| {disconnects} | {in_flight} | {} B | {:+} B |",
            state.memory_bytes,
            state.memory_bytes - first.memory_bytes
        );
    }
    out
}
