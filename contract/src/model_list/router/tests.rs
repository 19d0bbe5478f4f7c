//! `router_settings` / `litellm_settings`: each field, what is refused by name, the chains.

use crate::model_list::{Chain, ModelList, DEFAULT_NUM_RETRIES};

const LIST: &str = "model_list:
  - model_name: gpt-4o
    litellm_params: { model: openai/gpt-4o, api_base: 'https://a.example/v1' }
  - model_name: gpt-4o
    litellm_params: { model: openai/gpt-4o, api_base: 'https://b.example/v1' }
  - model_name: gpt-4o
    litellm_params: { model: openai/gpt-4o, api_base: 'https://c.example/v1' }
  - model_name: gpt-4o-mini
    litellm_params: { model: openai/gpt-4o-mini, api_base: 'https://a.example/v1' }
  - model_name: local
    litellm_params: { model: openai/llama, api_base: 'http://vllm.internal:8000/v1' }
  - model_name: claude
    litellm_params: { model: anthropic/claude-3-5 }
";

fn parse(settings: &str) -> Result<ModelList, String> {
    ModelList::parse(&format!("{LIST}{settings}")).map_err(|e| e.to_string())
}

fn members(list: &ModelList) -> Vec<Vec<usize>> {
    list.router
        .chains(&list.deployments)
        .into_iter()
        .map(|Chain { members, .. }| members)
        .collect()
}

#[test]
fn without_settings_litellm_s_default_retries_and_no_fallbacks() {
    let list = parse("").unwrap();
    assert_eq!(list.router.num_retries, DEFAULT_NUM_RETRIES);
    assert_eq!(DEFAULT_NUM_RETRIES, 2);
    assert!(list.router.fallbacks.is_empty());
}

#[test]
fn both_fields_are_read_from_either_section() {
    for section in ["router_settings", "litellm_settings"] {
        let list = parse(&format!(
            "{section}:\n  fallbacks: [{{\"gpt-4o\": [\"gpt-4o-mini\", \"local\"]}}, {{\"local\": [\"gpt-4o\"]}}]\n  num_retries: 1\n"
        ))
        .unwrap();
        assert_eq!(list.router.num_retries, 1, "{section}");
        assert_eq!(
            list.router.fallbacks.get("gpt-4o").unwrap(),
            &["gpt-4o-mini".to_owned(), "local".to_owned()]
        );
        assert_eq!(list.router.fallbacks.get("local").unwrap(), &["gpt-4o"]);
    }
    let split = parse(
        "router_settings:\n  num_retries: 0\nlitellm_settings:\n  fallbacks: [{\"local\": [\"gpt-4o-mini\"]}]\n",
    )
    .unwrap();
    assert_eq!(split.router.num_retries, 0);
    assert_eq!(split.router.fallbacks.len(), 1);
}

#[test]
fn other_keys_are_refused_by_name() {
    for (section, key) in [
        ("router_settings", "routing_strategy: simple-shuffle"),
        ("router_settings", "context_window_fallbacks: []"),
        ("litellm_settings", "drop_params: true"),
        ("litellm_settings", "default_fallbacks: [gpt-4o]"),
    ] {
        let error = parse(&format!("{section}:\n  {key}\n")).unwrap_err();
        let name = key.split(':').next().unwrap();
        assert!(
            error.contains(&format!("{section}.{name}")) && error.contains("not implemented"),
            "{error}"
        );
    }
}

