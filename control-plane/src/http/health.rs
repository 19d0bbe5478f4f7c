//! Readiness, liveliness and metrics: answered from memory, whatever the database is doing.

use axum::extract::{RawQuery, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::Json;
use serde::Serialize;
use serde_json::json;
use std::sync::atomic::Ordering::Relaxed;

use super::error::ApiError;
use super::extract::MasterKey;
use super::AppState;
use crate::db::state::DbStatus;
use crate::db::Snapshot;

/// Set by Envoy's route for `/health/readiness` (overwriting any client's value): the request
/// came from outside, so the answer holds `status` and `db` only, unless the master key
/// comes with it. Requests on the control plane's own port get every detail.
pub const PUBLIC_VIEW_HEADER: &str = "x-livegate-readiness-view";

/// 200 while the gateway can serve (known keys work from cache); `?strict=true` asks for the
/// database itself and answers 503 unless it is connected.
pub async fn readiness(
    State(s): State<AppState>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
    master_key: Result<MasterKey, ApiError>,
) -> impl IntoResponse {
    let snap = s.db.snapshot();
    let strict = q
        .unwrap_or_default()
        .split('&')
        .any(|kv| kv == "strict=true" || kv == "strict=1");
    let connected = snap.db == DbStatus::Connected;
    let status = if connected {
        StatusCode::OK
    } else if strict {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::OK
    };
    let summary = Summary {
        status: if connected { "healthy" } else { "degraded" },
        db: snap.db,
    };
    let public = headers.contains_key(PUBLIC_VIEW_HEADER) && master_key.is_err();
    if public {
        return (status, Json(json!(summary)));
    }
    let spool = s.ledger.spool.depth();
    let detail = Detail {
        status: summary.status,
        spend_spool_records: Some(spool.records),
        spend_spool_bytes: Some(spool.file_bytes),
        change_log_read_ms_ago: s
            .cache
            .change_log_age(std::time::Instant::now())
            .map(|age| u64::try_from(age.as_millis()).unwrap_or(u64::MAX)),
        spend_dead_letters: Some(s.ledger.counters.dead_letters.load(Relaxed)),
        spend_spools_set_aside: Some(s.ledger.binding.set_aside()),
        snapshot: snap,
        version: env!("CARGO_PKG_VERSION"),
    };
    (status, Json(json!(detail)))
}

/// What anyone may read through Envoy.
#[derive(Serialize)]
struct Summary {
    status: &'static str,
    db: DbStatus,
}

/// What the master key, or the control plane's own port, reads: the supervisor's snapshot.
#[derive(Serialize)]
struct Detail {
    status: &'static str,
    #[serde(flatten)]
    snapshot: Snapshot,
    /// Spend records waiting to be drained into Postgres, and the spool file's size.
    spend_spool_records: Option<usize>,
    spend_spool_bytes: Option<u64>,
    /// Since the last complete read of the change log began; past
    /// `--max-change-log-silence-secs` the replica lets no key in from its older records.
    change_log_read_ms_ago: Option<u64>,
    /// Records this process's drain kept in `livegate_spend_dead_letters`.
    spend_dead_letters: Option<u64>,
    /// Spools of another database, set aside (file, its database, its records).
    spend_spools_set_aside: Option<Vec<crate::ledger::bind::SetAside>>,
    version: &'static str,
}

pub async fn liveliness() -> Json<serde_json::Value> {
    Json(json!({"status": "alive"}))
}

pub async fn metrics(State(s): State<AppState>) -> impl IntoResponse {
    let text = s
        .metrics
        .render(&s.db.snapshot(), s.cache.len(), Some(&s.ledger));
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text)
}
