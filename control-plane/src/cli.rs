//! The command line: `serve`, `engine`, `hash-key`, `spool drain`. Flags win over environment variables.

use std::io::Read;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

use crate::secret::Secret;
use crate::{app, config::Config, db, keys};

/// The whole command line. Its `Debug` is safe to print: secrets are [`Secret`]s.
#[derive(Debug, Parser)]
#[command(
    name = "livegate-control-plane",
    version,
    about = "livegate's control plane"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve the HTTP API and supervise the database engine.
    Serve(Box<ServeArgs>),
    /// The database engine subprocess (started by `serve`; not for operators).
    Engine,
    /// Print the SHA-256 (the stored `token`) of a raw key read from stdin.
    HashKey,
    /// Operate on spend spools set aside for another database.
    #[command(subcommand)]
    Spool(SpoolCommand),
}

#[derive(Debug, Subcommand)]
pub enum SpoolCommand {
    /// Drain a spool file into the database of --database-url, only if it is the spool's
    /// own (a set-aside spool carries its database's identity); refuses any other.
    Drain(SpoolDrainArgs),
}

#[derive(Debug, Args)]
pub struct SpoolDrainArgs {
    /// The spool file (e.g. `spend.spool.db-<identity>.<ms>` next to the live spool).
    #[arg(long)]
    pub file: std::path::PathBuf,
    /// libpq URL of the spool's database.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<Secret>,
    /// As for `serve`.
    #[arg(long, env = "LIVEGATE_ENGINE_COMMAND")]
    pub engine_command: Option<String>,
    /// How long to wait for the database.
    #[arg(long, default_value_t = 30)]
    pub connect_timeout_secs: u64,
}

