//! API-key auth through the gateway: real Envoy with the filter, real control plane,
//! real Postgres, the demo upstream echoing what reached it.

use std::time::Duration;

use livegate_tests::http::{self, Response};
use livegate_tests::poll;
use livegate_tests::stack::{Stack, StackOptions};
use nix::sys::signal::Signal;
use serde_json::{json, Value};

/// Short cache lifetimes so revocation and staleness show within a test's patience.
const FILTER_CONFIG: &str =
    r#"{"cache": {"allow_ttl_ms": 500, "deny_ttl_ms": 200, "stale_if_error_ms": 60000}}"#;
const PATIENCE: Duration = Duration::from_secs(20);

fn start() -> Stack {
    Stack::start(StackOptions {
        filter_config: FILTER_CONFIG.to_string(),
        ..StackOptions::full()
    })
    .unwrap()
}

fn admin(stack: &Stack, path: &str, body: Value) -> Value {
    stack.admin(path, &body).unwrap()
}

/// A new key through the gateway's admin route; returns (key, token).
fn generate(stack: &Stack, body: Value) -> (String, String) {
    let created = admin(stack, "/key/generate", body);
    let key = created["key"].as_str().unwrap().to_string();
    let token = created["token"].as_str().unwrap().to_string();
    (key, token)
}

fn call(stack: &Stack, headers: &[(&str, &str)]) -> Response {
    http::get(&stack.url("/v1/models"), headers).unwrap()
}

fn bearer(key: &str) -> String {
    format!("Bearer {key}")
}

/// What the demo upstream says it received.
fn upstream_saw(response: &Response) -> Value {
    response.json().unwrap()["livegate"].clone()
}

/// The refusal's status and `error.type` (the contract's vocabulary), and a reason in the body.
fn assert_auth_error(response: &Response, status: u16, kind: &str, reason_fragment: &str) {
    assert_eq!(response.status, status, "{}", response.body);
    let body = response.json().unwrap();
    assert_eq!(body["error"]["type"], kind, "{body}");
    assert_eq!(body["error"]["code"], status.to_string(), "{body}");
    assert!(body.to_string().contains(reason_fragment), "{body}");
}

/// During an outage: an unknown key is never let in and ends at 503 with
/// `retry-after`; liveness stays 200.
fn assert_unknown_keys_refused_and_liveness_holds(stack: &Stack) {
    let unknown = poll::until("the outage to refuse unknown keys", PATIENCE, || {
        let response = call(
            stack,
            &[("authorization", "Bearer sk-never-seen-000000000000000")],
        );
        assert_ne!(response.status, 200, "an unknown key was let in");
        (response.status == 503).then_some(response)
    })
    .unwrap();
    assert!(
        unknown.header("retry-after").is_some(),
        "{:?}",
        unknown.headers
    );
    let liveness = http::get(&stack.url("/health/liveliness"), &[]).unwrap();
    assert_eq!(liveness.status, 200);
}

#[test]
fn a_request_without_a_key_is_refused_with_401_before_the_upstream() {
    let stack = start();
    let response = call(&stack, &[]);
    assert_auth_error(&response, 401, "auth_error", "key");
    assert!(
        response.header("www-authenticate").is_some(),
        "{:?}",
        response.headers
    );
    assert!(
        response.json().unwrap().get("livegate").is_none(),
        "the upstream answered"
    );
}

#[test]
fn an_unknown_key_is_refused_with_401_invalid_key() {
    let stack = start();
    let response = call(
        &stack,
        &[("authorization", "Bearer sk-not-a-real-key-0000000000")],
    );
    assert_auth_error(&response, 401, "token_not_found_in_db", "invalid_key");
}

