//! The spend ledger's HTTP face: `POST /v1/spend/records` (the filter's, internal) and the
//! master key's reads in LiteLLM's shapes, `GET /spend/logs` and `GET /global/spend`.

use std::collections::BTreeMap;

use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::{DateTime, NaiveDate, Utc};
use livegate_contract::{SpendAck, SpendBatch, SpendRecord};
use serde_json::{json, Map, Value};

use super::error::ApiError;
use super::extract::MasterKey;
use super::keys::{check_query, parse_query, query_param};
use super::AppState;
use crate::db::{SpendFilter, SpendGroup};
use crate::ledger::IntakeError;
use crate::model::keys;
use crate::model::LedgerEntry;

/// The most rows `/spend/logs` answers (newest first) when it does not summarize.
pub const MAX_LOG_ROWS: i64 = 1000;

/// Validates, prices and spools the batch; answers only once it is synced. Unknown fields
/// are ignored (a newer filter during a rolling upgrade), unlike the admin API's bodies.
pub async fn records(State(s): State<AppState>, body: Bytes) -> Result<Json<SpendAck>, ApiError> {
    let batch: SpendBatch = serde_json::from_slice(&body).map_err(|e| ApiError::BadRequest {
        message: format!("not a spend batch: {e}"),
        param: None,
    })?;
    batch
        .validate_at(crate::rate_limit::now_ms())
        .map_err(|e| ApiError::BadRequest {
            message: e.to_string(),
            param: Some(e.param()),
        })?;
    match s.gate.intake(batch).await {
        Ok(appended) => Ok(Json(SpendAck {
            accepted: u32::try_from(appended.accepted).unwrap_or(u32::MAX),
            duplicates: u32::try_from(appended.duplicates).unwrap_or(u32::MAX),
        })),
        Err(IntakeError::Full) => Err(ApiError::Unavailable(
            "the spend spool is full; retry later".into(),
        )),
        Err(IntakeError::Unbound) => Err(ApiError::Unavailable(
            "the spend spool waits for the database to connect; retry later".into(),
        )),
        Err(e) => {
            tracing::error!(error = %e, "spend records not spooled");
            Err(ApiError::Unavailable("the spend spool cannot write".into()))
        }
    }
}

fn date(q: &[(String, String)], name: &str) -> Result<Option<NaiveDate>, ApiError> {
    query_param(q, name)
        .filter(|v| !v.is_empty())
        .map(|v| {
            NaiveDate::parse_from_str(&v, "%Y-%m-%d")
                .map_err(|_| ApiError::bad(name, format!("{name} must be a date, YYYY-MM-DD")))
        })
        .transpose()
}

fn flag(q: &[(String, String)], name: &str, default: bool) -> Result<bool, ApiError> {
    match query_param(q, name).as_deref() {
        None | Some("") => Ok(default),
        Some("true" | "True" | "1") => Ok(true),
        Some("false" | "False" | "0") => Ok(false),
        Some(_) => Err(ApiError::bad(name, format!("{name} must be true or false"))),
    }
}

/// `GET /spend/logs`: rows as LiteLLM's `LiteLLM_SpendLogs`, newest first; with both dates
/// and `summarize` (the default), LiteLLM's per-day summary instead.
pub async fn logs(
    State(s): State<AppState>,
    _: MasterKey,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let q = parse_query(raw)?;
    check_query(
        &q,
        &[
            "api_key",
            "request_id",
            "start_date",
            "end_date",
            "summarize",
        ],
        &[
            "user_id",
            "team_id",
            "min_spend",
            "max_spend",
            "page",
            "page_size",
        ],
    )?;
    let key_hash = match query_param(&q, "api_key").filter(|v| !v.is_empty()) {
        None => None,
        Some(k) => Some(
            keys::key_hash_of_raw_or_hash(&k)
                .ok_or_else(|| {
                    ApiError::bad("api_key", "api_key must be an sk- key or its SHA-256 hex")
                })?
                .to_string(),
        ),
    };
    let start_date = date(&q, "start_date")?;
    let end_date = date(&q, "end_date")?;
    match (start_date, end_date) {
        (Some(_), None) => return Err(ApiError::bad("end_date", "end_date comes with start_date")),
        (None, Some(_)) => {
            return Err(ApiError::bad(
                "start_date",
                "start_date comes with end_date",
            ))
        }
        (Some(a), Some(b)) if b < a => {
            return Err(ApiError::bad("end_date", "end_date is before start_date"))
        }
        _ => {}
    }
    let summarize = flag(&q, "summarize", true)?;
    let filter = SpendFilter {
        key_hash,
        request_id: query_param(&q, "request_id").filter(|v| !v.is_empty()),
        start_date,
        end_date,
        limit: MAX_LOG_ROWS,
    };
    match (start_date, end_date) {
        (Some(from), Some(to)) if summarize => {
            let groups = s.db.spend_summary(filter).await?;
            Ok(Json(summary(&groups, from, to)).into_response())
        }
        _ => {
            let rows = s.db.spend_logs(filter).await?;
            Ok(Json(rows.iter().map(shown).collect::<Vec<_>>()).into_response())
        }
    }
}

