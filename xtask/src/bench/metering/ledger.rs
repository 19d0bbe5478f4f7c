//! The ledger's runs: (b) the drain of a backlog taken with Postgres frozen, and (c) a
//! database outage under metered streaming, every record accounted for.

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use livegate_tests::http;
use livegate_tests::stack::Stack;
use serde_json::{json, Value};

use super::{control_plane_metric, settle, wait};
use crate::bench::wrk;
use crate::step;

/// Records of the drain run, posted in batches of the contract's largest size.
const RECORDS: usize = 50_000;
const BATCH: usize = 100;

/// (b)'s figures.
pub(super) struct Drain {
    records: usize,
    /// Records a statement sent before the freeze committed at the thaw.
    duplicates: f64,
    intake: Duration,
    reconnect: Duration,
    drain: Duration,
    drained: f64,
}

/// (c)'s figures.
pub(super) struct Outage {
    seconds: u64,
    requests: f64,
    spooled_peak: f64,
    drained: f64,
    duplicates: f64,
    rows: f64,
    after_resume: Duration,
    dropped: f64,
}

/// Rows of `livegate_spend_logs` from real requests (the drain run's ids start `bench-`),
/// counted by Postgres itself: the ground truth, whatever the counters say.
fn metered_rows(stack: &Stack) -> anyhow::Result<u64> {
    let postgres = stack
        .postgres
        .as_ref()
        .ok_or_else(|| anyhow::anyhow!("no Postgres"))?;
    let output = std::process::Command::new(livegate_tests::postgres::bin_dir()?.join("psql"))
        .arg(postgres.url())
        .args([
            "-tAc",
            "SELECT count(*) FROM livegate_spend_logs WHERE request_id NOT LIKE 'bench-%'",
        ])
        .output()?;
    let text = String::from_utf8_lossy(&output.stdout);
    text.trim()
        .parse()
        .map_err(|_| anyhow::anyhow!("psql: {text}{}", String::from_utf8_lossy(&output.stderr)))
}

/// One batch of `BATCH` records for the drain run, ids `bench-{run}-{first}` onwards.
fn records_batch(token: &str, run: &str, first: usize) -> Value {
    // Times near now: the intake refuses a record far from its clock (issue #24).
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(0));
    let records: Vec<Value> = (first..first + BATCH)
        .map(|i| {
            json!({
                "request_id": format!("bench-{run}-{i}"),
                "key_hash": token,
                "key_alias": "bench-metering",
                "team_id": null,
                "model_requested": livegate_demo_upstream::MODEL,
                "model_returned": livegate_demo_upstream::MODEL,
                "prompt_tokens": 100,
                "completion_tokens": 200,
                "total_tokens": 300,
                "usage_known": true,
                "status": 200,
                "streamed": true,
                "start_time_ms": now,
                "end_time_ms": now + 100,
            })
        })
        .collect();
    json!({ "records": records })
}

