//! Typed configuration, validated once at start-up; every error names its flag.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use crate::cli::ServeArgs;
use crate::db::process::EngineCommand;
use crate::db::protocol::EngineSettings;
use crate::db::state::Backoff;
use crate::db::supervisor::SupervisorConfig;
use crate::feed::FeedConfig;
use crate::secret::Secret;
use crate::spool::SpoolConfig;

/// A configuration value that cannot be used, with the flag (and variable) to fix.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{flag}: {reason}")]
pub struct ConfigError {
    pub flag: &'static str,
    pub reason: String,
}

fn invalid(flag: &'static str, reason: impl Into<String>) -> ConfigError {
    ConfigError {
        flag,
        reason: reason.into(),
    }
}

/// The key cache's policy.
#[derive(Debug, Clone, Copy)]
pub struct CacheConfig {
    pub fresh: Duration,
    pub staleness: Duration,
    pub max_entries: usize,
    /// A record older than `fresh` lets a key in only if the change log was read within
    /// this (`fresh` ≤ it < the filters' revocation hold).
    pub max_silence: Duration,
}

/// The spend ledger: where records are spooled, how they are priced and drained.
#[derive(Debug, Clone)]
pub struct SpendConfig {
    pub spool: SpoolConfig,
    /// LiteLLM's price file; `None`: every model costs 0 and is marked unpriced.
    pub prices_file: Option<PathBuf>,
    pub drain_batch: usize,
    pub drain_retry: Duration,
    /// The most (key alias, team, model) series of the spend metrics; beyond: `other`.
    pub metrics_max_series: usize,
    pub when_full: SpoolFullPolicy,
    /// USD reserved per request in flight of a budgeted key (0: no reservations).
    pub reservation_usd: f64,
    /// How long a reservation lasts without its spend record.
    pub reservation_lease: Duration,
}

/// What the auth check answers while the spend spool is at its bound (`--spend-spool-full`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpoolFullPolicy {
    /// Keys with a budget (their own or their team's) are refused: their spend could not
    /// be counted. The default: fail closed where spend matters.
    RefuseBudgeted,
    /// Every key is refused.
    RefuseAll,
    /// Nobody is refused: spend made meanwhile reaches the ledger only as the filter's
    /// retries are accepted.
    Admit,
}

impl SpoolFullPolicy {
    pub fn parse(s: &str) -> Option<SpoolFullPolicy> {
        match s {
            "refuse-budgeted" => Some(SpoolFullPolicy::RefuseBudgeted),
            "refuse-all" => Some(SpoolFullPolicy::RefuseAll),
            "admit" => Some(SpoolFullPolicy::Admit),
            _ => None,
        }
    }
}

/// The largest bound on spend metric series a flag may set.
pub const MAX_SPEND_METRICS_SERIES: usize = 100_000;

/// The largest drain batch: one transaction, one IPC frame well under its 16 MiB bound.
pub const MAX_DRAIN_BATCH: usize = 5000;

