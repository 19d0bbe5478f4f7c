//! Every response is billed (issue 24 item 2), played through the real Envoy, filter,
//! control plane and Postgres against a demo upstream that gzips as real providers do:
//!
//! - a client that accepts gzip gets an identity answer (the filter asks the upstream for
//!   identity) and is charged exactly what the upstream stated, and so are a JSON answer
//!   over the meter's 1 MiB and a stream event over its 64 KiB (walked for their usage
//!   rather than held);
//! - each answer the meter cannot read (an upstream that compresses anyway, a client gone
//!   mid-stream) is charged an
//!   estimate > 0, marked `usage_known: false` with its reason in `/spend/logs`, and
//!   counted by reason in the control plane's metrics;
//! - a `stream` that is not a JSON boolean is refused with a 400 naming `stream`;
//! - with the control plane stopped, then Postgres frozen, the estimates and the long
//!   answers' exact records still arrive.

#![allow(clippy::unwrap_used, clippy::panic)] // a test file: failures are panics

use std::io::{Read, Write};
use std::net::TcpStream;
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

/// A raw answer: status, headers (names lowercased) and body bytes as they came.
struct Raw {
    status: u16,
    encoding: Option<String>,
    body: Vec<u8>,
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(30)))
        .build()
        .into()
}

/// `POST url` with `body`, accepting gzip, the body read raw (this ureq does not decode).
fn post_gzip_ok(url: &str, key: &str, body: &Value) -> Raw {
    let mut response = agent()
        .post(url)
        .header("authorization", &format!("Bearer {key}"))
        .header("accept-encoding", "gzip")
        .header("content-type", "application/json")
        .send(body.to_string())
        .unwrap();
    let encoding = response
        .headers()
        .get("content-encoding")
        .map(|v| v.to_str().unwrap().to_string());
    let status = response.status().as_u16();
    let body = response
        .body_mut()
        .with_config()
        .limit(64 * 1024 * 1024)
        .read_to_vec()
        .unwrap();
    Raw {
        status,
        encoding,
        body,
    }
}

fn gunzip(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(data)
        .read_to_end(&mut out)
        .unwrap();
    out
}

fn chat_body(extra: Value) -> Value {
    let mut body = json!({
        "model": "livegate-demo",
        "messages": [{"role": "user", "content": "abcd"}],
    });
    body.as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    body
}

/// A client that asks for a long stream, reads a little of it and goes away.
fn disconnect_mid_stream(stack: &Stack, key: &str) {
    let address = stack.envoy.url().trim_start_matches("http://").to_string();
    let body = chat_body(json!({"stream": true, "livegate_events": 100_000})).to_string();
    let mut socket = TcpStream::connect(&address).unwrap();
    let request = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nHost: livegate\r\nAuthorization: Bearer {key}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    socket.write_all(request.as_bytes()).unwrap();
    let mut seen = Vec::new();
    let mut buffer = [0u8; 16 * 1024];
    while seen.len() < 64 * 1024 {
        let n = socket.read(&mut buffer).unwrap();
        assert!(
            n > 0,
            "the stream ended early: {}",
            String::from_utf8_lossy(&seen)
        );
        seen.extend_from_slice(&buffer[..n]);
    }
    assert!(
        seen.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&seen[..200])
    );
    assert!(String::from_utf8_lossy(&seen).contains("\"content\":"));
    // Gone, 20 MB of stream still to come and its usage chunk at the very end.
    drop(socket);
}

/// The attacks that end with an estimate: (what, reason).
fn unreadable_answers(stack: &Stack, key: &str) -> Vec<&'static str> {
    let chat = stack.url("/v1/chat/completions");
    // An upstream that gzips although the filter asked for identity.
    let forced = post_gzip_ok(&chat, key, &chat_body(json!({"livegate_gzip": true})));
    assert_eq!(forced.status, 200);
    assert_eq!(forced.encoding.as_deref(), Some("gzip"));
    let answer: Value = serde_json::from_slice(&gunzip(&forced.body)).unwrap();
    assert_eq!(
        answer["usage"]["completion_tokens"], 8,
        "usage unread by the meter"
    );

    disconnect_mid_stream(stack, key);
    vec!["encoded", "client_disconnected"]
}

/// Answers past the meter's bounds whose usage is read all the same, each walked for it:
/// a JSON answer over 1 MiB and a Responses API stream whose `response.completed` (the
/// whole answer, and its usage) is over 64 KiB. Returns how many records they make.
fn long_answers(stack: &Stack, key: &str) -> usize {
    let chat = stack.url("/v1/chat/completions");
    let big = post_gzip_ok(
        &chat,
        key,
        &chat_body(json!({"livegate_answer_bytes": 1_200_000})),
    );
    assert_eq!((big.status, big.encoding.as_deref()), (200, None));
    assert!(big.body.len() > 1024 * 1024);
    let responses = json!({
        "model": "livegate-demo", "input": "abcd", "stream": true,
        "livegate_answer_bytes": 100_000,
    });
    let event = post_gzip_ok(&stack.url("/v1/responses"), key, &responses);
    assert_eq!((event.status, event.encoding.as_deref()), (200, None));
    let text = String::from_utf8(event.body).unwrap();
    let completed = text
        .lines()
        .find(|line| line.starts_with("data:") && line.contains("response.completed"))
        .unwrap();
    assert!(completed.len() > 64 * 1024 && completed.contains("\"input_tokens\":4"));
    2
}

