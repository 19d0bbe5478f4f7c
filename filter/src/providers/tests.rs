//! Picking a deployment and shaping the request for its provider.

use super::*;
use livegate_contract::deployment::Deployment;

fn d(model_name: &str, provider: Provider, route: &str, weight: u32) -> Deployment {
    Deployment {
        model_name: model_name.into(),
        provider,
        model: format!("{route}-model"),
        route: route.into(),
        path_prefix: "/base".into(),
        api_key_env: Some("K".into()),
        api_version: Some("2024-10-21".into()),
        weight,
    }
}

fn keys() -> BTreeMap<String, Secret> {
    [("K".to_string(), Secret::new("sk-p"))].into()
}

#[test]
fn deployments_of_one_model_take_turns_by_weight() {
    let list = [
        d("gpt-4o", Provider::Openai, "a", 1),
        d("other", Provider::Openai, "x", 5),
        d("gpt-4o", Provider::Openai, "b", 2),
    ];
    let picked: Vec<&str> = (0..6)
        .map(|turn| pick(&list, "gpt-4o", turn).unwrap().route.as_str())
        .collect();
    assert_eq!(picked, ["a", "b", "b", "a", "b", "b"]);
    assert_eq!(pick(&list, "gpt-5", 0), None);
    assert_eq!(
        pick(&list, "gpt-4o", u64::MAX).map(|d| d.route.as_str()),
        Some("a")
    );
}

#[test]
fn openai_takes_the_base_path_the_operation_and_a_bearer_key() {
    let dep = d("m", Provider::Openai, "a", 1);
    let out = outbound(&dep, "/v1/chat/completions", "?q=1", &keys(), false).unwrap();
    assert_eq!(out.path, "/base/chat/completions?q=1");
    assert!(out.set.contains(&("authorization", "Bearer sk-p".into())));
    assert!(out.set.contains(&(DEPLOYMENT_HEADER, "a".into())));
    let out = outbound(&dep, "/embeddings/", "", &keys(), false).unwrap();
    assert_eq!(out.path, "/base/embeddings");
    assert!(outbound(&dep, "/v1/messages", "", &keys(), false).is_err());
}

#[test]
fn azure_takes_its_deployment_path_api_version_and_api_key() {
    let dep = d("m", Provider::Azure, "az", 1);
    let out = outbound(
        &dep,
        "/v1/chat/completions",
        "?api-version=old",
        &keys(),
        false,
    )
    .unwrap();
    assert_eq!(
        out.path,
        "/base/openai/deployments/az-model/chat/completions?api-version=2024-10-21"
    );
    assert!(out.set.contains(&("api-key", "sk-p".into())));
    assert!(!out.set.iter().any(|(n, _)| *n == "authorization"));
    assert!(outbound(&dep, "/v1/responses", "", &keys(), false).is_err());
}

#[test]
fn anthropic_takes_messages_with_its_key_and_a_default_version() {
    let dep = d("m", Provider::Anthropic, "an", 1);
    let out = outbound(&dep, "/v1/messages", "", &keys(), false).unwrap();
    assert_eq!(out.path, "/base/v1/messages");
    assert!(out.set.contains(&("x-api-key", "sk-p".into())));
    assert!(out
        .set
        .contains(&("anthropic-version", "2023-06-01".into())));
    let out = outbound(&dep, "/messages", "", &keys(), true).unwrap();
    assert!(!out.set.iter().any(|(n, _)| *n == "anthropic-version"));
    let refused = outbound(&dep, "/v1/chat/completions", "", &keys(), false).unwrap_err();
    assert!(refused.to_string().contains("anthropic"), "{refused}");
}

#[test]
fn a_deployment_without_a_key_sends_no_credential() {
    let mut dep = d("m", Provider::Openai, "a", 1);
    dep.api_key_env = None;
    let out = outbound(&dep, "/v1/chat/completions", "", &keys(), false).unwrap();
    assert_eq!(out.set, vec![(DEPLOYMENT_HEADER, "a".to_string())]);
}

#[test]
fn the_models_list_is_openai_s_shape_each_name_once() {
    let list = [
        d("gpt-4o", Provider::Openai, "a", 1),
        d("gpt-4o", Provider::Azure, "b", 1),
        d("claude", Provider::Anthropic, "c", 1),
    ];
    let body: serde_json::Value = serde_json::from_str(&model_list_body(&list, |_| true)).unwrap();
    assert_eq!(body["object"], "list");
    let ids: Vec<&str> = body["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["gpt-4o", "claude"]);
    assert_eq!(body["data"][0]["object"], "model");
    let none: serde_json::Value = serde_json::from_str(&model_list_body(&list, |_| false)).unwrap();
    assert_eq!(none["data"], serde_json::json!([]));
    assert!(is_models_path("/v1/models") && is_models_path("/models/"));
    assert!(!is_models_path("/v1/models/gpt-4o"));
}
