use super::*;

/// A trimmed copy of LiteLLM's file: the documentation entry with its string values, a
/// chat model, a dated one, a provider-prefixed one, an embedding, an image model.
const LITELLM: &str = r#"{
    "sample_spec": {
        "max_tokens": "LEGACY parameter. set to max_output_tokens if provider specifies it.",
        "input_cost_per_token": 0.0000,
        "output_cost_per_token": "cost per output token",
        "litellm_provider": "one of https://docs.litellm.ai/docs/providers",
        "mode": "one of: chat, embedding, completion, image_generation"
    },
    "gpt-4o": {
        "max_tokens": 16384,
        "input_cost_per_token": 2.5e-06,
        "output_cost_per_token": 1e-05,
        "cache_read_input_token_cost": 1.25e-06,
        "litellm_provider": "openai",
        "mode": "chat",
        "supports_vision": true
    },
    "gpt-4o-2024-08-06": {
        "input_cost_per_token": 2.5e-06,
        "output_cost_per_token": 1e-05,
        "litellm_provider": "openai",
        "mode": "chat"
    },
    "azure/gpt-4o": {
        "input_cost_per_token": 2.75e-06,
        "output_cost_per_token": 1.1e-05,
        "litellm_provider": "azure",
        "mode": "chat"
    },
    "text-embedding-3-small": {
        "input_cost_per_token": 2e-08,
        "litellm_provider": "openai",
        "mode": "embedding"
    },
    "dall-e-3": {
        "input_cost_per_pixel": 4.0054321e-08,
        "output_cost_per_pixel": 0.0,
        "litellm_provider": "openai",
        "mode": "image_generation"
    }
}"#;

fn table() -> PriceTable {
    PriceTable::parse(LITELLM, Path::new("prices.json")).unwrap()
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-12 * b.abs().max(1.0)
}

#[test]
fn litellms_format_loads_without_its_sample_spec() {
    let table = table();
    assert_eq!(table.len(), 4);
    assert_eq!(table.skipped(), 1, "dall-e-3 has no per-token price");
    assert!(table.lookup("sample_spec").is_none());
}

#[test]
fn a_request_costs_its_tokens_at_the_models_prices() {
    let priced = table().cost("gpt-4o", TokenUsage::new(1000, 200));
    assert!(!priced.unpriced);
    assert!(
        close(priced.cost, 1000.0 * 2.5e-06 + 200.0 * 1e-05),
        "{priced:?}"
    );
    assert!(close(
        table()
            .cost("gpt-4o-2024-08-06", TokenUsage::new(1, 0))
            .cost,
        2.5e-06
    ));
}

#[test]
fn a_missing_output_price_costs_nothing_for_output() {
    let priced = table().cost("text-embedding-3-small", TokenUsage::new(8, 0));
    assert!(close(priced.cost, 8.0 * 2e-08));
    assert!(!priced.unpriced);
}

#[test]
fn an_unknown_model_costs_zero_and_is_marked() {
    for model in ["gpt-5-unknown", "dall-e-3", "GPT-4O", "", "/"] {
        assert_eq!(
            table().cost(model, TokenUsage::new(10, 10)),
            Priced {
                cost: 0.0,
                unpriced: true
            },
            "{model}"
        );
    }
}

#[test]
fn a_provider_prefix_falls_back_to_the_bare_name_but_keeps_its_own_price() {
    let table = table();
    assert_eq!(table.lookup("openai/gpt-4o"), table.lookup("gpt-4o"));
    assert_eq!(
        table.lookup("openrouter/openai/gpt-4o"),
        table.lookup("gpt-4o")
    );
    let azure = table.lookup("azure/gpt-4o").unwrap();
    assert!(close(azure.input_cost_per_token, 2.75e-06));
    assert!(table.lookup("gpt-4o/").is_none());
}