#[test]
fn every_answer_the_meter_cannot_read_is_charged_an_estimate_and_marked_through_outages() {
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
        .admin("/key/generate", &json!({"key_alias": "attacker"}))
        .unwrap();
    let key = created["key"].as_str().unwrap().to_string();

    // The demo upstream compresses when asked, as OpenAI does...
    let demo = stack.upstream.as_ref().unwrap().base_url();
    let direct = post_gzip_ok(
        &format!("{demo}/v1/chat/completions"),
        "x",
        &chat_body(json!({})),
    );
    assert_eq!(direct.encoding.as_deref(), Some("gzip"));
    let direct: Value = serde_json::from_slice(&gunzip(&direct.body)).unwrap();
    assert_eq!(direct["livegate"]["accept_encoding"], "gzip");
    // ...but through the gateway a client that accepts gzip gets identity, metered exactly.
    let chat = stack.url("/v1/chat/completions");
    let plain = post_gzip_ok(&chat, &key, &chat_body(json!({})));
    assert_eq!((plain.status, plain.encoding.as_deref()), (200, None));
    let plain: Value = serde_json::from_slice(&plain.body).unwrap();
    assert_eq!(plain["livegate"]["accept_encoding"], "identity");
    let streamed = post_gzip_ok(&chat, &key, &chat_body(json!({"stream": true})));
    assert_eq!(streamed.encoding, None);
    assert!(String::from_utf8(streamed.body)
        .unwrap()
        .contains("\"total_tokens\":12"));
    let mut stated = 2 + long_answers(&stack, &key); // plain, streamed, the long ones

    // `stream` values a lax upstream reads as true: refused, naming the field.
    for odd in [json!("true"), json!(1)] {
        let refused = http::demo_chat(&stack.url(""), &key, json!({"stream": odd})).unwrap();
        assert_eq!(refused.status, 400, "{odd}: {}", refused.body);
        assert_eq!(refused.json().unwrap()["error"]["param"], "stream", "{odd}");
    }

    let mut expected: Vec<&str> = unreadable_answers(&stack, &key);

    // The control plane stopped: the filter's queue holds the records and retries.
    let control_plane = stack.control_plane.as_ref().unwrap();
    control_plane.signal(Signal::SIGSTOP).unwrap();
    disconnect_mid_stream(&stack, &key);
    let long = long_answers(&stack, &key);
    poll::until("records queued in the filter", PATIENCE, || {
        let queued = stack
            .envoy
            .prometheus_counter("livegate_spend_queue_records")
            .ok()?;
        (queued >= (1 + long) as f64).then_some(())
    })
    .unwrap();
    control_plane.signal(Signal::SIGCONT).unwrap();
    expected.push("client_disconnected");
    stated += long;
    poll::until("the queue drained", PATIENCE, || {
        let queued = stack
            .envoy
            .prometheus_counter("livegate_spend_queue_records")
            .ok()?;
        (queued == 0.0).then_some(())
    })
    .unwrap();

    // Postgres frozen: the control plane spools the records and drains them after.
    let postgres = stack.postgres.as_ref().unwrap();
    postgres.pause().unwrap();
    let forced = post_gzip_ok(&chat, &key, &chat_body(json!({"livegate_gzip": true})));
    assert_eq!(forced.encoding.as_deref(), Some("gzip"));
    expected.push("encoded");
    let long = long_answers(&stack, &key);
    stated += long;
    poll::until("the records spooled", PATIENCE, || {
        let text = stack.control_plane_metrics().unwrap();
        let spooled = prometheus_value(&text, "livegate_spend_spool_records")?;
        (spooled >= (1 + long) as f64).then_some(())
    })
    .unwrap();
    postgres.resume().unwrap();

    // Every request is one row: some stated exactly, the rest estimated, each > 0.
    let n = expected.len() + stated;
    let rows = poll::until(&format!("{n} spend rows"), PATIENCE, || {
        stack.spend_logs(&key).filter(|rows| rows.len() >= n)
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", stack.envoy.log_text()));
    assert_eq!(rows.len(), n, "{rows:#?}");
    let mut reasons: Vec<&str> = Vec::new();
    let mut known = 0;
    for row in &rows {
        let meta = &row["metadata"];
        if meta["usage_known"] == true {
            assert_eq!(meta["usage_estimate_reason"], Value::Null, "{row}");
            assert_eq!(row["total_tokens"], 12, "stated exactly: {row}");
            known += 1;
            continue;
        }
        reasons.push(meta["usage_estimate_reason"].as_str().unwrap_or("none"));
        assert_eq!(meta["status"], 200, "{row}");
        assert!(row["prompt_tokens"].as_u64().unwrap() > 0, "{row}");
        assert!(row["completion_tokens"].as_u64().unwrap() > 0, "{row}");
        assert!(row["spend"].as_f64().unwrap() > 0.0, "charged: {row}");
        assert_eq!(meta["unpriced"], false, "{row}");
    }
    assert_eq!(known, stated, "{rows:#?}");
    reasons.sort_unstable();
    expected.sort_unstable();
    assert_eq!(reasons, expected);

    // Counted by reason where the records were drained, and by the filter.
    let text = stack.control_plane_metrics().unwrap();
    for reason in ["client_disconnected", "encoded"] {
        let want = expected.iter().filter(|r| **r == reason).count() as f64;
        let series = format!("livegate_spend_estimated_total{{reason=\"{reason}\"}}");
        assert_eq!(
            prometheus_value(&text, &series),
            Some(want),
            "{reason}\n{text}"
        );
    }
    let estimated = stack
        .envoy
        .prometheus_counter("livegate_usage_estimated_total")
        .unwrap();
    assert_eq!(estimated, expected.len() as f64);

    junk_model_names_never_get_series_of_their_own(&stack);
}

/// Issue 24 item 9: model names nobody priced (a client's junk) are counted under
/// `model="other"` from the start, so they cannot fill the spend metrics' series bound.
fn junk_model_names_never_get_series_of_their_own(stack: &Stack) {
    let created = stack
        .admin("/key/generate", &json!({"key_alias": "junk"}))
        .unwrap();
    let key = created["key"].as_str().unwrap().to_string();
    let bearer = format!("Bearer {key}");
    for i in 0..5 {
        // The demo echoes embeddings without a model: the record names the junk only.
        let body = json!({"model": format!("junk-{i}"), "input": "abcd"});
        let r = http::post_json(
            &stack.url("/v1/embeddings"),
            &[("authorization", &bearer)],
            &body,
        )
        .unwrap();
        assert_eq!(r.status, 200, "{}", r.body);
    }
    let text = poll::until("the junk records drained", PATIENCE, || {
        let text = stack.control_plane_metrics().unwrap();
        let series = "livegate_spend_tokens_total{key_alias=\"junk\",team=\"\",model=\"other\",kind=\"prompt\"}";
        (prometheus_value(&text, series)? > 0.0 && stack.spend_logs(&key)?.len() == 5)
            .then_some(text)
    })
    .unwrap();
    assert!(!text.contains("junk-"), "{text}");
    assert_eq!(
        prometheus_value(&text, "livegate_spend_series_folded_total"),
        Some(0.0)
    );
}

/// The OpenAI Python SDK's calls, plain and streamed; it sends `Accept-Encoding: gzip`
/// (httpx's default). Prints one JSON line: what the upstream saw, and the stream's usage.
const OPENAI_SDK_SCRIPT: &str = r#"
import json, sys
from openai import OpenAI
client = OpenAI(base_url=sys.argv[1] + "/v1", api_key=sys.argv[2], max_retries=0, timeout=30)
messages = [{"role": "user", "content": "abcd"}]
raw = client.chat.completions.with_raw_response.create(model="livegate-demo", messages=messages)
plain = raw.parse()
usage = None
for chunk in client.chat.completions.create(model="livegate-demo", messages=messages, stream=True):
    if chunk.usage is not None:
        usage = chunk.usage.total_tokens
print(json.dumps({
    "sent_accept_encoding": raw.http_request.headers.get("accept-encoding"),
    "content_encoding": raw.headers.get("content-encoding"),
    "upstream_saw": plain.model_extra["livegate"]["accept_encoding"],
    "plain_total": plain.usage.total_tokens,
    "stream_total": usage,
}))
"#;

#[test]
fn the_openai_python_sdk_asking_for_gzip_is_metered_exactly() {
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
        .admin("/key/generate", &json!({"key_alias": "sdk"}))
        .unwrap();
    let key = created["key"].as_str().unwrap().to_string();
    let seen = livegate_tests::python_client::run_json(OPENAI_SDK_SCRIPT, &[&stack.url(""), &key]);
    assert!(
        seen["sent_accept_encoding"]
            .as_str()
            .unwrap()
            .contains("gzip"),
        "{seen}"
    );
    assert_eq!(seen["content_encoding"], Value::Null, "{seen}");
    assert_eq!(seen["upstream_saw"], "identity", "{seen}");
    assert_eq!(
        (seen["plain_total"].clone(), seen["stream_total"].clone()),
        (json!(12), json!(12))
    );
    let rows = poll::until("2 spend rows", PATIENCE, || {
        stack.spend_logs(&key).filter(|rows| rows.len() >= 2)
    })
    .unwrap();
    assert_eq!(rows.len(), 2);
    for row in &rows {
        assert_eq!(row["metadata"]["usage_known"], true, "{row}");
        assert_eq!(row["total_tokens"], 12, "{row}");
        assert!(row["spend"].as_f64().unwrap() > 0.0, "{row}");
    }
}
