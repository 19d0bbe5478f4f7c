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
    let priced = table().cost("gpt-4o", 1000, 200);
    assert!(!priced.unpriced);
    assert!(
        close(priced.cost, 1000.0 * 2.5e-06 + 200.0 * 1e-05),
        "{priced:?}"
    );
    assert!(close(table().cost("gpt-4o-2024-08-06", 1, 0).cost, 2.5e-06));
}

#[test]
fn a_missing_output_price_costs_nothing_for_output() {
    let priced = table().cost("text-embedding-3-small", 8, 0);
    assert!(close(priced.cost, 8.0 * 2e-08));
    assert!(!priced.unpriced);
}

#[test]
fn an_unknown_model_costs_zero_and_is_marked() {
    for model in ["gpt-5-unknown", "dall-e-3", "GPT-4O", "", "/"] {
        assert_eq!(
            table().cost(model, 10, 10),
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
        table().cost("gpt-4o", 0, 0),
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
