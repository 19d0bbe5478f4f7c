//! The response side of the flow: one spend record per admitted request, built from what
//! the response said, queued without ever holding the response; and the streamed
//! completions asked for their usage.

use super::mock::*;
use super::{Plugin, RequestFlow, Verdict};
use crate::config::Config;
use crate::metrics::Metric;
use livegate_contract::spend::SpendRecord;
use livegate_contract::{KeyHash, ModelAccess};
use std::collections::BTreeMap;
use std::rc::Rc;

const CHAT: &str = "/v1/chat/completions";
const NOW: u64 = 1_000_000;

fn config(json: &str) -> Config {
    Config::parse(Some(json.as_bytes())).unwrap()
}

/// A keyed request with Envoy's request id and `body`, admitted by a fresh allow.
fn admitted(
    plugin: &Rc<Plugin>,
    path: &str,
    body: &str,
    access: ModelAccess,
) -> (MockHost, RequestFlow) {
    let host = MockHost::request(
        "POST",
        path,
        &[
            ("authorization", "Bearer sk-test"),
            ("x-request-id", "req-1"),
        ],
    );
    *host.body.borrow_mut() = body.as_bytes().to_vec();
    let mut flow = RequestFlow::new(plugin.clone());
    flow.on_request_headers(&host, Some(NOW));
    let mut verdict = flow.on_request_body(&host, true);
    if flow.pending_check().is_some() {
        verdict = respond(&mut flow, &host, "200", &allow_body_with(access), NOW);
    }
    assert_eq!(verdict, Verdict::Continue);
    (host, flow)
}

/// The upstream answers: headers, then each chunk, every callback passing at once.
fn answer(host: &MockHost, flow: &mut RequestFlow, content_type: &str, chunks: &[&str]) {
    *host.response_headers.borrow_mut() = vec![
        (":status".into(), b"200".to_vec()),
        ("content-type".into(), content_type.as_bytes().to_vec()),
    ];
    assert_eq!(
        flow.on_response_headers(host, false, Some(NOW + 1)),
        Verdict::Continue
    );
    for (i, chunk) in chunks.iter().enumerate() {
        *host.response_chunk.borrow_mut() = chunk.as_bytes().to_vec();
        let last = i + 1 == chunks.len();
        let verdict = flow.on_response_body(host, last, Some(NOW + 10));
        assert_eq!(verdict, Verdict::Continue, "the response is never held");
    }
}

pub(super) fn queued(plugin: &Plugin) -> Vec<SpendRecord> {
    let body = plugin
        .with_spend(|q| q.next_batch(false))
        .flatten()
        .map(|(body, _)| body)
        .unwrap_or_default();
    if body.is_empty() {
        return Vec::new();
    }
    let batch: livegate_contract::spend::SpendBatch = serde_json::from_slice(&body).unwrap();
    batch.records
}

fn aliased() -> ModelAccess {
    ModelAccess {
        aliases: BTreeMap::from([("fast".to_string(), "gpt-4o".to_string())]),
        ..ModelAccess::default()
    }
}

#[test]
fn a_json_completion_gives_one_record_with_the_resolved_model_and_its_usage() {
    let plugin = plugin(Config::default());
    let body = r#"{"model": "fast", "messages": []}"#;
    let (host, mut flow) = admitted(&plugin, CHAT, body, aliased());
    let usage =
        r#"{"model": "gpt-4o-2024", "usage": {"prompt_tokens": 4, "completion_tokens": 8}}"#;
    answer(
        &host,
        &mut flow,
        "application/json",
        &[&usage[..20], &usage[20..]],
    );
    flow.on_done(&host, Some(NOW + 99));
    let records = queued(&plugin);
    assert_eq!(records.len(), 1, "one record, not one more at on_done");
    let r = &records[0];
    assert_eq!(r.request_id, "req-1");
    assert_eq!(r.key_hash, KeyHash::of_raw(KEY));
    assert_eq!(
        (r.key_alias.as_deref(), r.team_id.as_deref()),
        (Some("ci"), Some("t1"))
    );
    assert_eq!(
        r.model_requested.as_deref(),
        Some("gpt-4o"),
        "the alias resolved"
    );
    assert_eq!(r.model_returned.as_deref(), Some("gpt-4o-2024"));
    assert_eq!(r.deployment, None, "no model list: no deployment");
    assert_eq!(
        (r.prompt_tokens, r.completion_tokens, r.total_tokens),
        (Some(4), Some(8), Some(12))
    );
    assert_eq!((r.status, r.streamed), (200, false));
    assert_eq!((r.start_time_ms, r.end_time_ms), (NOW, NOW + 10));
    assert_eq!(host.count(Metric::SpendRecordsQueued), 1);
    assert_eq!(host.count(Metric::ResponsesWithoutUsage), 0);
}

