//! Requests with a model list: routed by model with the provider's credential and never
//! the client's, the body's model rewritten, unknown models refused, `/v1/models` per key.

use super::mock::*;
use super::{RequestFlow, Verdict};
use crate::config::Config;
use crate::host_env::Secret;
use crate::metrics::Metric;
use livegate_contract::deployment::{Deployment, Provider, DEPLOYMENT_HEADER};
use livegate_contract::ModelAccess;

const NOW: u64 = 1_000_000;

fn deployment(model_name: &str, provider: Provider, model: &str, route: &str) -> Deployment {
    Deployment {
        model_name: model_name.into(),
        provider,
        model: model.into(),
        route: route.into(),
        path_prefix: "/v1".into(),
        api_key_env: Some(format!("{}_KEY", route.to_uppercase())),
        api_version: None,
        weight: 1,
    }
}

pub(super) fn config() -> Config {
    let mut anthropic = deployment("claude", Provider::Anthropic, "claude-3-5", "a");
    anthropic.path_prefix = String::new();
    let deployments = vec![
        deployment("gpt-4o", Provider::Openai, "gpt-4o-2024", "o"),
        anthropic,
        deployment("mini", Provider::Openai, "gpt-4o-mini", "m"),
    ];
    let mut config = Config {
        deployments,
        upstream_authorization: Some("Bearer demo-upstream".into()),
        ..Config::default()
    };
    for name in ["O_KEY", "A_KEY", "M_KEY"] {
        config
            .provider_keys
            .insert(name.into(), Secret::new(format!("sk-provider-{name}")));
    }
    config
}

fn call(
    path: &str,
    body: &str,
    access: ModelAccess,
    extra: &[(&str, &str)],
) -> (MockHost, Verdict) {
    let mut headers = vec![("authorization", "Bearer sk-test")];
    headers.extend_from_slice(extra);
    let host = MockHost::request("POST", path, &headers);
    *host.body.borrow_mut() = body.as_bytes().to_vec();
    let mut flow = RequestFlow::new(plugin(config()));
    assert_eq!(flow.on_request_headers(&host, Some(NOW)), Verdict::Stop);
    assert_eq!(flow.on_request_body(&host, true), Verdict::Stop);
    let verdict = respond(&mut flow, &host, "200", &allow_body_with(access), NOW);
    (host, verdict)
}

fn body_of(host: &MockHost) -> serde_json::Value {
    serde_json::from_slice(&host.body.borrow()).unwrap()
}

#[test]
fn a_model_goes_to_its_deployment_with_the_provider_s_key_and_model() {
    let body = r#"{"model": "gpt-4o", "messages": []}"#;
    let (host, verdict) = call(
        "/v1/chat/completions?x=1",
        body,
        ModelAccess::default(),
        &[("api-key", "client-azure-key"), ("x-api-key", "sk-test2")],
    );
    assert_eq!(verdict, Verdict::Continue);
    assert_eq!(host.header(DEPLOYMENT_HEADER).as_deref(), Some("o"));
    assert_eq!(
        host.header(":path").as_deref(),
        Some("/v1/chat/completions?x=1")
    );
    assert_eq!(
        host.header("authorization").as_deref(),
        Some("Bearer sk-provider-O_KEY"),
        "the provider's key, not the client's nor the one upstream's"
    );
    assert_eq!(
        host.header("api-key"),
        None,
        "no client credential of any shape goes on"
    );
    assert_eq!(host.header("x-api-key"), None);
    assert_eq!(body_of(&host)["model"], "gpt-4o-2024");
    let length = host.header("content-length").unwrap();
    assert_eq!(length, host.body.borrow().len().to_string());
}

#[test]
fn anthropic_gets_its_key_header_its_version_and_its_path() {
    let body = r#"{"model": "claude", "max_tokens": 5, "messages": []}"#;
    let (host, verdict) = call("/v1/messages", body, ModelAccess::default(), &[]);
    assert_eq!(verdict, Verdict::Continue);
    assert_eq!(host.header(DEPLOYMENT_HEADER).as_deref(), Some("a"));
    assert_eq!(host.header(":path").as_deref(), Some("/v1/messages"));
    assert_eq!(
        host.header("x-api-key").as_deref(),
        Some("sk-provider-A_KEY")
    );
    assert_eq!(
        host.header("anthropic-version").as_deref(),
        Some("2023-06-01")
    );
    assert_eq!(host.header("authorization"), None);
    assert_eq!(body_of(&host)["model"], "claude-3-5");

    let (host, _) = call(
        "/v1/messages",
        body,
        ModelAccess::default(),
        &[("anthropic-version", "2024-01-01")],
    );
    assert_eq!(
        host.header("anthropic-version").as_deref(),
        Some("2024-01-01")
    );
}

#[test]
fn a_model_outside_the_list_or_on_a_route_its_provider_does_not_speak_is_refused() {
    let (host, verdict) = call(
        "/v1/chat/completions",
        r#"{"model": "gpt-5"}"#,
        ModelAccess::default(),
        &[],
    );
    assert_eq!(verdict, Verdict::Stop);
    let reply = host.last_reply().unwrap();
    assert_eq!(reply.status, 400);
    assert!(reply.body.contains("model=gpt-5"), "{}", reply.body);
    assert_eq!(host.count(Metric::DeniedModel), 1);
    assert_eq!(host.header(DEPLOYMENT_HEADER), None);

    let (host, verdict) = call(
        "/v1/chat/completions",
        r#"{"model": "claude"}"#,
        ModelAccess::default(),
        &[],
    );
    assert_eq!(verdict, Verdict::Stop);
    assert_eq!(host.last_reply().unwrap().status, 400);
    assert!(host.last_reply().unwrap().body.contains("anthropic"));
}

