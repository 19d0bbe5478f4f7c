//! A key's rate limit as the OpenAI and Anthropic Python SDKs meet it through the real
//! Envoy, filter, control plane and Postgres: each raises its own `RateLimitError` (status
//! 429) with `retry-after`, OpenAI's `x-ratelimit-*` headers and LiteLLM's error body
//! readable on it, and nothing reaches the upstream; the same with Postgres frozen and
//! with the control plane stopped (the filter holds a 429 until the window has room).

#![allow(clippy::unwrap_used, clippy::panic)] // a test file: failures are panics

use livegate_tests::http;
use livegate_tests::python_client::run_json;
use livegate_tests::stack::{Stack, StackOptions};
use nix::sys::signal::Signal;
use serde_json::{json, Value};

/// Calls a chat completion with the OpenAI SDK and a message with the Anthropic SDK (its
/// `x-api-key`), no retries, and prints what each raised.
const SDKS_SCRIPT: &str = r#"
import json, sys
import anthropic, openai
base, key = sys.argv[1], sys.argv[2]
messages = [{"role": "user", "content": "hi"}]
def raised(call):
    try:
        call()
        return {"raised": None}
    except (openai.APIStatusError, anthropic.APIStatusError) as e:
        h = e.response.headers
        return {"raised": type(e).__module__.split(".")[0] + "." + type(e).__name__,
                "status": e.status_code, "retry_after": h.get("retry-after"),
                "limit": h.get("x-ratelimit-limit-requests"),
                "remaining": h.get("x-ratelimit-remaining-requests"), "body": e.body}
o = openai.OpenAI(base_url=base + "/v1", api_key=key, max_retries=0)
a = anthropic.Anthropic(base_url=base, api_key=key, max_retries=0)
print(json.dumps({
    "openai": raised(lambda: o.chat.completions.create(model="livegate-demo", messages=messages)),
    "anthropic": raised(lambda: a.messages.create(model="livegate-demo", max_tokens=8,
                                                  messages=messages)),
}))
"#;

/// Both SDKs raised their `RateLimitError` for the key's limit of 1, with what a client
/// reads on it.
fn both_rate_limited(seen: &Value, phase: &str) {
    for (sdk, class) in [
        ("openai", "openai.RateLimitError"),
        ("anthropic", "anthropic.RateLimitError"),
    ] {
        let e = &seen[sdk];
        assert_eq!(e["raised"], class, "{phase}: {sdk}: {seen}");
        assert_eq!(e["status"], 429, "{phase}: {sdk}: {seen}");
        let retry_after: u64 = e["retry_after"].as_str().unwrap().parse().unwrap();
        assert!((1..=61).contains(&retry_after), "{phase}: {sdk}: {seen}");
        assert_eq!(e["limit"], "1", "{phase}: {sdk}: {seen}");
        assert_eq!(e["remaining"], "0", "{phase}: {sdk}: {seen}");
        // The OpenAI SDK hands over the body's `error`; the Anthropic SDK the whole body.
        let error = e["body"].get("error").unwrap_or(&e["body"]);
        assert_eq!(error["type"], "rate_limit_error", "{phase}: {sdk}: {seen}");
        assert_eq!(error["param"], "rpm_limit", "{phase}: {sdk}: {seen}");
    }
}

#[test]
fn the_openai_and_anthropic_sdks_raise_rate_limit_errors_through_faults() {
    let stack = Stack::start(StackOptions::full()).unwrap();
    let base = stack.url("");
    let key = stack.generate_key(&json!({"rpm_limit": 1})).unwrap();
    let first = http::demo_chat(&base, &key, json!({})).unwrap();
    assert_eq!(first.status, 200, "{}", first.body);
    let upstream_requests = || stack.envoy.cluster_requests("livegate_upstream").unwrap();
    let reached = upstream_requests();
    assert_eq!(reached, 1.0);

    both_rate_limited(&run_json(SDKS_SCRIPT, &[&base, &key]), "Postgres up");

    let postgres = stack.postgres.as_ref().unwrap();
    postgres.pause().unwrap();
    let frozen = run_json(SDKS_SCRIPT, &[&base, &key]);
    postgres.resume().unwrap();
    both_rate_limited(&frozen, "Postgres frozen");

    let control_plane = stack.control_plane.as_ref().unwrap();
    control_plane.signal(Signal::SIGSTOP).unwrap();
    let stopped = run_json(SDKS_SCRIPT, &[&base, &key]);
    control_plane.signal(Signal::SIGCONT).unwrap();
    both_rate_limited(&stopped, "control plane stopped");

    // No refused call reached the upstream.
    assert_eq!(upstream_requests(), reached);
}
