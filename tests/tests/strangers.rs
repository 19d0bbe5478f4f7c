//! No memory for strangers (issue 24, item 4): the filter answers a request without a valid
//! key from its headers, before anything buffers its body, and Envoy's heap stays within
//! the overload manager's bound while dozens of clients each send an 8 MiB body; the
//! kubelet's liveness probe is answered 200 throughout, and a real key's big body still
//! goes through.

#![allow(clippy::unwrap_used, clippy::panic)] // a test file: failures are panics

use std::time::{Duration, Instant};

use livegate_tests::big_bodies::{self, Credential, MemoryPeak, MemoryWatch};
use livegate_tests::envoy::EnvoyLimits;
use livegate_tests::lab::prober::{ProbePlan, Probers};
use livegate_tests::lab::recorder::{self, Summary};
use livegate_tests::stack::{Stack, StackOptions};
use livegate_tests::{http, poll};
use serde_json::json;

/// More clients than the 60, each with the largest body a route takes.
const CLIENTS: usize = 64;
const BODY: usize = 8 * 1024 * 1024;
/// The heap bound for these tests: a quarter of what the clients send in all, so holding
/// their bodies would cross it several times over.
const MAX_HEAP: u64 = 128 * 1024 * 1024;

const PATIENCE: Duration = Duration::from_secs(20);

fn start() -> Stack {
    Stack::start(StackOptions {
        envoy_limits: EnvoyLimits {
            max_heap: MAX_HEAP,
            ..EnvoyLimits::default()
        },
        ..StackOptions::full()
    })
    .unwrap()
}

/// Sends the clients while watching Envoy's memory and probing its liveness.
fn flood(stack: &Stack, credential: Credential) -> (Vec<(u16, u64)>, MemoryPeak, Summary) {
    let watch = MemoryWatch::start(&stack.envoy.admin_url(), stack.envoy.pid());
    let liveness = Probers::start(
        &ProbePlan {
            url: format!("{}/health/liveliness", stack.envoy.probe_url()),
            headers: Vec::new(),
            clients: 2,
            period: Duration::from_millis(20),
            timeout: Duration::from_secs(5),
        },
        Instant::now(),
    );
    let statuses = big_bodies::send(
        &stack.envoy.url(),
        "/v1/chat/completions",
        CLIENTS,
        BODY,
        credential,
    );
    let peak = watch.stop();
    let liveness = recorder::summarize(&liveness.stop()).unwrap();
    eprintln!(
        "{credential:?}: {}; Envoy peak: allocated {} MiB, heap in use {} MiB, RSS {} MiB \
         ({} samples); liveness {} probes, {:.1} % 2xx, max {:.1} ms",
        big_bodies::describe(&statuses),
        peak.allocated >> 20,
        peak.heap_in_use >> 20,
        peak.rss >> 20,
        peak.samples,
        liveness.count,
        liveness.percent_2xx,
        liveness.max_ms
    );
    (statuses.into_iter().collect(), peak, liveness)
}

fn assert_bounded(peak: &MemoryPeak, liveness: &Summary) {
    assert!(peak.samples > 0, "Envoy's memory was never read");
    assert!(
        peak.heap_in_use <= MAX_HEAP && peak.allocated <= MAX_HEAP,
        "Envoy's heap crossed its bound of {MAX_HEAP}: {peak:?}"
    );
    assert_eq!(liveness.percent_2xx, 100.0, "liveness: {liveness:?}");
}

/// A real key's request with an 8 MiB body on a model route: read whole, admitted.
fn a_keyed_big_body_goes_through(stack: &Stack) {
    let created = stack.admin("/key/generate", &json!({"key_alias": "big-body"}));
    let bearer = format!("Bearer {}", created.unwrap()["key"].as_str().unwrap());
    let answer = http::post_sized_body(
        &stack.envoy.url(),
        "/v1/chat/completions",
        &[("authorization", &bearer)],
        BODY,
    )
    .unwrap();
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(answer.json().unwrap()["livegate"]["body_bytes"], BODY);
}

#[test]
fn keyless_clients_sending_8_mib_bodies_are_refused_from_their_headers_within_the_heap_bound() {
    let stack = start();
    let (statuses, peak, liveness) = flood(&stack, Credential::None);
    assert_eq!(statuses, vec![(401, CLIENTS as u64)], "every one refused");
    assert_bounded(&peak, &liveness);
    // Nothing was buffered for them: Envoy read less from all of them together than two of
    // their bodies (it answered each from its headers and closed), where holding the bodies
    // first would have read all 512 MiB. Read once the admin stats count every answer.
    let read = poll::until("Envoy's stats to count the 401s", PATIENCE, || {
        let answered = stack
            .envoy
            .gateway_stat("envoy_http_downstream_rq_completed")?;
        (answered >= CLIENTS as f64).then(|| {
            stack
                .envoy
                .gateway_stat("envoy_http_downstream_cx_rx_bytes_total")
        })?
    })
    .unwrap();
    eprintln!(
        "Envoy read {:.1} MiB from the keyless clients",
        read / 1048576.0
    );
    assert!(
        read < 2.0 * BODY as f64,
        "Envoy read {read} bytes: the bodies were taken"
    );
    a_keyed_big_body_goes_through(&stack);
}

#[test]
fn clients_with_keys_nobody_issued_and_8_mib_bodies_are_refused_within_the_heap_bound() {
    let stack = start();
    let (statuses, peak, liveness) = flood(&stack, Credential::RandomKey);
    // Refused by the control plane (401), or by the filter failing closed when a check did
    // not come back in time (503): never admitted.
    let answered: u64 = statuses
        .iter()
        .filter(|(s, _)| *s == 401 || *s == 503)
        .map(|(_, n)| n)
        .sum();
    assert_eq!(answered, CLIENTS as u64, "{statuses:?}");
    assert_bounded(&peak, &liveness);
    a_keyed_big_body_goes_through(&stack);
}

#[test]
fn key_info_for_a_bearer_nobody_issued_is_answered_from_the_key_cache_not_postgres() {
    let stack = Stack::start(StackOptions::full()).unwrap();
    let stranger = format!("Bearer sk-stranger-info-{}-0123456789", std::process::id());
    let info = |bearer: &str| {
        http::get(&stack.url("/key/info"), &[("authorization", bearer)])
            .unwrap()
            .status
    };
    // A 503 is the database answering after the control plane's deadline (the tests beside
    // this one flood the same two cores): ask again until Postgres answers in time.
    let first = poll::until("Postgres to answer for the unknown key", PATIENCE, || {
        Some(info(&stranger)).filter(|status| *status != 503)
    })
    .unwrap();
    assert_eq!(first, 401, "an unknown key");
    // With Postgres frozen, asking again costs no read: the control plane remembers the
    // unknown key (5 s) and answers at once. A bearer it has not seen needs the database.
    let postgres = stack.postgres.as_ref().unwrap();
    postgres.pause().unwrap();
    let again = info(&stranger);
    let fresh = info("Bearer sk-another-stranger-0123456789abcdef");
    postgres.resume().unwrap();
    assert_eq!(again, 401, "the same stranger, from the key cache");
    assert_eq!(
        fresh, 503,
        "a new stranger needs the database, which is away"
    );
}
