//! Envoy's own SSE extraction (`envoy.filters.http.sse_to_metadata`) on the same stream:
//! what reading a stream's usage natively costs Envoy, beside what livegate's meter adds.

use std::fmt::Write as _;

use livegate_tests::envoy::Envoy;
use livegate_tests::stack::Stack;
use serde_json::json;

use super::cpu::{added, cpu_per_answer, AddedCpu, CPU_CONNECTIONS, CPU_ROUNDS};
use super::{stream_script, STREAM_EVENTS};
use crate::bench::envoy_beside;
use crate::bench::wrk::{Plan, Target};

/// The bare listener with Envoy's SSE extraction before its router.
const TEMPLATE: &str = "xtask/src/bench/sse-to-metadata.yaml.tmpl";
/// Envoy's counter of the values its JSON content parser wrote to metadata.
const EXTRACTED: &str = "envoy_sse_to_metadata_resp_json_metadata_added";

/// The native extraction's runs.
pub(super) struct Native {
    /// What it adds to the bare listener's Envoy CPU per answer.
    added: AddedCpu,
    /// Values it wrote to metadata per answer (2 when it read every stream's usage).
    extracted_per_answer: f64,
}

/// The bare listener (`baseline`, no filter) without and with Envoy's extraction, on the
/// metering table's stream with its usage asked for by the client (no filter asks for it).
pub(super) fn run(
    stack: &Stack,
    key: &str,
    baseline: &Envoy,
    plan: &Plan,
) -> anyhow::Result<Native> {
    let native = envoy_beside(stack, TEMPLATE, "{}")?;
    let fields = json!({
        "livegate_events": STREAM_EVENTS,
        "stream_options": {"include_usage": true},
    });
    let script = stream_script(stack, key, "usage-asked.lua", fields)?;
    let path = "/v1/chat/completions";
    let targets = [
        Target {
            name: "no filter",
            url: format!("{}{path}", baseline.url()),
            script: script.clone(),
        },
        Target {
            name: "Envoy's sse_to_metadata",
            url: format!("{}{path}", native.url()),
            script,
        },
    ];
    let plan = Plan {
        connections: CPU_CONNECTIONS,
        rounds: CPU_ROUNDS,
        ..*plan
    };
    let extracted_before = native.prometheus_counter(EXTRACTED)?;
    let answered_before = answers(&native)?;
    let cpu = cpu_per_answer(stack, &targets, &[baseline, &native], &plan)?;
    let extracted = native.prometheus_counter(EXTRACTED)? - extracted_before;
    let answered = answers(&native)? - answered_before;
    // A filter that read nothing (a stream it did not recognise) would cost nothing.
    anyhow::ensure!(
        extracted > 0.0 && answered > 0.0,
        "Envoy's sse_to_metadata extracted {extracted} values from {answered} answers"
    );
    let [no_filter, with_native] = &cpu[..] else {
        anyhow::bail!("two setups measured, {} results", cpu.len());
    };
    let added = added(no_filter, with_native)
        .ok_or_else(|| anyhow::anyhow!("no rounds of Envoy's sse_to_metadata"))?;
    Ok(Native {
        added,
        extracted_per_answer: extracted / answered,
    })
}

/// Answers the listener has sent whole.
fn answers(envoy: &Envoy) -> anyhow::Result<f64> {
    envoy.prometheus_counter("envoy_http_downstream_rq_completed")
}

/// The native extraction's paragraph of the metering table.
pub(super) fn paragraph(out: &mut String, native: &Native) {
    let _ = writeln!(
        out,
        "\n**(e) Envoy's own extraction.** Envoy's `sse_to_metadata` filter (JSON content \
         parser; two rules, `usage.prompt_tokens` and `usage.completion_tokens`, written to \
         dynamic metadata) on (i)'s bare listener, the same stream with its usage asked for \
         by the client, {CPU_CONNECTIONS} connections, {CPU_ROUNDS} rounds: it adds {} of \
         Envoy CPU per answer over no filter, writing {:.1} values per answer. It parses \
         every event into a document, and gives nothing to estimate from when a stream is \
         cut short.",
        native.added.described(),
        native.extracted_per_answer,
    );
}
