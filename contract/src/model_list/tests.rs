//! The model list's parsing: each field, what is refused by name, unset variables.

use super::*;

const FULL: &str = r#"
model_list:
  - model_name: gpt-4o
    litellm_params:
      model: openai/gpt-4o
      api_base: https://api.openai.com/v1/
      api_key: os.environ/OPENAI_API_KEY
      timeout: 30
      weight: 3
  - model_name: gpt-4o
    litellm_params:
      model: azure/prod-4o
      api_base: https://example.openai.azure.com
      api_key: os.environ/AZURE_API_KEY
      api_version: "2024-10-21"
  - model_name: claude
    litellm_params:
      model: anthropic/claude-3-5-sonnet-20241022
      api_key: os.environ/ANTHROPIC_API_KEY
  - model_name: local
    litellm_params:
      model: openai/llama3
      api_base: http://vllm.internal:8000/v1
"#;

fn parse_err(text: &str) -> String {
    ModelList::parse(text).unwrap_err().to_string()
}

#[test]
fn every_field_of_an_entry_is_read() {
    let list = ModelList::parse(FULL).unwrap();
    let [openai, azure, anthropic, local] = list.deployments.as_slice() else {
        panic!("four deployments: {list:?}");
    };
    assert_eq!(openai.deployment.model_name, "gpt-4o");
    assert_eq!(openai.deployment.provider, Provider::Openai);
    assert_eq!(openai.deployment.model, "gpt-4o");
    assert_eq!(openai.deployment.path_prefix, "/v1");
    assert_eq!(
        openai.deployment.api_key_env.as_deref(),
        Some("OPENAI_API_KEY")
    );
    assert_eq!(openai.deployment.weight, 3);
    assert_eq!(openai.deployment.route, "livegate_deployment_0");
    assert_eq!(
        openai.transport,
        Transport {
            tls: true,
            host: "api.openai.com".into(),
            port: 443,
            timeout_seconds: 30.0
        }
    );
    assert_eq!(azure.deployment.provider, Provider::Azure);
    assert_eq!(azure.deployment.model, "prod-4o");
    assert_eq!(azure.deployment.api_version.as_deref(), Some("2024-10-21"));
    assert_eq!(azure.deployment.path_prefix, "");
    assert_eq!(azure.deployment.weight, 1);
    assert_eq!(azure.transport.timeout_seconds, DEFAULT_TIMEOUT_SECONDS);
    // Anthropic's api_base defaults to Anthropic's API.
    assert_eq!(anthropic.deployment.provider, Provider::Anthropic);
    assert_eq!(anthropic.transport.host, "api.anthropic.com");
    assert_eq!(anthropic.deployment.path_prefix, "");
    // Plain HTTP stays allowed (in-cluster servers), without a key.
    assert!(!local.transport.tls);
    assert_eq!(
        (local.transport.host.as_str(), local.transport.port),
        ("vllm.internal", 8000)
    );
    assert_eq!(local.deployment.api_key_env, None);
}

#[test]
fn an_unknown_field_is_refused_with_its_path() {
    let text = FULL.replacen("timeout: 30", "timout: 30", 1);
    let error = parse_err(&text);
    assert!(error.contains("model_list[0].litellm_params"), "{error}");
    assert!(error.contains("timout"), "{error}");
    let error = parse_err("model_list: []\nmodel_lists: []\n");
    assert!(error.contains("model_lists"), "{error}");
}

#[test]
fn what_livegate_does_not_do_is_refused_by_name() {
    for (section, name) in [
        (
            "router_settings:\n  routing_strategy: latency-based-routing\n",
            "router_settings.routing_strategy",
        ),
        (
            "litellm_settings:\n  success_callback: [langfuse]\n",
            "litellm_settings.success_callback",
        ),
        ("general_settings: {}\n", "general_settings"),
    ] {
        let error = parse_err(&format!("{FULL}{section}"));
        assert!(
            error.contains(name) && error.contains("not implemented"),
            "{error}"
        );
    }
    let with_info = FULL.replacen(
        "      weight: 3\n",
        "      weight: 3\n    model_info:\n      mode: chat\n",
        1,
    );
    let error = parse_err(&with_info);
    assert!(
        error.contains("model_list[0].model_info") && error.contains("mode"),
        "{error}"
    );
}

