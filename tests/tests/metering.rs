//! Metering through the real Envoy, filter, control plane and Postgres: every admitted
//! request, JSON or streamed, becomes exactly one row in `/spend/logs` with the usage the
//! demo upstream reported (exact sums), and no request id twice; with the control plane
//! stopped for a while (the filter's queue retries), with Postgres frozen for 20 s (the
//! control plane spools) and with the control plane SIGKILLed and restarted (it replays its
//! spool), every record still arrives exactly once. Priced with the demo's price
//! file: the ledger's reads through Envoy (master key required) and the control plane's
//! token and cost metrics by key alias, team and model agree with the sums.

#![allow(clippy::unwrap_used, clippy::panic)] // a test file: failures are panics

use std::time::Duration;

use livegate_demo_upstream::COMPLETION_TOKENS;
use livegate_tests::artifacts::demo_prices_file;
use livegate_tests::envoy::prometheus_value;
use livegate_tests::http::{self, Response};
use livegate_tests::poll;
use livegate_tests::stack::{Stack, StackOptions};
use nix::sys::signal::Signal;
use serde_json::json;

/// A short send timeout, so a batch to a stopped control plane fails (and is retried) fast.
const FILTER_CONFIG: &str = r#"{"metering": {"send_timeout_ms": 500}}"#;
const PATIENCE: Duration = Duration::from_secs(60);

/// One request: `i` prompt characters (the demo's prompt tokens), streamed or not.
fn chat(stack: &Stack, key: &str, i: usize, stream: bool) -> Response {
    let bearer = format!("Bearer {key}");
    let body = json!({
        "model": "livegate-demo",
        "messages": [{"role": "user", "content": "x".repeat(i)}],
        "stream": stream,
    });
    // A client's own request id is replaced by Envoy's: it cannot make requests count once.
    let headers = [
        ("authorization", bearer.as_str()),
        ("x-request-id", "client-chosen"),
    ];
    let response = http::post_raw(
        &stack.url("/v1/chat/completions"),
        &headers,
        "application/json",
        &body.to_string(),
    )
    .unwrap();
    assert_eq!(response.status, 200, "{}", response.body);
    if stream {
        // The filter asked for the stream's usage; the demo then ends with a usage chunk.
        assert!(response.body.contains("\"usage\":{"), "{}", response.body);
        assert!(
            response.body.ends_with("data: [DONE]\n\n"),
            "{}",
            response.body
        );
    }
    response
}

/// Requests `range`, one JSON and one streamed each: their prompt token sum.
fn send(stack: &Stack, key: &str, range: std::ops::RangeInclusive<usize>) -> u64 {
    let mut prompt = 0;
    for i in range {
        chat(stack, key, i, false);
        chat(stack, key, i, true);
        prompt += 2 * i as u64;
    }
    prompt
}

/// Waits for `n` rows, then checks them: n distinct request ids, exact token sums.
fn assert_ledger(stack: &Stack, key: &str, n: usize, prompt: u64) {
    let rows = poll::until(&format!("{n} spend rows"), PATIENCE, || {
        stack.spend_logs(key).filter(|rows| rows.len() >= n)
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", stack.envoy.log_text()));
    assert_eq!(rows.len(), n, "no record twice");
    let mut ids: Vec<&str> = rows
        .iter()
        .map(|r| r["request_id"].as_str().unwrap())
        .collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), n, "no request id twice");
    assert!(!ids.contains(&"client-chosen"));
    let sum = |field: &str| rows.iter().map(|r| r[field].as_u64().unwrap()).sum::<u64>();
    assert_eq!(sum("prompt_tokens"), prompt);
    assert_eq!(sum("completion_tokens"), n as u64 * COMPLETION_TOKENS);
    assert_eq!(sum("total_tokens"), prompt + n as u64 * COMPLETION_TOKENS);
    for row in &rows {
        assert_eq!(row["metadata"]["usage_known"], true, "{row}");
        assert_eq!(row["metadata"]["status"], 200, "{row}");
        assert_eq!(row["model_group"], "livegate-demo", "{row}");
        assert_eq!(row["metadata"]["user_api_key_alias"], "meter", "{row}");
    }
    let streamed = rows
        .iter()
        .filter(|r| r["metadata"]["streamed"] == true)
        .count();
    assert_eq!(streamed, n / 2, "half of them streamed");
}

fn counter(stack: &Stack, name: &str) -> f64 {
    stack.envoy.prometheus_counter(name).unwrap()
}