/// (b): intake with Postgres frozen, then the backlog's drain.
pub(super) fn drain(stack: &Stack, token: &str) -> anyhow::Result<Drain> {
    step(&format!(
        "drain: {RECORDS} records into a frozen Postgres, then drained"
    ));
    let postgres = stack
        .postgres
        .as_ref()
        .ok_or_else(|| anyhow::anyhow!("no Postgres"))?;
    let base = stack
        .control_plane
        .as_ref()
        .map(|c| c.base_url())
        .ok_or_else(|| anyhow::anyhow!("no control plane"))?;
    settle(stack)?;
    let drained_before = control_plane_metric(stack, "livegate_spend_drained_total")?;
    let duplicates_before = control_plane_metric(stack, "livegate_spend_duplicates_total")?;
    let run = format!("{}", std::process::id());
    postgres.pause()?;
    let started = Instant::now();
    // Four posting threads: the intake syncs every batch, so one client would measure
    // fdatasync latency rather than the intake.
    let url = format!("{base}/v1/spend/records");
    let results: Vec<anyhow::Result<()>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..4)
            .map(|t| {
                let (url, run) = (&url, &run);
                s.spawn(move || -> anyhow::Result<()> {
                    for first in (t * BATCH..RECORDS).step_by(4 * BATCH) {
                        let r = http::post_json(
                            url,
                            &[livegate_tests::internal_token::header()],
                            &records_batch(token, run, first),
                        )?;
                        anyhow::ensure!(r.status == 200, "intake: {} {}", r.status, r.body);
                    }
                    Ok(())
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(anyhow::anyhow!("a poster panicked")))
            })
            .collect()
    });
    results.into_iter().collect::<anyhow::Result<Vec<()>>>()?;
    let intake = started.elapsed();
    let spooled = control_plane_metric(stack, "livegate_spend_spool_records")?;
    anyhow::ensure!(
        spooled as usize == RECORDS,
        "spooled {spooled}, posted {RECORDS}"
    );
    postgres.resume()?;
    let mut first = drained_before;
    let reconnect = wait("the first drained record", || {
        first = control_plane_metric(stack, "livegate_spend_drained_total")?;
        Ok(first > drained_before)
    })?;
    let drain = wait("an empty spool", || {
        Ok(control_plane_metric(stack, "livegate_spend_spool_records")? == 0.0)
    })?;
    let total = control_plane_metric(stack, "livegate_spend_drained_total")? - drained_before;
    // A batch sent to the frozen backend may commit at the thaw after its engine was
    // replaced: the next engine finds those rows there (duplicates, not drained again).
    let duplicates =
        control_plane_metric(stack, "livegate_spend_duplicates_total")? - duplicates_before;
    anyhow::ensure!(
        (total + duplicates) as usize == RECORDS,
        "drained {total} and found {duplicates} already in Postgres, of {RECORDS}"
    );
    // The rate from the first record seen drained: what was drained after it, over the time.
    let drained = total - (first - drained_before);
    Ok(Drain {
        records: RECORDS,
        duplicates,
        intake,
        reconnect,
        drain,
        drained,
    })
}

/// (c): steady metered streaming for `outage + 20` s, Postgres frozen from 10 s to
/// 10 + `outage` s; then every record accounted for.
pub(super) fn outage(
    stack: &Stack,
    url: &str,
    script: &std::path::Path,
    outage: u64,
) -> anyhow::Result<Outage> {
    step(&format!(
        "outage: {outage} s of frozen Postgres under metered streaming"
    ));
    let postgres = stack
        .postgres
        .as_ref()
        .ok_or_else(|| anyhow::anyhow!("no Postgres"))?;
    settle(stack)?;
    let drained_before = control_plane_metric(stack, "livegate_spend_drained_total")?;
    let rows_before = metered_rows(stack)?;
    let duplicates_before = control_plane_metric(stack, "livegate_spend_duplicates_total")?;
    let queued_before = stack
        .envoy
        .prometheus_counter("livegate_spend_records_queued_total")?;
    let dropped_before = stack
        .envoy
        .prometheus_counter("livegate_spend_records_dropped_total")?;
    let total = outage + 20;
    let spooled_peak = std::thread::scope(|s| -> anyhow::Result<(f64, Duration)> {
        let wrk = s.spawn(|| wrk::run(url, total, 4, Some(script)));
        std::thread::sleep(Duration::from_secs(10));
        postgres.pause()?;
        let mut peak: f64 = 0.0;
        let frozen = Instant::now();
        while frozen.elapsed() < Duration::from_secs(outage) {
            peak = peak.max(control_plane_metric(stack, "livegate_spend_spool_records")?);
            std::thread::sleep(Duration::from_millis(500));
        }
        peak = peak.max(control_plane_metric(stack, "livegate_spend_spool_records")?);
        postgres.resume()?;
        // The backlog is drained when what waits is down to about one filter batch.
        let after_resume = wait("the backlog drained", || {
            Ok(control_plane_metric(stack, "livegate_spend_spool_records")? <= 100.0)
        })?;
        wrk.join()
            .map_err(|_| anyhow::anyhow!("wrk's thread panicked"))??;
        Ok((peak, after_resume))
    })?;
    let (spooled_peak, after_resume) = spooled_peak;
    settle(stack)?;
    let queued = stack
        .envoy
        .prometheus_counter("livegate_spend_records_queued_total")?
        - queued_before;
    let drained = control_plane_metric(stack, "livegate_spend_drained_total")? - drained_before;
    let duplicates =
        control_plane_metric(stack, "livegate_spend_duplicates_total")? - duplicates_before;
    let rows = metered_rows(stack)?.saturating_sub(rows_before) as f64;
    let dropped = stack
        .envoy
        .prometheus_counter("livegate_spend_records_dropped_total")?
        - dropped_before;
    Ok(Outage {
        seconds: outage,
        requests: queued,
        spooled_peak,
        drained,
        duplicates,
        rows,
        after_resume,
        dropped,
    })
}