#[test]
fn zero_tokens_cost_zero() {
    assert_eq!(
        table().cost("gpt-4o", TokenUsage::new(0, 0)),
        Priced {
            cost: 0.0,
            unpriced: false
        }
    );
}

#[test]
fn a_bad_price_names_the_file_and_the_model() {
    for (entry, field) in [
        (
            r#"{"input_cost_per_token": "0.000001"}"#,
            "input_cost_per_token",
        ),
        (
            r#"{"input_cost_per_token": 1e-6, "output_cost_per_token": -1}"#,
            "output_cost_per_token",
        ),
        (
            r#"{"output_cost_per_token": true}"#,
            "output_cost_per_token",
        ),
    ] {
        let text = format!(r#"{{"gpt-4o": {{"input_cost_per_token": 1e-6}}, "broken": {entry}}}"#);
        let err = PriceTable::parse(&text, Path::new("/etc/livegate/prices.json")).unwrap_err();
        assert!(
            matches!(&err, PricingError::Entry { model, problem: EntryProblem::BadPrice(f), .. }
                if model == "broken" && *f == field),
            "{err:?}"
        );
        assert_eq!(
            err.to_string(),
            format!(
                "/etc/livegate/prices.json: model \"broken\": {field} must be a finite, non-negative number"
            )
        );
    }
}

#[test]
fn a_file_that_is_not_a_price_table_is_refused() {
    let file = Path::new("p.json");
    assert!(matches!(
        PriceTable::parse("[]", file),
        Err(PricingError::NotAnObject { .. })
    ));
    assert!(matches!(
        PriceTable::parse("{", file),
        Err(PricingError::Json { .. })
    ));
    assert!(matches!(
        PriceTable::parse(r#"{"m": 3}"#, file),
        Err(PricingError::Entry {
            problem: EntryProblem::NotAnObject,
            ..
        })
    ));
}

#[tokio::test]
async fn a_file_is_loaded_and_a_missing_one_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("model_prices_and_context_window.json");
    std::fs::write(&path, LITELLM).unwrap();
    assert_eq!(PriceTable::load(&path).await.unwrap(), table());
    let missing = dir.path().join("missing.json");
    let err = PriceTable::load(&missing).await.unwrap_err();
    assert!(err
        .to_string()
        .starts_with(&format!("{}: cannot be read", missing.display())));
}

/// Prices of the LiteLLM run below (the same entries, registered with `litellm.register_model`).
const CACHE_PRICES: &str = r#"{
    "lg-reasoner": {"litellm_provider": "openai", "mode": "chat",
        "input_cost_per_token": 2.5e-06, "output_cost_per_token": 1e-05,
        "cache_read_input_token_cost": 1.25e-06, "output_cost_per_reasoning_token": 1.2e-05},
    "lg-plain": {"litellm_provider": "openai", "mode": "chat",
        "input_cost_per_token": 1.5e-07, "output_cost_per_token": 6e-07},
    "lg-claude": {"litellm_provider": "anthropic", "mode": "chat",
        "input_cost_per_token": 3e-06, "output_cost_per_token": 1.5e-05,
        "cache_creation_input_token_cost": 3.75e-06, "cache_read_input_token_cost": 3e-07}
}"#;

