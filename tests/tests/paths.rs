//! A key's model policy on every spelling of a path, through the real Envoy, control plane
//! and Postgres: `%2F` in either case, duplicate slashes and dot segments reach the chat
//! route as the chat route, Azure paths carry their model, and a route without a model
//! (`/v1/files`) refuses a restricted key; an unrestricted key is served on each. The
//! policy holds with Postgres frozen and with the control plane stopped (cached allows).

#![allow(clippy::unwrap_used, clippy::panic)] // a test file: failures are panics

use std::io::{Read, Write};
use std::time::Duration;

use livegate_tests::envoy::Envoy;
use livegate_tests::http::{self, Response};
use livegate_tests::poll;
use livegate_tests::stack::{Stack, StackOptions};
use nix::sys::signal::Signal;
use serde_json::{json, Value};

/// Short allow TTL, so the fault phases run on stale allows, not fresh ones.
const FILTER_CONFIG: &str =
    r#"{"cache": {"allow_ttl_ms": 500, "deny_ttl_ms": 200, "stale_if_error_ms": 120000}}"#;
const PATIENCE: Duration = Duration::from_secs(30);

/// Sends the request line exactly as written (an HTTP client library may tidy the path
/// before it leaves): `POST path` with a JSON body, the answer read to the end.
fn post_as_written(stack: &Stack, path: &str, key: &str, body: &str) -> Response {
    post_to(&stack.envoy.url(), path, key, body)
}

/// [`post_as_written`] to the Envoy listening at `base`.
fn post_to(base: &str, path: &str, key: &str, body: &str) -> Response {
    let address = base.trim_start_matches("http://").to_string();
    let mut stream = std::net::TcpStream::connect(address).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(15)))
        .unwrap();
    let request = format!(
        "POST {path} HTTP/1.1\r\nHost: livegate\r\nAuthorization: Bearer {key}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).unwrap();
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).unwrap();
    http::parse_raw(&String::from_utf8_lossy(&answer)).unwrap()
}

fn chat_body(model: &str) -> String {
    json!({"model": model, "messages": [{"role": "user", "content": "hi"}]}).to_string()
}

/// The attacks: a model the restricted key may not call, on a spelling of a model route
/// or on a route without a model.
fn attacks() -> Vec<(&'static str, String)> {
    let o1 = chat_body("o1");
    let no_model = json!({"messages": [{"role": "user", "content": "hi"}]}).to_string();
    vec![
        ("/v1/chat%2Fcompletions", o1.clone()),
        ("/v1/chat%2fcompletions", o1.clone()),
        ("//v1/chat/completions", o1.clone()),
        ("/v1/./chat/completions", o1.clone()),
        ("/v1/%2E/chat/completions", o1.clone()),
        ("/v1/chat/completions/", o1.clone()),
        (
            "/openai/deployments/o1/chat/completions?api-version=2024-06-01",
            no_model.clone(),
        ),
        (
            "/openai/deployments/o1%2Fchat/completions",
            no_model.clone(),
        ),
        ("/engines/o1/completions", no_model),
        ("/v1/files", "{}".to_string()),
        ("/v1/batches", "{}".to_string()),
    ]
}

/// Refused by the filter with LiteLLM's type; nothing reached the upstream.
fn refused(response: &Response, what: &str) {
    assert_eq!(response.status, 401, "{what}: {}", response.body);
    let body = response.json().unwrap();
    assert_eq!(
        body["error"]["type"], "key_model_access_denied",
        "{what}: {body}"
    );
    assert!(
        body.get("livegate").is_none(),
        "{what}: reached the upstream: {body}"
    );
}

/// Served by the upstream (the demo answers every path, echoing what it saw).
fn served(response: &Response, what: &str) -> Value {
    assert_eq!(response.status, 200, "{what}: {}", response.body);
    let body = response.json().unwrap();
    assert!(body.get("livegate").is_some(), "{what}: {body}");
    body
}

