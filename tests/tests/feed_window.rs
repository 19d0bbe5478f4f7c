//! Revocation cannot fall off the filter's change window: a key blocked just before more
//! changes than the window holds (1,100 keys deleted in one call), all between two polls
//! of the change feed, is refused at every worker of the Envoy, although its own change
//! left the window before any worker saw it; a good key is served again after.

#![allow(clippy::unwrap_used, clippy::panic)] // a test file: failures are panics

use std::time::Duration;

use livegate_tests::http::{self, Response};
use livegate_tests::poll;
use livegate_tests::stack::{Stack, StackOptions};
use serde_json::json;

/// A slow feed (the burst lands between two polls), allows cached far longer than the
/// test (only the feed can revoke them), and no spend records (so that every request to
/// the control plane's cluster while no client calls is a poll of the feed).
const FILTER_CONFIG: &str = r#"{"change_poll_ms": 10000,
    "metering": {"enabled": false},
    "cache": {"allow_ttl_ms": 600000, "stale_if_error_ms": 600000}}"#;
const PATIENCE: Duration = Duration::from_secs(40);
/// More than the filter's window (`livegate_filter::feed::WINDOW`, 1,024).
const BURST: usize = 1_100;
/// Answers in a row that show a change applied at every worker (see the constant's reason).
const IN_A_ROW: usize = poll::EVERY_WORKER_IN_A_ROW;

fn call(stack: &Stack, key: &str) -> Response {
    let bearer = format!("Bearer {key}");
    http::get(&stack.url("/v1/models"), &[("authorization", &bearer)]).unwrap()
}

fn at_every_worker(stack: &Stack, key: &str, status: u16, what: &str) {
    poll::until(what, PATIENCE, || {
        (0..IN_A_ROW)
            .all(|_| call(stack, key).status == status)
            .then_some(())
    })
    .unwrap();
}

/// Requests from the filter to the control plane so far (auth checks and feed polls).
fn control_plane_calls(stack: &Stack) -> f64 {
    stack
        .envoy
        .cluster_requests("livegate_control_plane")
        .unwrap()
}

#[test]
fn a_revocation_followed_by_more_changes_than_the_window_holds_is_refused_at_every_worker() {
    let stack = Stack::start(StackOptions {
        filter_config: FILTER_CONFIG.to_string(),
        concurrency: 2,
        control_plane_args: vec!["--auth-cache-ttl-secs".into(), "3600".into()],
        ..StackOptions::full()
    })
    .unwrap();
    let victim = stack.generate_key(&json!({"key_alias": "victim"})).unwrap();
    let good = stack.generate_key(&json!({"key_alias": "good"})).unwrap();
    let burst: Vec<String> = (0..BURST)
        .map(|_| stack.generate_key(&json!({})).unwrap())
        .collect();
    // Cached at both workers: from here on only the feed can take the victim's allow away.
    at_every_worker(&stack, &victim, 200, "the victim cached at every worker");
    at_every_worker(&stack, &good, 200, "the good key cached at every worker");

    // Right after a poll: the block and the burst both land before the next one, 10 s on.
    let before = control_plane_calls(&stack);
    poll::until("a poll of the change feed", PATIENCE, || {
        (control_plane_calls(&stack) > before).then_some(())
    })
    .unwrap();
    stack.admin("/key/block", &json!({"key": victim})).unwrap();
    let deleted = stack.admin("/key/delete", &json!({"keys": burst})).unwrap();
    assert_eq!(deleted["deleted_keys"].as_array().unwrap().len(), BURST);

    at_every_worker(&stack, &victim, 403, "the victim refused at every worker");
    let gaps = stack
        .envoy
        .prometheus_counter("livegate_change_feed_gaps_total")
        .unwrap();
    assert!(gaps >= 1.0, "no worker noticed the gap: {gaps}");
    // The workers forgot their allows, not the keys: the good key is checked and served.
    at_every_worker(&stack, &good, 200, "the good key served again");
    let blocked = call(&stack, &victim);
    assert_eq!(
        blocked.json().unwrap()["error"]["reason"],
        "key_blocked",
        "{}",
        blocked.body
    );
}
