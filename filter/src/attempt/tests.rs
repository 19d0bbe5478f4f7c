//! Each try shaped for the deployment Envoy picked: Host, path, credential, body model.

use super::*;
use livegate_contract::deployment::Provider;

fn d(route: &str, provider: Provider, model: &str, key: Option<&str>) -> Deployment {
    Deployment {
        model_name: "gpt-4o".into(),
        provider,
        model: model.into(),
        route: route.into(),
        path_prefix: "/v1".into(),
        api_key_env: key.map(str::to_owned),
        api_version: Some("2024-10-21".into()),
        weight: 1,
    }
}

fn config() -> AttemptConfig {
    let raw = br#"{"role": "attempt",
        "deployments": [
          {"model_name": "gpt-4o", "provider": "openai", "model": "gpt-4o", "route": "livegate_deployment_0", "path_prefix": "/v1", "api_key_env": "KEY_A"},
          {"model_name": "gpt-4o-mini", "provider": "azure", "model": "mini-prod", "route": "livegate_deployment_1", "api_key_env": "KEY_B", "api_version": "2024-10-21"},
          {"model_name": "claude", "provider": "anthropic", "model": "claude-3-5", "route": "livegate_deployment_2"}
        ],
        "authorities": {"livegate_deployment_0": "a.example:8443", "livegate_deployment_1": "b.example", "livegate_deployment_2": "c.example"}}"#;
    AttemptConfig::from_host(raw, |name| match name {
        "KEY_A" => Some("sk-a".into()),
        "KEY_B" => Some("sk-b".into()),
        _ => None,
    })
    .unwrap()
}

fn value<'a>(t: &'a Try<'_>, name: &str) -> Option<&'a str> {
    t.set
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, v)| v.as_str())
}

#[test]
fn a_try_takes_its_deployment_s_host_path_and_credential_and_drops_the_others() {
    let c = config();
    let t = shape(
        &c,
        "livegate_deployment_0",
        Some("/v1/chat/completions?x=1"),
        false,
    )
    .unwrap();
    assert_eq!(value(&t, ":authority"), Some("a.example:8443"));
    assert_eq!(value(&t, ":path"), Some("/v1/chat/completions?x=1"));
    assert_eq!(value(&t, "authorization"), Some("Bearer sk-a"));
    assert_eq!(
        value(&t, DEPLOYMENT_HEADER),
        None,
        "the route header stays inside"
    );
    assert!(t.remove.contains(&"api-key") && t.remove.contains(&"x-api-key"));
    assert!(t.remove.contains(&CLIENT_PATH_HEADER));
    assert!(!t.remove.contains(&"authorization"));

    let t = shape(
        &c,
        "livegate_deployment_1",
        Some("/chat/completions?x=1"),
        false,
    )
    .unwrap();
    assert_eq!(value(&t, ":authority"), Some("b.example"));
    assert_eq!(
        value(&t, ":path"),
        Some("/openai/deployments/mini-prod/chat/completions?api-version=2024-10-21")
    );
    assert_eq!(value(&t, "api-key"), Some("sk-b"));
    assert!(
        t.remove.contains(&"authorization"),
        "the first try's bearer key goes"
    );
}

#[test]
fn a_deployment_without_a_key_sends_none_and_anthropic_gets_its_version() {
    let c = config();
    let t = shape(&c, "livegate_deployment_2", Some("/v1/messages"), false).unwrap();
    assert_eq!(value(&t, ":path"), Some("/v1/messages"));
    assert_eq!(value(&t, "anthropic-version"), Some("2023-06-01"));
    for h in CREDENTIAL_HEADERS {
        assert!(t.remove.contains(&h), "{h}");
    }
    let t = shape(&c, "livegate_deployment_2", Some("/v1/messages"), true).unwrap();
    assert_eq!(value(&t, "anthropic-version"), None);
}

#[test]
fn an_unknown_deployment_a_missing_path_or_a_foreign_shape_is_an_error() {
    let c = config();
    assert_eq!(
        shape(
            &c,
            "livegate_deployment_9",
            Some("/v1/chat/completions"),
            false
        )
        .unwrap_err(),
        TryError::UnknownDeployment("livegate_deployment_9".into())
    );
    assert_eq!(
        shape(&c, "livegate_deployment_0", None, false).unwrap_err(),
        TryError::NoClientPath
    );
    assert!(matches!(
        shape(
            &c,
            "livegate_deployment_2",
            Some("/v1/chat/completions"),
            false
        ),
        Err(TryError::Unroutable(_))
    ));
}

#[test]
fn the_body_names_the_try_s_model_and_nothing_else_changes() {
    let mini = d("m", Provider::Openai, "gpt-4o-mini", None);
    let body = br#"{"model": "gpt-4o", "messages": [{"role": "user", "content": "model"}], "stream": true}"#;
    let out = body_for(body, &mini).unwrap();
    assert_eq!(
        out,
        br#"{"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "model"}], "stream": true}"#
    );
    assert_eq!(body_for(&out, &mini), None);
    assert_eq!(body_for(b"not json", &mini), None);
}

#[test]
fn the_configuration_needs_every_key_and_authority_and_never_echoes_a_key() {
    let raw = br#"{"role": "attempt", "deployments": [{"model_name": "m", "provider": "openai", "model": "m", "route": "r", "api_key_env": "KEY_A"}], "authorities": {"r": "h"}}"#;
    let error = AttemptConfig::from_host(raw, |_| None).unwrap_err();
    assert_eq!(error, AttemptConfigError::Unset("KEY_A".into()));
    let error = AttemptConfig::from_host(raw, |_| Some("has space".into())).unwrap_err();
    assert_eq!(error, AttemptConfigError::Unset("KEY_A".into()));
    let no_authority = br#"{"role": "attempt", "deployments": [{"model_name": "m", "provider": "openai", "model": "m", "route": "r"}], "authorities": {}}"#;
    let error = AttemptConfig::from_host(no_authority, |_| None).unwrap_err();
    assert!(error.to_string().contains("authorities"), "{error}");
    let unknown = br#"{"role": "attempt", "deployments": [], "authorities": {}, "extra": 1}"#;
    let error = AttemptConfig::from_host(unknown, |_| None).unwrap_err();
    assert!(error.to_string().contains("extra"), "{error}");
    let c = config();
    assert!(!format!("{c:?}").contains("sk-a"));
    assert!(is_attempt_config(br#"{"role": "attempt"}"#));
    assert!(!is_attempt_config(br#"{"failure_mode": "closed"}"#));
    assert!(!is_attempt_config(b"\xff"));
}
