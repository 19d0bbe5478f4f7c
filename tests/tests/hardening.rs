//! Hostile clients through the real Envoy: oversized admin bodies, Envoy's own errors,
//! slow sockets, underscore header spellings, what public readiness tells, and Envoy's
//! probe listener.

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use livegate_tests::envoy::EnvoyLimits;
use livegate_tests::http::{self, Response};
use livegate_tests::poll;
use livegate_tests::stack::{Stack, StackOptions};
use serde_json::{json, Value};

const PATIENCE: Duration = Duration::from_secs(60);

/// An OpenAI/LiteLLM error body with this status as `code` and this `type`.
fn assert_error_shape(response: &Response, status: u16, kind: &str) -> Value {
    assert_eq!(response.status, status, "{}", response.body);
    assert_eq!(
        response.header("content-type"),
        Some("application/json"),
        "{response:?}"
    );
    let body = response.json().unwrap();
    let error = &body["error"];
    assert_eq!(error["code"], status.to_string(), "{body}");
    assert_eq!(error["type"], kind, "{body}");
    assert!(error["message"].is_string(), "{body}");
    assert!(error["param"].is_null(), "{body}");
    body
}

#[test]
fn an_oversized_admin_body_gets_a_json_413_from_envoy_not_a_reset() {
    let stack = Stack::start(StackOptions::full()).unwrap();
    for _ in 0..3 {
        let bearer = format!("Bearer {}", stack.master_key());
        let answer = http::post_sized_body(
            &stack.envoy.url(),
            "/key/generate",
            &[("authorization", &bearer)],
            4 * 1024 * 1024,
        )
        .unwrap();
        assert_error_shape(&answer, 413, "bad_request_error");
    }
    // A body within the limit still reaches the control plane.
    let created = stack.admin("/key/generate", &json!({"key_alias": "after-413"}));
    assert!(created.unwrap()["key"].is_string());
}

#[test]
fn envoys_own_errors_are_json_and_the_filters_keep_their_reason() {
    // No control plane: Envoy itself answers the pass-through routes.
    let stack = Stack::start(StackOptions::envoy_only()).unwrap();
    let readiness = http::get(&stack.url("/health/readiness"), &[]).unwrap();
    let body = assert_error_shape(&readiness, 503, "service_unavailable");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("upstream connect error"),
        "{body}"
    );
    // The filter's replies are its own: not rewritten, `reason` kept.
    let refused = http::get(&stack.url("/v1/models"), &[]).unwrap();
    assert_eq!(refused.status, 401, "{}", refused.body);
    assert_eq!(
        refused.json().unwrap()["error"]["reason"],
        "missing_credential"
    );
}

#[test]
fn envoys_readiness_on_the_probe_listener_needs_no_control_plane() {
    let stack = Stack::start(StackOptions::envoy_only()).unwrap();
    let probes = stack.envoy.probe_url();
    let ready = http::get(&format!("{probes}/ready"), &[]).unwrap();
    assert_eq!(ready.status, 200, "{}", ready.body);
    let live = http::get(&format!("{probes}/health/liveliness"), &[]).unwrap();
    assert_eq!(live.status, 200, "{}", live.body);
    // Counted by the filter (Envoy's stats reach admin at its next flush: polled).
    poll::until("the filter to count the probe", PATIENCE, || {
        let served = stack
            .envoy
            .prometheus_counter("livegate_liveness_served_total")
            .ok()?;
        (served >= 1.0).then_some(())
    })
    .unwrap();
    // Nothing else is served there: no route to the control plane or the upstream.
    for path in ["/health/readiness", "/key/list", "/v1/models"] {
        let other = http::get(&format!("{probes}{path}"), &[]).unwrap();
        assert_error_shape(&other, 404, "not_found_error");
    }
}

/// Opens `count` connections to `address` that send the start of a request's headers
/// and never finish them.
fn open_slow_sockets(address: &str, count: usize) -> Vec<TcpStream> {
    (0..count)
        .map(|i| {
            let mut socket = TcpStream::connect(address).unwrap();
            // A write may fail on a connection Envoy already closed (over the limit).
            let _ = socket.write_all(
                format!("GET /v1/models HTTP/1.1\r\nHost: a\r\nX-Slow-{i}: ").as_bytes(),
            );
            socket.set_nonblocking(true).unwrap();
            socket
        })
        .collect()
}

/// Closed by the peer: end of stream or an error other than "nothing yet".
fn closed(socket: &mut TcpStream) -> bool {
    let mut byte = [0u8; 1024];
    match socket.read(&mut byte) {
        Ok(0) => true,
        Ok(_) => closed(socket),
        Err(error) => error.kind() != ErrorKind::WouldBlock,
    }
}

