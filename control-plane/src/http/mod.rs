//! The HTTP API: the router, shared state, and the request-metrics layer. Handlers stay thin.

mod access;
mod auth_check;
pub mod error;
mod extract;
mod health;
mod internal;
mod keys;
mod members;
mod model_fields;
mod model_info;
mod rotation;
mod spend;
mod teams;
mod users;

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{get, post};
use axum::Router;

use crate::config::Config;
use crate::db::Db;
use crate::feed::ChangeRing;
use crate::gate::Gate;
use crate::key_cache::KeyCache;
use crate::ledger::Ledger;
use crate::metrics::Metrics;
use crate::rate_limit::Limiter;
use error::ApiError;
use livegate_contract::{AUTH_CHECK_PATH, CHANGES_PATH, SPEND_RECORDS_PATH};

/// What every handler may use.
#[derive(Clone)]
pub struct AppState {
    pub config: Arc<Config>,
    pub db: Db,
    pub cache: Arc<KeyCache>,
    pub changes: Arc<ChangeRing>,
    pub metrics: Arc<Metrics>,
    /// The spend spool and prices.
    pub ledger: Ledger,
    /// The auth checks and the settlement of finished requests.
    pub gate: Gate,
    /// Every rate-limit window this replica has touched.
    pub limiter: Limiter,
}

pub fn router(state: AppState) -> Router {
    let limit = state.config.body_limit;
    // The filter's calls: only with the shared credential (`internal::require_token`).
    let internal = Router::new()
        .route(AUTH_CHECK_PATH, post(auth_check::check))
        .route(CHANGES_PATH, get(auth_check::changes))
        .route(SPEND_RECORDS_PATH, post(spend::records))
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            internal::require_token,
        ));
    Router::new()
        .merge(internal)
        .route("/spend/logs", get(spend::logs))
        .route("/global/spend", get(spend::global))
        .route("/health/readiness", get(health::readiness))
        .route("/health/liveliness", get(health::liveliness))
        .route("/health/liveness", get(health::liveliness))
        .route("/key/generate", post(keys::generate))
        .route("/key/list", get(keys::list))
        .route("/key/info", get(keys::info))
        .route("/key/update", post(keys::update))
        .route("/key/delete", post(keys::delete))
        .route("/key/block", post(keys::block))
        .route("/key/unblock", post(keys::unblock))
        .route("/key/regenerate", post(rotation::regenerate))
        .route("/key/{key}/regenerate", post(rotation::regenerate_path))
        .route("/team/new", post(teams::new))
        .route("/team/info", get(teams::info))
        .route("/team/list", get(teams::list))
        .route("/team/available", get(teams::available))
        .route("/team/update", post(teams::update))
        .route("/team/delete", post(teams::delete))
        .route("/team/block", post(teams::block))
        .route("/team/unblock", post(teams::unblock))
        .route("/team/member_add", post(members::add))
        .route("/team/member_delete", post(members::delete))
        .route("/team/member_update", post(members::update))
        .route("/user/new", post(users::new))
        .route("/user/info", get(users::info))
        .route("/user/list", get(users::list))
        .route("/user/update", post(users::update))
        .route("/user/delete", post(users::delete))
        .route("/model/info", get(model_info::info))
        .route("/v1/model/info", get(model_info::info))
        .fallback(|| async { ApiError::NotFound("no such endpoint".into()) })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        .layer(middleware::from_fn_with_state(
            state.clone(),
            count_requests,
        ))
        .layer(DefaultBodyLimit::max(limit))
        .with_state(state)
}

/// `/metrics` alone, for its own listener (`--metrics-listen`): whoever may scrape it reaches
/// nothing else of the control plane.
pub fn metrics_router(state: AppState) -> Router {
    Router::new()
        .route("/metrics", get(health::metrics))
        .fallback(|| async { ApiError::NotFound("this listener serves /metrics only".into()) })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        .with_state(state)
}

/// Counts requests by route template (never the raw path: it could carry a key) and status,
/// and stamps `retry-after` on every 503: the one place it is set.
async fn count_requests(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", |p| p.as_str())
        .to_owned();
    let method = req.method().clone();
    let started = Instant::now();
    let mut resp = next.run(req).await;
    if resp.status() == StatusCode::SERVICE_UNAVAILABLE {
        let seconds = state.config.retry_after.as_secs().max(1);
        resp.headers_mut()
            .entry(header::RETRY_AFTER)
            .or_insert(HeaderValue::from(seconds));
    }
    let status = resp.status().as_u16();
    state.metrics.count_request(&route, status);
    // On an admin route a 403 has one cause: the `MasterKey` extractor refused the key
    // presented (no key at all is a 401, not an attempt).
    let admin = ["/key/", "/team/", "/user/", "/spend/", "/global/"];
    if status == 403 && admin.iter().any(|p| route.starts_with(p)) {
        state
            .metrics
            .master_key_failures
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
    tracing::debug!(%method, route, status, elapsed_ms = started.elapsed().as_secs_f64() * 1e3, "request");
    resp
}
