//! Wiring of `serve`: one runtime thread, the supervisor, the HTTP server, signals, shutdown.

use std::sync::Arc;

use tokio::signal::unix::{signal, SignalKind};
use tokio_util::sync::CancellationToken;

use crate::config::{Config, ConfigError};
use crate::db::supervisor::{self, Reconnect};
use crate::feed::{self, ChangeRing};
use crate::gate::{Gate, GateSettings};
use crate::http::{self, AppState};
use crate::key_cache::KeyCache;
use crate::ledger::{self, Ledger};
use crate::looplag;
use crate::metrics::Metrics;
use crate::rate_limit::Limiter;

/// Logs go to stderr; `json` for machines. Secrets are never fields of any event.
pub fn init_logging(json: bool) {
    let filter =
        tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = if json {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}

/// Runs the control plane until SIGTERM or SIGINT.
///
/// A single-threaded runtime on purpose: anything that blocked it would stall every task,
/// the loop-lag probe included, so the probe is an honest witness that nothing does.
pub fn serve(config: Config) -> anyhow::Result<()> {
    init_logging(config.json_logs);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(run(config))
}

async fn run(config: Config) -> anyhow::Result<()> {
    let config = Arc::new(config);
    let metrics = Arc::new(Metrics::default());
    // The spool is replayed before the port opens: nothing is acknowledged twice.
    let mut ledger = Ledger::open(&config.spend)
        .await
        .map_err(ConfigError::from)?;
    // The model list's `model_info` prices its deployments (before anything shares them).
    ledger.prices = Arc::new(crate::config::model_list::with_deployment_prices(
        &ledger.prices,
        config.model_list.as_deref(),
    )?);
    let listener = tokio::net::TcpListener::bind(config.listen).await?;
    let metrics_listener = tokio::net::TcpListener::bind(config.metrics_listen).await?;
    tracing::info!(listen = %config.listen, metrics_listen = %config.metrics_listen, version = env!("CARGO_PKG_VERSION"), "control plane listening");
    let stop_http = CancellationToken::new();
    let stop_db = CancellationToken::new();
    tokio::spawn(looplag::probe(
        metrics.loop_lag.clone(),
        config.loop_lag_interval,
        stop_db.clone(),
    ));
    let (db, sup) = supervisor::start(
        config.supervisor.clone(),
        metrics.db.clone(),
        stop_db.clone(),
    )?;
    let cache = Arc::new(KeyCache::new(config.cache));
    let changes = Arc::new(ChangeRing::default());
    tokio::spawn(feed::run(
        db.clone(),
        cache.clone(),
        changes.clone(),
        config.feed,
        stop_db.clone(),
    ));
    tokio::spawn(crate::budget::reset::run(
        db.clone(),
        crate::budget::reset::RESET_EVERY,
        stop_db.clone(),
    ));
    let drain = tokio::spawn(ledger::drain(
        ledger.clone(),
        db.clone(),
        cache.clone(),
        ledger::DrainPace {
            batch: config.spend.drain_batch,
            retry: config.spend.drain_retry,
            linger: config.spend.drain_linger,
        },
        stop_db.clone(),
    ));
    let limiter = Limiter::new(db.clone(), config.auth_db_deadline)
        .with_max_lease(config.rate_limit_max_lease);
    tokio::spawn(crate::rate_limit::run_flusher(
        limiter.clone(),
        crate::rate_limit::FLUSH_EVERY,
        stop_db.clone(),
    ));
    let gate = Gate::new(
        db.clone(),
        cache.clone(),
        ledger.clone(),
        limiter.clone(),
        metrics.gate.clone(),
        GateSettings {
            db_deadline: config.auth_db_deadline,
            cache_ttl: config.auth_cache_ttl,
            when_full: config.spend.when_full,
        },
    );
    let state = AppState {
        gate,
        limiter,
        ledger,
        cache,
        changes,
        config: config.clone(),
        db,
        metrics,
    };
    spawn_signal_handlers(stop_http.clone(), sup.reconnect.clone())?;
    // Metrics answer until the process ends: the drain below is worth watching.
    let metrics_server = axum::serve(metrics_listener, http::metrics_router(state.clone()))
        .with_graceful_shutdown(stop_db.clone().cancelled_owned());
    tokio::spawn(async move {
        if let Err(e) = metrics_server.await {
            tracing::warn!(error = %e, "the metrics listener stopped");
        }
    });
    let server = axum::serve(listener, http::router(state))
        .with_graceful_shutdown(stop_http.clone().cancelled_owned());
    let server = tokio::spawn(async move { server.await });
    stop_http.cancelled().await;
    // Stop accepting, drain in-flight requests (bounded), then the engine's kill sequence.
    if tokio::time::timeout(config.drain_timeout, server)
        .await
        .is_err()
    {
        tracing::warn!("drain timeout reached; closing remaining connections");
    }
    stop_db.cancel();
    let _ = drain.await;
    let _ = sup.task.await;
    tracing::info!("control plane stopped");
    Ok(())
}

fn spawn_signal_handlers(stop: CancellationToken, reconnect: Reconnect) -> anyhow::Result<()> {
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut hup = signal(SignalKind::hangup())?;
    tokio::spawn(async move {
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
            _ = int.recv() => tracing::info!("SIGINT: shutting down"),
        }
        stop.cancel();
    });
    tokio::spawn(async move {
        while hup.recv().await.is_some() {
            tracing::info!("SIGHUP: reconnecting to the database");
            reconnect.request();
        }
    });
    Ok(())
}