#[test]
fn the_key_s_policy_still_decides_before_the_list() {
    let access = ModelAccess {
        models: vec!["mini".into()],
        ..ModelAccess::default()
    };
    let (host, verdict) = call(
        "/v1/chat/completions",
        r#"{"model": "gpt-4o"}"#,
        access,
        &[],
    );
    assert_eq!(verdict, Verdict::Stop);
    assert_eq!(host.last_reply().unwrap().status, 401);
    assert_eq!(host.header(DEPLOYMENT_HEADER), None);
}

#[test]
fn an_alias_resolves_to_a_model_of_the_list_then_to_its_deployment() {
    let access = ModelAccess {
        aliases: [("fast".to_string(), "mini".to_string())].into(),
        ..ModelAccess::default()
    };
    let (host, verdict) = call("/v1/chat/completions", r#"{"model": "fast"}"#, access, &[]);
    assert_eq!(verdict, Verdict::Continue);
    assert_eq!(host.header(DEPLOYMENT_HEADER).as_deref(), Some("m"));
    assert_eq!(body_of(&host)["model"], "gpt-4o-mini");
}

#[test]
fn the_models_list_shows_each_model_the_key_may_use_once() {
    let list = |access: ModelAccess| {
        let host = MockHost::request("GET", "/v1/models", &[("authorization", "Bearer sk-test")]);
        let mut flow = RequestFlow::new(plugin(config()));
        assert_eq!(
            flow.on_request_headers_with(&host, Some(NOW), true),
            Verdict::Stop
        );
        let verdict = respond(&mut flow, &host, "200", &allow_body_with(access), NOW);
        assert_eq!(
            verdict,
            Verdict::Stop,
            "answered by the filter, not forwarded"
        );
        let reply = host.last_reply().unwrap();
        assert_eq!(reply.status, 200);
        let body: serde_json::Value = serde_json::from_str(&reply.body).unwrap();
        assert_eq!(body["object"], "list");
        body["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["id"].as_str().unwrap().to_owned())
            .collect::<Vec<_>>()
    };
    assert_eq!(list(ModelAccess::default()), ["gpt-4o", "claude", "mini"]);
    let restricted = ModelAccess {
        models: vec!["mini".into(), "claude".into()],
        team_models: vec!["mini".into()],
        ..ModelAccess::default()
    };
    assert_eq!(list(restricted), ["mini"]);
}

#[test]
fn without_a_list_requests_go_to_the_one_upstream_as_before() {
    let host = MockHost::request(
        "POST",
        "/v1/chat/completions",
        &[("authorization", "Bearer sk-test")],
    );
    *host.body.borrow_mut() = br#"{"model": "gpt-4o"}"#.to_vec();
    let config = Config {
        upstream_authorization: Some("Bearer demo".into()),
        ..Config::default()
    };
    let mut flow = RequestFlow::new(plugin(config));
    flow.on_request_headers(&host, Some(NOW));
    flow.on_request_body(&host, true);
    let verdict = respond(&mut flow, &host, "200", &allow_body(), NOW);
    assert_eq!(verdict, Verdict::Continue);
    assert_eq!(host.header(DEPLOYMENT_HEADER), None);
    assert_eq!(host.header("authorization").as_deref(), Some("Bearer demo"));
}

#[test]
fn an_azure_style_client_path_is_refused_with_a_model_list_not_sent_unrouted() {
    let (host, verdict) = call(
        "/openai/deployments/gpt-4o/chat/completions",
        r#"{"messages": []}"#,
        ModelAccess::default(),
        &[],
    );
    assert_eq!(verdict, Verdict::Stop);
    let reply = host.last_reply().unwrap();
    assert_eq!(reply.status, 400);
    assert!(
        reply.body.contains("/v1/chat/completions"),
        "{}",
        reply.body
    );
    assert_eq!(host.header(DEPLOYMENT_HEADER), None);
}

#[test]
fn deployments_of_one_name_take_turns_on_one_worker() {
    let mut config = config();
    let mut second = config.deployments[0].clone();
    second.route = "o2".into();
    second.model = "gpt-4o-other".into();
    config.deployments.push(second);
    let plugin = plugin(config);
    let routes: Vec<String> = (0..4)
        .map(|_| {
            let host = MockHost::request(
                "POST",
                "/v1/chat/completions",
                &[("authorization", "Bearer sk-test")],
            );
            *host.body.borrow_mut() = br#"{"model": "gpt-4o"}"#.to_vec();
            let mut flow = RequestFlow::new(plugin.clone());
            flow.on_request_headers(&host, Some(NOW));
            flow.on_request_body(&host, true);
            respond(&mut flow, &host, "200", &allow_body(), NOW);
            host.header(DEPLOYMENT_HEADER).unwrap()
        })
        .collect();
    assert_eq!(routes, ["o", "o2", "o", "o2"]);
}
