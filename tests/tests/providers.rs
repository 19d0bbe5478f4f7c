//! Real providers through the real Envoy: a model list's deployments reached over HTTPS
//! (a double with its own CA that demands its own key), routed by model with the provider's
//! credential and never the client's, the key in no log and no config_dump, `/v1/models`
//! per key, and known keys still reaching the provider with Postgres frozen and the
//! control plane stopped.

#![allow(clippy::unwrap_used, clippy::panic)] // a test file: failures are panics

use std::time::Duration;

use livegate_tests::http::{self, Response};
use livegate_tests::poll;
use livegate_tests::provider_double::ProviderDouble;
use livegate_tests::providers::Providers;
use livegate_tests::stack::{Stack, StackOptions};
use nix::sys::signal::Signal;
use serde_json::{json, Value};

const PROVIDER_KEY_ENV: &str = "LIVEGATE_TEST_PROVIDER_KEY";
const PROVIDER_KEY: &str = "sk-provider-double-secret-7f3a9c";
const WRONG_KEY_ENV: &str = "LIVEGATE_TEST_WRONG_PROVIDER_KEY";
/// Short allow TTL, so the fault phase runs on stale allows.
const FILTER_CONFIG: &str =
    r#"{"cache": {"allow_ttl_ms": 500, "deny_ttl_ms": 200, "stale_if_error_ms": 120000}}"#;
const PATIENCE: Duration = Duration::from_secs(30);

fn model_list(double: &ProviderDouble) -> String {
    let base = double.base_url();
    format!(
        "model_list:
  - model_name: gpt-4o
    litellm_params:
      model: openai/gpt-4o-2024-08-06
      api_base: {base}/v1
      api_key: os.environ/{PROVIDER_KEY_ENV}
  - model_name: claude
    litellm_params:
      model: anthropic/claude-3-5-sonnet-20241022
      api_base: {base}
      api_key: os.environ/{PROVIDER_KEY_ENV}
  - model_name: mini
    litellm_params:
      model: openai/gpt-4o-mini
      api_base: {base}/v1
      api_key: os.environ/{PROVIDER_KEY_ENV}
  - model_name: pair
    litellm_params:
      model: openai/pair-a
      api_base: {base}/v1
      api_key: os.environ/{PROVIDER_KEY_ENV}
  - model_name: pair
    litellm_params:
      model: openai/pair-b
      api_base: {base}/v1
      api_key: os.environ/{PROVIDER_KEY_ENV}
      weight: 2
  - model_name: azure-4o
    litellm_params:
      model: azure/prod-4o
      api_base: {base}
      api_key: os.environ/{PROVIDER_KEY_ENV}
      api_version: \"2024-10-21\"
  - model_name: wrong-key
    litellm_params:
      model: openai/gpt-4o
      api_base: {base}/v1
      api_key: os.environ/{WRONG_KEY_ENV}
"
    )
}

fn start(double: &ProviderDouble) -> Stack {
    let keys = [
        (PROVIDER_KEY_ENV, PROVIDER_KEY),
        (WRONG_KEY_ENV, "sk-not-the-provider-s"),
    ];
    let providers = Providers::with_keys(&model_list(double), &keys, double.ca_file()).unwrap();
    Stack::start(StackOptions {
        filter_config: FILTER_CONFIG.to_string(),
        providers,
        ..StackOptions::full()
    })
    .unwrap()
}

fn post(stack: &Stack, path: &str, key: &str, body: &Value) -> Response {
    let bearer = format!("Bearer {key}");
    http::post_raw(
        &stack.url(path),
        &[("authorization", &bearer)],
        "application/json",
        &body.to_string(),
    )
    .unwrap()
}

fn chat(stack: &Stack, key: &str, model: &str) -> Response {
    let body = json!({"model": model, "messages": [{"role": "user", "content": "hi"}]});
    post(stack, "/v1/chat/completions", key, &body)
}