#[test]
fn a_good_key_reaches_the_upstream_with_its_identity_and_without_the_key() {
    let stack = start();
    admin(&stack, "/team/new", json!({"team_id": "team-a"}));
    let (key, token) = generate(
        &stack,
        json!({"key_alias": "alice", "team_id": "team-a", "user_id": "u-1"}),
    );
    let response = call(&stack, &[("authorization", &bearer(&key))]);
    assert_eq!(response.status, 200, "{}", response.body);

    let saw = upstream_saw(&response);
    let identity = &saw["identity_headers"];
    assert_eq!(identity["x-livegate-key-alias"], "alice", "{saw}");
    assert_eq!(identity["x-livegate-team-id"], "team-a", "{saw}");
    assert_eq!(identity["x-livegate-user-id"], "u-1", "{saw}");
    let hash_prefix = identity["x-livegate-key-hash"].as_str().unwrap();
    assert!(
        token.starts_with(hash_prefix) && hash_prefix.len() < token.len(),
        "{saw}"
    );
    assert_eq!(
        saw["authorization_present"], false,
        "the client's key reached the upstream"
    );
}

#[test]
fn the_x_api_key_header_works_and_never_reaches_the_upstream() {
    let stack = start();
    let (key, _) = generate(&stack, json!({"key_alias": "bob"}));
    let response = call(&stack, &[("x-api-key", &key)]);
    assert_eq!(response.status, 200, "{}", response.body);
    let saw = upstream_saw(&response);
    assert_eq!(saw["x_api_key_present"], false, "{saw}");
    assert_eq!(
        saw["identity_headers"]["x-livegate-key-alias"], "bob",
        "{saw}"
    );
}

#[test]
fn identity_headers_sent_by_the_client_are_stripped() {
    let stack = start();
    let (key, _) = generate(&stack, json!({"key_alias": "carol"}));
    let response = call(
        &stack,
        &[
            ("authorization", &bearer(&key)),
            ("x-livegate-team-id", "team-of-the-attacker"),
            ("x-livegate-anything", "spoofed"),
        ],
    );
    assert_eq!(response.status, 200, "{}", response.body);
    let identity = &upstream_saw(&response)["identity_headers"];
    assert!(identity.get("x-livegate-team-id").is_none(), "{identity}");
    assert!(identity.get("x-livegate-anything").is_none(), "{identity}");
}

#[test]
fn a_blocked_key_is_refused_with_403() {
    let stack = start();
    let (key, _) = generate(&stack, json!({"key_alias": "blocked", "blocked": true}));
    assert_auth_error(
        &call(&stack, &[("authorization", &bearer(&key))]),
        403,
        "auth_error",
        "key_blocked",
    );
}

#[test]
fn an_expired_key_is_refused_with_403() {
    let stack = start();
    let created = admin(
        &stack,
        "/key/generate",
        json!({"key_alias": "brief", "duration": "1s"}),
    );
    let key = created["key"].as_str().unwrap();
    let response = poll::until("the key to expire", PATIENCE, || {
        let response = call(&stack, &[("authorization", &bearer(key))]);
        (response.status != 200).then_some(response)
    })
    .unwrap();
    assert_auth_error(&response, 403, "expired_key", "key_expired");
}

#[test]
fn a_deleted_key_stops_working_within_the_cache_ttl() {
    let stack = start();
    let (key, _) = generate(&stack, json!({"key_alias": "doomed"}));
    assert_eq!(
        call(&stack, &[("authorization", &bearer(&key))]).status,
        200
    );

    let deleted = admin(&stack, "/key/delete", json!({"keys": [key]}));
    assert_eq!(
        deleted["deleted_keys"].as_array().map(Vec::len),
        Some(1),
        "{deleted}"
    );

    let response = poll::until("the deletion to reach the gateway", PATIENCE, || {
        let response = call(&stack, &[("authorization", &bearer(&key))]);
        (response.status != 200).then_some(response)
    })
    .unwrap();
    assert_auth_error(&response, 401, "token_not_found_in_db", "invalid_key");
}