/// A ledger entry as LiteLLM's spend log shows it; livegate's own fields under `metadata`.
pub fn shown(entry: &LedgerEntry) -> Value {
    let r = &entry.record;
    let time = |ms: u64| {
        i64::try_from(ms)
            .ok()
            .and_then(DateTime::<Utc>::from_timestamp_millis)
    };
    json!({
        "request_id": r.request_id,
        "call_type": "",
        "api_key": r.key_hash,
        "spend": entry.cost,
        "total_tokens": r.total_tokens.unwrap_or(0),
        "prompt_tokens": r.prompt_tokens.unwrap_or(0),
        "completion_tokens": r.completion_tokens.unwrap_or(0),
        "startTime": time(r.start_time_ms),
        "endTime": time(r.end_time_ms),
        "model": r.model_returned.as_ref().or(r.model_requested.as_ref()),
        "model_group": r.model_requested,
        "team_id": r.team_id,
        "user": null,
        "metadata": {
            "user_api_key_alias": r.key_alias,
            "usage_known": r.usage_known,
            "usage_estimate_reason": r.usage_estimate_reason.map(|reason| reason.as_str()),
            "unpriced": entry.unpriced,
            "status": r.status,
            "streamed": r.streamed,
            "model_returned": r.model_returned,
            "deployment": r.deployment,
            "usage_object": usage_object(r),
        },
    })
}

/// The counts as LiteLLM's spend log keeps them (`metadata.usage_object`, its `Usage`):
/// cached and cache-write tokens under `prompt_tokens_details` and Anthropic's names,
/// reasoning under `completion_tokens_details`; a detail the response did not state is
/// left out. `null` when the record carries no counts.
fn usage_object(r: &SpendRecord) -> Value {
    if r.prompt_tokens.is_none() && r.completion_tokens.is_none() && r.total_tokens.is_none() {
        return Value::Null;
    }
    let mut usage = Map::new();
    usage.insert("prompt_tokens".into(), json!(r.prompt_tokens.unwrap_or(0)));
    usage.insert(
        "completion_tokens".into(),
        json!(r.completion_tokens.unwrap_or(0)),
    );
    usage.insert("total_tokens".into(), json!(r.total_tokens.unwrap_or(0)));
    let mut prompt = Map::new();
    if let Some(n) = r.cached_tokens {
        prompt.insert("cached_tokens".into(), json!(n));
        usage.insert("cache_read_input_tokens".into(), json!(n));
    }
    if let Some(n) = r.cache_creation_tokens {
        prompt.insert("cache_creation_tokens".into(), json!(n));
        usage.insert("cache_creation_input_tokens".into(), json!(n));
    }
    if !prompt.is_empty() {
        usage.insert("prompt_tokens_details".into(), Value::Object(prompt));
    }
    if let Some(n) = r.reasoning_tokens {
        usage.insert(
            "completion_tokens_details".into(),
            json!({ "reasoning_tokens": n }),
        );
    }
    Value::Object(usage)
}

/// LiteLLM's summary: one object per day from `from` to `to` (days without spend too):
/// `{"startTime": day, "spend": total, "<api key hash>": spend, "users": {}, "models": {model: spend}}`.
pub fn summary(groups: &[SpendGroup], from: NaiveDate, to: NaiveDate) -> Vec<Value> {
    let mut days: BTreeMap<NaiveDate, Map<String, Value>> = BTreeMap::new();
    let add = |v: &mut Value, spend: f64| *v = json!(v.as_f64().unwrap_or(0.0) + spend);
    for g in groups {
        let day = days.entry(g.day).or_insert_with(empty_day);
        add(day.entry("spend").or_insert(json!(0.0)), g.spend);
        add(day.entry(g.key_hash.clone()).or_insert(json!(0.0)), g.spend);
        if let Some(Value::Object(models)) = day.get_mut("models") {
            add(models.entry(g.model.clone()).or_insert(json!(0.0)), g.spend);
        }
    }
    let mut out = Vec::new();
    let mut d = from;
    while d <= to {
        let mut day = days.remove(&d).unwrap_or_else(empty_day);
        day.insert("startTime".into(), json!(d.to_string()));
        out.push(Value::Object(day));
        match d.succ_opt() {
            Some(next) => d = next,
            None => break,
        }
    }
    out
}

fn empty_day() -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("spend".into(), json!(0.0));
    m.insert("users".into(), json!({}));
    m.insert("models".into(), json!({}));
    m
}

/// `GET /global/spend`: every drained record's cost, as LiteLLM answers it.
pub async fn global(
    State(s): State<AppState>,
    _: MasterKey,
    RawQuery(raw): RawQuery,
) -> Result<Json<Value>, ApiError> {
    check_query(&parse_query(raw)?, &[], &[])?;
    let spend = s.db.global_spend().await?;
    Ok(Json(json!({"spend": spend, "max_budget": null})))
}
