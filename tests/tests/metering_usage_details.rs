//! Usage as providers bill it (issue 25), through the real Envoy, filter, control plane
//! and Postgres: the demo upstream states cached and reasoning tokens in OpenAI's shapes
//! (chat and the Responses API, JSON and streamed) and cache reads and writes in
//! Anthropic's (`/v1/messages`, JSON and streamed), and each request costs in
//! `/spend/logs` exactly what LiteLLM's calculator says for that usage at the demo's
//! prices (`deploy/prices/model_prices.json`), its counts shown under LiteLLM's names in
//! `metadata.usage_object`; the key's spend is their sum. One streamed answer is metered
//! while the control plane is stopped, one while Postgres is frozen: the details survive
//! the filter's queue and the spool. The attack: a client that writes usage (cached
//! tokens) into its own request is charged what the upstream stated, in full.

#![allow(clippy::unwrap_used, clippy::panic)] // a test file: failures are panics

use std::time::Duration;

use livegate_tests::artifacts::demo_prices_file;
use livegate_tests::envoy::prometheus_value;
use livegate_tests::http;
use livegate_tests::poll;
use livegate_tests::stack::{Stack, StackOptions};
use nix::sys::signal::Signal;
use serde_json::{json, Value};

const FILTER_CONFIG: &str = r#"{"metering": {"send_timeout_ms": 500}}"#;
const PATIENCE: Duration = Duration::from_secs(60);

/// One request's expected row, found by its prompt (each request's is distinct).
struct Expected {
    name: &'static str,
    prompt: u64,
    completion: u64,
    cached: Option<u64>,
    reasoning: Option<u64>,
    cache_creation: Option<u64>,
    streamed: bool,
    /// What LiteLLM 1.110.2 charges for this usage at the demo's prices. Computed with
    /// `pip install litellm` in a scratch venv: `litellm.register_model({"livegate-demo":
    /// <the demo price file's entry>})`, then `litellm.completion_cost(completion_response=
    /// litellm.ModelResponse(model="livegate-demo", usage=u), model="livegate-demo",
    /// custom_llm_provider="openai")` with `u` = `Usage(prompt_tokens, completion_tokens,
    /// total_tokens, prompt_tokens_details=PromptTokensDetailsWrapper(cached_tokens=…),
    /// completion_tokens_details=CompletionTokensDetailsWrapper(reasoning_tokens=…))` for
    /// OpenAI's rows and `AnthropicConfig().calculate_usage(<Anthropic's raw usage>,
    /// reasoning_content=None)` for Anthropic's.
    litellm_cost: f64,
}

fn post(stack: &Stack, key: &str, path: &str, body: Value) -> String {
    let bearer = format!("Bearer {key}");
    let r = http::post_raw(
        &stack.url(path),
        &[("authorization", bearer.as_str())],
        "application/json",
        &body.to_string(),
    )
    .unwrap();
    assert_eq!(r.status, 200, "{path}: {}", r.body);
    r.body
}

fn chat(content: usize, stream: bool, details: Value) -> Value {
    json!({
        "model": "livegate-demo",
        "messages": [{"role": "user", "content": "x".repeat(content)}],
        "stream": stream,
        "livegate_usage_details": details,
    })
}

fn responses(input: usize, stream: bool, details: Value) -> Value {
    json!({
        "model": "livegate-demo",
        "input": "y".repeat(input),
        "stream": stream,
        "livegate_usage_details": details,
    })
}