#[test]
fn model_info_gives_a_deployment_its_own_prices_each_checked() {
    let info = "    model_info:\n      input_cost_per_token: 0.0000025\n      \
                output_cost_per_token: 0.00001\n      cache_read_input_token_cost: 0.00000125\n      \
                cache_creation_input_token_cost: 0.000003\n      \
                output_cost_per_reasoning_token: 0.00002\n";
    let text = FULL.replacen("      weight: 3\n", &format!("      weight: 3\n{info}"), 1);
    let list = ModelList::parse(&text).unwrap();
    let info = list.deployments[0].model_info;
    assert_eq!(info.input_cost_per_token, Some(0.0000025));
    assert_eq!(info.output_cost_per_token, Some(0.00001));
    assert_eq!(info.cache_read_input_token_cost, Some(0.00000125));
    assert_eq!(info.cache_creation_input_token_cost, Some(0.000003));
    assert_eq!(info.output_cost_per_reasoning_token, Some(0.00002));
    assert!(list.deployments[1].model_info.is_empty());
    for bad in ["-0.1", "\"cheap\"", ".nan", ".inf"] {
        let text = FULL.replacen(
            "      weight: 3\n",
            &format!(
                "      weight: 3\n    model_info:\n      cache_read_input_token_cost: {bad}\n"
            ),
            1,
        );
        let error = parse_err(&text);
        assert!(
            error.contains("model_list[0].model_info")
                && error.contains("cache_read_input_token_cost"),
            "{bad}: {error}"
        );
    }
}

#[test]
fn a_deployment_shows_its_api_base_as_configured() {
    let list = ModelList::parse(FULL).unwrap();
    let bases: Vec<String> = list.deployments.iter().map(Routed::api_base).collect();
    assert_eq!(
        bases,
        [
            "https://api.openai.com/v1",
            "https://example.openai.azure.com",
            "https://api.anthropic.com",
            "http://vllm.internal:8000/v1",
        ]
    );
    assert_eq!(list.deployments[0].timeout, Some(30.0));
    assert_eq!(list.deployments[1].timeout, None);
}

#[test]
fn each_value_is_checked_naming_its_field() {
    for (from, to, field) in [
        (
            "model: openai/gpt-4o",
            "model: gpt-4o",
            "model_list[0].litellm_params.model",
        ),
        (
            "model: openai/gpt-4o",
            "model: bedrock/x",
            "model_list[0].litellm_params.model",
        ),
        (
            "model: openai/gpt-4o",
            "model: openai/",
            "model_list[0].litellm_params.model",
        ),
        (
            "https://api.openai.com/v1/",
            "ftp://x/v1",
            "model_list[0].litellm_params.api_base",
        ),
        (
            "https://api.openai.com/v1/",
            "not a url",
            "model_list[0].litellm_params.api_base",
        ),
        (
            "https://api.openai.com/v1/",
            "https://u:p@x/v1",
            "model_list[0].litellm_params.api_base",
        ),
        (
            "os.environ/OPENAI_API_KEY",
            "os.environ/",
            "model_list[0].litellm_params.api_key",
        ),
        (
            "timeout: 30",
            "timeout: 0",
            "model_list[0].litellm_params.timeout",
        ),
        (
            "weight: 3",
            "weight: 0",
            "model_list[0].litellm_params.weight",
        ),
        (
            "model_name: gpt-4o",
            "model_name: \"\"",
            "model_list[0].model_name",
        ),
        (
            "api_version: \"2024-10-21\"",
            "api_version: \"a&b\"",
            "model_list[1].litellm_params.api_version",
        ),
    ] {
        let text = FULL.replacen(from, to, 1);
        let error = parse_err(&text);
        assert!(error.contains(field), "{to}: {error}");
    }
    let no_version = FULL.replacen("      api_version: \"2024-10-21\"\n", "", 1);
    assert!(parse_err(&no_version).contains("model_list[1].litellm_params.api_version"));
    let no_base = FULL.replacen("      api_base: https://example.openai.azure.com\n", "", 1);
    assert!(parse_err(&no_base).contains("model_list[1].litellm_params.api_base"));
    assert!(parse_err("model_list: []\n").contains("model_list"));
}

#[test]
fn a_key_written_in_the_file_is_refused_without_being_echoed() {
    let text = FULL.replacen("os.environ/OPENAI_API_KEY", "sk-live-secret", 1);
    let error = parse_err(&text);
    assert!(
        error.contains("model_list[0].litellm_params.api_key"),
        "{error}"
    );
    assert!(!error.contains("sk-live-secret"), "{error}");
}

#[test]
fn credentials_are_read_at_start_and_an_unset_variable_is_named() {
    let list = ModelList::parse(FULL).unwrap();
    let env = |name: &str| match name {
        "OPENAI_API_KEY" => Some("sk-o".to_owned()),
        "AZURE_API_KEY" => Some("az".to_owned()),
        "ANTHROPIC_API_KEY" => Some(String::new()),
        _ => None,
    };
    let error = list.credentials(env).unwrap_err().to_string();
    assert!(
        error.contains("ANTHROPIC_API_KEY") && error.contains("model_list[2]"),
        "{error}"
    );
    let all = list
        .credentials(|name| Some(format!("value-of-{name}")))
        .unwrap();
    assert_eq!(all.len(), 3);
    assert_eq!(all["AZURE_API_KEY"], "value-of-AZURE_API_KEY");
}