fn spend(a: &ServeArgs) -> Result<SpendConfig, ConfigError> {
    let path = a.spend_spool_path.trim();
    if path.is_empty() {
        return Err(invalid(
            "--spend-spool-path (LIVEGATE_SPEND_SPOOL_PATH)",
            "must not be empty",
        ));
    }
    if a.spend_spool_max_records == 0 {
        return Err(invalid(
            "--spend-spool-max-records (LIVEGATE_SPEND_SPOOL_MAX_RECORDS)",
            "must be greater than 0",
        ));
    }
    // The largest batch (100 records of a few hundred bytes) must fit many times over.
    if a.spend_spool_max_bytes < 1 << 20 {
        return Err(invalid(
            "--spend-spool-max-bytes (LIVEGATE_SPEND_SPOOL_MAX_BYTES)",
            "must be at least 1048576 (1 MiB)",
        ));
    }
    if !(1..=MAX_DRAIN_BATCH).contains(&a.spend_drain_batch) {
        return Err(invalid(
            "--spend-drain-batch (LIVEGATE_SPEND_DRAIN_BATCH)",
            format!("must be between 1 and {MAX_DRAIN_BATCH}"),
        ));
    }
    if a.spend_metrics_max_series > MAX_SPEND_METRICS_SERIES {
        return Err(invalid(
            "--spend-metrics-max-series (LIVEGATE_SPEND_METRICS_MAX_SERIES)",
            format!("must be at most {MAX_SPEND_METRICS_SERIES}"),
        ));
    }
    let prices_file = match a.prices_file.as_deref().map(str::trim) {
        None | Some("") => None,
        Some(p) => Some(PathBuf::from(p)),
    };
    Ok(SpendConfig {
        spool: SpoolConfig {
            path: PathBuf::from(path),
            max_bytes: a.spend_spool_max_bytes,
            max_records: a.spend_spool_max_records,
        },
        prices_file,
        when_full: SpoolFullPolicy::parse(a.spend_spool_full.trim()).ok_or_else(|| {
            invalid(
                "--spend-spool-full (LIVEGATE_SPEND_SPOOL_FULL)",
                format!(
                    "must be refuse-budgeted, refuse-all or admit, not {:?}",
                    a.spend_spool_full
                ),
            )
        })?,
        drain_batch: a.spend_drain_batch,
        drain_retry: ms(
            "--spend-drain-retry-ms (LIVEGATE_SPEND_DRAIN_RETRY_MS)",
            a.spend_drain_retry_ms,
        )?,
        metrics_max_series: a.spend_metrics_max_series,
        reservation_usd: match a.budget_reservation_usd {
            r if r.is_finite() && r >= 0.0 => r,
            _ => {
                return Err(invalid(
                    "--budget-reservation-usd (LIVEGATE_BUDGET_RESERVATION_USD)",
                    "must be a number at least 0",
                ))
            }
        },
        reservation_lease: Duration::from_secs(a.budget_reservation_lease_secs.max(1)),
    })
}

/// Everything `serve` needs. Its `Debug` is safe to log: the secrets print as `<redacted>`.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    /// `/metrics` alone, on its own listener.
    pub metrics_listen: SocketAddr,
    pub master_key: Secret,
    /// The credential every internal call must carry (`x-livegate-internal-token`).
    pub internal_token: Secret,
    pub json_logs: bool,
    pub supervisor: SupervisorConfig,
    pub cache: CacheConfig,
    pub auth_cache_ttl: Duration,
    pub auth_db_deadline: Duration,
    pub retry_after: Duration,
    pub body_limit: usize,
    pub loop_lag_interval: Duration,
    pub drain_timeout: Duration,
    pub feed: FeedConfig,
    pub spend: SpendConfig,
}

fn ms(flag: &'static str, v: u64) -> Result<Duration, ConfigError> {
    if v == 0 {
        return Err(invalid(flag, "must be greater than 0"));
    }
    Ok(Duration::from_millis(v))
}

fn engine_command(arg: Option<String>) -> Result<EngineCommand, ConfigError> {
    let flag = "--engine-command (LIVEGATE_ENGINE_COMMAND)";
    match arg {
        Some(s) => {
            // Split like a POSIX shell would (quotes honoured) but run no shell: the engine's
            // pid is the program's, so signals reach it directly.
            let parts = shell_words::split(&s)
                .map_err(|e| invalid(flag, format!("cannot be split into words: {e}")))?;
            let mut parts = parts.into_iter();
            let program = parts.next().ok_or_else(|| invalid(flag, "is empty"))?;
            Ok(EngineCommand {
                program: program.into(),
                args: parts.collect(),
            })
        }
        None => {
            let exe = std::env::current_exe()
                .map_err(|e| invalid(flag, format!("cannot find this binary: {e}")))?;
            Ok(EngineCommand {
                program: exe,
                args: vec!["engine".into()],
            })
        }
    }
}

