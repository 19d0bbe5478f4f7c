//! A model list given to both halves (Envoy's deployments and the control plane's
//! `--config`): each deployment priced by its own `model_info` to the last digit, `GET
//! /model/info` answering each caller what it may see (also with Postgres frozen), and the
//! Anthropic Python SDK through the gateway, plain and streamed, billed with its cache
//! writes and reads.

#![allow(clippy::unwrap_used, clippy::panic)] // a test file: failures are panics

use std::path::Path;
use std::time::Duration;

use livegate_tests::control_plane::ControlPlane;
use livegate_tests::http;
use livegate_tests::poll;
use livegate_tests::provider_double::{ProviderDouble, ANTHROPIC_USAGE};
use livegate_tests::providers::Providers;
use livegate_tests::stack::{Stack, StackOptions};
use serde_json::{json, Value};

const PROVIDER_KEY_ENV: &str = "LIVEGATE_TEST_PROVIDER_KEY";
const PROVIDER_KEY: &str = "sk-provider-double-secret-51d0e2";
const PATIENCE: Duration = Duration::from_secs(30);

/// Claude 3.5 Sonnet's published prices, and a price for gpt-4o that no price file has.
const CLAUDE: Prices = Prices {
    input: 0.000003,
    output: 0.000015,
    cache_read: 0.0000003,
    cache_creation: 0.00000375,
};
const GPT_INPUT: f64 = 0.0000021;
const GPT_OUTPUT: f64 = 0.0000093;

struct Prices {
    input: f64,
    output: f64,
    cache_read: f64,
    cache_creation: f64,
}

/// LiteLLM's `generic_cost_per_token`, in its order of operations (the control plane's
/// `pricing` is checked against LiteLLM's own numbers natively): uncached prompt, plus
/// cache reads, plus cache writes, then the completion.
fn litellm_cost(p: &Prices, uncached: u64, cache_read: u64, cache_creation: u64, out: u64) -> f64 {
    let mut prompt = uncached as f64 * p.input;
    prompt += cache_read as f64 * p.cache_read;
    if cache_creation > 0 {
        prompt += cache_creation as f64 * p.cache_creation;
    }
    prompt + out as f64 * p.output
}

fn model_list(double: &ProviderDouble) -> String {
    let base = double.base_url();
    format!(
        "model_list:
  - model_name: claude
    litellm_params:
      model: anthropic/claude-3-5-sonnet-20241022
      api_base: {base}
      api_key: os.environ/{PROVIDER_KEY_ENV}
    model_info:
      input_cost_per_token: {}
      output_cost_per_token: {}
      cache_read_input_token_cost: {}
      cache_creation_input_token_cost: {}
  - model_name: gpt-4o
    litellm_params:
      model: openai/gpt-4o-2024-08-06
      api_base: {base}/v1
      api_key: os.environ/{PROVIDER_KEY_ENV}
      timeout: 60
    model_info:
      input_cost_per_token: {GPT_INPUT}
      output_cost_per_token: {GPT_OUTPUT}
  - model_name: mini
    litellm_params:
      model: openai/gpt-4o-mini
      api_base: {base}/v1
      api_key: os.environ/{PROVIDER_KEY_ENV}
",
        CLAUDE.input, CLAUDE.output, CLAUDE.cache_read, CLAUDE.cache_creation
    )
}

/// The stack with the list rendered into Envoy and given to the control plane as a file
/// (whose environment has no provider key: it needs none).
fn start(double: &ProviderDouble, dir: &Path) -> Stack {
    let text = model_list(double);
    let file = dir.join("config.yaml");
    std::fs::write(&file, &text).unwrap();
    let keys = [(PROVIDER_KEY_ENV, PROVIDER_KEY)];
    let providers = Providers::with_keys(&text, &keys, double.ca_file()).unwrap();
    Stack::start(StackOptions {
        providers,
        control_plane_args: vec!["--config".into(), file.display().to_string()],
        ..StackOptions::full()
    })
    .unwrap()
}

fn model_info(stack: &Stack, path: &str, key: &str) -> http::Response {
    let bearer = format!("Bearer {key}");
    http::get(&stack.url(path), &[("authorization", &bearer)]).unwrap()
}