#[test]
fn each_value_is_checked_naming_its_field() {
    for (settings, named, problem) in [
        (
            "router_settings:\n  num_retries: -1\n",
            "router_settings.num_retries",
            "0 to 10",
        ),
        (
            "router_settings:\n  num_retries: 11\n",
            "router_settings.num_retries",
            "0 to 10",
        ),
        (
            "router_settings:\n  num_retries: two\n",
            "router_settings.num_retries",
            "0 to 10",
        ),
        (
            "router_settings:\n  num_retries: 1\nlitellm_settings:\n  num_retries: 2\n",
            "litellm_settings.num_retries",
            "also given as router_settings.num_retries",
        ),
        (
            "router_settings:\n  fallbacks: {gpt-4o: [local]}\n",
            "router_settings.fallbacks",
            "list of",
        ),
        (
            "router_settings:\n  fallbacks: [gpt-4o]\n",
            "router_settings.fallbacks",
            "list of",
        ),
        (
            "router_settings:\n  fallbacks: [{gpt-5: [local]}]\n",
            "router_settings.fallbacks[0].gpt-5",
            "no model_name",
        ),
        (
            "router_settings:\n  fallbacks: [{gpt-4o: [gpt-5]}]\n",
            "router_settings.fallbacks[0].gpt-4o",
            "\"gpt-5\" is no model_name",
        ),
        (
            "router_settings:\n  fallbacks: [{gpt-4o: [gpt-4o]}]\n",
            "router_settings.fallbacks[0].gpt-4o",
            "the model itself",
        ),
        (
            "router_settings:\n  fallbacks: [{gpt-4o: [local, local]}]\n",
            "router_settings.fallbacks[0].gpt-4o",
            "twice",
        ),
        (
            "router_settings:\n  fallbacks: [{gpt-4o: [local]}, {gpt-4o: [gpt-4o-mini]}]\n",
            "router_settings.fallbacks[1].gpt-4o",
            "twice",
        ),
        (
            "router_settings:\n  fallbacks: [{gpt-4o: local}]\n",
            "fallbacks[0].gpt-4o",
            "list of model names",
        ),
        ("router_settings: [1]\n", "router_settings", "mapping"),
        (
            "router_settings:\n  fallbacks: [{gpt-4o: [claude]}]\n",
            "router_settings.fallbacks[0].gpt-4o",
            "another provider's shape",
        ),
        (
            "router_settings:\n  fallbacks: [{claude: [gpt-4o-mini]}]\n",
            "router_settings.fallbacks[0].claude",
            "another provider's shape",
        ),
    ] {
        let error = parse(settings).unwrap_err();
        assert!(
            error.contains(named) && error.contains(problem),
            "{settings}: {error}"
        );
    }
}

#[test]
fn a_chain_starts_at_its_deployment_then_the_model_s_others_then_the_fallbacks() {
    let list = parse(
        "router_settings:\n  fallbacks: [{gpt-4o: [local, gpt-4o-mini]}]\n  num_retries: 5\n",
    )
    .unwrap();
    assert_eq!(
        members(&list),
        vec![
            vec![0, 1, 2, 4, 3],
            vec![1, 2, 0, 4, 3],
            vec![2, 0, 1, 4, 3],
            vec![3],
            vec![4],
            vec![5],
        ]
    );
}

#[test]
fn num_retries_caps_the_tries_of_each_model_and_fallbacks_apply_at_zero() {
    let one = parse("router_settings:\n  fallbacks: [{gpt-4o: [gpt-4o-mini]}]\n  num_retries: 1\n")
        .unwrap();
    assert_eq!(members(&one)[1], vec![1, 2, 3]);
    let zero =
        parse("router_settings:\n  fallbacks: [{gpt-4o: [gpt-4o-mini]}]\n  num_retries: 0\n")
            .unwrap();
    assert_eq!(members(&zero)[2], vec![2, 3]);
    // Fallbacks are not followed further: a fallback's own fallbacks are its requests' only.
    let nested = parse(
        "router_settings:\n  fallbacks: [{gpt-4o-mini: [local]}, {local: [gpt-4o-mini]}]\n  num_retries: 0\n",
    )
    .unwrap();
    assert_eq!(
        members(&nested),
        vec![vec![0], vec![1], vec![2], vec![3, 4], vec![4, 3], vec![5]]
    );
}

/// One model_name served by Anthropic and by OpenAI: a retry could carry a request to the
/// other shape, so with retries it is refused at start, naming the entry.
#[test]
fn a_model_served_in_two_shapes_is_refused_when_it_may_be_retried() {
    let mixed = "model_list:
  - model_name: chat
    litellm_params: { model: openai/gpt-4o, api_base: 'https://a.example/v1' }
  - model_name: chat
    litellm_params: { model: anthropic/claude-3-5 }
";
    let refused = ModelList::parse(mixed).unwrap_err().to_string();
    assert!(
        refused.contains("model_list[1].litellm_params.model")
            && refused.contains("num_retries: 0"),
        "{refused}"
    );
    let without_retries = format!("{mixed}router_settings:\n  num_retries: 0\n");
    assert!(ModelList::parse(&without_retries).is_ok());
}
