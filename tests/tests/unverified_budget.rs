//! The filter's budget for bodies whose keys are being checked (`max_unverified_body_bytes`,
//! docs/operations.md "Memory"), with the checks hanging behind a fault: the body past it is
//! shed at once, and bodies whose clients leave mid-way give their bytes back, so a crowd
//! of abandoned uploads cannot leave a worker shedding every client after it.

#![allow(clippy::unwrap_used, clippy::panic)] // a test file: failures are panics

use std::time::Duration;

use livegate_tests::http::{self, PartialBody, Response};
use livegate_tests::poll;
use livegate_tests::stack::{Stack, StackOptions};
use nix::sys::signal::Signal;
use serde_json::json;

const MIB: usize = 1024 * 1024;
/// The largest body a route takes.
const BODY: usize = 8 * MIB;
const PATIENCE: Duration = Duration::from_secs(20);
const PATH: &str = "/v1/chat/completions";

/// A stack of one worker whose unverified budget is 1 MiB and whose checks may wait 30 s.
fn budget_stack(control_plane_args: &[&str]) -> Stack {
    Stack::start(StackOptions {
        concurrency: 1,
        filter_config: json!({"max_unverified_body_bytes": MIB, "auth_timeout_ms": 30000})
            .to_string(),
        control_plane_args: control_plane_args.iter().map(|a| a.to_string()).collect(),
        ..StackOptions::full()
    })
    .unwrap()
}

/// The fault, on and off: the control plane stopped.
fn control_plane_stopped(stack: &Stack) -> impl Fn(bool) + '_ {
    let control_plane = stack.control_plane.as_ref().unwrap();
    move |on| {
        let signal = if on { Signal::SIGSTOP } else { Signal::SIGCONT };
        control_plane.signal(signal).unwrap();
    }
}

/// The fault, on and off: Postgres frozen (its backends too). The control plane waits for
/// it as long as the filter waits for the control plane, so the checks of keys it has not
/// seen hang.
fn postgres_frozen(stack: &Stack) -> impl Fn(bool) + '_ {
    let postgres = stack.postgres.as_ref().unwrap();
    move |on| {
        if on {
            postgres.pause().unwrap();
        } else {
            postgres.resume().unwrap();
        }
    }
}

const POSTGRES_PATIENT: &[&str] = &["--auth-db-deadline-ms", "25000"];

/// A key nobody issued, its own for each name: its check reaches the control plane.
fn stranger(name: &str) -> String {
    format!(
        "Bearer sk-stranger-{name}-{}-0123456789",
        std::process::id()
    )
}

fn send(stack: &Stack, name: &str, size: usize) -> Response {
    let key = stranger(name);
    http::post_sized_body(&stack.envoy.url(), PATH, &[("authorization", &key)], size).unwrap()
}

fn shed_total(stack: &Stack) -> f64 {
    let name = "livegate_unverified_body_shed_total";
    stack.envoy.prometheus_counter(name).unwrap()
}

/// Polls until the gateway listener has read at least `bytes` in all, or `instead` holds.
fn until_read_or(stack: &Stack, bytes: usize, what: &str, instead: impl Fn() -> bool) {
    poll::until(what, PATIENCE, || {
        let read = stack
            .envoy
            .gateway_stat("envoy_http_downstream_cx_rx_bytes_total")?;
        (read >= bytes as f64 || instead()).then_some(())
    })
    .unwrap();
}