fn database_url(arg: Option<Secret>) -> Result<Secret, ConfigError> {
    let flag = "--database-url (DATABASE_URL)";
    let url = arg
        .filter(|u| !u.expose().trim().is_empty())
        .ok_or_else(|| invalid(flag, "is required"))?;
    // The driver's parse errors name the bad option, never the URL, so no password leaks here.
    let split =
        crate::engine::tls::split_database_url(url.expose()).map_err(|e| invalid(flag, e))?;
    tokio_postgres::Config::from_str(&split.driver_url)
        .map_err(|e| invalid(flag, format!("not a usable Postgres URL: {e}")))?;
    Ok(url)
}

/// The shortest master key accepted: 32 characters (`openssl rand -hex 32` gives 64).
pub const MASTER_KEY_MIN_CHARS: usize = 32;

/// Words that mark a value copied from an example rather than generated: the examples in
/// this repository (`.env.example`, `deploy/kubernetes/secret.example.yaml`) say "change me".
const PLACEHOLDER_WORDS: &[&str] = &["changeme", "replaceme", "placeholder", "example"];

fn master_key(arg: Option<Secret>) -> Result<Secret, ConfigError> {
    let flag = "--master-key (LIVEGATE_MASTER_KEY)";
    let key = arg
        .filter(|k| !k.expose().is_empty())
        .ok_or_else(|| invalid(flag, "is required"))?;
    generated(flag, key)
}

/// A credential that looks generated: long enough, and no placeholder copied from an example.
fn generated(flag: &'static str, key: Secret) -> Result<Secret, ConfigError> {
    // Compared without case or punctuation, so `sk-master-CHANGE_ME` is caught too.
    let folded: String = key
        .expose()
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .map(|c| c.to_ascii_lowercase())
        .collect();
    if PLACEHOLDER_WORDS.iter().any(|w| folded.contains(w)) {
        return Err(invalid(
            flag,
            "is a placeholder from an example; generate one, e.g. `openssl rand -hex 32`",
        ));
    }
    let chars = key.expose().chars().count();
    if chars < MASTER_KEY_MIN_CHARS {
        return Err(invalid(
            flag,
            format!(
                "is {chars} characters long; use at least {MASTER_KEY_MIN_CHARS}, e.g. `openssl rand -hex 32`"
            ),
        ));
    }
    Ok(key)
}

/// The internal API's credential, from the variable or the file (one of them, not both).
/// It travels in an HTTP header, so it must be visible ASCII.
fn internal_token(value: Option<Secret>, file: Option<&str>) -> Result<Secret, ConfigError> {
    let value_flag = "--internal-token (LIVEGATE_INTERNAL_TOKEN)";
    let file_flag = "--internal-token-file (LIVEGATE_INTERNAL_TOKEN_FILE)";
    let value = value.filter(|v| !v.expose().is_empty());
    let file = file.map(str::trim).filter(|f| !f.is_empty());
    let (flag, token) = match (value, file) {
        (Some(_), Some(_)) => {
            return Err(invalid(
                file_flag,
                "set either the token or its file, not both",
            ))
        }
        (Some(token), None) => (value_flag, token),
        (None, Some(path)) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| invalid(file_flag, format!("cannot read {path}: {e}")))?;
            let text = text.strip_suffix('\n').unwrap_or(&text);
            let text = text.strip_suffix('\r').unwrap_or(text);
            (file_flag, Secret::new(text))
        }
        (None, None) => {
            return Err(invalid(
                value_flag,
                "is required (or --internal-token-file): the filter's credential for the internal API; generate one, e.g. `openssl rand -hex 32`",
            ))
        }
    };
    if !token.expose().bytes().all(|b| b.is_ascii_graphic()) {
        return Err(invalid(
            flag,
            "must be visible ASCII without spaces (it is sent as a header)",
        ));
    }
    generated(flag, token)
}

