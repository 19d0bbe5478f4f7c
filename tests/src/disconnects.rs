//! Clients that go away while their auth check is in flight: the driver the disconnect
//! test and `cargo xtask bench disconnects` share. Each batch is sent while the control
//! plane is stopped (SIGSTOP), so it holds every check: each client sends a protected
//! request with a key nobody has seen, waits until the filter has dispatched all the
//! checks, then closes. The control plane is then resumed, answers the checks of clients
//! that are gone, and empties its accept queue (which would otherwise fill across batches
//! and make Envoy's connects fail before the clients leave).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use nix::sys::signal::Signal;

use crate::control_plane::ControlPlane;
use crate::envoy::Envoy;

/// One held batch (see the module's comment); returns how many clients closed with their
/// check still out (all of them, unless a check failed first).
pub fn held_batch(
    envoy: &Envoy,
    control_plane: &ControlPlane,
    count: usize,
    seed: u64,
    patience: Duration,
) -> anyhow::Result<usize> {
    control_plane.signal(Signal::SIGSTOP)?;
    let waiting = disconnect_batch(envoy, count, seed, patience);
    control_plane.signal(Signal::SIGCONT)?;
    let waiting = waiting?;
    drain(envoy, patience)?;
    Ok(waiting)
}

/// The VM's state once every call has ended and a filter tick has recorded the memory
/// gauge since. The control plane runs: stopped, its change-feed polls would stay open
/// until their timeout and one would nearly always be in flight.
pub fn measure(envoy: &Envoy, patience: Duration) -> anyhow::Result<VmState> {
    drain(envoy, patience)?;
    // Every tick polls the change feed (one worker per tick wins the lease): two more
    // requests to the control plane mean a tick has passed.
    let polls = |e: &Envoy| e.prometheus_counter("envoy_cluster_upstream_rq_total");
    let start = polls(envoy)?;
    crate::poll::until("a filter tick", patience, || {
        (polls(envoy).ok()? >= start + 2.0).then_some(())
    })?;
    vm_state(envoy)
}

/// What the filter's VM and Envoy say, read from Envoy's admin stats.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct VmState {
    /// `livegate_vm_memory_bytes`: the worker VM's linear memory.
    pub memory_bytes: f64,
    /// Auth checks dispatched so far (`livegate_cache_miss_total`).
    pub checks: f64,
    /// Requests to the control plane Envoy still has open (its cluster's `upstream_rq_active`).
    pub calls_open: f64,
}

pub fn vm_state(envoy: &Envoy) -> anyhow::Result<VmState> {
    Ok(VmState {
        memory_bytes: envoy.prometheus_counter("livegate_vm_memory_bytes")?,
        checks: envoy.prometheus_counter("livegate_cache_miss_total")?,
        calls_open: envoy.prometheus_counter("envoy_cluster_upstream_rq_active")?,
    })
}

/// One batch: `count` clients, each with a fresh random key, each gone once every one of
/// their checks is dispatched. `seed` makes the keys of different batches differ. Returns
/// how many clients still had no answer when they closed (their check was in flight).
fn disconnect_batch(
    envoy: &Envoy,
    count: usize,
    seed: u64,
    patience: Duration,
) -> anyhow::Result<usize> {
    let before = vm_state(envoy)?.checks;
    let address = envoy.url().trim_start_matches("http://").to_string();
    let mut clients = Vec::with_capacity(count);
    for i in 0..count {
        let mut socket = TcpStream::connect(&address)?;
        let request = format!(
            "GET /v1/models HTTP/1.1\r\nHost: livegate\r\n\
             Authorization: Bearer sk-gone-{seed:x}-{i:x}\r\n\r\n"
        );
        socket.write_all(request.as_bytes())?;
        clients.push(socket);
    }
    let wanted = before + count as f64;
    crate::poll::until("every check of the batch to be in flight", patience, || {
        let checks = vm_state(envoy).ok()?.checks;
        (checks >= wanted).then_some(())
    })?;
    let mut waiting = 0;
    for socket in &mut clients {
        socket.set_nonblocking(true)?;
        let mut byte = [0u8; 1];
        let nothing_yet = matches!(
            socket.read(&mut byte),
            Err(error) if error.kind() == std::io::ErrorKind::WouldBlock
        );
        waiting += usize::from(nothing_yet);
    }
    // Each close resets its stream while the check is still out.
    drop(clients);
    Ok(waiting)
}

/// Waits until Envoy has no call to the control plane open (each answered, failed, timed
/// out or cancelled), so the next batch finds room in the cluster's circuit breakers.
pub fn drain(envoy: &Envoy, patience: Duration) -> anyhow::Result<()> {
    crate::poll::until("every call to the control plane to end", patience, || {
        let state = vm_state(envoy).ok()?;
        (state.calls_open == 0.0).then_some(())
    })
}
