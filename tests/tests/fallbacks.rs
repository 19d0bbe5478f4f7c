//! Retries and fallbacks through the real Envoy: equal deployments share the load; a
//! deployment answering 429, 503, hanging up or refusing connections is retried at the
//! model's other deployment, then at the models of `fallbacks`; the client sees one answer,
//! shaped for the deployment that gave it (its Host, path, key and body `model`), and the
//! spend record names that deployment and is priced for the model that answered. A model
//! without a fallback passes the provider's 429 with its headers. A key is checked against
//! the model it asked for. Routing needs neither Postgres nor the control plane.

#![allow(clippy::unwrap_used, clippy::panic)] // a test file: failures are panics

use std::path::Path;
use std::time::Duration;

use ::http::{HeaderMap, HeaderValue};

use livegate_tests::failing_provider::{FailingProvider, Failure, Refusing, RATE_LIMIT_HEADERS};
use livegate_tests::h2_client::post_with_trailers;
use livegate_tests::http::{self, Response};
use livegate_tests::poll;
use livegate_tests::provider_double::{ProviderDouble, Seen};
use livegate_tests::providers::Providers;
use livegate_tests::stack::{Stack, StackOptions};
use nix::sys::signal::Signal;
use serde_json::{json, Value};

const GOOD_KEY_ENV: &str = "LIVEGATE_TEST_GOOD_PROVIDER_KEY";
const GOOD_KEY: &str = "sk-good-provider-4b1e0c";
const FAILING_KEY_ENV: &str = "LIVEGATE_TEST_FAILING_PROVIDER_KEY";
const FAILING_KEY: &str = "sk-failing-provider-9d2a7f";
/// Short allow TTL, so the fault phase runs on stale allows.
const FILTER_CONFIG: &str =
    r#"{"cache": {"allow_ttl_ms": 500, "deny_ttl_ms": 200, "stale_if_error_ms": 120000}}"#;
const PATIENCE: Duration = Duration::from_secs(30);
/// The prices of the models that answer (per token), in LiteLLM's price file format.
const MINI_IN: f64 = 1.5e-7;
const MINI_OUT: f64 = 6e-7;
/// The provider double's usage on every answer.
const PROMPT_TOKENS: u64 = 11;
const COMPLETION_TOKENS: u64 = 7;

/// The doubles: one that answers, and one per way of failing.
struct Providers4 {
    good: ProviderDouble,
    limited: FailingProvider,
    unavailable: FailingProvider,
    hangup: FailingProvider,
    silent: FailingProvider,
    refused: Refusing,
}

impl Providers4 {
    /// The good provider (its own CA and key, under `dir`) and one of each failure.
    fn start(dir: &Path) -> Providers4 {
        Providers4 {
            good: ProviderDouble::start(dir, GOOD_KEY).unwrap(),
            limited: FailingProvider::start(Failure::TooManyRequests).unwrap(),
            unavailable: FailingProvider::start(Failure::Unavailable).unwrap(),
            hangup: FailingProvider::start(Failure::HangUp).unwrap(),
            silent: FailingProvider::start(Failure::Silent).unwrap(),
            refused: Refusing::start().unwrap(),
        }
    }

    fn seen(&self) -> Vec<Seen> {
        let mut all = self.good.seen();
        for failing in [&self.limited, &self.unavailable, &self.hangup, &self.silent] {
            all.extend(failing.seen());
        }
        all
    }
}