/// The cost of each usage as LiteLLM 1.110.2's own calculator gives it, to the last bit.
/// Computed with `pip install litellm` (1.110.2) in a scratch venv, running:
///
/// ```python
/// import litellm
/// from litellm.types.utils import Usage, PromptTokensDetailsWrapper, CompletionTokensDetailsWrapper
/// from litellm.llms.anthropic.chat.transformation import AnthropicConfig
/// litellm.register_model({...})             # the entries of CACHE_PRICES, as a dict
/// def openai(prompt, completion, cached=None, reasoning=None):
///     return Usage(prompt_tokens=prompt, completion_tokens=completion, total_tokens=prompt + completion,
///         prompt_tokens_details=None if cached is None else PromptTokensDetailsWrapper(cached_tokens=cached),
///         completion_tokens_details=None if reasoning is None else CompletionTokensDetailsWrapper(reasoning_tokens=reasoning))
/// anthropic = lambda u: AnthropicConfig().calculate_usage(u, reasoning_content=None)
/// for model, provider, usage in cases:   # the rows below
///     total = litellm.completion_cost(completion_response=litellm.ModelResponse(model=model, usage=usage),
///                                     model=model, custom_llm_provider=provider)
///     print(repr(total))                 # equal to the sum of litellm.cost_per_token(...)
/// ```
///
/// Anthropic's rows go through `AnthropicConfig.calculate_usage` with its raw usage
/// (`input_tokens` 12, `cache_creation_input_tokens` 1500, `cache_read_input_tokens` 2000,
/// `output_tokens` 340), which gives the prompt of 3512 the filter's meter also reports.
#[test]
fn cached_reasoning_and_cache_write_tokens_cost_what_litellm_says_to_the_last_digit() {
    let table = PriceTable::parse(CACHE_PRICES, Path::new("prices.json")).unwrap();
    let usage = |prompt, completion, cached, cache_creation, reasoning| TokenUsage {
        prompt,
        completion,
        cached,
        cache_creation,
        reasoning,
    };
    let cases = [
        // openai(2006, 300, cached=1920, reasoning=256): cached at cache_read, reasoning at its price
        (
            "lg-reasoner",
            usage(2006, 300, 1920, 0, 256),
            0.0061270000000000005,
        ),
        // openai(2006, 300): no details
        (
            "lg-reasoner",
            usage(2006, 300, 0, 0, 0),
            0.008015000000000001,
        ),
        // the same details on a model without cache or reasoning prices: input and output
        ("lg-plain", usage(2006, 300, 1920, 0, 256), 0.0004809),
        // anthropic({input 12, cache_creation 1500, cache_read 2000, output 340})
        ("lg-claude", usage(3512, 340, 2000, 1500, 0), 0.011361),
        // anthropic({input 12, output 340})
        ("lg-claude", usage(12, 340, 0, 0, 0), 0.005136),
        // openai(7, 5, cached=9, reasoning=8): details past their whole, as LiteLLM bills them
        ("lg-plain", usage(7, 5, 9, 0, 8), 6.1499999999999996e-06),
    ];
    for (model, usage, litellm) in cases {
        let priced = table.cost(model, usage);
        assert!(!priced.unpriced);
        assert_eq!(priced.cost, litellm, "{model} {usage:?}");
    }
}

#[test]
fn cache_and_reasoning_prices_are_read_and_checked_like_the_others() {
    let table = PriceTable::parse(CACHE_PRICES, Path::new("prices.json")).unwrap();
    let claude = table.lookup("lg-claude").unwrap();
    assert_eq!(claude.cache_creation_input_token_cost, Some(3.75e-06));
    assert_eq!(claude.cache_read_input_token_cost, Some(3e-07));
    assert_eq!(claude.output_cost_per_reasoning_token, None);
    let plain = table.lookup("lg-plain").unwrap();
    assert_eq!(plain.cache_read_input_token_cost, None);
    for field in [
        "cache_read_input_token_cost",
        "cache_creation_input_token_cost",
        "output_cost_per_reasoning_token",
    ] {
        let text = format!(r#"{{"m": {{"input_cost_per_token": 1e-6, "{field}": -1e-6}}}}"#);
        let err = PriceTable::parse(&text, Path::new("p.json")).unwrap_err();
        assert!(
            matches!(&err, PricingError::Entry { problem: EntryProblem::BadPrice(f), .. } if *f == field),
            "{err:?}"
        );
    }
    // A cache price alone does not price a model.
    let only_cache = r#"{"m": {"cache_read_input_token_cost": 1e-6}}"#;
    let table = PriceTable::parse(only_cache, Path::new("p.json")).unwrap();
    assert_eq!((table.len(), table.skipped()), (0, 1));
}