#[test]
fn a_routed_request_s_record_names_the_deployment_that_prices_it() {
    let plugin = plugin(super::deployment_tests::config());
    let body = r#"{"model": "mini", "messages": []}"#;
    let (host, mut flow) = admitted(&plugin, CHAT, body, ModelAccess::default());
    let usage =
        r#"{"model": "gpt-4o-mini", "usage": {"prompt_tokens": 4, "completion_tokens": 8}}"#;
    answer(&host, &mut flow, "application/json", &[usage]);
    flow.on_done(&host, Some(NOW + 99));
    let records = queued(&plugin);
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].deployment.as_deref(), Some("m"));
    assert_eq!(records[0].model_requested.as_deref(), Some("mini"));
}

#[test]
fn a_stream_is_read_event_by_event_and_a_reset_records_what_was_seen() {
    let plugin = plugin(Config::default());
    let body = r#"{"model": "m", "stream": true}"#;
    let (host, mut flow) = admitted(&plugin, CHAT, body, ModelAccess::default());
    answer(&host, &mut flow, "text/event-stream", &[
        "data: {\"model\": \"m\", \"choices\": [{}]}\n\nda",
        "ta: {\"choices\": [], \"usage\": {\"prompt_tokens\": 2, \"completion_tokens\": 3}}\n\n",
        "data: [DONE]\n\n",
    ]);
    let records = queued(&plugin);
    assert_eq!(records.len(), 1);
    assert!(records[0].streamed && records[0].usage_known);
    assert_eq!(records[0].total_tokens, Some(5));

    // A client gone mid-stream: on_done records the status and what was read.
    let (host, mut flow) = admitted(&plugin, CHAT, body, ModelAccess::default());
    *host.response_headers.borrow_mut() = vec![
        (":status".into(), b"200".to_vec()),
        ("content-type".into(), b"text/event-stream".to_vec()),
    ];
    flow.on_response_headers(&host, false, Some(NOW));
    *host.response_chunk.borrow_mut() = b"data: {\"choices\": [{}]}\n\n".to_vec();
    flow.on_response_body(&host, false, Some(NOW));
    flow.on_done(&host, Some(NOW + 5));
    flow.on_done(&host, Some(NOW + 6));
    assert_eq!(
        host.count(Metric::SpendRecordsQueued),
        1,
        "once, however often on_done comes"
    );
    assert_eq!(host.count(Metric::ResponsesWithoutUsage), 1);
    plugin.with_spend(|q| q.on_answer(Some(b"200"), Some(b"{\"accepted\":1,\"duplicates\":0}")));
    let cut = queued(&plugin);
    assert_eq!(cut.len(), 1);
    assert!(cut[0].streamed && !cut[0].usage_known);
    assert_eq!((cut[0].status, cut[0].end_time_ms), (200, NOW + 5));
}