fn model_list(p: &Providers4) -> String {
    let good = p.good.base_url();
    let entry = |name: &str, model: &str, base: &str, key: &str| {
        format!(
            "  - model_name: {name}\n    litellm_params:\n      model: openai/{model}\n      api_base: {base}/v1\n      api_key: os.environ/{key}\n"
        )
    };
    let mut text = String::from("model_list:\n");
    for (name, model, base, key) in [
        // 0, 1: equal deployments.
        ("lb", "lb-a", good.as_str(), GOOD_KEY_ENV),
        ("lb", "lb-b", &good, GOOD_KEY_ENV),
        // 2, 3: one rate-limited, one that answers.
        (
            "gpt-4o",
            "gpt-4o-limited",
            &p.limited.base_url(),
            FAILING_KEY_ENV,
        ),
        ("gpt-4o", "gpt-4o", &good, GOOD_KEY_ENV),
        // 4, 5: a 503 and a hang-up: every try fails, then the fallback.
        (
            "primary",
            "primary-a",
            &p.unavailable.base_url(),
            FAILING_KEY_ENV,
        ),
        (
            "primary",
            "primary-b",
            &p.hangup.base_url(),
            FAILING_KEY_ENV,
        ),
        // 6, 7: the fallback: a refused address first, then one that answers.
        (
            "gpt-4o-mini",
            "gpt-4o-mini",
            &p.refused.base_url(),
            FAILING_KEY_ENV,
        ),
        ("gpt-4o-mini", "gpt-4o-mini", &good, GOOD_KEY_ENV),
        // 8: rate-limited, and no fallback.
        ("lonely", "lonely", &p.limited.base_url(), FAILING_KEY_ENV),
    ] {
        text.push_str(&entry(name, model, base, key));
    }
    // 9, 10: one that never answers (its try times out) and one that does, 1 s each.
    for (model, base) in [("slow-a", p.silent.base_url()), ("slow-b", good.clone())] {
        let key = if model == "slow-a" {
            FAILING_KEY_ENV
        } else {
            GOOD_KEY_ENV
        };
        text.push_str(&entry("slow", model, &base, key));
        text.push_str("      timeout: 1\n");
    }
    text.push_str(
        "router_settings:\n  fallbacks: [{\"primary\": [\"gpt-4o-mini\"]}]\n  num_retries: 1\n",
    );
    text
}

fn start(p: &Providers4, scratch: &Path) -> Stack {
    let keys = [(GOOD_KEY_ENV, GOOD_KEY), (FAILING_KEY_ENV, FAILING_KEY)];
    let providers = Providers::with_keys(&model_list(p), &keys, p.good.ca_file()).unwrap();
    let prices = scratch.join("prices.json");
    let table = json!({
        "gpt-4o-mini": {"litellm_provider": "openai", "mode": "chat",
                        "input_cost_per_token": MINI_IN, "output_cost_per_token": MINI_OUT},
    });
    std::fs::write(&prices, table.to_string()).unwrap();
    Stack::start(StackOptions {
        filter_config: FILTER_CONFIG.to_string(),
        providers,
        control_plane_args: vec!["--prices-file".into(), prices.display().to_string()],
        ..StackOptions::full()
    })
    .unwrap()
}

fn chat(stack: &Stack, key: &str, model: &str, stream: bool) -> Response {
    let bearer = format!("Bearer {key}");
    let body = json!({"model": model, "stream": stream,
                      "messages": [{"role": "user", "content": "hi"}]});
    http::post_raw(
        &stack.url("/v1/chat/completions"),
        &[("authorization", &bearer)],
        "application/json",
        &body.to_string(),
    )
    .unwrap()
}

/// One answer, from the good double, naming `model`.
fn answered(response: &Response, model: &str) {
    assert_eq!(response.status, 200, "{}", response.body);
    assert_eq!(
        response.json().unwrap()["model"],
        model,
        "{}",
        response.body
    );
}