/// The first stranger's 8 MiB body is held whole (one body alone may exceed the budget),
/// the next is answered 503 at once and its body freed. Once the fault ends and the first
/// check is answered, the budget is whole again: another stranger's body is held and
/// refused by the control plane, not shed.
fn a_body_past_the_budget_is_shed_while(stack: &Stack, fault: impl Fn(bool)) {
    fault(true);
    let held = std::thread::scope(|s| {
        let held = s.spawn(|| send(stack, "held", BODY));
        until_read_or(stack, BODY, "Envoy to read the first body whole", || false);
        let shed = send(stack, "shed", 2 * MIB);
        fault(false);
        assert_eq!(shed.status, 503, "{}", shed.body);
        assert!(
            shed.body.contains("unverified_bodies_full"),
            "{}",
            shed.body
        );
        assert_eq!(shed.header("retry-after"), Some("5"));
        held.join().unwrap()
    });
    assert_eq!(
        held.status, 401,
        "the held body's key, answered: {}",
        held.body
    );
    assert_eq!(shed_total(stack), 1.0);
    let after = send(stack, "after", 2 * MIB);
    assert_eq!(
        after.status, 401,
        "held and checked, not shed: {}",
        after.body
    );
    assert_eq!(shed_total(stack), 1.0, "nothing more shed");
}

#[test]
fn a_body_past_the_workers_unverified_budget_is_shed_with_the_control_plane_stopped() {
    let stack = budget_stack(&[]);
    a_body_past_the_budget_is_shed_while(&stack, control_plane_stopped(&stack));
}

#[test]
fn a_body_past_the_workers_unverified_budget_is_shed_with_postgres_frozen() {
    let stack = budget_stack(POSTGRES_PATIENT);
    a_body_past_the_budget_is_shed_while(&stack, postgres_frozen(&stack));
}

/// Clients that each send 2 MiB of a declared 8 MiB body, one after another, and leave
/// (a close, then a reset, twice) while their checks hang: each is held alone (the budget
/// is empty when it arrives) and gives its bytes back when it leaves. Were one leave to
/// keep its bytes, the budget would stay past its 1 MiB and every body after would be
/// shed: the last client's 512 KiB is held and checked instead, and nothing is shed.
fn abandoned_bodies_give_their_bytes_back_while(stack: &Stack, fault: impl Fn(bool)) {
    let sent = 2 * MIB;
    fault(true);
    for (i, reset) in [false, true, false, true].into_iter().enumerate() {
        let key = stranger(&format!("leaves-{i}"));
        let client = PartialBody::start(
            &stack.envoy.url(),
            PATH,
            &[("authorization", &key)],
            BODY,
            sent,
        )
        .unwrap();
        // Read whole, or (were the budget still holding a leaver's bytes) shed.
        let read = (i + 1) * sent;
        until_read_or(stack, read, "Envoy to read what the client sent", || {
            shed_total(stack) > 0.0
        });
        assert_eq!(
            shed_total(stack),
            0.0,
            "client {i} shed: a leaver kept its bytes"
        );
        client.leave(reset).unwrap();
        poll::until("Envoy to close the client's connection", PATIENCE, || {
            let active = stack
                .envoy
                .gateway_stat("envoy_http_downstream_cx_active")?;
            (active == 0.0).then_some(())
        })
        .unwrap();
    }
    let last = std::thread::scope(|s| {
        let last = s.spawn(|| send(stack, "after-the-leavers", MIB / 2));
        // Read whole and held, or (were the budget still holding a leaver's bytes) shed.
        let read = 4 * sent + MIB / 2;
        until_read_or(stack, read, "Envoy to read the last body", || {
            last.is_finished()
        });
        fault(false);
        last.join().unwrap()
    });
    assert_eq!(last.status, 401, "held and checked: {}", last.body);
    assert_eq!(shed_total(stack), 0.0, "nothing shed");
}

#[test]
fn abandoned_bodies_give_their_bytes_back_with_the_control_plane_stopped() {
    let stack = budget_stack(&[]);
    abandoned_bodies_give_their_bytes_back_while(&stack, control_plane_stopped(&stack));
}

#[test]
fn abandoned_bodies_give_their_bytes_back_with_postgres_frozen() {
    let stack = budget_stack(POSTGRES_PATIENT);
    abandoned_bodies_give_their_bytes_back_while(&stack, postgres_frozen(&stack));
}