/// Flags of `serve`; `config` turns them into a validated `Config`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on (loopback by default: `/v1/auth/check` is internal).
    #[arg(long, env = "LIVEGATE_LISTEN", default_value = "127.0.0.1:4001")]
    pub listen: String,
    /// Where `/metrics` is served, alone: scraping it grants nothing else (loopback by default;
    /// a pod's Prometheus needs `0.0.0.0:4005`).
    #[arg(
        long,
        env = "LIVEGATE_METRICS_LISTEN",
        default_value = "127.0.0.1:4005"
    )]
    pub metrics_listen: String,
    /// The credential of the internal API (`/v1/auth/check`, `/v1/auth/changes`,
    /// `/v1/spend/records`) that the filter sends: at least 32 characters, not a placeholder.
    /// Required, from this variable or `--internal-token-file`, never both.
    #[arg(long, env = "LIVEGATE_INTERNAL_TOKEN", hide_env_values = true)]
    pub internal_token: Option<Secret>,
    /// A file holding the internal API's credential (e.g. a mounted Secret); one trailing
    /// newline is ignored.
    #[arg(long, env = "LIVEGATE_INTERNAL_TOKEN_FILE")]
    pub internal_token_file: Option<String>,
    /// libpq URL of Postgres; `sslmode` disable, prefer or require.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<Secret>,
    /// Admin credential for `/key/*`: at least 32 characters, not a placeholder; the service
    /// refuses to start without one (generate it with `openssl rand -hex 32`).
    #[arg(long, env = "LIVEGATE_MASTER_KEY", hide_env_values = true)]
    pub master_key: Option<Secret>,
    /// Engine program and arguments, split like a shell line, no shell run (default: this binary's `engine`).
    #[arg(long, env = "LIVEGATE_ENGINE_COMMAND")]
    pub engine_command: Option<String>,
    /// `text` or `json`.
    #[arg(long, env = "LIVEGATE_LOG_FORMAT", default_value = "text")]
    pub log_format: String,
    #[arg(long, env = "LIVEGATE_HEARTBEAT_INTERVAL_MS", default_value_t = 1000)]
    pub heartbeat_interval_ms: u64,
    /// A heartbeat slower than this counts as failed.
    #[arg(long, env = "LIVEGATE_HEARTBEAT_DEADLINE_MS", default_value_t = 1000)]
    pub heartbeat_deadline_ms: u64,
    /// Time between SIGTERM and SIGKILL when tearing an engine down.
    #[arg(long, env = "LIVEGATE_ENGINE_GRACE_MS", default_value_t = 500)]
    pub engine_grace_ms: u64,
    /// Upper bound on an engine's start (connect pool + migrate).
    #[arg(
        long,
        env = "LIVEGATE_ENGINE_START_TIMEOUT_MS",
        default_value_t = 10_000
    )]
    pub engine_start_timeout_ms: u64,
    #[arg(long, env = "LIVEGATE_BACKOFF_BASE_MS", default_value_t = 100)]
    pub backoff_base_ms: u64,
    /// Kept at a second so a database that comes back is found within about a
    /// second; each attempt is one engine process and one connect, cheap at this rate.
    #[arg(long, env = "LIVEGATE_BACKOFF_CAP_MS", default_value_t = 1000)]
    pub backoff_cap_ms: u64,
    #[arg(long, env = "LIVEGATE_DB_POOL_SIZE", default_value_t = 4)]
    pub db_pool_size: usize,
    #[arg(long, env = "LIVEGATE_DB_CONNECT_TIMEOUT_MS", default_value_t = 3000)]
    pub db_connect_timeout_ms: u64,
    #[arg(long, env = "LIVEGATE_DB_STATEMENT_TIMEOUT_MS", default_value_t = 5000)]
    pub db_statement_timeout_ms: u64,
    #[arg(long, env = "LIVEGATE_DB_KEEPALIVE_IDLE_MS", default_value_t = 5000)]
    pub db_keepalive_idle_ms: u64,
    #[arg(
        long,
        env = "LIVEGATE_DB_KEEPALIVE_INTERVAL_MS",
        default_value_t = 2000
    )]
    pub db_keepalive_interval_ms: u64,
    #[arg(long, env = "LIVEGATE_DB_KEEPALIVE_RETRIES", default_value_t = 3)]
    pub db_keepalive_retries: u32,
    #[arg(long, env = "LIVEGATE_DB_TCP_USER_TIMEOUT_MS", default_value_t = 5000)]
    pub db_tcp_user_timeout_ms: u64,
    /// Requests to the engine in flight at once; beyond it calls fail fast with 503.
    #[arg(long, env = "LIVEGATE_DB_MAX_IN_FLIGHT", default_value_t = 1024)]
    pub db_max_in_flight: usize,
    /// Records younger than this answer auth checks without asking the database.
    #[arg(long, env = "LIVEGATE_KEY_CACHE_FRESH_SECS", default_value_t = 10)]
    pub key_cache_fresh_secs: u64,
    /// While the database is away, known keys keep working for this long after their last read.
    #[arg(long, env = "LIVEGATE_KEY_CACHE_STALENESS_SECS", default_value_t = 900)]
    pub key_cache_staleness_secs: u64,
    /// A record older than the fresh bound lets a key in only if the change log was read
    /// within this; must be below --filter-revocation-hold-secs (docs/architecture.md).
    #[arg(
        long,
        env = "LIVEGATE_MAX_CHANGE_LOG_SILENCE_SECS",
        default_value_t = 240
    )]
    pub max_change_log_silence_secs: u64,
    /// How long the filters hold a revocation from the change feed: the larger of their
    /// `cache.stale_if_error_ms` and `cache.deny_ttl_ms`, in seconds.
    #[arg(
        long,
        env = "LIVEGATE_FILTER_REVOCATION_HOLD_SECS",
        default_value_t = 300
    )]
    pub filter_revocation_hold_secs: u64,
    #[arg(
        long,
        env = "LIVEGATE_KEY_CACHE_MAX_ENTRIES",
        default_value_t = 100_000
    )]
    pub key_cache_max_entries: usize,
    /// `cache_ttl_seconds` suggested to the filter on allow (capped by the key's expiry).
    #[arg(long, env = "LIVEGATE_AUTH_CACHE_TTL_SECS", default_value_t = 60)]
    pub auth_cache_ttl_secs: u64,
    /// Longest an auth check waits for the database (the filter gives up at 200 ms).
    #[arg(long, env = "LIVEGATE_AUTH_DB_DEADLINE_MS", default_value_t = 150)]
    pub auth_db_deadline_ms: u64,
    /// `retry-after` on 503 answers.
    #[arg(long, env = "LIVEGATE_RETRY_AFTER_SECS", default_value_t = 5)]
    pub retry_after_secs: u64,
    /// Largest accepted request body.
    #[arg(long, env = "LIVEGATE_BODY_LIMIT_BYTES", default_value_t = 65_536)]
    pub body_limit_bytes: usize,
    #[arg(long, env = "LIVEGATE_LOOP_LAG_INTERVAL_MS", default_value_t = 10)]
    pub loop_lag_interval_ms: u64,
    /// On SIGTERM/SIGINT, how long in-flight requests may take to finish.
    #[arg(long, env = "LIVEGATE_DRAIN_TIMEOUT_MS", default_value_t = 10_000)]
    pub drain_timeout_ms: u64,
    /// The spend spool: every acknowledged spend record waits here, synced, until it is in
    /// Postgres. Its directory is created at start. One file per control plane.
    #[arg(
        long,
        env = "LIVEGATE_SPEND_SPOOL_PATH",
        default_value = "livegate-data/spend.spool"
    )]
    pub spend_spool_path: String,
    /// The most spend records waiting in the spool; beyond it records are refused with 503.
    #[arg(
        long,
        env = "LIVEGATE_SPEND_SPOOL_MAX_RECORDS",
        default_value_t = 200_000
    )]
    pub spend_spool_max_records: usize,
    /// The spool file's largest size (waiting records are also held in memory).
    #[arg(
        long,
        env = "LIVEGATE_SPEND_SPOOL_MAX_BYTES",
        default_value_t = 134_217_728
    )]
    pub spend_spool_max_bytes: u64,
    /// LiteLLM's `model_prices_and_context_window.json`; without it every model costs 0.
    #[arg(long, env = "LIVEGATE_PRICES_FILE")]
    pub prices_file: Option<String>,
    /// Records written to Postgres per drain transaction.
    #[arg(long, env = "LIVEGATE_SPEND_DRAIN_BATCH", default_value_t = 500)]
    pub spend_drain_batch: usize,
    /// Wait before the drain tries again after the database refused or was away.
    #[arg(long, env = "LIVEGATE_SPEND_DRAIN_RETRY_MS", default_value_t = 1000)]
    pub spend_drain_retry_ms: u64,
    /// The most (key alias, team, model) series of the spend metrics (0 to 100000); records
    /// of further triples are counted under the series labelled `other`.
    #[arg(
        long,
        env = "LIVEGATE_SPEND_METRICS_MAX_SERIES",
        default_value_t = crate::ledger::spend_series::DEFAULT_MAX_SERIES
    )]
    pub spend_metrics_max_series: usize,
    /// USD reserved per request in flight of a key or team with a budget, counted as spend
    /// in the budget check until the request's spend record arrives (0: off). Set it to
    /// about one answer's cost: see docs/operations.md, "Requests in flight".
    #[arg(long, env = "LIVEGATE_BUDGET_RESERVATION_USD", default_value_t = 0.01)]
    pub budget_reservation_usd: f64,
    /// How long a reservation lasts when its spend record never arrives.
    #[arg(
        long,
        env = "LIVEGATE_BUDGET_RESERVATION_LEASE_SECS",
        default_value_t = 600
    )]
    pub budget_reservation_lease_secs: u64,
    /// What auth checks answer while the spend spool is at its bound: `refuse-budgeted`
    /// (keys with a budget, their own or their team's, get 503), `refuse-all` or `admit`.
    #[arg(
        long,
        env = "LIVEGATE_SPEND_SPOOL_FULL",
        default_value = "refuse-budgeted"
    )]
    pub spend_spool_full: String,
}