#[test]
fn liveness_holds_on_the_probe_listener_while_slow_sockets_fill_the_gateway_and_envoy_closes_them()
{
    const LIMIT: u64 = 200;
    const SLOW: usize = 1_000;
    let stack = Stack::start(StackOptions {
        envoy_limits: EnvoyLimits {
            // Long enough that the sockets are still held while the limit is checked;
            // the test then polls for their closing, it never times it.
            request_headers_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(10),
            max_connections: LIMIT,
            ..EnvoyLimits::default()
        },
        ..StackOptions::envoy_only()
    })
    .unwrap();
    let address = stack.envoy.url().trim_start_matches("http://").to_string();
    let mut sockets = open_slow_sockets(&address, SLOW);

    // The gateway's listener is full: a new client is turned away...
    let refused = || {
        let answered = http::get_within(&stack.url("/health/liveliness"), Duration::from_secs(2));
        answered.is_err().then_some(())
    };
    poll::until("the listener to refuse new connections", PATIENCE, refused).unwrap();
    // ...while the kubelet's probes still get their answers.
    let live = http::get(
        &format!("{}/health/liveliness", stack.envoy.probe_url()),
        &[],
    )
    .unwrap();
    assert_eq!(live.status, 200, "{}", live.body);
    let ready = http::get(&format!("{}/ready", stack.envoy.probe_url()), &[]).unwrap();
    assert_eq!(ready.status, 200, "{}", ready.body);
    poll::until(
        "Envoy to count connections over the limit",
        PATIENCE,
        || {
            let overflow = stack
                .envoy
                .prometheus_counter("envoy_listener_downstream_global_cx_overflow")
                .ok()?;
            (overflow >= 1.0).then_some(())
        },
    )
    .unwrap();

    // Envoy closes every slow socket itself: over the limit at once, the others when
    // their headers time out.
    poll::until("Envoy to close every slow socket", PATIENCE, || {
        sockets.retain_mut(|socket| !closed(socket));
        sockets.is_empty().then_some(())
    })
    .unwrap();
    poll::until("Envoy to count request header timeouts", PATIENCE, || {
        let timed_out = stack
            .envoy
            .prometheus_counter("envoy_http_downstream_rq_header_timeout")
            .ok()?;
        (timed_out >= 1.0).then_some(())
    })
    .unwrap();
    // And the gateway serves again.
    poll::until("the listener to serve again", PATIENCE, || {
        let answered = http::get_within(&stack.url("/health/liveliness"), Duration::from_secs(2));
        answered.ok().filter(|r| r.status == 200)
    })
    .unwrap();
}

#[test]
fn headers_spelled_with_underscores_never_reach_the_upstream() {
    let stack = Stack::start(StackOptions::full()).unwrap();
    let created = stack
        .admin("/key/generate", &json!({"user_id": "alice"}))
        .unwrap();
    let key = created["key"].as_str().unwrap();
    // The demo upstream shows every spelling it receives: without Envoy, it sees this one.
    let upstream = format!(
        "http://127.0.0.1:{}",
        stack.upstream.as_ref().unwrap().port()
    );
    let direct = http::get(
        &format!("{upstream}/v1/models"),
        &[("x_livegate_user_id", "mallory")],
    )
    .unwrap();
    assert_eq!(
        direct.json().unwrap()["livegate"]["identity_headers"]["x_livegate_user_id"],
        "mallory"
    );

    let bearer = format!("Bearer {key}");
    let through = http::get(
        &stack.url("/v1/models"),
        &[
            ("authorization", &bearer),
            ("x_livegate_user_id", "mallory"),
            ("x_livegate_team_id", "admins"),
        ],
    )
    .unwrap();
    assert_eq!(through.status, 200, "{}", through.body);
    let seen = through.json().unwrap()["livegate"]["identity_headers"].clone();
    assert_eq!(seen["x-livegate-user-id"], "alice", "{seen}");
    for (name, _) in seen.as_object().unwrap() {
        assert!(!name.contains('_'), "{name} reached the upstream: {seen}");
    }
    // Envoy's counters reach the admin stats at its next flush: polled.
    poll::until("Envoy to count the dropped headers", PATIENCE, || {
        let dropped = stack
            .envoy
            .prometheus_counter("envoy_http1_dropped_headers_with_underscores")
            .ok()?;
        (dropped >= 2.0).then_some(())
    })
    .unwrap();
}

