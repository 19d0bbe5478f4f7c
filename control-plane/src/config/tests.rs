use super::*;
use crate::db::process::EngineCommand;
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
    assert_eq!(c.spend.drain_linger, Duration::from_millis(100));
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
            "--spend-drain-linger-ms",
            "10001",
            "--spend-drain-linger-ms",
        ),
        (
            "--spend-metrics-max-series",
            "100001",
            "--spend-metrics-max-series",
        ),
    ] {
        let e = parse(&[flag, value]).unwrap_err();
        assert!(e.flag.starts_with(named), "{flag} {value}: {e}");
    }
    let at_once = parse(&["--spend-drain-linger-ms", "0"]).unwrap();
    assert_eq!(at_once.spend.drain_linger, Duration::ZERO);
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

#[tokio::test]
async fn a_spool_that_cannot_open_names_its_flag() {
    let dir = tempfile::tempdir().unwrap();
    let blocker = dir.path().join("a-file");
    std::fs::write(&blocker, "not a directory").unwrap();
    let path = blocker.join("spend.spool");
    let c = parse(&["--spend-spool-path", path.to_str().unwrap()]).unwrap();
    let Err(e) = crate::ledger::Ledger::open(&c.spend).await else {
        panic!("a spool under a file opened");
    };
    let e = ConfigError::from(e);
    assert_eq!(e.flag, "--spend-spool-path (LIVEGATE_SPEND_SPOOL_PATH)");
    assert!(e.reason.contains("cannot create"), "{e}");
    let c = parse(&["--prices-file", "/nonexistent/prices.json"]).unwrap();
    let spool = dir.path().join("spool").join("spend.spool");
    let c = Config {
        spend: crate::ledger::SpendConfig {
            spool: crate::spool::SpoolConfig {
                path: spool,
                ..c.spend.spool.clone()
            },
            ..c.spend
        },
        ..c
    };
    let Err(e) = crate::ledger::Ledger::open(&c.spend).await else {
        panic!("a missing price file loaded");
    };
    assert_eq!(
        ConfigError::from(e).flag,
        "--prices-file (LIVEGATE_PRICES_FILE)"
    );
}