#[test]
fn cached_reasoning_and_cache_write_tokens_are_charged_what_litellm_charges_through_outages() {
    let stack = Stack::start(StackOptions {
        filter_config: FILTER_CONFIG.to_string(),
        control_plane_args: vec![
            "--prices-file".into(),
            demo_prices_file().display().to_string(),
        ],
        ..StackOptions::full()
    })
    .unwrap();
    let created = stack
        .admin("/key/generate", &json!({"key_alias": "details"}))
        .unwrap();
    let key = created["key"].as_str().unwrap().to_string();
    let reasoning = json!({"cached": 32, "reasoning": 16});
    let short = json!({"cached": 16, "reasoning": 4});
    let cache = json!({"cached": 300, "cache_creation": 200});

    // OpenAI chat, JSON and streamed (the filter asks for the stream's usage).
    post(
        &stack,
        &key,
        "/v1/chat/completions",
        chat(40, false, reasoning.clone()),
    );
    let streamed = post(
        &stack,
        &key,
        "/v1/chat/completions",
        chat(41, true, reasoning),
    );
    assert!(streamed.contains("\"reasoning_tokens\":16"), "{streamed}");
    // The Responses API, JSON.
    post(
        &stack,
        &key,
        "/v1/responses",
        responses(42, false, short.clone()),
    );
    // Anthropic's Messages API, JSON: input_tokens 12 exclude the 300 read and 200 written.
    let message = post(&stack, &key, "/v1/messages", chat(12, false, cache.clone()));
    assert!(
        message.contains("\"cache_read_input_tokens\":300"),
        "{message}"
    );

    // The attack: usage written into the client's own request changes nothing.
    let mut claimed = chat(0, false, Value::Null);
    claimed["usage"] = json!({"prompt_tokens": 1, "prompt_tokens_details": {"cached_tokens": 44}});
    claimed["messages"][0]["content"] =
        json!(r#"{"usage":{"prompt_tokens_details":{"cached_tokens":44}}}"#);
    post(&stack, &key, "/v1/chat/completions", claimed);

    // The control plane stopped: an Anthropic stream's record waits in the filter's queue.
    let control_plane = stack.control_plane.as_ref().unwrap();
    control_plane.signal(Signal::SIGSTOP).unwrap();
    let stream = post(&stack, &key, "/v1/messages", chat(13, true, cache));
    assert!(stream.contains("message_delta"), "{stream}");
    poll::until("the record queued in the filter", PATIENCE, || {
        let queued = stack
            .envoy
            .prometheus_counter("livegate_spend_queue_records")
            .ok()?;
        (queued >= 1.0).then_some(())
    })
    .unwrap();
    control_plane.signal(Signal::SIGCONT).unwrap();

    // Postgres frozen: a Responses API stream's record is spooled, then drained.
    let postgres = stack.postgres.as_ref().unwrap();
    postgres.pause().unwrap();
    post(&stack, &key, "/v1/responses", responses(43, true, short));
    poll::until("the record spooled", PATIENCE, || {
        let text = stack.control_plane_metrics().unwrap();
        (prometheus_value(&text, "livegate_spend_spool_records")? >= 1.0).then_some(())
    })
    .unwrap();
    postgres.resume().unwrap();

    let expected = [
        Expected {
            name: "chat",
            prompt: 40,
            completion: 24,
            cached: Some(32),
            reasoning: Some(16),
            cache_creation: None,
            streamed: false,
            litellm_cost: 0.0013120000000000002,
        },
        Expected {
            name: "chat stream",
            prompt: 41,
            completion: 24,
            cached: Some(32),
            reasoning: Some(16),
            cache_creation: None,
            streamed: true,
            litellm_cost: 0.001322,
        },
        Expected {
            name: "responses",
            prompt: 42,
            completion: 12,
            cached: Some(16),
            reasoning: Some(4),
            cache_creation: None,
            streamed: false,
            litellm_cost: 0.000756,
        },
        Expected {
            name: "responses stream, Postgres frozen",
            prompt: 43,
            completion: 12,
            cached: Some(16),
            reasoning: Some(4),
            cache_creation: None,
            streamed: true,
            litellm_cost: 0.000766,
        },
        Expected {
            name: "messages",
            prompt: 512,
            completion: 8,
            cached: Some(300),
            reasoning: None,
            cache_creation: Some(200),
            streamed: false,
            litellm_cost: 0.00316,
        },
        Expected {
            name: "messages stream, control plane stopped",
            prompt: 513,
            completion: 8,
            cached: Some(300),
            reasoning: None,
            cache_creation: Some(200),
            streamed: true,
            litellm_cost: 0.00317,
        },
        Expected {
            name: "usage claimed by the client",
            prompt: 56,
            completion: 8,
            cached: None,
            reasoning: None,
            cache_creation: None,
            streamed: false,
            litellm_cost: 0.0008,
        },
    ];
    let rows = poll::until("a row per request", PATIENCE, || {
        stack
            .spend_logs(&key)
            .filter(|rows| rows.len() >= expected.len())
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", stack.envoy.log_text()));
    assert_eq!(rows.len(), expected.len(), "{rows:#?}");
    for e in &expected {
        let row = rows
            .iter()
            .find(|r| r["prompt_tokens"] == e.prompt)
            .unwrap_or_else(|| panic!("{}: no row\n{rows:#?}", e.name));
        let name = e.name;
        assert_eq!(
            row["spend"].as_f64().unwrap(),
            e.litellm_cost,
            "{name}: {row}"
        );
        assert_eq!(row["completion_tokens"], e.completion, "{name}: {row}");
        assert_eq!(
            row["total_tokens"],
            e.prompt + e.completion,
            "{name}: {row}"
        );
        let meta = &row["metadata"];
        assert_eq!(meta["usage_known"], true, "{name}: {row}");
        assert_eq!(meta["streamed"], e.streamed, "{name}: {row}");
        assert_eq!(meta["unpriced"], false, "{name}: {row}");
        let usage = &meta["usage_object"];
        assert_eq!(usage["prompt_tokens"], e.prompt, "{name}: {row}");
        assert_eq!(
            usage["prompt_tokens_details"]["cached_tokens"],
            json!(e.cached),
            "{name}: {row}"
        );
        assert_eq!(
            usage["cache_read_input_tokens"],
            json!(e.cached),
            "{name}: {row}"
        );
        assert_eq!(
            usage["completion_tokens_details"]["reasoning_tokens"],
            json!(e.reasoning),
            "{name}: {row}"
        );
        assert_eq!(
            usage["prompt_tokens_details"]["cache_creation_tokens"],
            json!(e.cache_creation),
            "{name}: {row}"
        );
        assert_eq!(
            usage["cache_creation_input_tokens"],
            json!(e.cache_creation),
            "{name}: {row}"
        );
    }

    // Counted by kind where the records were drained: a drain counts its batch once its
    // rows are written, so the last batch's count may follow its rows by a moment.
    for (kind, sum) in [("cached", 696), ("cache_creation", 400), ("reasoning", 40)] {
        let series = format!(
            "livegate_spend_tokens_total{{key_alias=\"details\",team=\"\",model=\"livegate-demo\",kind=\"{kind}\"}}"
        );
        let counted = poll::until(&format!("{series} at {sum}"), PATIENCE, || {
            let text = stack.control_plane_metrics().unwrap();
            (prometheus_value(&text, &series) == Some(sum as f64)).then_some(())
        });
        assert!(
            counted.is_ok(),
            "{series}\n{}",
            stack.control_plane_metrics().unwrap()
        );
    }

    // The key's spend is the sum of its rows (added up by Postgres, batch by batch).
    let total: f64 = expected.iter().map(|e| e.litellm_cost).sum();
    let info = stack.admin_get(&format!("/key/info?key={key}")).unwrap();
    let spend = info["info"]["spend"].as_f64().unwrap();
    assert!(
        (spend - total).abs() <= 1e-12 * total,
        "{spend} != {total}: {info}"
    );
    // Not what the same tokens would cost as plain prompt and completion: had the
    // details been dropped anywhere on the way, the sum would be this.
    let plain: f64 = expected
        .iter()
        .map(|e| e.prompt as f64 * 1e-05 + e.completion as f64 * 3e-05)
        .sum();
    assert_ne!(spend, plain);
}

/// The OpenAI Python SDK, plain and streamed (it does not ask for the stream's usage: the
/// filter does), the demo asked for details with `extra_body`. Prints what the SDK parsed.
const OPENAI_SDK_SCRIPT: &str = r#"
import json, sys
from openai import OpenAI
client = OpenAI(base_url=sys.argv[1] + "/v1", api_key=sys.argv[2], max_retries=0, timeout=30)
details = {"livegate_usage_details": {"cached": 32, "reasoning": 16}}
plain = client.chat.completions.create(model="livegate-demo",
    messages=[{"role": "user", "content": "x" * 45}], extra_body=details)
streamed = None
for chunk in client.chat.completions.create(model="livegate-demo",
        messages=[{"role": "user", "content": "x" * 46}], stream=True, extra_body=details):
    if chunk.usage is not None:
        streamed = chunk.usage
print(json.dumps({
    "plain": [plain.usage.prompt_tokens_details.cached_tokens,
              plain.usage.completion_tokens_details.reasoning_tokens],
    "streamed": [streamed.prompt_tokens_details.cached_tokens,
                 streamed.completion_tokens_details.reasoning_tokens],
}))
"#;

#[test]
fn the_openai_python_sdk_reads_the_details_and_its_requests_cost_what_litellm_says() {
    let stack = Stack::start(StackOptions {
        filter_config: FILTER_CONFIG.to_string(),
        control_plane_args: vec![
            "--prices-file".into(),
            demo_prices_file().display().to_string(),
        ],
        ..StackOptions::full()
    })
    .unwrap();
    let created = stack
        .admin("/key/generate", &json!({"key_alias": "sdk-details"}))
        .unwrap();
    let key = created["key"].as_str().unwrap().to_string();
    let seen = livegate_tests::python_client::run_json(OPENAI_SDK_SCRIPT, &[&stack.url(""), &key]);
    assert_eq!(seen, json!({"plain": [32, 16], "streamed": [32, 16]}));
    let rows = poll::until("2 spend rows", PATIENCE, || {
        stack.spend_logs(&key).filter(|rows| rows.len() >= 2)
    })
    .unwrap();
    assert_eq!(rows.len(), 2, "{rows:#?}");
    // LiteLLM 1.110.2, as for the rows of the test above: openai(45 | 46, 24, cached=32,
    // reasoning=16) at the demo's prices.
    for (prompt, streamed, litellm_cost) in [
        (45, false, 0.0013620000000000001),
        (46, true, 0.0013720000000000002),
    ] {
        let row = rows.iter().find(|r| r["prompt_tokens"] == prompt).unwrap();
        assert_eq!(row["metadata"]["streamed"], streamed, "{row}");
        assert_eq!(row["spend"].as_f64().unwrap(), litellm_cost, "{row}");
    }
}