/// (b)'s paragraph of the metering table.
pub(super) fn drain_paragraph(out: &mut String, drain: &Drain) {
    let rate = drain.drained / drain.drain.as_secs_f64().max(1e-9);
    let verdict = if rate >= 5000.0 { "met" } else { "not met" };
    let _ = writeln!(
        out,
        "\n**(b) The drain.** {} records posted to `/v1/spend/records` by 4 clients in batches of {BATCH} \
         with Postgres frozen (SIGSTOP): intake {:.0} records/s (each batch `fdatasync`ed before its 200). \
         Postgres thawed: the first record drained after {:.1} s (the supervisor's reconnect), then \
         {:.0} records drained in {:.2} s: **{:.0} records/s** (batches of 500, the default \
         `--spend-drain-batch`; target ≥ 5,000/s: {verdict}). {:.0} of them were found in \
         Postgres already (a batch sent to the frozen backend, committed at the thaw).",
        drain.records,
        drain.records as f64 / drain.intake.as_secs_f64().max(1e-9),
        drain.reconnect.as_secs_f64(),
        drain.drained,
        drain.drain.as_secs_f64(),
        rate,
        drain.duplicates,
    );
}

/// (c)'s paragraph of the metering table.
pub(super) fn outage_paragraph(out: &mut String, outage: &Outage) {
    let _ = writeln!(
        out,
        "\n**(c) A database outage under load.** Streamed answers through (iv) with 4 connections \
         for {} s, Postgres frozen for {} s of them: {:.0} responses metered (records queued by the \
         filter), at most {:.0} records waiting in the spool, down to at most 100 (one batch) {:.1} s \
         after the thaw. Afterwards Postgres holds {:.0} new rows: **lost {:.0}** of the records \
         queued (target 0); dropped by the filter {:.0}. The counters: drained {:.0}, duplicates {:.0} (records the drain found in \
         Postgres already: a statement the frozen backend committed after the thaw, its engine \
         replaced meanwhile, or a filter's retry: the drained counter does not count them).",
        outage.seconds + 20,
        outage.seconds,
        outage.requests,
        outage.spooled_peak,
        outage.after_resume.as_secs_f64(),
        outage.rows,
        (outage.requests - outage.rows).max(0.0),
        outage.dropped,
        outage.drained,
        outage.duplicates,
    );
    if outage.dropped > 0.0 {
        let _ = writeln!(
            out,
            "\nThe outage outlasted the spool: past its bound (`--spend-spool-max-records`) the \
             filter's queues (`metering.max_queued_records`) filled, and {:.0} answers served \
             were never billed, counted in `livegate_spend_records_dropped_total`. By design: \
             the bench's key has no budget, and `--spend-spool-full`'s default \
             (`refuse-budgeted`) keeps admitting such keys; a key with a budget (its own or its \
             team's) is refused with 503 `spend_spool_full` instead (operations.md, \"The spend \
             ledger\"). A shorter outage (`--outage-seconds`) that fits in the spool drops none.",
            outage.dropped,
        );
    }
}