fn names(response: &http::Response) -> Vec<String> {
    assert_eq!(response.status, 200, "{}", response.body);
    let body = response.json().unwrap();
    body["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["model_name"].as_str().unwrap().to_owned())
        .collect()
}

fn spend_rows(stack: &Stack, key: &str, n: usize) -> Vec<Value> {
    poll::until("the spend rows", PATIENCE, || {
        stack.spend_logs(key).filter(|rows| rows.len() >= n)
    })
    .unwrap()
}

#[test]
fn model_info_shows_each_caller_its_deployments_and_each_is_priced_by_its_own_prices() {
    let scratch = tempfile::tempdir().unwrap();
    let double = ProviderDouble::start(scratch.path(), PROVIDER_KEY).unwrap();
    let stack = start(&double, scratch.path());
    let master = stack.master_key().to_owned();
    let open = stack.generate_key(&json!({})).unwrap();
    let claude_only = stack.generate_key(&json!({"models": ["claude"]})).unwrap();

    // The admin: every deployment, its api_base and its prices, under both paths.
    for path in ["/model/info", "/v1/model/info"] {
        let answer = model_info(&stack, path, &master);
        assert_eq!(names(&answer), ["claude", "gpt-4o", "mini"], "{path}");
        let body = answer.json().unwrap();
        let gpt = &body["data"][1];
        assert_eq!(gpt["litellm_params"]["model"], "openai/gpt-4o-2024-08-06");
        assert_eq!(
            gpt["litellm_params"]["api_base"],
            format!("{}/v1", double.base_url())
        );
        assert_eq!(gpt["litellm_params"]["timeout"], 60.0);
        assert_eq!(gpt["model_info"]["id"], "livegate_deployment_1");
        assert_eq!(gpt["model_info"]["input_cost_per_token"], GPT_INPUT);
        assert_eq!(
            body["data"][0]["model_info"]["cache_creation_input_token_cost"],
            CLAUDE.cache_creation
        );
        // The key is never shown, nor the variable that holds it.
        assert!(!answer.body.contains(PROVIDER_KEY), "{}", answer.body);
        assert!(!answer.body.contains("api_key"), "{}", answer.body);
    }
    let one = model_info(
        &stack,
        "/model/info?litellm_model_id=livegate_deployment_2",
        &master,
    );
    assert_eq!(names(&one), ["mini"]);

    // A key: its own models, without api_base.
    assert_eq!(
        names(&model_info(&stack, "/model/info", &open)),
        ["claude", "gpt-4o", "mini"]
    );
    let own = model_info(&stack, "/v1/model/info", &claude_only);
    assert_eq!(names(&own), ["claude"]);
    assert!(!own.body.contains("api_base"), "{}", own.body);
    // The attack: a restricted key asking for another model's deployment by id learns nothing.
    let asked = model_info(
        &stack,
        "/model/info?litellm_model_id=livegate_deployment_1",
        &claude_only,
    );
    assert_eq!(names(&asked), Vec::<String>::new());

    // Wrong callers, and a parameter livegate does not implement, named.
    let none = http::get(&stack.url("/model/info"), &[]).unwrap();
    assert_eq!(none.status, 401, "{}", none.body);
    let stranger = model_info(&stack, "/model/info", "sk-nobody-issued-this-0000");
    assert_eq!(stranger.status, 401, "{}", stranger.body);
    stack
        .admin("/key/block", &json!({"key": claude_only}))
        .unwrap();
    poll::until("the blocked key refused", PATIENCE, || {
        let r = model_info(&stack, "/model/info", &claude_only);
        (r.status == 401 || r.status == 403).then_some(())
    })
    .unwrap();
    let unknown = model_info(&stack, "/model/info?team_id=t", &master);
    assert_eq!(unknown.status, 400, "{}", unknown.body);
    assert_eq!(unknown.json().unwrap()["error"]["param"], "team_id");

    // Each deployment billed at its model_info prices, to the last digit.
    let body = json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]});
    let bearer = format!("Bearer {open}");
    let answer = http::post_raw(
        &stack.url("/v1/chat/completions"),
        &[("authorization", &bearer)],
        "application/json",
        &body.to_string(),
    )
    .unwrap();
    assert_eq!(answer.status, 200, "{}", answer.body);
    let rows = spend_rows(&stack, &open, 1);
    assert_eq!(rows.len(), 1, "{rows:#?}");
    let gpt = Prices {
        input: GPT_INPUT,
        output: GPT_OUTPUT,
        cache_read: GPT_INPUT,
        cache_creation: GPT_INPUT,
    };
    assert_eq!(
        rows[0]["spend"].as_f64().unwrap(),
        litellm_cost(&gpt, 11, 0, 0, 7),
        "{}",
        rows[0]
    );
    assert_eq!(rows[0]["metadata"]["unpriced"], false, "{}", rows[0]);

    // Postgres frozen: the admin view needs no database, a key the control plane knows is
    // answered from its cache, and a key it never saw cannot be checked (503).
    let before = model_info(&stack, "/model/info", &master).body;
    let postgres = stack.postgres.as_ref().unwrap();
    postgres.pause().unwrap();
    let frozen = model_info(&stack, "/model/info", &master);
    assert_eq!(frozen.status, 200, "{}", frozen.body);
    assert_eq!(frozen.body, before);
    assert_eq!(
        names(&model_info(&stack, "/model/info", &open)),
        ["claude", "gpt-4o", "mini"]
    );
    let unseen = model_info(&stack, "/model/info", "sk-never-seen-while-frozen-0000");
    assert_eq!(unseen.status, 503, "{}", unseen.body);
    postgres.resume().unwrap();

    // The file broken under the running control plane: nothing changes until a restart.
    std::fs::write(scratch.path().join("config.yaml"), "model_list: nonsense\n").unwrap();
    assert_eq!(model_info(&stack, "/model/info", &master).body, before);
}