#[test]
fn the_auth_check_endpoint_is_not_reachable_through_the_gateway() {
    let stack = start();
    let (key, _) = generate(&stack, json!({"key_alias": "probe"}));
    let response = http::post_json(
        &stack.url("/v1/auth/check"),
        &[("authorization", &bearer(&key))],
        &json!({}),
    )
    .unwrap();
    // Routed like any protected path: to the upstream, never to the control plane.
    let body = response.json().unwrap();
    assert!(
        body.get("decision").is_none(),
        "the control plane answered: {body}"
    );
    assert!(body.get("livegate").is_some(), "{body}");
}

#[test]
fn with_the_control_plane_gone_a_known_key_is_served_stale_and_an_unknown_key_gets_503() {
    let mut stack = start();
    let (key, _) = generate(&stack, json!({"key_alias": "survivor"}));
    assert_eq!(
        call(&stack, &[("authorization", &bearer(&key))]).status,
        200
    );

    let control_plane = stack.control_plane.as_mut().unwrap();
    control_plane.signal(Signal::SIGKILL).unwrap();
    control_plane.wait_exit(PATIENCE).unwrap();

    // Once the cached allow expires, the filter must fall back to the stale entry.
    let stale = poll::until("a stale allow", PATIENCE, || {
        let response = call(&stack, &[("authorization", &bearer(&key))]);
        assert_eq!(
            response.status, 200,
            "a known key was refused: {}",
            response.body
        );
        let saw = upstream_saw(&response);
        (saw["identity_headers"]["x-livegate-stale"] == "true").then_some(saw)
    })
    .unwrap();
    assert_eq!(
        stale["identity_headers"]["x-livegate-key-alias"], "survivor",
        "{stale}"
    );

    assert_unknown_keys_refused_and_liveness_holds(&stack);
}

#[test]
fn with_postgres_paused_a_known_key_works_an_unknown_key_gets_503_and_liveness_stays_200() {
    let stack = start();
    let (key, _) = generate(&stack, json!({"key_alias": "steady"}));
    assert_eq!(
        call(&stack, &[("authorization", &bearer(&key))]).status,
        200
    );

    // Dropping the stack thaws Postgres even when an assertion fails.
    stack.postgres.as_ref().unwrap().pause().unwrap();
    for _ in 0..20 {
        let known = call(&stack, &[("authorization", &bearer(&key))]);
        assert_eq!(known.status, 200, "a known key was refused: {}", known.body);
    }
    assert_unknown_keys_refused_and_liveness_holds(&stack);
}

#[test]
fn envoy_stats_count_what_the_filter_decided() {
    // Default cache lifetimes: the second call must be a hit however slow the machine.
    let stack = Stack::start(StackOptions::full()).unwrap();
    let (key, _) = generate(&stack, json!({"key_alias": "counted"}));
    assert_eq!(
        call(&stack, &[("authorization", &bearer(&key))]).status,
        200
    );
    assert_eq!(
        call(&stack, &[("authorization", &bearer(&key))]).status,
        200
    );
    assert_eq!(call(&stack, &[]).status, 401);
    assert_eq!(
        call(
            &stack,
            &[("authorization", "Bearer sk-unknown-2222222222222222")]
        )
        .status,
        401
    );
    assert_eq!(
        http::get(&stack.url("/health/liveliness"), &[])
            .unwrap()
            .status,
        200
    );

    let counter = |name: &str| stack.envoy.prometheus_counter(name).unwrap();
    assert_eq!(counter("livegate_allowed_total"), 2.0);
    assert_eq!(
        counter("livegate_cache_miss_total"),
        2.0,
        "one per key checked"
    );
    assert_eq!(counter("livegate_cache_hit_total"), 1.0);
    assert_eq!(counter("livegate_denied_missing_credential_total"), 1.0);
    assert_eq!(counter("livegate_denied_invalid_key_total"), 1.0);
    assert_eq!(counter("livegate_liveness_served_total"), 1.0);
}