fn listed(stack: &Stack, path: &str, key: &str) -> Vec<String> {
    let bearer = format!("Bearer {key}");
    let response = http::get(&stack.url(path), &[("authorization", &bearer)]).unwrap();
    assert_eq!(response.status, 200, "{path}: {}", response.body);
    let body = response.json().unwrap();
    assert_eq!(body["object"], "list", "{body}");
    body["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap().to_owned())
        .collect()
}

/// The double answered, and it saw the provider's key and the provider's model.
fn reached(response: &Response, double: &ProviderDouble, model: &str) {
    assert_eq!(response.status, 200, "{}", response.body);
    assert_eq!(
        response.json().unwrap()["model"],
        model,
        "{}",
        response.body
    );
    let last = double.seen().pop().unwrap();
    assert_eq!(last.json()["model"], model);
    assert_eq!(
        last.header("authorization"),
        Some(format!("Bearer {PROVIDER_KEY}").as_str())
    );
}

#[test]
fn keys_reach_https_providers_by_model_with_the_provider_s_key_never_their_own() {
    let scratch = tempfile::tempdir().unwrap();
    let double = ProviderDouble::start(scratch.path(), PROVIDER_KEY).unwrap();
    let mut stack = start(&double);
    let key = stack
        .generate_key(&json!({"key_alias": "providers"}))
        .unwrap();
    let restricted = stack.generate_key(&json!({"models": ["mini"]})).unwrap();

    // OpenAI's shape, over TLS verified against the double's CA, its path under api_base.
    reached(&chat(&stack, &key, "gpt-4o"), &double, "gpt-4o-2024-08-06");
    let first = double.seen().pop().unwrap();
    assert_eq!(first.path, "/v1/chat/completions");
    assert_eq!(first.method, "POST");
    assert!(
        first.header("host").unwrap().starts_with("localhost"),
        "{first:?}"
    );

    // Anthropic's: x-api-key and anthropic-version, /v1/messages.
    let message = json!({"model": "claude", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]});
    let answer = post(&stack, "/v1/messages", &key, &message);
    assert_eq!(answer.status, 200, "{}", answer.body);
    let seen = double.seen().pop().unwrap();
    assert_eq!(seen.path, "/v1/messages");
    assert_eq!(seen.header("x-api-key"), Some(PROVIDER_KEY));
    assert_eq!(seen.header("anthropic-version"), Some("2023-06-01"));
    assert_eq!(seen.json()["model"], "claude-3-5-sonnet-20241022");

    // Azure's: api-key, the deployment in the path, api-version in the query.
    let answer = chat(&stack, &key, "azure-4o");
    assert_eq!(answer.status, 200, "{}", answer.body);
    let seen = double.seen().pop().unwrap();
    assert_eq!(
        seen.path,
        "/openai/deployments/prod-4o/chat/completions?api-version=2024-10-21"
    );
    assert_eq!(seen.header("api-key"), Some(PROVIDER_KEY));
    assert_eq!(seen.header("authorization"), None);

    // The double demands its own key: a deployment configured with another is refused there.
    let wrong = chat(&stack, &key, "wrong-key");
    assert_eq!(wrong.status, 401, "{}", wrong.body);
    assert_eq!(wrong.json().unwrap()["error"]["code"], "invalid_api_key");

    // A model outside the list, or outside the key's models, never reaches the provider.
    let before = double.seen().len();
    let unknown = chat(&stack, &key, "gpt-5");
    assert_eq!(unknown.status, 400, "{}", unknown.body);
    assert!(unknown.body.contains("gpt-5"), "{}", unknown.body);
    let denied = chat(&stack, &restricted, "gpt-4o");
    assert_eq!(denied.status, 401, "{}", denied.body);
    assert_eq!(double.seen().len(), before);
    reached(&chat(&stack, &restricted, "mini"), &double, "gpt-4o-mini");

    // Entries sharing a model_name take turns by weight (one Envoy worker: one counter).
    let turns: Vec<String> = (0..6)
        .map(|_| {
            let answer = chat(&stack, &key, "pair");
            assert_eq!(answer.status, 200, "{}", answer.body);
            answer.json().unwrap()["model"].as_str().unwrap().to_owned()
        })
        .collect();
    assert_eq!(
        turns.iter().filter(|m| *m == "pair-a").count(),
        2,
        "{turns:?}"
    );
    assert_eq!(
        turns.iter().filter(|m| *m == "pair-b").count(),
        4,
        "{turns:?}"
    );

    // The attack: a client naming a deployment itself. Its header is gone before any filter
    // runs: a route without a model reaches no provider, and a model route goes where the
    // filter sends it.
    let bearer = format!("Bearer {key}");
    let before = double.seen().len();
    let smuggled = http::post_raw(
        &stack.url("/v1/files"),
        &[
            ("authorization", &bearer),
            ("x-livegate-deployment", "livegate_deployment_0"),
        ],
        "application/json",
        "{}",
    )
    .unwrap();
    assert_eq!(smuggled.status, 404, "{}", smuggled.body);
    assert_eq!(
        double.seen().len(),
        before,
        "a client's deployment header reached a provider"
    );
    let body = json!({"model": "mini", "messages": []}).to_string();
    let steered = http::post_raw(
        &stack.url("/v1/chat/completions"),
        &[
            ("authorization", &format!("Bearer {restricted}")),
            ("x-livegate-deployment", "livegate_deployment_0"),
        ],
        "application/json",
        &body,
    )
    .unwrap();
    reached(&steered, &double, "gpt-4o-mini");

    // The model list per key, under both spellings.
    for path in ["/v1/models", "/models"] {
        assert_eq!(
            listed(&stack, path, &key),
            ["gpt-4o", "claude", "mini", "pair", "azure-4o", "wrong-key"]
        );
        assert_eq!(listed(&stack, path, &restricted), ["mini"]);
    }

    // Nothing the provider saw carries a client's key or the filter's own headers.
    for seen in double.seen() {
        for (name, value) in &seen.headers {
            assert!(
                !value.contains(&key) && !value.contains(&restricted),
                "a client key reached the provider in {name}"
            );
            assert!(
                !name.starts_with("x-livegate-"),
                "{name} reached the provider"
            );
        }
    }

    // The provider's key is in no log, no access log, no rendered file, no config_dump.
    let dump = http::get(&format!("{}/config_dump", stack.envoy.admin_url()), &[]).unwrap();
    assert_eq!(dump.status, 200);
    assert!(
        dump.body.contains(PROVIDER_KEY_ENV),
        "the dump names the variable only"
    );
    assert!(dump.body.contains("livegate_deployment_0"));
    // Envoy writes its access log in batches: wait until this test's requests are in it.
    poll::until("the access log", PATIENCE, || {
        stack
            .envoy
            .log_text()
            .contains("\"path\":\"/v1/messages\"")
            .then_some(())
    })
    .unwrap();
    let rendered = std::fs::read_to_string(stack.envoy.config_path()).unwrap();
    let control_plane_log = stack.control_plane.as_ref().unwrap().log_text();
    for (place, text) in [
        ("config_dump", &dump.body),
        ("the rendered config", &rendered),
        ("Envoy's log and access log", &stack.envoy.log_text()),
        ("the control plane's log", &control_plane_log),
    ] {
        assert!(
            !text.contains(PROVIDER_KEY),
            "the provider key is in {place}"
        );
    }

    // Faults: routing and the credential need neither Postgres nor the control plane.
    stack.postgres.as_ref().unwrap().pause().unwrap();
    reached(&chat(&stack, &key, "gpt-4o"), &double, "gpt-4o-2024-08-06");
    let stale_before = stack
        .envoy
        .prometheus_counter("livegate_stale_served_total")
        .unwrap();
    let control_plane = stack.control_plane.as_mut().unwrap();
    control_plane.signal(Signal::SIGSTOP).unwrap();
    poll::until("a stale allow to reach the provider", PATIENCE, || {
        reached(&chat(&stack, &key, "gpt-4o"), &double, "gpt-4o-2024-08-06");
        let stale = stack
            .envoy
            .prometheus_counter("livegate_stale_served_total")
            .unwrap();
        (stale > stale_before).then_some(())
    })
    .unwrap();
    reached(&chat(&stack, &restricted, "mini"), &double, "gpt-4o-mini");
    assert_eq!(chat(&stack, &restricted, "gpt-4o").status, 401);
    let control_plane = stack.control_plane.as_mut().unwrap();
    control_plane.signal(Signal::SIGCONT).unwrap();
    stack.postgres.as_ref().unwrap().resume().unwrap();
}