#[test]
fn local_replies_pass_through_and_failed_open_requests_give_no_record() {
    let plugin = plugin(config(r#"{"failure_mode": "open"}"#));
    for host in [
        MockHost::request("GET", "/health/liveliness", &[("x-request-id", "a")]),
        MockHost::request("GET", "/key/info", &[("x-request-id", "b")]),
        MockHost::request("POST", CHAT, &[("x-request-id", "c")]),
    ] {
        let mut flow = RequestFlow::new(plugin.clone());
        flow.on_request_headers(&host, Some(NOW));
        flow.on_response_headers(&host, true, Some(NOW));
        flow.on_done(&host, Some(NOW));
    }
    // Failed open: no identity, nothing to charge.
    let host = MockHost::request("POST", "/v1/models", &[("authorization", "Bearer sk-test")]);
    let mut flow = RequestFlow::new(plugin.clone());
    flow.on_request_headers(&host, Some(NOW));
    reset(&mut flow, &host, NOW);
    assert_eq!(host.count(Metric::FailedOpen), 1);
    flow.on_response_headers(&host, true, Some(NOW));
    assert!(queued(&plugin).is_empty());
}

#[test]
fn without_a_request_id_there_is_no_record_and_it_is_counted() {
    let plugin = plugin(Config::default());
    let host = keyed("/v1/models");
    let mut flow = RequestFlow::new(plugin.clone());
    flow.on_request_headers(&host, Some(NOW));
    respond(&mut flow, &host, "200", &allow_body(), NOW);
    flow.on_response_headers(&host, true, Some(NOW));
    assert_eq!(host.count(Metric::SpendRecordsSkipped), 1);
    assert!(queued(&plugin).is_empty());
}

#[test]
fn a_full_queue_counts_the_dropped_record() {
    let plugin = plugin(config(r#"{"metering": {"max_queued_records": 1}}"#));
    let mut drops = 0;
    for _ in 0..3 {
        let (host, mut flow) = admitted(&plugin, "/v1/models", "", ModelAccess::default());
        flow.on_response_headers(&host, true, Some(NOW));
        drops += host.count(Metric::SpendRecordsDropped);
    }
    assert_eq!(drops, 2);
    assert_eq!(plugin.with_spend(|q| q.len()), Some(1));
}

#[test]
fn metering_off_records_nothing_and_leaves_the_body() {
    let plugin = plugin(config(r#"{"metering": {"enabled": false}}"#));
    let body = r#"{"model": "m", "stream": true}"#;
    let (host, mut flow) = admitted(&plugin, CHAT, body, ModelAccess::default());
    flow.on_response_headers(&host, true, Some(NOW));
    assert!(queued(&plugin).is_empty());
    assert_eq!(host.body.borrow().as_slice(), body.as_bytes());
}

#[test]
fn a_streamed_completion_is_asked_for_its_usage_with_its_new_length() {
    let plugin = plugin(Config::default());
    let body = r#"{"model": "fast", "stream": true}"#;
    // A cache miss edits the body read again after the auth check; a cached key the
    // bytes it read once.
    for (attempt, through) in ["an auth check", "the cache"].into_iter().enumerate() {
        let (host, _flow) = admitted(&plugin, CHAT, body, aliased());
        assert_eq!(host.count(Metric::CacheHit) > 0, attempt == 1, "{through}");
        let sent = String::from_utf8(host.body.borrow().clone()).unwrap();
        assert_eq!(
            sent, r#"{"model": "gpt-4o", "stream": true,"stream_options":{"include_usage":true}}"#,
            "{through}"
        );
        assert_eq!(host.header("content-length"), Some(sent.len().to_string()));
        assert_eq!(host.count(Metric::IncludeUsageAdded), 1);
    }

    let opted_out = r#"{"model": "m", "stream": true, "stream_options": {"include_usage": false}}"#;
    let (host, _flow) = admitted(
        &plugin,
        "/v1/completions",
        opted_out,
        ModelAccess::default(),
    );
    assert!(String::from_utf8(host.body.borrow().clone())
        .unwrap()
        .contains("\"include_usage\": true"));
    assert_eq!(host.count(Metric::IncludeUsageOverridden), 1);
}

#[test]
fn other_bodies_and_routes_are_left_as_sent() {
    let plugin = plugin(Config::default());
    let cases = [
        (CHAT, r#"{"model": "m"}"#),
        (
            CHAT,
            r#"{"model": "m", "stream": true, "stream_options": {"include_usage": true}}"#,
        ),
        ("/v1/messages", r#"{"model": "m", "stream": true}"#),
        ("/v1/responses", r#"{"model": "m", "stream": true}"#),
    ];
    for (path, body) in cases {
        let (host, _flow) = admitted(&plugin, path, body, ModelAccess::default());
        assert_eq!(
            host.body.borrow().as_slice(),
            body.as_bytes(),
            "{path} {body}"
        );
        assert_eq!(host.header("content-length"), None);
    }
    let off = plugin_with_include_usage_off();
    let body = r#"{"model": "m", "stream": true}"#;
    let (host, _flow) = admitted(&off, CHAT, body, ModelAccess::default());
    assert_eq!(host.body.borrow().as_slice(), body.as_bytes());
}

fn plugin_with_include_usage_off() -> Rc<Plugin> {
    plugin(config(r#"{"metering": {"include_usage": false}}"#))
}

#[test]
fn a_body_that_is_not_json_is_recorded_without_usage_and_counted_as_malformed() {
    let plugin = plugin(Config::default());
    let body = r#"{"model": "fast", "messages": []}"#;
    let (host, mut flow) = admitted(&plugin, CHAT, body, aliased());
    answer(&host, &mut flow, "application/json", &["<html>busy</html>"]);
    let records = queued(&plugin);
    assert_eq!(records.len(), 1);
    assert!(!records[0].usage_known);
    assert_eq!(host.count(Metric::ResponsesWithoutUsage), 1);
    assert_eq!(host.count(Metric::UsageMalformed), 1);
    assert_eq!(host.count(Metric::UsageOversized), 0);
}

#[test]
fn a_metered_request_asks_the_upstream_for_an_identity_body() {
    let plugin = plugin(Config::default());
    let host = MockHost::request(
        "POST",
        CHAT,
        &[
            ("authorization", "Bearer sk-test"),
            ("x-request-id", "req-1"),
            ("accept-encoding", "gzip, deflate, br"),
        ],
    );
    *host.body.borrow_mut() = br#"{"model": "m"}"#.to_vec();
    let mut flow = RequestFlow::new(plugin.clone());
    flow.on_request_headers(&host, Some(NOW));
    flow.on_request_body(&host, true);
    respond(&mut flow, &host, "200", &allow_body(), NOW);
    assert_eq!(host.header("accept-encoding").as_deref(), Some("identity"));

    let off = super::mock::plugin(config(r#"{"metering": {"enabled": false}}"#));
    let host = MockHost::request(
        "GET",
        "/v1/models",
        &[
            ("authorization", "Bearer sk-test"),
            ("accept-encoding", "gzip"),
        ],
    );
    let mut flow = RequestFlow::new(off);
    flow.on_request_headers(&host, Some(NOW));
    respond(&mut flow, &host, "200", &allow_body(), NOW);
    assert_eq!(
        host.header("accept-encoding").as_deref(),
        Some("gzip"),
        "without metering the client's preference goes on"
    );
}

#[test]
fn a_stream_cut_before_its_usage_is_charged_an_estimate_and_counted() {
    let plugin = plugin(Config::default());
    let body = r#"{"model": "m", "stream": true, "messages": [{"content": "0123456789"}]}"#;
    let (host, mut flow) = admitted(&plugin, CHAT, body, ModelAccess::default());
    let sent = host.body.borrow().len() as u64;
    *host.response_headers.borrow_mut() = vec![
        (":status".into(), b"200".to_vec()),
        ("content-type".into(), b"text/event-stream".to_vec()),
    ];
    flow.on_response_headers(&host, false, Some(NOW));
    *host.response_chunk.borrow_mut() =
        b"data: {\"choices\": [{\"delta\": {\"content\": \"twelve bytes\"}}]}\n\n".to_vec();
    flow.on_response_body(&host, false, Some(NOW));
    flow.on_done(&host, Some(NOW + 5));
    let records = queued(&plugin);
    let r = &records[0];
    assert!(!r.usage_known);
    assert_eq!(
        r.usage_estimate_reason,
        Some(livegate_contract::EstimateReason::ClientDisconnected)
    );
    assert!(sent > body.len() as u64, "the body went with include_usage");
    let prompt = (body.len() as u64).div_ceil(4);
    assert_eq!(
        (r.prompt_tokens, r.completion_tokens, r.total_tokens),
        (Some(prompt), Some(3), Some(prompt + 3))
    );
    assert_eq!(host.count(Metric::UsageEstimated), 1);
    r.validate().unwrap();
}

#[test]
fn a_stream_flag_that_is_not_a_boolean_is_refused_naming_stream() {
    for stream in [r#""true""#, "1", "[]", r#""yes""#] {
        let plugin = plugin(Config::default());
        let host = keyed(CHAT);
        *host.body.borrow_mut() = format!(r#"{{"model": "m", "stream": {stream}}}"#).into_bytes();
        let mut flow = RequestFlow::new(plugin.clone());
        flow.on_request_headers(&host, Some(NOW));
        flow.on_request_body(&host, true);
        let verdict = respond(&mut flow, &host, "200", &allow_body(), NOW);
        assert_eq!(verdict, Verdict::Stop, "{stream}");
        let reply = host.last_reply().unwrap();
        assert_eq!(reply.status, 400, "{stream}");
        let error: serde_json::Value = serde_json::from_str(&reply.body).unwrap();
        assert_eq!(error["error"]["param"], "stream", "{stream}");
    }
    for stream in ["true", "false", "null"] {
        let plugin = plugin(Config::default());
        let host = keyed(CHAT);
        *host.body.borrow_mut() = format!(r#"{{"model": "m", "stream": {stream}}}"#).into_bytes();
        let mut flow = RequestFlow::new(plugin.clone());
        flow.on_request_headers(&host, Some(NOW));
        flow.on_request_body(&host, true);
        let verdict = respond(&mut flow, &host, "200", &allow_body(), NOW);
        assert_eq!(verdict, Verdict::Continue, "{stream}");
    }
}
