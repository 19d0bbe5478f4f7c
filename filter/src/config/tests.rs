//! The plugin configuration: defaults, validation naming the field, and the secrets from the environment.

use super::*;
use proptest::prelude::*;

fn parse(text: &str) -> Result<Config, ConfigError> {
    Config::parse(Some(text.as_bytes()))
}

fn error_text(text: &str) -> String {
    match parse(text) {
        Ok(config) => panic!("expected an error, got {config:?}"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn an_absent_configuration_means_all_defaults() {
    assert_eq!(Config::parse(None), Ok(Config::default()));
}

#[test]
fn an_empty_or_blank_configuration_means_all_defaults() {
    assert_eq!(parse(""), Ok(Config::default()));
    assert_eq!(parse("  \n\t"), Ok(Config::default()));
    assert_eq!(parse("{}"), Ok(Config::default()));
}

#[test]
fn the_defaults_match_the_architecture_contract() {
    let c = Config::default();
    assert_eq!(c.liveness_paths, ["/health/liveliness", "/health/liveness"]);
    assert_eq!(
        c.passthrough_prefixes,
        [
            "/health/readiness",
            "/key/",
            "/team/",
            "/user/",
            "/spend/",
            "/global/spend",
            "/model/info",
            "/v1/model/info"
        ]
    );
    assert_eq!(c.control_plane_cluster, "livegate_control_plane");
    assert_eq!(c.control_plane_authority, "livegate-control-plane");
    assert_eq!(c.auth_check_path, "/v1/auth/check");
    assert_eq!(c.auth_timeout_ms, 200);
    assert_eq!(c.max_unverified_body_bytes, 33_554_432);
    assert_eq!(c.changes_path, "/v1/auth/changes");
    assert_eq!(c.change_poll_ms, 250);
    assert_eq!(c.cache.max_entries, 10_000);
    assert_eq!(c.cache.allow_ttl_ms, 60_000);
    assert_eq!(c.cache.deny_ttl_ms, 2_000);
    assert_eq!(c.cache.stale_if_error_ms, 300_000);
    assert_eq!(c.failure_mode, FailureMode::Closed);
    assert_eq!(c.retry_after_seconds, 5);
    assert_eq!(c.upstream_authorization, None);
}

#[test]
fn the_documented_example_parses_to_the_defaults() {
    let text = r#"{
      "liveness_paths": ["/health/liveliness", "/health/liveness"],
      "passthrough_prefixes": ["/health/readiness", "/key/", "/team/", "/user/", "/spend/", "/global/spend", "/model/info", "/v1/model/info"],
      "control_plane_cluster": "livegate_control_plane",
      "control_plane_authority": "livegate-control-plane",
      "auth_check_path": "/v1/auth/check",
      "auth_timeout_ms": 200,
      "max_unverified_body_bytes": 33554432,
      "changes_path": "/v1/auth/changes",
      "change_poll_ms": 250,
      "cache": {"max_entries": 10000, "allow_ttl_ms": 60000, "deny_ttl_ms": 2000,
                "stale_if_error_ms": 300000},
      "failure_mode": "closed",
      "retry_after_seconds": 5,
      "upstream_authorization": null,
      "metering": {"enabled": true, "include_usage": true, "records_path": "/v1/spend/records",
                   "max_queued_records": 10000, "batch_records": 100, "send_timeout_ms": 5000},
      "rate_limits": {"outage_share": 0.25}
    }"#;
    assert_eq!(parse(text), Ok(Config::default()));
}

#[test]
fn a_partial_cache_section_keeps_the_other_defaults() {
    let c = parse(r#"{"cache": {"deny_ttl_ms": 0}}"#).expect("valid");
    assert_eq!(c.cache.deny_ttl_ms, 0);
    assert_eq!(c.cache.max_entries, 10_000);
}

#[test]
fn failure_mode_open_and_upstream_authorization_are_read() {
    let c =
        parse(r#"{"failure_mode": "open", "upstream_authorization": "Bearer up"}"#).expect("valid");
    assert_eq!(c.failure_mode, FailureMode::Open);
    assert_eq!(c.upstream_authorization.as_deref(), Some("Bearer up"));
}

#[test]
fn a_wrong_type_names_the_nested_field() {
    assert_eq!(
        error_text(r#"{"cache": {"max_entries": "x"}}"#),
        r#"cache.max_entries: invalid type: string "x", expected u64"#
    );
}

#[test]
fn an_unknown_field_is_named() {
    let text = error_text(r#"{"liveness_path": ["/x"]}"#);
    assert!(
        text.starts_with("liveness_path: unknown field `liveness_path`"),
        "{text}"
    );
}

#[test]
fn an_unknown_nested_field_is_named_with_its_section() {
    let text = error_text(r#"{"cache": {"ttl": 1}}"#);
    assert!(text.starts_with("cache.ttl: unknown field `ttl`"), "{text}");
}

#[test]
fn an_unknown_failure_mode_is_refused() {
    let text = error_text(r#"{"failure_mode": "maybe"}"#);
    assert!(
        text.starts_with("failure_mode: unknown variant `maybe`"),
        "{text}"
    );
}

#[test]
fn broken_json_is_refused_with_its_position() {
    let text = error_text(r#"{"auth_timeout_ms": }"#);
    assert!(text.starts_with("not valid JSON:"), "{text}");
    assert!(text.contains("line 1"), "{text}");
}

#[test]
fn a_zero_auth_timeout_is_refused() {
    assert_eq!(
        error_text(r#"{"auth_timeout_ms": 0}"#),
        "auth_timeout_ms: must be between 1 and 60000"
    );
}

#[test]
fn a_negative_number_is_refused_by_type() {
    let text = error_text(r#"{"auth_timeout_ms": -5}"#);
    assert!(text.starts_with("auth_timeout_ms: invalid value"), "{text}");
}

#[test]
fn a_zero_cache_size_is_refused() {
    assert_eq!(
        error_text(r#"{"cache": {"max_entries": 0}}"#),
        "cache.max_entries: must be greater than 0"
    );
}

#[test]
fn paths_must_start_with_a_slash() {
    assert_eq!(
        error_text(r#"{"liveness_paths": ["/ok", "health"]}"#),
        r#"liveness_paths[1]: "health" must start with '/'"#
    );
    assert!(error_text(r#"{"auth_check_path": "v1"}"#).starts_with("auth_check_path:"));
    assert!(error_text(r#"{"changes_path": ""}"#).starts_with("changes_path:"));
    assert!(error_text(r#"{"change_poll_ms": 60001}"#).starts_with("change_poll_ms:"));
    assert!(error_text(r#"{"passthrough_prefixes": [""]}"#).starts_with("passthrough_prefixes[0]:"));
}

#[test]
fn a_root_passthrough_prefix_is_refused() {
    let text = error_text(r#"{"passthrough_prefixes": ["/"]}"#);
    assert!(text.starts_with("passthrough_prefixes[0]:"), "{text}");
}

#[test]
fn model_free_paths_are_paths_and_never_the_root() {
    let text = error_text(r#"{"model_free_paths": ["/v1/files", "/"]}"#);
    assert!(text.starts_with("model_free_paths[1]:"), "{text}");
    let text = error_text(r#"{"model_free_paths": ["v1/files"]}"#);
    assert!(text.starts_with("model_free_paths[0]:"), "{text}");
    let config = Config::parse(Some(br#"{"model_free_paths": []}"#.as_slice())).unwrap();
    assert!(config.model_free_paths.is_empty());
    assert_eq!(
        Config::default().model_free_paths,
        ["/v1/models", "/models"]
    );
}

#[test]
fn header_bound_values_must_be_clean_text() {
    let text = error_text(r#"{"upstream_authorization": "Bearer a\r\nx: y"}"#);
    assert!(text.starts_with("upstream_authorization:"), "{text}");
    let text = error_text(r#"{"control_plane_cluster": ""}"#);
    assert!(text.starts_with("control_plane_cluster:"), "{text}");
}

#[test]
fn null_is_refused_where_a_value_is_required() {
    let text = error_text(r#"{"retry_after_seconds": null}"#);
    assert!(text.starts_with("retry_after_seconds:"), "{text}");
}

proptest! {
    #[test]
    fn parsing_arbitrary_bytes_never_panics(raw in proptest::collection::vec(any::<u8>(), 0..256)) {
        let _ = Config::parse(Some(&raw));
    }

    #[test]
    fn parsing_arbitrary_json_text_never_panics(text in r#"\{("[a-z_.]{0,20}": ?(-?[0-9]{1,20}|"[^"]{0,10}"|null|\[\]|\{\}),? ?){0,4}\}"#) {
        let _ = parse(&text);
    }
}

#[test]
fn metering_is_on_by_default_and_its_bounds_are_checked_by_name() {
    let c = Config::default();
    assert!(c.metering.enabled && c.metering.include_usage);
    assert_eq!(c.metering.max_queued_records, 10_000);
    assert_eq!(c.metering.batch_records, 100);
    assert_eq!(c.metering.records_path, "/v1/spend/records");
    assert_eq!(
        error_text(r#"{"metering": {"batch_records": 101}}"#),
        "metering.batch_records: must be between 1 and 100"
    );
    assert_eq!(
        error_text(r#"{"metering": {"max_queued_records": 0}}"#),
        "metering.max_queued_records: must be between 1 and 1000000"
    );
    assert!(error_text(r#"{"metering": {"records": 1}}"#)
        .starts_with("metering.records: unknown field"));
    assert_eq!(
        error_text(r#"{"metering": {"records_path": "spend"}}"#),
        "metering.records_path: \"spend\" must start with '/'"
    );
}

#[test]
fn the_tick_runs_for_the_feed_or_for_metering() {
    assert_eq!(Config::default().tick_ms(), Some(250));
    let feed_off = parse(r#"{"change_poll_ms": 0}"#).unwrap();
    assert_eq!(feed_off.tick_ms(), Some(METERING_TICK_MS));
    let both_off = parse(r#"{"change_poll_ms": 0, "metering": {"enabled": false}}"#).unwrap();
    assert_eq!(both_off.tick_ms(), None);
    let slow_feed = parse(r#"{"change_poll_ms": 1000}"#).unwrap();
    assert_eq!(slow_feed.tick_ms(), Some(1000));
}

#[test]
fn the_outage_share_defaults_to_a_quarter_and_must_be_in_zero_to_one() {
    assert_eq!(Config::default().rate_limits.outage_share, 0.25);
    let c = parse(r#"{"rate_limits": {"outage_share": 1}}"#).unwrap();
    assert_eq!(c.rate_limits.outage_share, 1.0);
    let c = parse(r#"{"rate_limits": {"outage_share": 0.001}}"#).unwrap();
    assert_eq!(c.rate_limits.outage_share, 0.001);
    for bad in ["0", "0.0", "-0.5", "1.01", "2"] {
        assert_eq!(
            error_text(&format!(r#"{{"rate_limits": {{"outage_share": {bad}}}}}"#)),
            "rate_limits.outage_share: must be greater than 0 and at most 1",
            "{bad}"
        );
    }
    let text = error_text(r#"{"rate_limits": {"outage_share": "half"}}"#);
    assert!(
        text.starts_with("rate_limits.outage_share: invalid type"),
        "{text}"
    );
    let text = error_text(r#"{"rate_limits": {"share": 0.5}}"#);
    assert!(
        text.starts_with("rate_limits.share: unknown field"),
        "{text}"
    );
}

fn env<'a>(pairs: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
    move |name| {
        pairs
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.to_string())
    }
}

const TOKEN: &str = "internal-test-0123456789abcdef0123456789abcdef";

#[test]
fn the_host_s_configuration_takes_its_secrets_from_the_environment() {
    let vars = [
        (livegate_contract::headers::INTERNAL_TOKEN_ENV, TOKEN),
        (
            crate::host_env::UPSTREAM_AUTHORIZATION_ENV,
            "Bearer upstream",
        ),
    ];
    let config = Config::from_host(Some(br#"{"change_poll_ms": 100}"#), env(&vars)).unwrap();
    assert_eq!(config.change_poll_ms, 100);
    assert_eq!(config.internal_token.expose(), TOKEN);
    assert_eq!(
        config.upstream_authorization.as_deref(),
        Some("Bearer upstream")
    );
}

#[test]
fn the_host_s_configuration_is_refused_without_the_internal_token() {
    let refused = Config::from_host(None, env(&[])).unwrap_err();
    assert!(refused
        .to_string()
        .contains(livegate_contract::headers::INTERNAL_TOKEN_ENV));
}

#[test]
fn the_host_s_configuration_is_refused_with_the_upstream_secret_in_it() {
    let vars = [
        (livegate_contract::headers::INTERNAL_TOKEN_ENV, TOKEN),
        (
            crate::host_env::UPSTREAM_AUTHORIZATION_ENV,
            "Bearer upstream",
        ),
    ];
    let raw = br#"{"upstream_authorization": "Bearer inline"}"#;
    let refused = Config::from_host(Some(raw), env(&vars)).unwrap_err();
    assert!(refused.to_string().contains("upstream_authorization"));
}

#[test]
fn the_host_s_configuration_reports_a_bad_document_before_the_environment() {
    let refused = Config::from_host(Some(b"{"), env(&[])).unwrap_err();
    assert!(matches!(refused, ConfigError::Syntax(_)), "{refused:?}");
}

const DEPLOYMENTS: &str = r#"{"deployments": [
    {"model_name": "gpt-4o", "provider": "openai", "model": "gpt-4o", "route": "livegate_deployment_0",
     "path_prefix": "/v1", "api_key_env": "OPENAI_API_KEY"}]}"#;

#[test]
fn a_deployment_s_key_comes_from_the_environment_and_an_unset_one_is_named() {
    let vars = [
        (livegate_contract::headers::INTERNAL_TOKEN_ENV, TOKEN),
        ("OPENAI_API_KEY", "sk-provider-1"),
    ];
    let config = Config::from_host(Some(DEPLOYMENTS.as_bytes()), env(&vars)).unwrap();
    assert_eq!(config.deployments.len(), 1);
    assert_eq!(
        config.provider_keys["OPENAI_API_KEY"].expose(),
        "sk-provider-1"
    );
    assert!(!format!("{config:?}").contains("sk-provider-1"));

    let vars = [(livegate_contract::headers::INTERNAL_TOKEN_ENV, TOKEN)];
    let refused = Config::from_host(Some(DEPLOYMENTS.as_bytes()), env(&vars)).unwrap_err();
    assert!(refused.to_string().contains("OPENAI_API_KEY"), "{refused}");
}

#[test]
fn deployments_are_checked_naming_the_field() {
    let refused = Config::parse(Some(
        DEPLOYMENTS.replace("\"route\"", "\"rout\"").as_bytes(),
    ))
    .unwrap_err();
    assert!(refused.to_string().contains("deployments[0]"), "{refused}");
    let twice = DEPLOYMENTS.replace(
        "}]}",
        r#"}, {"model_name": "m", "provider": "openai", "model": "m", "route": "livegate_deployment_0"}]}"#,
    );
    let refused = Config::parse(Some(twice.as_bytes())).unwrap_err();
    assert!(
        refused.to_string().contains("deployments[1].route"),
        "{refused}"
    );
    let open = DEPLOYMENTS.replace(
        "{\"deployments\"",
        "{\"failure_mode\": \"open\", \"deployments\"",
    );
    let refused = Config::parse(Some(open.as_bytes())).unwrap_err();
    assert!(refused.to_string().contains("failure_mode"), "{refused}");
}
