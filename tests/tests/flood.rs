//! Issue #14, item 3: a flood of random keys neither starves liveness nor the keys that
//! are real: a warmed key keeps getting 200, a key generated during the flood works, the
//! database connection is never re-established, and no random key is ever admitted.
#![allow(clippy::unwrap_used, clippy::panic)]

use std::time::{Duration, Instant};

use livegate_tests::flood::RandomKeyFlood;
use livegate_tests::http;
use livegate_tests::lab::prober::{ProbePlan, Probers};
use livegate_tests::lab::recorder;
use livegate_tests::stack::{Stack, StackOptions};
use serde_json::json;

/// The flood: 30 s of random keys at 2,000 requests/s asked (this machine's debug
/// stack achieves a fraction of that; what it achieved is printed).
const FLOOD: Duration = Duration::from_secs(30);
const FLOOD_RATE: u64 = 2_000;
const FLOOD_THREADS: u64 = 16;
const PATIENCE: Duration = Duration::from_secs(20);

fn bearer(key: &str) -> String {
    format!("Bearer {key}")
}

fn reconnects(stack: &Stack) -> u64 {
    let control_plane = stack.control_plane.as_ref().unwrap();
    let url = format!("{}/health/readiness", control_plane.base_url());
    http::get(&url, &[]).unwrap().json().unwrap()["reconnects"]
        .as_u64()
        .unwrap()
}

fn new_key(stack: &Stack, alias: &str) -> String {
    let created = stack
        .admin("/key/generate", &json!({"key_alias": alias}))
        .unwrap();
    created["key"].as_str().unwrap().to_string()
}

#[test]
fn a_random_key_flood_leaves_liveness_a_warmed_key_and_a_new_key_served() {
    let stack = Stack::start(StackOptions::full()).unwrap();
    let warmed = new_key(&stack, "flood-warmed");
    let models = stack.url("/v1/models");
    let warm = http::get(&models, &[("authorization", &bearer(&warmed))]).unwrap();
    assert_eq!(
        warm.status, 200,
        "the warmed key is served before the flood"
    );
    let reconnects_before = reconnects(&stack);

    let epoch = Instant::now();
    let liveness = Probers::start(
        &ProbePlan {
            url: format!("{}/health/liveliness", stack.envoy.probe_url()),
            headers: Vec::new(),
            clients: 2,
            period: Duration::from_millis(20),
            timeout: Duration::from_secs(5),
        },
        epoch,
    );
    let warmed_client = Probers::start(
        &ProbePlan {
            url: models.clone(),
            headers: vec![("authorization".into(), bearer(&warmed))],
            clients: 1,
            period: Duration::from_millis(10),
            timeout: Duration::from_secs(5),
        },
        epoch,
    );
    let address = stack.envoy.url().trim_start_matches("http://").to_string();
    let flood = RandomKeyFlood::start(&address, FLOOD_THREADS, FLOOD_RATE);

    // A third of the way in, a key is generated and must work while the flood goes on.
    std::thread::sleep(FLOOD / 3);
    let fresh = new_key(&stack, "flood-fresh");
    let mut attempts = 0;
    let fresh_status = livegate_tests::poll::until("the new key to be served", PATIENCE, || {
        attempts += 1;
        let status = http::get(&models, &[("authorization", &bearer(&fresh))])
            .ok()?
            .status;
        (status == 200).then_some(status)
    });
    std::thread::sleep(FLOOD.saturating_sub(epoch.elapsed()));

    let tally = flood.stop();
    let warmed_samples = recorder::summarize(&warmed_client.stop()).unwrap();
    let liveness_samples = recorder::summarize(&liveness.stop()).unwrap();
    eprintln!(
        "flood: {:.0} requests/s ({} sent; {}); the new key was served after {attempts} attempt(s); \
         warmed key {} requests, p99 {:.1} ms; liveness {} probes, max {:.1} ms",
        tally.requests_per_second(),
        tally.sent,
        tally.describe(),
        warmed_samples.count,
        warmed_samples.p99_ms,
        liveness_samples.count,
        liveness_samples.max_ms,
    );

    assert!(tally.sent > 0, "the flood sent nothing");
    let admitted: u64 = tally.statuses.range(200..300).map(|(_, n)| n).sum();
    assert_eq!(
        admitted,
        0,
        "random keys were admitted: {}",
        tally.describe()
    );
    assert!(
        fresh_status.is_ok(),
        "a key generated during the flood: {fresh_status:?}"
    );
    assert_eq!(
        warmed_samples.percent_2xx, 100.0,
        "the warmed key was refused or unanswered during the flood: {warmed_samples:?}"
    );
    assert_eq!(
        liveness_samples.percent_2xx, 100.0,
        "liveness failed during the flood: {liveness_samples:?}"
    );
    assert_eq!(
        reconnects(&stack),
        reconnects_before,
        "the control plane re-established its database connection during the flood"
    );
}