/// Parses the command line and runs the chosen command.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve(args) => Config::from_args(*args)
            .map_err(anyhow::Error::from)
            .and_then(app::serve),
        Command::Engine => engine(),
        Command::HashKey => hash_key(),
        Command::Spool(SpoolCommand::Drain(args)) => spool_drain(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("livegate-control-plane: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn engine() -> anyhow::Result<()> {
    let json = std::env::var("LIVEGATE_LOG_FORMAT").is_ok_and(|f| f == "json");
    app::init_logging(json);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(db::engine::run())
}

/// `spool drain`: the engine's settings are `serve`'s defaults (parsed the same way), with
/// this command's URL and engine command; no listener, so no master key or internal token
/// is used (each gets a throwaway value that only passes `serve`'s checks).
fn spool_drain(args: SpoolDrainArgs) -> anyhow::Result<()> {
    app::init_logging(false);
    let Some(url) = args.database_url else {
        anyhow::bail!("--database-url (DATABASE_URL) is required");
    };
    let placeholder_key = keys::KeyHash::of_raw(&format!("{:?}", std::time::SystemTime::now()));
    let placeholder_token = keys::KeyHash::of_raw(placeholder_key.as_str());
    let mut argv = vec![
        "livegate-control-plane".to_string(),
        "serve".into(),
        "--master-key".into(),
        format!("sk-{placeholder_key}"),
        "--internal-token".into(),
        placeholder_token.as_str().to_string(),
        "--database-url".into(),
        url.expose().to_string(),
    ];
    if let Some(engine) = args.engine_command {
        argv.extend(["--engine-command".into(), engine]);
    }
    let Command::Serve(serve) = Cli::try_parse_from(argv)?.command else {
        anyhow::bail!("internal: serve's flags did not parse as serve");
    };
    let config = Config::from_args(*serve)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let within = std::time::Duration::from_secs(args.connect_timeout_secs);
    let drained = rt.block_on(crate::spool_drain::run(
        args.file,
        config.supervisor,
        within,
    ))?;
    println!(
        "drained {} records: {} inserted, {} already there, {} dead letters",
        drained.entries,
        drained.inserted,
        (drained.entries as u64)
            .saturating_sub(drained.inserted)
            .saturating_sub(drained.dead_letters as u64),
        drained.dead_letters
    );
    Ok(())
}

fn hash_key() -> anyhow::Result<()> {
    let mut raw = String::new();
    std::io::stdin().read_to_string(&mut raw)?;
    println!("{}", keys::KeyHash::of_raw(raw.trim()));
    Ok(())
}