const OPENAI_SDK_SCRIPT: &str = r#"
import json, sys
from openai import OpenAI
client = OpenAI(base_url=sys.argv[1] + "/v1", api_key=sys.argv[2], max_retries=0)
plain = client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "hi"}])
chunks = list(client.chat.completions.create(
    model="gpt-4o", messages=[{"role": "user", "content": "hi"}], stream=True))
text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
models = [m.id for m in client.models.list()]
print(json.dumps({"plain": plain.choices[0].message.content, "plain_model": plain.model,
                  "stream": text, "models": models}))
"#;

#[test]
fn the_openai_python_sdk_reaches_the_https_provider_through_the_gateway() {
    let scratch = tempfile::tempdir().unwrap();
    let double = ProviderDouble::start(scratch.path(), PROVIDER_KEY).unwrap();
    let stack = start(&double);
    let key = stack.generate_key(&json!({"models": ["gpt-4o"]})).unwrap();
    let seen = livegate_tests::python_client::run_json(OPENAI_SDK_SCRIPT, &[&stack.url(""), &key]);
    assert_eq!(seen["plain"], "hello from the double", "{seen}");
    assert_eq!(seen["plain_model"], "gpt-4o-2024-08-06", "{seen}");
    assert_eq!(seen["stream"], "hello", "{seen}");
    assert_eq!(seen["models"], json!(["gpt-4o"]), "{seen}");
    let requests = double.seen();
    assert_eq!(requests.len(), 2, "{requests:?}");
    for request in requests {
        assert_eq!(
            request.header("authorization"),
            Some(format!("Bearer {PROVIDER_KEY}").as_str())
        );
        assert!(request.headers.iter().all(|(_, v)| !v.contains(&key)));
    }
}

#[test]
fn a_provider_that_offers_http2_is_spoken_to_in_http2() {
    let scratch = tempfile::tempdir().unwrap();
    let double = ProviderDouble::start_http2(scratch.path(), PROVIDER_KEY).unwrap();
    let stack = start(&double);
    let key = stack.generate_key(&json!({})).unwrap();
    reached(&chat(&stack, &key, "gpt-4o"), &double, "gpt-4o-2024-08-06");
    let seen = double.seen().pop().unwrap();
    assert!(seen.http2, "{seen:?}");
    assert_eq!(seen.path, "/v1/chat/completions");
    assert!(
        seen.header("host").unwrap().starts_with("localhost:"),
        "{seen:?}"
    );
    let message = json!({"model": "claude", "max_tokens": 5, "messages": []});
    assert_eq!(post(&stack, "/v1/messages", &key, &message).status, 200);
    assert_eq!(
        double.seen().pop().unwrap().header("x-api-key"),
        Some(PROVIDER_KEY)
    );
}