impl Config {
    /// Validates the flags once; the service starts only with a usable configuration.
    pub fn from_args(a: ServeArgs) -> Result<Config, ConfigError> {
        let spend = spend(&a)?;
        let listen = a
            .listen
            .parse()
            .map_err(|e| invalid("--listen (LIVEGATE_LISTEN)", format!("{e}")))?;
        let metrics_listen = a
            .metrics_listen
            .parse()
            .map_err(|e| invalid("--metrics-listen (LIVEGATE_METRICS_LISTEN)", format!("{e}")))?;
        if metrics_listen == listen {
            return Err(invalid(
                "--metrics-listen (LIVEGATE_METRICS_LISTEN)",
                "must differ from --listen: metrics have a listener of their own",
            ));
        }
        let master_key = master_key(a.master_key)?;
        let internal_token = internal_token(a.internal_token, a.internal_token_file.as_deref())?;
        let json_logs = match a.log_format.as_str() {
            "text" => false,
            "json" => true,
            other => {
                return Err(invalid(
                    "--log-format (LIVEGATE_LOG_FORMAT)",
                    format!("must be text or json, not {other:?}"),
                ))
            }
        };
        if !(1..=64).contains(&a.db_pool_size) {
            return Err(invalid("--db-pool-size", "must be between 1 and 64"));
        }
        let backoff = Backoff {
            base: ms("--backoff-base-ms", a.backoff_base_ms)?,
            cap: ms("--backoff-cap-ms", a.backoff_cap_ms)?,
        };
        if backoff.cap < backoff.base {
            return Err(invalid(
                "--backoff-cap-ms",
                "must not be below --backoff-base-ms",
            ));
        }
        let settings = EngineSettings {
            database_url: database_url(a.database_url)?,
            pool_size: a.db_pool_size,
            connect_timeout_ms: ms("--db-connect-timeout-ms", a.db_connect_timeout_ms)?.as_millis()
                as u64,
            keepalive_idle_ms: ms("--db-keepalive-idle-ms", a.db_keepalive_idle_ms)?.as_millis()
                as u64,
            keepalive_interval_ms: ms("--db-keepalive-interval-ms", a.db_keepalive_interval_ms)?
                .as_millis() as u64,
            keepalive_retries: a.db_keepalive_retries,
            tcp_user_timeout_ms: ms("--db-tcp-user-timeout-ms", a.db_tcp_user_timeout_ms)?
                .as_millis() as u64,
            statement_timeout_ms: ms("--db-statement-timeout-ms", a.db_statement_timeout_ms)?
                .as_millis() as u64,
        };
        let statement_timeout = Duration::from_millis(settings.statement_timeout_ms);
        let supervisor = SupervisorConfig {
            engine: engine_command(a.engine_command)?,
            settings,
            log_format: a.log_format,
            heartbeat_interval: ms("--heartbeat-interval-ms", a.heartbeat_interval_ms)?,
            heartbeat_deadline: ms("--heartbeat-deadline-ms", a.heartbeat_deadline_ms)?,
            grace: ms("--engine-grace-ms", a.engine_grace_ms)?,
            backoff,
            start_timeout: ms("--engine-start-timeout-ms", a.engine_start_timeout_ms)?,
            // The server gives up at statement_timeout; a second more covers the round trip.
            request_deadline: statement_timeout + Duration::from_secs(1),
            max_in_flight: a.db_max_in_flight.max(1),
        };
        let cache = CacheConfig {
            fresh: Duration::from_secs(a.key_cache_fresh_secs),
            staleness: Duration::from_secs(a.key_cache_staleness_secs),
            max_entries: a.key_cache_max_entries.max(1),
            max_silence: Duration::from_secs(a.max_change_log_silence_secs),
        };
        if cache.staleness < cache.fresh {
            return Err(invalid(
                "--key-cache-staleness-secs",
                "must not be below --key-cache-fresh-secs",
            ));
        }
        // The one relation that keeps a cut-off replica from reviving a revoked key:
        // fresh ≤ silence < the filters' hold of a revocation.
        if cache.max_silence < cache.fresh {
            return Err(invalid(
                "--max-change-log-silence-secs",
                "must not be below --key-cache-fresh-secs",
            ));
        }
        if a.max_change_log_silence_secs >= a.filter_revocation_hold_secs {
            return Err(invalid(
                "--max-change-log-silence-secs",
                "must be below --filter-revocation-hold-secs (the filters' cache.stale_if_error_ms), or a replica cut off from Postgres could let a revoked key in again once the filters forgot the revocation",
            ));
        }
        if a.body_limit_bytes < 1024 {
            return Err(invalid("--body-limit-bytes", "must be at least 1024"));
        }
        Ok(Config {
            spend,
            listen,
            metrics_listen,
            master_key,
            internal_token,
            json_logs,
            supervisor,
            cache,
            auth_cache_ttl: Duration::from_secs(a.auth_cache_ttl_secs),
            auth_db_deadline: ms("--auth-db-deadline-ms", a.auth_db_deadline_ms)?,
            retry_after: Duration::from_secs(a.retry_after_secs.max(1)),
            body_limit: a.body_limit_bytes,
            loop_lag_interval: ms("--loop-lag-interval-ms", a.loop_lag_interval_ms)?,
            drain_timeout: ms("--drain-timeout-ms", a.drain_timeout_ms)?,
            // No change can commit later after taking its number than a statement may run.
            feed: FeedConfig {
                recent: FeedConfig::default().recent.max(2 * statement_timeout),
                ..FeedConfig::default()
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct T {
        #[command(flatten)]
        a: ServeArgs,
    }

    fn parse(extra: &[&str]) -> Result<Config, ConfigError> {
        parse_url("postgres://u:pw@127.0.0.1:5432/db", extra)
    }

    const MASTER: &str = "sk-master-test-0123456789abcdef0123456789abcdef";
    const INTERNAL: &str = "internal-test-0123456789abcdef0123456789abcdef";

    fn parse_url(url: &str, extra: &[&str]) -> Result<Config, ConfigError> {
        let mut argv = vec!["t", "--database-url", url, "--master-key", MASTER];
        if !extra.iter().any(|a| a.starts_with("--internal-token")) {
            argv.extend_from_slice(&["--internal-token", INTERNAL]);
        }
        argv.extend_from_slice(extra);
        Config::from_args(T::try_parse_from(argv).unwrap().a)
    }

    fn with_master_key(key: &str) -> Result<Config, ConfigError> {
        let argv = [
            "t",
            "--database-url",
            "postgres://h/db",
            "--master-key",
            key,
            "--internal-token",
            INTERNAL,
        ];
        Config::from_args(T::try_parse_from(argv).unwrap().a)
    }

    #[test]
    fn placeholder_master_keys_are_refused_naming_the_variable() {
        for key in [
            "sk-master-change-me",
            "sk-master-CHANGE_ME-0123456789abcdef0123456789abcdef",
            "replace-me-with-a-long-random-value-please",
        ] {
            let e = with_master_key(key).unwrap_err();
            assert_eq!(e.flag, "--master-key (LIVEGATE_MASTER_KEY)", "{key}");
            assert!(e.reason.contains("placeholder"), "{key}: {e}");
        }
    }

    #[test]
    fn master_keys_shorter_than_32_characters_are_refused() {
        let e = with_master_key("x").unwrap_err();
        assert_eq!(e.flag, "--master-key (LIVEGATE_MASTER_KEY)");
        assert!(e.reason.contains("at least 32"), "{e}");
        assert!(with_master_key(&"k".repeat(31)).is_err());
        assert!(with_master_key(&"k".repeat(32)).is_ok());
        assert!(with_master_key("").unwrap_err().reason.contains("required"));
    }

    #[test]
    fn the_debug_of_the_config_and_the_args_never_shows_a_secret() {
        let url = "postgres://u:hunter2@127.0.0.1:5432/db";
        let argv = [
            "t",
            "--database-url",
            url,
            "--master-key",
            MASTER,
            "--internal-token",
            INTERNAL,
        ];
        let args = T::try_parse_from(argv).unwrap().a;
        let args_debug = format!("{args:?}");
        let config = Config::from_args(args).unwrap();
        for shown in [args_debug, format!("{config:?}"), format!("{config:#?}")] {
            assert!(!shown.contains(MASTER), "{shown}");
            assert!(!shown.contains(INTERNAL), "{shown}");
            assert!(!shown.contains("hunter2"), "{shown}");
            assert!(shown.contains("<redacted>"), "{shown}");
        }
        assert_eq!(config.master_key.expose(), MASTER);
        assert_eq!(config.supervisor.settings.database_url.expose(), url);
    }

    #[test]
    fn the_change_log_silence_must_sit_between_fresh_and_the_filters_hold() {
        let e = parse(&["--max-change-log-silence-secs", "300"]).unwrap_err();
        assert_eq!(e.flag, "--max-change-log-silence-secs");
        assert!(e.reason.contains("--filter-revocation-hold-secs"), "{e}");
        let e = parse(&["--max-change-log-silence-secs", "5"]).unwrap_err();
        assert!(e.reason.contains("--key-cache-fresh-secs"), "{e}");
        let ok = parse(&[
            "--max-change-log-silence-secs",
            "3",
            "--filter-revocation-hold-secs",
            "6",
            "--key-cache-fresh-secs",
            "1",
        ])
        .unwrap();
        assert_eq!(ok.cache.max_silence, Duration::from_secs(3));
    }

    #[test]
    fn defaults_are_the_documented_ones() {
        let c = parse(&[]).unwrap();
        assert_eq!(c.listen.to_string(), "127.0.0.1:4001");
        assert_eq!(c.metrics_listen.to_string(), "127.0.0.1:4005");
        assert_eq!(c.supervisor.heartbeat_interval, Duration::from_secs(1));
        assert_eq!(c.supervisor.heartbeat_deadline, Duration::from_secs(1));
        assert_eq!(c.supervisor.grace, Duration::from_millis(500));
        assert_eq!(c.cache.staleness, Duration::from_secs(900));
        assert_eq!(c.cache.max_silence, Duration::from_secs(240));
        assert_eq!(c.supervisor.engine.args, vec!["engine".to_string()]);
        assert_eq!(
            c.spend.spool.path,
            std::path::Path::new("livegate-data/spend.spool")
        );
        assert_eq!(c.spend.spool.max_records, 200_000);
        assert_eq!(c.spend.spool.max_bytes, 128 << 20);
        assert_eq!(c.spend.prices_file, None);
        assert_eq!(c.spend.drain_batch, 500);
        assert_eq!(c.spend.metrics_max_series, 1000);
    }

    #[test]
    fn spend_settings_that_cannot_work_are_refused_naming_the_flag() {
        for (flag, value, named) in [
            ("--spend-spool-path", " ", "--spend-spool-path"),
            (
                "--spend-spool-max-records",
                "0",
                "--spend-spool-max-records",
            ),
            ("--spend-spool-max-bytes", "1000", "--spend-spool-max-bytes"),
            ("--spend-drain-batch", "0", "--spend-drain-batch"),
            ("--spend-drain-batch", "5001", "--spend-drain-batch"),
            ("--spend-drain-retry-ms", "0", "--spend-drain-retry-ms"),
            (
                "--spend-metrics-max-series",
                "100001",
                "--spend-metrics-max-series",
            ),
        ] {
            let e = parse(&[flag, value]).unwrap_err();
            assert!(e.flag.starts_with(named), "{flag} {value}: {e}");
        }
        let c = parse(&["--prices-file", "/etc/prices.json"]).unwrap();
        assert_eq!(
            c.spend.prices_file.unwrap(),
            std::path::Path::new("/etc/prices.json")
        );
    }

    #[test]
    fn errors_name_the_flag() {
        assert_eq!(
            parse(&["--heartbeat-deadline-ms", "0"]).unwrap_err().flag,
            "--heartbeat-deadline-ms"
        );
        assert_eq!(
            parse(&["--listen", "nope"]).unwrap_err().flag,
            "--listen (LIVEGATE_LISTEN)"
        );
        assert_eq!(
            parse(&["--log-format", "xml"]).unwrap_err().flag,
            "--log-format (LIVEGATE_LOG_FORMAT)"
        );
        assert_eq!(
            parse(&["--db-pool-size", "0"]).unwrap_err().flag,
            "--db-pool-size"
        );
    }

    #[test]
    fn a_bad_database_url_is_refused_without_echoing_it() {
        let e = parse_url("postgres://u:hunter2@h/db?sslmode=bogus", &[]).unwrap_err();
        assert_eq!(e.flag, "--database-url (DATABASE_URL)");
        assert!(!e.to_string().contains("hunter2"), "{e}");
    }

    #[test]
    fn the_engine_command_is_split_on_whitespace() {
        let c = parse(&["--engine-command", "/bin/sh /tmp/wedged.sh"]).unwrap();
        assert_eq!(
            c.supervisor.engine,
            EngineCommand {
                program: "/bin/sh".into(),
                args: vec!["/tmp/wedged.sh".into()]
            }
        );
    }

    #[test]
    fn the_internal_token_is_required_generated_and_from_one_source() {
        let flag = "--internal-token (LIVEGATE_INTERNAL_TOKEN)";
        let missing = parse(&["--internal-token", ""]).unwrap_err();
        assert_eq!(missing.flag, flag);
        assert!(missing.reason.contains("required"), "{missing}");
        let short = parse(&["--internal-token", "short"]).unwrap_err();
        assert!(short.reason.contains("at least 32"), "{short}");
        let example = parse(&["--internal-token", "change-me-0123456789abcdef0123456789"]);
        assert!(example.unwrap_err().reason.contains("placeholder"));
        let spaced = parse(&["--internal-token", "0123456789abcdef 0123456789abcdef"]);
        assert!(spaced.unwrap_err().reason.contains("visible ASCII"));
        let c = parse(&[]).unwrap();
        assert_eq!(c.internal_token.expose(), INTERNAL);
    }

    #[test]
    fn the_internal_token_file_is_read_without_its_newline_and_never_with_the_variable() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        std::fs::write(&path, format!("{INTERNAL}\n")).unwrap();
        let path = path.to_str().unwrap();
        let c = parse(&["--internal-token-file", path]).unwrap();
        assert_eq!(c.internal_token.expose(), INTERNAL);
        let both = parse(&["--internal-token", INTERNAL, "--internal-token-file", path]);
        assert_eq!(
            both.unwrap_err().flag,
            "--internal-token-file (LIVEGATE_INTERNAL_TOKEN_FILE)"
        );
        let absent = parse(&["--internal-token-file", "/nonexistent/livegate-token"]);
        assert!(absent.unwrap_err().reason.contains("cannot read"));
        std::fs::write(dir.path().join("short"), "x\n").unwrap();
        let short = dir.path().join("short");
        let short = parse(&["--internal-token-file", short.to_str().unwrap()]).unwrap_err();
        assert_eq!(
            short.flag,
            "--internal-token-file (LIVEGATE_INTERNAL_TOKEN_FILE)"
        );
    }

    #[test]
    fn metrics_have_a_listener_of_their_own() {
        let e = parse(&[
            "--listen",
            "127.0.0.1:4001",
            "--metrics-listen",
            "127.0.0.1:4001",
        ]);
        assert_eq!(
            e.unwrap_err().flag,
            "--metrics-listen (LIVEGATE_METRICS_LISTEN)"
        );
    }
}
