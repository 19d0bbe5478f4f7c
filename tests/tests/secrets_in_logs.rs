//! Raw keys in URLs (`/key/info?key=sk-…`, `/spend/logs?api_key=sk-…`, a query on a
//! protected route) are accepted as LiteLLM accepts them, and appear in no log line: not in
//! Envoy's access log (which logs paths without their query), not in Envoy's own log, nor
//! the control plane's at debug level, the upstream's or Postgres'. Nor does the internal
//! token.

#![allow(clippy::unwrap_used, clippy::panic)] // a test file: failures are panics

use std::time::Duration;

use livegate_tests::http;
use livegate_tests::internal_token::internal_token;
use livegate_tests::poll;
use livegate_tests::stack::{Stack, StackOptions};
use serde_json::json;

const PATIENCE: Duration = Duration::from_secs(20);

#[test]
fn raw_keys_in_urls_are_served_and_never_logged() {
    let stack = Stack::start(StackOptions {
        control_plane_env: vec![("RUST_LOG".to_string(), "debug".to_string())],
        ..StackOptions::full()
    })
    .unwrap();
    let created = stack.admin("/key/generate", &json!({"key_alias": "in-url"}));
    let key = created.unwrap()["key"].as_str().unwrap().to_string();
    let stranger = "sk-stranger-in-a-url-0123456789abcdef";
    let master = format!("Bearer {}", stack.master_key());
    let own = format!("Bearer {key}");

    let chat = http::demo_chat(&stack.envoy.url(), &key, json!({})).unwrap();
    assert_eq!(chat.status, 200, "{}", chat.body);
    let by_master = http::get(
        &stack.url(&format!("/key/info?key={key}")),
        &[("authorization", &master)],
    );
    assert_eq!(by_master.unwrap().status, 200);
    let by_itself = http::get(
        &stack.url(&format!("/key/info?key={key}")),
        &[("authorization", &own)],
    );
    assert_eq!(by_itself.unwrap().status, 200);
    let logs = http::get(
        &stack.url(&format!("/spend/logs?api_key={key}")),
        &[("authorization", &master)],
    );
    assert_eq!(logs.unwrap().status, 200);
    let unknown = http::get(
        &stack.url(&format!("/key/info?key={stranger}")),
        &[("authorization", &master)],
    );
    assert_eq!(unknown.unwrap().status, 404);
    let protected = http::get(
        &stack.url(&format!("/v1/models?key={key}")),
        &[("authorization", &own)],
    );
    assert_eq!(protected.unwrap().status, 200);
    let refused = http::get(&stack.url(&format!("/v1/models?api_key={stranger}")), &[]);
    assert_eq!(refused.unwrap().status, 401);

    // Envoy's access log saw every one of them (it flushes about once a second), by path.
    poll::until("Envoy's access log to show the calls", PATIENCE, || {
        let log = stack.envoy.log_text();
        let lines = |path: &str| log.matches(&format!("\"path\":\"{path}\"")).count();
        (lines("/key/info") >= 3 && lines("/spend/logs") >= 1 && lines("/v1/models") >= 2)
            .then_some(())
    })
    .unwrap();
    let control_plane = stack.control_plane.as_ref().unwrap();
    let logs = [
        ("Envoy", stack.envoy.log_text()),
        ("the control plane", control_plane.log_text()),
        ("the upstream", stack.upstream.as_ref().unwrap().log_text()),
        ("Postgres", stack.postgres.as_ref().unwrap().log_text()),
    ];
    assert!(
        logs[1].1.contains("DEBUG"),
        "the control plane logs at debug"
    );
    for (who, text) in &logs {
        for secret in [key.as_str(), stranger, internal_token()] {
            assert!(
                !text.contains(secret),
                "{who}'s log holds a secret:\n{text}"
            );
        }
    }
}