#[test]
fn failures_are_retried_then_fall_back_and_the_client_gets_one_answer_billed_to_who_gave_it() {
    let scratch = tempfile::tempdir().unwrap();
    let p = Providers4::start(scratch.path());
    let mut stack = start(&p, scratch.path());
    let key = stack
        .generate_key(&json!({"key_alias": "fallbacks"}))
        .unwrap();
    let primary_only = stack.generate_key(&json!({"models": ["primary"]})).unwrap();
    let mini_only = stack
        .generate_key(&json!({"models": ["gpt-4o-mini"]}))
        .unwrap();

    // Equal deployments take turns: both answer.
    let models: Vec<String> = (0..4)
        .map(|_| {
            let r = chat(&stack, &key, "lb", false);
            assert_eq!(r.status, 200, "{}", r.body);
            r.json().unwrap()["model"].as_str().unwrap().to_owned()
        })
        .collect();
    assert!(
        models.iter().any(|m| m == "lb-a") && models.iter().any(|m| m == "lb-b"),
        "{models:?}"
    );

    // A 429 is retried at the model's other deployment: two requests, one of which
    // starts at the rate-limited one; both answered by the other, with its own key.
    for _ in 0..2 {
        answered(&chat(&stack, &key, "gpt-4o", false), "gpt-4o");
    }
    let limited = p.limited.seen();
    assert!(
        !limited.is_empty(),
        "no try reached the rate-limited deployment"
    );
    for seen in &limited {
        assert_eq!(seen.json()["model"], "gpt-4o-limited");
        let bearer = format!("Bearer {FAILING_KEY}");
        assert_eq!(seen.header("authorization"), Some(bearer.as_str()));
        assert_eq!(seen.path, "/v1/chat/completions");
        assert_eq!(seen.header("host"), Some(&p.limited.base_url()[7..]));
    }

    // Every try of `primary` fails (503, hang-up), then its fallback `gpt-4o-mini`: a
    // refused address, then the deployment that answers. A key allowed `primary` only
    // gets the fallback's answer: it is checked against what it asked for.
    for _ in 0..2 {
        answered(
            &chat(&stack, &primary_only, "primary", false),
            "gpt-4o-mini",
        );
    }
    let streamed = chat(&stack, &primary_only, "primary", true);
    assert_eq!(streamed.status, 200, "{}", streamed.body);
    assert!(
        streamed
            .header("content-type")
            .unwrap()
            .starts_with("text/event-stream"),
        "{streamed:?}"
    );
    assert_eq!(
        streamed.body.matches("data: [DONE]").count(),
        1,
        "one answer"
    );
    assert!(
        streamed.body.contains("\"model\":\"gpt-4o-mini\""),
        "{}",
        streamed.body
    );
    assert!(!p.unavailable.seen().is_empty() && !p.hangup.seen().is_empty());
    // The refused address was tried (Envoy's own count of its refused connections).
    let stats = http::get(&format!("{}/stats", stack.envoy.admin_url()), &[]).unwrap();
    let refused = stats
        .body
        .lines()
        .find_map(|l| l.strip_prefix("cluster.livegate_deployment_6.upstream_cx_connect_fail: "))
        .and_then(|n| n.trim().parse::<u64>().ok())
        .unwrap();
    assert!(refused > 0, "the refused deployment was never tried");
    for seen in p.unavailable.seen() {
        assert_eq!(seen.json()["model"], "primary-a");
    }
    for seen in p.hangup.seen() {
        assert_eq!(seen.json()["model"], "primary-b");
    }
    // The answer came from the good double, with its key, its Host, the fallback's model.
    let last = p.good.seen().pop().unwrap();
    assert_eq!(last.json()["model"], "gpt-4o-mini");
    assert_eq!(last.json()["stream"], true);
    assert_eq!(
        last.header("authorization"),
        Some(format!("Bearer {GOOD_KEY}").as_str())
    );
    assert!(
        last.header("host").unwrap().starts_with("localhost:"),
        "{last:?}"
    );
    // A key allowed only the fallback may not ask for the model that falls back to it.
    let refused = chat(&stack, &mini_only, "primary", false);
    assert_eq!(refused.status, 401, "{}", refused.body);
    assert_eq!(
        refused.json().unwrap()["error"]["type"],
        "key_model_access_denied"
    );

    // A try that times out is retried at the next deployment.
    for _ in 0..2 {
        answered(&chat(&stack, &key, "slow", false), "slow-b");
    }
    assert!(
        !p.silent.seen().is_empty(),
        "no try reached the silent deployment"
    );

    // No fallback: the provider's 429 reaches the client with its headers.
    let limited = chat(&stack, &key, "lonely", false);
    assert_eq!(limited.status, 429, "{}", limited.body);
    for (name, value) in RATE_LIMIT_HEADERS {
        assert_eq!(limited.header(name), Some(value), "{name}: {limited:?}");
    }
    assert_eq!(
        limited.json().unwrap()["error"]["code"],
        "rate_limit_exceeded"
    );

    // No provider ever saw a client's key, nor the filter's internal headers; no client
    // saw which deployment answered.
    for seen in p.seen() {
        for (name, value) in &seen.headers {
            for client in [&key, &primary_only, &mini_only] {
                assert!(!value.contains(client.as_str()), "{name} at a provider");
            }
            assert!(!name.starts_with("x-livegate-"), "{name} at a provider");
        }
    }
    assert_eq!(streamed.header("x-livegate-answered-by"), None);

    // The tries' filter is configured with the keys' variable names, never the keys.
    let dump = http::get(&format!("{}/config_dump", stack.envoy.admin_url()), &[]).unwrap();
    assert_eq!(dump.status, 200);
    assert!(dump.body.contains("livegate_attempt") && dump.body.contains(GOOD_KEY_ENV));
    let rendered = std::fs::read_to_string(stack.envoy.config_path()).unwrap();
    for text in [&dump.body, &rendered, &stack.envoy.log_text()] {
        assert!(!text.contains(GOOD_KEY) && !text.contains(FAILING_KEY));
    }

    // The spend records name the deployment that answered (7), priced as the model that
    // answered, exactly; one record per request.
    let rows = poll::until("three spend rows", PATIENCE, || {
        stack
            .spend_logs(&primary_only)
            .filter(|rows| rows.len() >= 3)
    })
    .unwrap();
    assert_eq!(rows.len(), 3, "{rows:?}");
    let expected = PROMPT_TOKENS as f64 * MINI_IN + COMPLETION_TOKENS as f64 * MINI_OUT;
    for row in &rows {
        assert_eq!(row["model"], "gpt-4o-mini", "{row}");
        assert_eq!(row["model_group"], "primary", "{row}");
        assert_eq!(
            row["metadata"]["deployment"], "livegate_deployment_7",
            "{row}"
        );
        assert_eq!(row["spend"].as_f64().unwrap(), expected, "{row}");
        assert_eq!(row["prompt_tokens"], PROMPT_TOKENS, "{row}");
    }
    let gpt4o = poll::until("the gpt-4o rows", PATIENCE, || {
        let rows = stack.spend_logs(&key)?;
        let of: Vec<Value> = rows
            .into_iter()
            .filter(|r| r["model_group"] == "gpt-4o")
            .collect();
        (of.len() >= 2).then_some(of)
    })
    .unwrap();
    for row in &gpt4o {
        assert_eq!(
            row["metadata"]["deployment"], "livegate_deployment_3",
            "{row}"
        );
    }

    // Faults: retries and fallbacks need neither Postgres nor the control plane.
    stack.postgres.as_ref().unwrap().pause().unwrap();
    answered(
        &chat(&stack, &primary_only, "primary", false),
        "gpt-4o-mini",
    );
    let stale_before = stack
        .envoy
        .prometheus_counter("livegate_stale_served_total")
        .unwrap();
    stack
        .control_plane
        .as_mut()
        .unwrap()
        .signal(Signal::SIGSTOP)
        .unwrap();
    poll::until("a stale allow to fall back", PATIENCE, || {
        answered(
            &chat(&stack, &primary_only, "primary", false),
            "gpt-4o-mini",
        );
        let stale = stack
            .envoy
            .prometheus_counter("livegate_stale_served_total")
            .unwrap();
        (stale > stale_before).then_some(())
    })
    .unwrap();
    answered(&chat(&stack, &key, "gpt-4o", false), "gpt-4o");
    answered(&chat(&stack, &key, "gpt-4o", false), "gpt-4o");
    stack
        .control_plane
        .as_mut()
        .unwrap()
        .signal(Signal::SIGCONT)
        .unwrap();
    stack.postgres.as_ref().unwrap().resume().unwrap();
}