#[test]
fn every_admitted_request_is_one_row_with_exact_usage_through_outages() {
    let mut stack = Stack::start(StackOptions {
        filter_config: FILTER_CONFIG.to_string(),
        control_plane_args: vec![
            "--prices-file".into(),
            demo_prices_file().display().to_string(),
        ],
        ..StackOptions::full()
    })
    .unwrap();
    let created = stack
        .admin("/key/generate", &json!({"key_alias": "meter"}))
        .unwrap();
    let key = created["key"].as_str().unwrap().to_string();

    let mut prompt = send(&stack, &key, 1..=10);
    assert_ledger(&stack, &key, 20, prompt);

    // The control plane stopped: records wait in the filter's queue, which retries.
    let retried_before = counter(&stack, "livegate_spend_records_retried_total");
    stack
        .control_plane
        .as_ref()
        .unwrap()
        .signal(Signal::SIGSTOP)
        .unwrap();
    prompt += send(&stack, &key, 11..=20);
    poll::until("a batch retried", PATIENCE, || {
        (counter(&stack, "livegate_spend_records_retried_total") > retried_before).then_some(())
    })
    .unwrap();
    assert!(counter(&stack, "livegate_spend_queue_records") > 0.0);
    stack
        .control_plane
        .as_ref()
        .unwrap()
        .signal(Signal::SIGCONT)
        .unwrap();
    assert_ledger(&stack, &key, 40, prompt);

    // Postgres frozen: the control plane spools what it acknowledges, and drains after.
    // First quiet: nothing left in the filter's queue (no retry to come) nor in the spool.
    let cp_metrics = stack.control_plane.as_ref().unwrap().metrics_url();
    let spooled = || {
        let text = http::get(&cp_metrics, &[]).ok()?.body;
        prometheus_value(&text, "livegate_spend_spool_records")
    };
    poll::until("queue and spool empty", PATIENCE, || {
        let queued = counter(&stack, "livegate_spend_queue_records");
        (queued == 0.0 && spooled()? == 0.0).then_some(())
    })
    .unwrap();
    stack.postgres.as_ref().unwrap().pause().unwrap();
    let frozen_at = std::time::Instant::now();
    let undrained = send(&stack, &key, 21..=25);
    prompt += undrained;
    poll::until(
        "the ten new records acknowledged into the spool",
        PATIENCE,
        || (spooled()? == 10.0).then_some(()),
    )
    .unwrap();
    // The fault lasts 20 s, as a real outage would: nothing drains meanwhile.
    std::thread::sleep(Duration::from_secs(20).saturating_sub(frozen_at.elapsed()));
    assert_eq!(
        spooled(),
        Some(10.0),
        "nothing drained into a frozen Postgres"
    );

    // The control plane SIGKILLed with those ten acknowledged and undrained; requests go on
    // meanwhile (their records wait in the filter's queue); restarted, it replays its spool.
    stack
        .control_plane
        .as_ref()
        .unwrap()
        .signal(Signal::SIGKILL)
        .unwrap();
    stack.postgres.as_ref().unwrap().resume().unwrap();
    let after_kill = send(&stack, &key, 26..=28);
    prompt += after_kill;
    stack.restart_control_plane().unwrap();
    assert_ledger(&stack, &key, 56, prompt);

    assert_eq!(counter(&stack, "livegate_spend_records_dropped_total"), 0.0);
    assert_eq!(counter(&stack, "livegate_spend_records_skipped_total"), 0.0);
    assert_eq!(counter(&stack, "livegate_include_usage_added_total"), 28.0);
    assert!(counter(&stack, "livegate_spend_records_acknowledged_total") >= 56.0);

    // The restarted control plane's counters hold what it drained: the ten replayed and six.
    assert_reads_and_metrics(&stack, &key, (prompt, 56), (undrained + after_kill, 16));
}

/// The demo's prices (deploy/prices/model_prices.json), USD per token.
const PROMPT_PRICE: f64 = 0.00001;
const COMPLETION_PRICE: f64 = 0.00003;

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-9 * b.abs().max(1.0)
}

/// `/global/spend` and `/spend/logs` through Envoy: 401 without the master key, the sums with
/// it; the control plane's metrics by key alias, team and model: the same sums.
/// The ledger's reads hold every row (`ledger`: prompt tokens, rows); the control plane's
/// metrics what this process drained (`drained`).
fn assert_reads_and_metrics(stack: &Stack, key: &str, ledger: (u64, u64), drained: (u64, u64)) {
    let (prompt, n) = ledger;
    let completion = n * COMPLETION_TOKENS;
    let cost = prompt as f64 * PROMPT_PRICE + completion as f64 * COMPLETION_PRICE;
    let logs = format!("/spend/logs?api_key={key}");
    for path in ["/global/spend", logs.as_str()] {
        let anonymous = http::get(&stack.url(path), &[]).unwrap();
        assert_eq!(anonymous.status, 401, "{path}: {}", anonymous.body);
    }
    let master = format!("Bearer {}", stack.master_key());
    let global = http::get(&stack.url("/global/spend"), &[("authorization", &master)]).unwrap();
    assert_eq!(global.status, 200, "{}", global.body);
    let global_spend = global.json().unwrap()["spend"].as_f64().unwrap();
    assert!(close(global_spend, cost), "{global_spend} != {cost}");
    let rows = stack.spend_logs(key).unwrap();
    let row_spend: f64 = rows.iter().map(|r| r["spend"].as_f64().unwrap()).sum();
    assert!(close(row_spend, cost), "{row_spend} != {cost}");

    let url = stack.control_plane.as_ref().unwrap().metrics_url();
    let text = http::get(&url, &[]).unwrap().body;
    let series = |name: &str, extra: &str| {
        let prefix =
            format!("{name}{{key_alias=\"meter\",team=\"\",model=\"livegate-demo\"{extra}}} ");
        text.lines()
            .find_map(|l| l.strip_prefix(prefix.as_str()))
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or_else(|| panic!("no {prefix} in\n{text}"))
    };
    let (prompt, n) = drained;
    let completion = n * COMPLETION_TOKENS;
    let cost = prompt as f64 * PROMPT_PRICE + completion as f64 * COMPLETION_PRICE;
    let tokens = "livegate_spend_tokens_total";
    assert_eq!(series(tokens, ",kind=\"prompt\""), prompt as f64);
    assert_eq!(series(tokens, ",kind=\"completion\""), completion as f64);
    assert!(close(series("livegate_spend_cost_total", ""), cost));
    assert_eq!(
        prometheus_value(&text, "livegate_spend_series_folded_total"),
        Some(0.0)
    );
}
