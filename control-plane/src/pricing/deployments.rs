//! A deployment's own prices: its `model_info` in the model list (`--config`), each price
//! over the price file's entry for the deployment's model, for that deployment alone.
//!
//! A deployment without `model_info` has no entry here: its requests are priced by model
//! name as without a model list. One with `model_info` whose model the price file does not
//! list must give both `input_cost_per_token` and `output_cost_per_token` (refused at start
//! otherwise: a missing price would bill 0 quietly). A cache or reasoning price it does not
//! give is the price file's, else, as in the file, the input (output) price.

use livegate_contract::model_list::ModelList;

use super::{Price, PriceTable};

/// Why a deployment's prices cannot be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {problem}")]
pub struct DeploymentPriceError {
    pub field: String,
    pub problem: String,
}

impl PriceTable {
    /// The table with each deployment's `model_info` prices (see the module's comment).
    pub fn with_deployments(
        mut self,
        list: &ModelList,
    ) -> Result<PriceTable, DeploymentPriceError> {
        for (i, routed) in list.deployments.iter().enumerate() {
            let info = routed.model_info;
            if info.is_empty() {
                continue;
            }
            let d = &routed.deployment;
            let model = format!("{}/{}", d.provider.prefix(), d.model);
            let base = self.lookup(&model);
            let (input, output) =
                match (base, info.input_cost_per_token, info.output_cost_per_token) {
                    (_, Some(input), Some(output)) => (input, output),
                    (Some(base), input, output) => (
                        input.unwrap_or(base.input_cost_per_token),
                        output.unwrap_or(base.output_cost_per_token),
                    ),
                    (None, input, _) => {
                        let missing = if input.is_none() {
                            "input_cost_per_token"
                        } else {
                            "output_cost_per_token"
                        };
                        return Err(DeploymentPriceError {
                            field: format!("model_list[{i}].model_info"),
                            problem: format!(
                                "gives no {missing} and the price file has no entry for {model:?}"
                            ),
                        });
                    }
                };
            let price = Price {
                input_cost_per_token: input,
                output_cost_per_token: output,
                cache_read_input_token_cost: info
                    .cache_read_input_token_cost
                    .or(base.and_then(|b| b.cache_read_input_token_cost)),
                cache_creation_input_token_cost: info
                    .cache_creation_input_token_cost
                    .or(base.and_then(|b| b.cache_creation_input_token_cost)),
                output_cost_per_reasoning_token: info
                    .output_cost_per_reasoning_token
                    .or(base.and_then(|b| b.output_cost_per_reasoning_token)),
            };
            self.deployments.insert(d.route.clone(), price);
        }
        Ok(self)
    }

    /// The prices of the deployment whose route is `route`, when it has its own.
    pub fn deployment(&self, route: &str) -> Option<Price> {
        self.deployments.get(route).copied()
    }

    /// The prices `/model/info` shows for a deployment: its own, else the price file's for
    /// its model (`provider/model`, then without the prefix).
    pub fn shown(&self, route: &str, model: &str) -> Option<Price> {
        self.deployment(route).or_else(|| self.lookup(model))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pricing::TokenUsage;
    use std::path::Path;

    const LIST: &str = "model_list:
  - model_name: own
    litellm_params: { model: openai/gpt-4o }
    model_info: { input_cost_per_token: 0.000001, output_cost_per_token: 0.000002, cache_read_input_token_cost: 0.0000005 }
  - model_name: over-file
    litellm_params: { model: openai/gpt-4o }
    model_info: { output_cost_per_token: 0.00003 }
  - model_name: plain
    litellm_params: { model: openai/gpt-4o }
";

    fn file() -> PriceTable {
        let text = r#"{"gpt-4o": {"input_cost_per_token": 0.0000025, "output_cost_per_token": 0.00001,
            "cache_read_input_token_cost": 0.00000125, "output_cost_per_reasoning_token": 0.00004}}"#;
        PriceTable::parse(text, Path::new("prices.json")).unwrap()
    }

    #[test]
    fn a_deployment_s_model_info_prices_it_over_the_price_file_field_by_field() {
        let table = file()
            .with_deployments(&ModelList::parse(LIST).unwrap())
            .unwrap();
        let own = table.deployment("livegate_deployment_0").unwrap();
        assert_eq!(own.input_cost_per_token, 0.000001);
        assert_eq!(own.output_cost_per_token, 0.000002);
        assert_eq!(own.cache_read_input_token_cost, Some(0.0000005));
        // Not given: the file's.
        assert_eq!(own.output_cost_per_reasoning_token, Some(0.00004));
        let over = table.deployment("livegate_deployment_1").unwrap();
        assert_eq!(over.input_cost_per_token, 0.0000025);
        assert_eq!(over.output_cost_per_token, 0.00003);
        assert_eq!(table.deployment("livegate_deployment_2"), None);
        // 10 prompt tokens of which 4 cached, 5 completion: LiteLLM's arithmetic.
        let usage = TokenUsage {
            cached: 4,
            ..TokenUsage::new(10, 5)
        };
        let expected = 6.0 * 0.000001 + 4.0 * 0.0000005 + 5.0 * 0.000002;
        assert_eq!(own.cost(usage), expected);
        let shown = table
            .shown("livegate_deployment_2", "openai/gpt-4o")
            .unwrap();
        assert_eq!(shown.input_cost_per_token, 0.0000025);
    }

    #[test]
    fn a_deployment_priced_by_neither_is_refused_naming_what_is_missing() {
        let list = ModelList::parse(
            "model_list:
  - model_name: x
    litellm_params: { model: openai/unlisted }
  - model_name: y
    litellm_params: { model: openai/unlisted }
    model_info: { input_cost_per_token: 0.1 }
",
        )
        .unwrap();
        let error = file().with_deployments(&list).unwrap_err().to_string();
        assert!(
            error.contains("model_list[1].model_info") && error.contains("output_cost_per_token"),
            "{error}"
        );
        assert!(PriceTable::default().with_deployments(&list).is_err());
    }
}