#[test]
fn every_spelling_of_a_route_is_held_to_the_key_policy_through_outages() {
    let mut stack = Stack::start(StackOptions {
        filter_config: FILTER_CONFIG.to_string(),
        ..StackOptions::full()
    })
    .unwrap();
    let restricted = stack.generate_key(&json!({"models": ["gpt-4o"]})).unwrap();
    let open = stack
        .generate_key(&json!({"key_alias": "every-model"}))
        .unwrap();

    let check = |stack: &Stack, phase: &str| {
        // Twice each: the first may be a miss (the check), the second a cached allow.
        for _ in 0..2 {
            for (path, body) in attacks() {
                let what = format!("{phase}: {path}");
                refused(&post_as_written(stack, path, &restricted, &body), &what);
                served(&post_as_written(stack, path, &open, &body), &what);
            }
            // What the restricted key may call, on the odd spellings too: the upstream
            // sees the normal path and the model.
            let chat = post_as_written(
                stack,
                "/v1/chat%2Fcompletions",
                &restricted,
                &chat_body("gpt-4o"),
            );
            let body = served(&chat, phase);
            assert_eq!(body["livegate"]["model"], "gpt-4o", "{phase}: {body}");
            // A trailing slash names the same model route (not a route without a model).
            let slash = post_as_written(
                stack,
                "/v1/chat/completions/",
                &restricted,
                &chat_body("gpt-4o"),
            );
            let body = served(&slash, phase);
            assert_eq!(body["livegate"]["model"], "gpt-4o", "{phase}: {body}");
            let azure = "/openai/deployments/gpt-4o/chat/completions?api-version=2024-06-01";
            served(&post_as_written(stack, azure, &restricted, "{}"), phase);
        }
    };
    check(&stack, "all up");

    stack.postgres.as_ref().unwrap().pause().unwrap();
    check(&stack, "Postgres frozen");

    let control_plane = stack.control_plane.as_mut().unwrap();
    control_plane.signal(Signal::SIGSTOP).unwrap();
    // Wait until the filter serves the restricted key stale: the policy comes from its
    // cache alone.
    poll::until("a stale allow", PATIENCE, || {
        let chat = post_as_written(
            &stack,
            "/v1/chat/completions",
            &restricted,
            &chat_body("gpt-4o"),
        );
        let body = served(&chat, "control plane stopped");
        let stale = &body["livegate"]["identity_headers"]["x-livegate-stale"];
        (stale == "true").then_some(())
    })
    .unwrap();
    check(&stack, "control plane stopped");

    let control_plane = stack.control_plane.as_mut().unwrap();
    control_plane.signal(Signal::SIGCONT).unwrap();
    stack.postgres.as_ref().unwrap().resume().unwrap();
}

#[test]
fn a_path_that_cannot_be_normalised_is_refused_with_a_json_400() {
    let stack = Stack::start(StackOptions::full()).unwrap();
    let open = stack.generate_key(&json!({})).unwrap();
    // Envoy itself answers some of these 400 before the filter: either way, JSON naming
    // the request as bad and nothing upstream.
    for path in ["/v1/chat%00/completions", "/v1/%zz/completions"] {
        let response = post_as_written(&stack, path, &open, &chat_body("a"));
        assert_eq!(response.status, 400, "{path}: {}", response.body);
        let body = response.json().unwrap();
        assert_eq!(body["error"]["type"], "bad_request_error", "{path}: {body}");
        assert!(body.get("livegate").is_none(), "{path}: {body}");
    }
}

/// Envoy as a mesh might configure it: no path normalisation at all. The filter normalises
/// on its own, decides on the normal path and sends the upstream that path.
#[test]
fn the_policy_holds_in_an_envoy_that_does_not_normalise_paths() {
    let stack = Stack::start(StackOptions::full()).unwrap();
    let restricted = stack.generate_key(&json!({"models": ["gpt-4o"]})).unwrap();
    let template_path =
        livegate_tests::artifacts::workspace_root().join(livegate_tests::envoy::TEMPLATE);
    let template = std::fs::read_to_string(template_path).unwrap();
    let bare = template
        .replace("normalize_path: true", "normalize_path: false")
        .replace("merge_slashes: true", "merge_slashes: false")
        .replace(
            "path_with_escaped_slashes_action: UNESCAPE_AND_FORWARD",
            "path_with_escaped_slashes_action: KEEP_UNCHANGED",
        );
    assert_ne!(bare, template, "the template's normalisation options moved");
    let dir = stack.scratch.path().join("bare-envoy");
    std::fs::create_dir_all(&dir).unwrap();
    let bare_path = dir.join("bare.yaml.tmpl");
    std::fs::write(&bare_path, bare).unwrap();
    let mut config = stack.envoy.config().clone();
    config.listen_port = livegate_tests::ports::free_port().unwrap();
    config.admin_port = livegate_tests::ports::free_port().unwrap();
    config.probe_port = livegate_tests::ports::free_port().unwrap();
    let envoy = Envoy::start_from(bare_path.to_str().unwrap(), config, &dir).unwrap();
    let base = envoy.url();

    for path in [
        "/v1/chat%2Fcompletions",
        "//v1/chat/completions",
        "/v1/./chat/completions",
    ] {
        let refused_answer = post_to(&base, path, &restricted, &chat_body("o1"));
        refused(&refused_answer, path);
        // Allowed, and served by the upstream's chat route: it got the normal path.
        let allowed = post_to(&base, path, &restricted, &chat_body("gpt-4o"));
        assert_eq!(allowed.status, 200, "{path}: {}", allowed.body);
        let body = allowed.json().unwrap();
        assert!(
            body.get("choices").is_some(),
            "{path}: not the chat route: {body}"
        );
    }
    // A path the filter cannot normalise, and a key-less prefix not in normal form.
    let bad = post_to(&base, "/v1/%zz/completions", &restricted, "{}");
    assert_eq!(bad.status, 400, "{}", bad.body);
    assert_eq!(bad.json().unwrap()["error"]["reason"], "bad_path");
    let sideways = post_to(&base, "/key//generate", "sk-anything", "{}");
    assert_eq!(sideways.status, 400, "{}", sideways.body);
    assert_eq!(sideways.json().unwrap()["error"]["reason"], "bad_path");
    // Out of a key-less prefix into the chat route: the filter asks for a key.
    let escaped = post_to(
        &base,
        "/key/..%2Fv1/chat/completions",
        &restricted,
        &chat_body("o1"),
    );
    refused(&escaped, "/key/..%2Fv1/chat/completions");
}