#[test]
fn a_control_plane_given_an_invalid_model_list_refuses_to_start_naming_the_field() {
    let scratch = tempfile::tempdir().unwrap();
    let nowhere = "postgres://livegate:unused@127.0.0.1:1/livegate";
    for (list, field, named) in [
        (
            "model_list:\n  - model_name: m\n    litellm_params: { model: openai/m }\n    model_info: { max_tokens: 5 }\n",
            "model_list[0].model_info",
            "max_tokens",
        ),
        // Priced by neither the file (no --prices-file) nor the entry: no silent 0.
        (
            "model_list:\n  - model_name: m\n    litellm_params: { model: openai/m }\n    model_info: { input_cost_per_token: 0.1 }\n",
            "model_list[0].model_info",
            "output_cost_per_token",
        ),
    ] {
        let file = scratch.path().join("config.yaml");
        std::fs::write(&file, list).unwrap();
        let (status, log) = ControlPlane::builder(nowhere)
            .master_key(Some("sk-master-test-0123456789abcdef0123456789abcdef"))
            .arg("--config")
            .arg(file.display().to_string())
            .start_expecting_exit()
            .unwrap();
        assert!(!status.success(), "{log}");
        for expected in ["--config (LIVEGATE_CONFIG)", field, named] {
            assert!(log.contains(expected), "{expected} not in:\n{log}");
        }
    }
}

const ANTHROPIC_SDK_SCRIPT: &str = r#"
import json, sys
import anthropic
client = anthropic.Anthropic(base_url=sys.argv[1], api_key=sys.argv[2], max_retries=0)
messages = [{"role": "user", "content": "hi"}]
plain = client.messages.create(model="claude", max_tokens=5, messages=messages)
with client.messages.stream(model="claude", max_tokens=5, messages=messages) as stream:
    text = "".join(stream.text_stream)
    final = stream.get_final_message()
print(json.dumps({"plain": plain.content[0].text, "plain_model": plain.model,
                  "plain_usage": plain.usage.model_dump(), "stream": text,
                  "stream_usage": final.usage.model_dump()}))
"#;

#[test]
fn the_anthropic_python_sdk_reaches_the_provider_and_pays_for_cache_writes_and_reads() {
    let scratch = tempfile::tempdir().unwrap();
    let double = ProviderDouble::start(scratch.path(), PROVIDER_KEY).unwrap();
    let stack = start(&double, scratch.path());
    let key = stack.generate_key(&json!({"models": ["claude"]})).unwrap();
    let seen =
        livegate_tests::python_client::run_json(ANTHROPIC_SDK_SCRIPT, &[&stack.url(""), &key]);
    assert_eq!(seen["plain"], "hello from the double", "{seen}");
    assert_eq!(seen["plain_model"], "claude-3-5-sonnet-20241022", "{seen}");
    assert_eq!(seen["stream"], "hello", "{seen}");
    for usage in [&seen["plain_usage"], &seen["stream_usage"]] {
        assert_eq!(
            usage["cache_read_input_tokens"], ANTHROPIC_USAGE.cache_read,
            "{seen}"
        );
        assert_eq!(
            usage["cache_creation_input_tokens"], ANTHROPIC_USAGE.cache_creation,
            "{seen}"
        );
        assert_eq!(usage["output_tokens"], ANTHROPIC_USAGE.output, "{seen}");
    }

    // The provider saw its own key and a version, never the client's key.
    let requests = double.seen();
    assert_eq!(requests.len(), 2, "{requests:?}");
    for request in &requests {
        assert_eq!(request.path, "/v1/messages");
        assert_eq!(request.header("x-api-key"), Some(PROVIDER_KEY));
        assert!(request.header("anthropic-version").is_some(), "{request:?}");
        assert!(request.headers.iter().all(|(_, v)| !v.contains(&key)));
    }

    // Each request billed: Anthropic's input, cache writes and reads are the prompt.
    let u = &ANTHROPIC_USAGE;
    let expected = litellm_cost(&CLAUDE, u.input, u.cache_read, u.cache_creation, u.output);
    let rows = spend_rows(&stack, &key, 2);
    assert_eq!(rows.len(), 2, "{rows:#?}");
    let mut streamed: Vec<bool> = rows
        .iter()
        .map(|row| {
            assert_eq!(row["spend"].as_f64().unwrap(), expected, "{row}");
            assert_eq!(
                row["prompt_tokens"],
                u.input + u.cache_read + u.cache_creation,
                "{row}"
            );
            assert_eq!(row["completion_tokens"], u.output, "{row}");
            let usage = &row["metadata"]["usage_object"];
            assert_eq!(usage["cache_read_input_tokens"], u.cache_read, "{row}");
            assert_eq!(
                usage["prompt_tokens_details"]["cache_creation_tokens"], u.cache_creation,
                "{row}"
            );
            row["metadata"]["streamed"].as_bool().unwrap()
        })
        .collect();
    streamed.sort();
    assert_eq!(streamed, [false, true]);
}
