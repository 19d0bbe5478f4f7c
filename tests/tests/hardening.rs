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

/// Sends `POST path` with a `size`-byte body the way a real client does: the body is
/// written by one thread while the response is read by another, so an early answer
/// (Envoy's 413) is read even though the body is not finished.
fn post_big_body(base_url: &str, path: &str, bearer: &str, size: usize) -> String {
    let address = base_url.trim_start_matches("http://");
    let mut stream = TcpStream::connect(address).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: livegate\r\nAuthorization: Bearer {bearer}\r\n\
         Content-Type: application/json\r\nContent-Length: {size}\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).unwrap();
    let mut writer = stream.try_clone().unwrap();
    let sender = std::thread::spawn(move || {
        let chunk = vec![b' '; 64 * 1024];
        let mut sent = 0;
        while sent < size {
            let n = chunk.len().min(size - sent);
            // Envoy may close once it has answered: a write error ends the body.
            if writer.write_all(&chunk[..n]).is_err() {
                return;
            }
            sent += n;
        }
    });
    let mut answer = Vec::new();
    let mut buffer = [0u8; 4096];
    loop {
        match stream.read(&mut buffer) {
            Ok(0) => break,
            Ok(n) => answer.extend_from_slice(&buffer[..n]),
            Err(error) if error.kind() == ErrorKind::ConnectionReset && !answer.is_empty() => break,
            Err(error) => panic!("reading the answer: {error}"),
        }
        if complete(&answer) {
            break;
        }
    }
    drop(stream);
    let _ = sender.join();
    String::from_utf8_lossy(&answer).into_owned()
}

/// A complete HTTP/1.1 response with a content-length body.
fn complete(answer: &[u8]) -> bool {
    let text = String::from_utf8_lossy(answer);
    let Some((head, body)) = text.split_once("\r\n\r\n") else {
        return false;
    };
    let length = head
        .lines()
        .find_map(|line| {
            let (name, value) = line.split_once(':')?;
            name.eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse::<usize>().ok())?
        })
        .unwrap_or(0);
    body.len() >= length
}

/// A raw HTTP/1.1 answer as a [`Response`] (status and body; headers lowercased).
fn parse_raw(raw: &str) -> Response {
    let (head, body) = raw.split_once("\r\n\r\n").unwrap_or((raw, ""));
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|line| line.split_whitespace().nth(1))
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP answer: {raw}"));
    let headers = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(name, value)| (name.to_ascii_lowercase(), value.trim().to_string()))
        .collect();
    Response {
        status,
        headers,
        body: body.to_string(),
    }
}

#[test]
fn an_oversized_admin_body_gets_a_json_413_from_envoy_not_a_reset() {
    let stack = Stack::start(StackOptions::full()).unwrap();
    for _ in 0..3 {
        let raw = post_big_body(
            &stack.envoy.url(),
            "/key/generate",
            stack.master_key(),
            4 * 1024 * 1024,
        );
        assert_error_shape(&parse_raw(&raw), 413, "bad_request_error");
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
