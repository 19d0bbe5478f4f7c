//! The control plane's internal API answers the filter alone: every internal endpoint
//! refuses a call without the shared token or with a wrong one (401, JSON error shape),
//! accepts the filter's, is unreachable through Envoy, and `/metrics` lives on a listener
//! of its own. The token is in neither the control plane's nor Envoy's configuration.

#![allow(clippy::unwrap_used, clippy::panic)] // a test file: failures are panics

use livegate_tests::control_plane::ControlPlane;
use livegate_tests::envoy::{Endpoint, Envoy, EnvoyConfig};
use livegate_tests::http::{self, Response};
use livegate_tests::internal_token::{self, internal_token};
use livegate_tests::process::Scratch;
use livegate_tests::stack::{Stack, StackOptions};
use serde_json::{json, Value};

/// (method, path, body) of every internal endpoint: the auth check, the change feed, the
/// spend intake (which also frees `max_parallel_requests` slots).
const INTERNAL: [(&str, &str, &str); 3] = [
    ("POST", "/v1/auth/check", ""),
    ("GET", "/v1/auth/changes", ""),
    ("POST", "/v1/spend/records", r#"{"records": []}"#),
];

fn call(url: &str, method: &str, body: &str, headers: &[(&str, &str)]) -> Response {
    match method {
        "GET" => http::get(url, headers).unwrap(),
        _ => http::post_raw(url, headers, "application/json", body).unwrap(),
    }
}

fn assert_internal_401(response: &Response, what: &str) {
    assert_eq!(response.status, 401, "{what}: {}", response.body);
    let body: Value = response.json().unwrap();
    let error = &body["error"];
    assert_eq!(error["code"], "401", "{what}: {body}");
    assert_eq!(error["type"], "auth_error", "{what}: {body}");
    assert!(error["param"].is_null(), "{what}: {body}");
    assert!(
        error["message"]
            .as_str()
            .unwrap()
            .contains(internal_token::HEADER),
        "{what}: {body}"
    );
}

#[test]
fn every_internal_endpoint_refuses_a_missing_or_wrong_token_and_takes_the_filters() {
    let stack = Stack::start(StackOptions::full()).unwrap();
    let cp = stack.control_plane.as_ref().unwrap();
    let key = stack.admin("/key/generate", &json!({"key_alias": "internal"}));
    let key = key.unwrap()["key"].as_str().unwrap().to_string();
    let bearer = format!("Bearer {key}");
    let wrong = format!("{}0", internal_token());
    let master = format!("Bearer {}", stack.master_key());
    for (method, path, body) in INTERNAL {
        let url = format!("{}{path}", cp.base_url());
        let none = call(&url, method, body, &[("authorization", &bearer)]);
        assert_internal_401(&none, &format!("{path} without a token"));
        let bad = [
            ("authorization", bearer.as_str()),
            (internal_token::HEADER, &wrong),
        ];
        assert_internal_401(&call(&url, method, body, &bad), &format!("{path} wrong"));
        // The master key opens admin endpoints, not the internal API.
        let admin = call(&url, method, body, &[("authorization", &master)]);
        assert_internal_401(&admin, &format!("{path} with the master key"));
        let good = [("authorization", bearer.as_str()), internal_token::header()];
        let answer = call(&url, method, body, &good);
        // Past the guard, the handler answers: 200, or the intake's own 400 for an empty
        // batch; never the guard's 401.
        let expected = if path == "/v1/spend/records" {
            400
        } else {
            200
        };
        assert_eq!(
            answer.status, expected,
            "{path} with the token: {}",
            answer.body
        );
        assert!(
            !answer.body.contains(internal_token::HEADER),
            "{}",
            answer.body
        );
    }
    // The auth check answered as the contract says, for the filter only.
    let url = format!("{}/v1/auth/check", cp.base_url());
    let good = [("authorization", bearer.as_str()), internal_token::header()];
    let allow = call(&url, "POST", "", &good).json().unwrap();
    assert_eq!(allow["decision"], "allow", "{allow}");
    // And the gateway, whose filter holds the token, still admits the key.
    let through = http::get(&stack.url("/v1/models"), &[("authorization", &bearer)]).unwrap();
    assert_eq!(through.status, 200, "{}", through.body);
    // Refusals are counted, on the metrics listener.
    let metrics = http::get(&cp.metrics_url(), &[]).unwrap().body;
    let refused =
        livegate_tests::envoy::prometheus_value(&metrics, "livegate_internal_token_failures_total");
    assert_eq!(refused, Some(9.0), "{metrics}");
    // With Postgres frozen the guard answers at once, as it needs no database; the filter's
    // calls still get their answers (the key's record is in the control plane's cache).
    let postgres = stack.postgres.as_ref().unwrap();
    postgres.pause().unwrap();
    for (method, path, body) in INTERNAL {
        let url = format!("{}{path}", cp.base_url());
        let none = call(&url, method, body, &[("authorization", &bearer)]);
        assert_internal_401(&none, &format!("{path} without a token, Postgres frozen"));
    }
    let allow = call(&url, "POST", "", &good);
    postgres.resume().unwrap();
    assert_eq!(allow.status, 200, "Postgres frozen: {}", allow.body);
    // The token is in no log line of the control plane.
    assert!(!cp.log_text().contains(internal_token()));
}

#[test]
fn the_internal_api_is_unreachable_through_envoy_even_with_the_token() {
    let stack = Stack::start(StackOptions::full()).unwrap();
    let key = stack.admin("/key/generate", &json!({"key_alias": "smuggler"}));
    let key = key.unwrap()["key"].as_str().unwrap().to_string();
    let bearer = format!("Bearer {key}");
    let headers = [("authorization", bearer.as_str()), internal_token::header()];
    for (method, path, body) in INTERNAL {
        let answer = call(&stack.url(path), method, body, &headers);
        // A protected path like any other: admitted, then proxied to the upstream (the
        // demo echoes what reached it), never to the control plane.
        let echoed = answer.json().unwrap();
        assert!(echoed.get("decision").is_none(), "{path}: {echoed}");
        assert!(echoed.get("records").is_none(), "{path}: {echoed}");
        let seen = &echoed["livegate"]["identity_headers"];
        assert!(
            seen.get(internal_token::HEADER).is_none(),
            "{path}: {echoed}"
        );
    }
    // Nor does a client's copy of the header reach the control plane on an admin route:
    // Envoy removes it before any filter or route sees it.
    let info = http::get(
        &stack.url(&format!("/key/info?key={key}")),
        &[
            ("authorization", &format!("Bearer {}", stack.master_key())),
            internal_token::header(),
        ],
    )
    .unwrap();
    assert_eq!(info.status, 200, "{}", info.body);
    // The token Envoy's filter holds is in no configuration Envoy shows.
    let dump = http::get(&format!("{}/config_dump", stack.envoy.admin_url()), &[]).unwrap();
    assert_eq!(dump.status, 200);
    assert!(dump.body.contains("LIVEGATE_INTERNAL_TOKEN"));
    assert!(!dump.body.contains(internal_token()));
    let rendered = std::fs::read_to_string(stack.envoy.config_path()).unwrap();
    assert!(!rendered.contains(internal_token()));
}

#[test]
fn metrics_are_served_on_their_own_listener_and_not_on_the_api_port() {
    let stack = Stack::start(StackOptions::full()).unwrap();
    let cp = stack.control_plane.as_ref().unwrap();
    let metrics = http::get(&cp.metrics_url(), &[]).unwrap();
    assert_eq!(metrics.status, 200, "{}", metrics.body);
    assert!(metrics.body.contains("livegate_http_requests_total"));
    let on_api = http::get(&format!("{}/metrics", cp.base_url()), &[]).unwrap();
    assert_eq!(on_api.status, 404, "{}", on_api.body);
    // The metrics listener serves nothing else, token or not.
    let base = cp.metrics_url().trim_end_matches("/metrics").to_string();
    for (method, path, body) in INTERNAL {
        let answer = call(
            &format!("{base}{path}"),
            method,
            body,
            &[internal_token::header()],
        );
        assert_eq!(answer.status, 404, "{path}: {}", answer.body);
    }
    let master = format!("Bearer {}", stack.master_key());
    let list = http::get(&format!("{base}/key/list"), &[("authorization", &master)]).unwrap();
    assert_eq!(list.status, 404, "{}", list.body);
    // Through Envoy, /metrics is a protected path: no key, no answer.
    let through = http::get(&stack.url("/metrics"), &[]).unwrap();
    assert_eq!(through.status, 401, "{}", through.body);
}

#[test]
fn a_control_plane_without_a_usable_token_refuses_to_start_naming_the_variable() {
    let postgres = livegate_tests::postgres::Postgres::start().unwrap();
    let (status, log) = ControlPlane::builder(&postgres.url())
        .internal_token(None)
        .start_expecting_exit()
        .unwrap();
    assert!(!status.success(), "{log}");
    assert!(log.contains("LIVEGATE_INTERNAL_TOKEN"), "{log}");
    let (status, log) = ControlPlane::builder(&postgres.url())
        .internal_token(Some("changeme-changeme-changeme-changeme"))
        .start_expecting_exit()
        .unwrap();
    assert!(!status.success(), "{log}");
    assert!(log.contains("placeholder"), "{log}");
    assert!(!log.contains("changeme-changeme"), "{log}");
}

#[test]
fn an_envoy_without_the_token_refuses_the_plugin_and_says_why() {
    let scratch = Scratch::new("livegate-no-token-").unwrap();
    let nowhere = Endpoint::loopback(livegate_tests::ports::free_port().unwrap());
    let mut config = EnvoyConfig::on_free_ports(nowhere.clone(), nowhere).unwrap();
    config.internal_token = None;
    let (status, log) = Envoy::start_expecting_exit(config, scratch.path()).unwrap();
    assert!(!status.success(), "Envoy should refuse the plugin:\n{log}");
    assert!(log.contains("LIVEGATE_INTERNAL_TOKEN"), "{log}");
}