/// One HTTP/2 (prior knowledge) chat completion to `model` whose body ends in trailers;
/// (status, body).
fn chat_with_trailers(address: &str, key: &str, model: &str) -> anyhow::Result<(u16, Value)> {
    let body = json!({"model": model, "messages": [{"role": "user", "content": "hi"}]});
    let mut trailers = HeaderMap::new();
    trailers.insert("x-client-checksum", HeaderValue::from_static("kept"));
    post_with_trailers(address, "/v1/chat/completions", key, &body, trailers)
}

/// A body that ends in trailers (HTTP/2) is shaped for each try all the same: the
/// fallback's deployment gets its own key and model, never the failed try's.
#[test]
fn a_request_ending_in_trailers_is_shaped_for_every_try() {
    let scratch = tempfile::tempdir().unwrap();
    let p = Providers4::start(scratch.path());
    let stack = start(&p, scratch.path());
    let key = stack
        .generate_key(&json!({"key_alias": "trailers"}))
        .unwrap();
    let address = stack.envoy.url().trim_start_matches("http://").to_string();
    for _ in 0..2 {
        let (status, body) = chat_with_trailers(&address, &key, "primary").unwrap();
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["model"], "gpt-4o-mini", "{body}");
    }
    for seen in p.unavailable.seen() {
        assert_eq!(seen.json()["model"], "primary-a");
        let bearer = format!("Bearer {FAILING_KEY}");
        assert_eq!(seen.header("authorization"), Some(bearer.as_str()));
    }
    let last = p.good.seen().pop().unwrap();
    assert_eq!(last.json()["model"], "gpt-4o-mini");
    assert_eq!(
        last.header("authorization"),
        Some(format!("Bearer {GOOD_KEY}").as_str())
    );
}