#[test]
fn public_readiness_tells_status_and_db_only_and_the_master_key_or_the_own_port_tell_more() {
    let stack = Stack::start(StackOptions::full()).unwrap();
    let url = stack.url("/health/readiness");
    let keys = |response: Response| {
        assert_eq!(response.status, 200, "{}", response.body);
        let body = response.json().unwrap();
        let mut keys: Vec<String> = body.as_object().unwrap().keys().cloned().collect();
        keys.sort();
        (keys, body)
    };
    let details = ["engine_pid", "last_error", "reconnects"];

    let (public, body) = keys(http::get(&url, &[]).unwrap());
    assert_eq!(public, ["db", "status"], "{body}");
    assert_eq!(body["db"], "connected");
    // A client cannot take the mark off (nor forge another value): Envoy overwrites it.
    let (forged, body) =
        keys(http::get(&url, &[("x-livegate-readiness-view", "internal")]).unwrap());
    assert_eq!(forged, ["db", "status"], "{body}");
    let (wrong_key, body) =
        keys(http::get(&url, &[("authorization", "Bearer sk-not-the-master-key")]).unwrap());
    assert_eq!(wrong_key, ["db", "status"], "{body}");

    let bearer = format!("Bearer {}", stack.master_key());
    let (with_key, body) = keys(http::get(&url, &[("authorization", &bearer)]).unwrap());
    for detail in details {
        assert!(with_key.iter().any(|k| k == detail), "{detail}: {body}");
    }
    let own_port = format!(
        "{}/health/readiness",
        stack.control_plane.as_ref().unwrap().base_url()
    );
    let (direct, body) = keys(http::get(&own_port, &[]).unwrap());
    for detail in details {
        assert!(direct.iter().any(|k| k == detail), "{detail}: {body}");
    }
}

/// Posts a `size`-byte body to a protected path with `key`; the upstream's echo, or the error.
fn post_protected(stack: &Stack, key: &str, size: usize) -> Response {
    let bearer = format!("Bearer {key}");
    http::post_sized_body(
        &stack.envoy.url(),
        "/v1/chat/completions",
        &[("authorization", &bearer)],
        size,
    )
    .unwrap()
}

/// A 200 from the upstream, which read the whole body.
fn assert_upstream_read(response: &Response, size: usize) {
    assert_eq!(response.status, 200, "{}", response.body);
    let body = response.json().unwrap();
    assert_eq!(body["livegate"]["body_bytes"], size, "{body}");
}

#[test]
fn a_body_up_to_the_largest_gets_200_with_a_fresh_key_and_a_cached_one_and_one_byte_more_a_json_413(
) {
    // Above Envoy's 1 MiB default buffer, so a body held while the check is pending would
    // have hit it.
    const MAX: usize = 2 * 1024 * 1024;
    let stack = Stack::start(StackOptions {
        envoy_limits: EnvoyLimits {
            max_request_body: MAX as u64,
            ..EnvoyLimits::default()
        },
        ..StackOptions::full()
    })
    .unwrap();
    for _ in 0..5 {
        let created = stack.admin("/key/generate", &json!({})).unwrap();
        let key = created["key"].as_str().unwrap();
        // Fresh (the filter has no decision: the body is held while the check runs), then
        // cached (no check).
        assert_upstream_read(&post_protected(&stack, key, MAX), MAX);
        assert_upstream_read(&post_protected(&stack, key, MAX), MAX);
        let body = assert_error_shape(
            &post_protected(&stack, key, MAX + 1),
            413,
            "bad_request_error",
        );
        assert_eq!(body["error"]["code"], "413", "{body}");
    }
    // Over the limit with a key the filter has never seen: the same 413, no check needed.
    let created = stack.admin("/key/generate", &json!({})).unwrap();
    let fresh = created["key"].as_str().unwrap();
    assert_error_shape(
        &post_protected(&stack, fresh, MAX + 1),
        413,
        "bad_request_error",
    );
    assert_upstream_read(&post_protected(&stack, fresh, MAX), MAX);
}

#[test]
fn the_issues_3_mb_body_gets_200_with_the_default_limit_fresh_and_cached() {
    const SIZE: usize = 3_000_000;
    let stack = Stack::start(StackOptions::full()).unwrap();
    assert!(SIZE as u64 <= EnvoyLimits::default().max_request_body);
    for _ in 0..3 {
        let created = stack.admin("/key/generate", &json!({})).unwrap();
        let key = created["key"].as_str().unwrap();
        assert_upstream_read(&post_protected(&stack, key, SIZE), SIZE);
        assert_upstream_read(&post_protected(&stack, key, SIZE), SIZE);
    }
}
