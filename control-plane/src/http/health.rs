//! Readiness, liveliness and metrics: answered from memory, whatever the database is doing.

use axum::extract::{RawQuery, State};
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::Json;
use serde_json::json;

use super::AppState;
use crate::db::state::DbStatus;

/// 200 while the gateway can serve (known keys work from cache); `?strict=true` asks for the
/// database itself and answers 503 unless it is connected.
pub async fn readiness(State(s): State<AppState>, RawQuery(q): RawQuery) -> impl IntoResponse {
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
    let body = json!({
        "status": if connected { "healthy" } else { "degraded" },
        "db": snap.db.as_str(),
        "engine_pid": snap.engine_pid,
        "reconnects": snap.reconnects,
        "last_error": snap.last_error,
        "version": env!("CARGO_PKG_VERSION"),
    });
    (status, Json(body))
}

pub async fn liveliness() -> Json<serde_json::Value> {
    Json(json!({"status": "alive"}))
}

pub async fn metrics(State(s): State<AppState>) -> impl IntoResponse {
    let text = s.metrics.render(&s.db.snapshot(), s.cache.len());
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text)
}
