//! `--config` (`LIVEGATE_CONFIG`): the operator's model list, LiteLLM's `config.yaml`, the
//! same file Envoy's deployments are rendered from. Read and validated once at start (before
//! the runtime runs: nothing async waits on it) with the contract's parser, so an invalid
//! file is a start-up error naming the field and never replaces a running one; a changed
//! file takes effect on restart. The control plane uses it for prices and `/model/info`;
//! it never resolves `os.environ/…` (it needs no provider key) and never shows one.

use std::sync::Arc;

use clap::Args;
use livegate_contract::model_list::ModelList;

use super::flags::flags;
use super::{invalid, ConfigError};
use crate::pricing::PriceTable;

flags! {
    CONFIG: long = "config", env = "LIVEGATE_CONFIG";
}

/// The largest model list read (a list of thousands of deployments is far below it).
const MAX_BYTES: u64 = 8 << 20;

#[derive(Debug, Args)]
pub struct ModelListFlags {
    /// LiteLLM's `config.yaml` (its `model_list`): deployments' prices (`model_info`) and
    /// `/model/info`. Read at start; a change takes effect on restart.
    #[arg(long = CONFIG.long, env = CONFIG.env)]
    pub config: Option<String>,
}

impl ModelListFlags {
    /// The parsed list, when one is given. Runs before the runtime starts.
    pub fn load(self) -> Result<Option<Arc<ModelList>>, ConfigError> {
        let Some(path) = self.config.filter(|p| !p.trim().is_empty()) else {
            return Ok(None);
        };
        let size = std::fs::metadata(&path)
            .map_err(|e| invalid(CONFIG.named, format!("{path}: cannot be read: {e}")))?
            .len();
        if size > MAX_BYTES {
            return Err(invalid(
                CONFIG.named,
                format!("{path}: larger than {MAX_BYTES} bytes"),
            ));
        }
        let text = std::fs::read_to_string(&path)
            .map_err(|e| invalid(CONFIG.named, format!("{path}: cannot be read: {e}")))?;
        let list =
            ModelList::parse(&text).map_err(|e| invalid(CONFIG.named, format!("{path}: {e}")))?;
        Ok(Some(Arc::new(list)))
    }
}

/// The price table with the deployments' own prices; an unpriceable deployment is a
/// start-up error naming `--config`.
pub fn with_deployment_prices(
    prices: &PriceTable,
    list: Option<&ModelList>,
) -> Result<PriceTable, ConfigError> {
    match list {
        None => Ok(prices.clone()),
        Some(list) => prices
            .clone()
            .with_deployments(list)
            .map_err(|e| invalid(CONFIG.named, e.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(path: &std::path::Path) -> Result<Option<Arc<ModelList>>, ConfigError> {
        ModelListFlags {
            config: Some(path.display().to_string()),
        }
        .load()
    }

    #[test]
    fn a_model_list_is_read_at_start_and_an_invalid_one_names_the_flag_and_the_field() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("config.yaml");
        std::fs::write(
            &file,
            "model_list:\n  - model_name: m\n    litellm_params: { model: openai/m, api_key: os.environ/UNSET_HERE_AND_FINE }\n",
        )
        .unwrap();
        // The control plane needs no provider key: an unset variable is not its concern.
        let list = load(&file).unwrap().unwrap();
        assert_eq!(list.deployments.len(), 1);
        std::fs::write(
            &file,
            "model_list:\n  - model_name: m\n    litellm_params: { model: openai/m }\n    model_info: { max_tokens: 5 }\n",
        )
        .unwrap();
        let e = load(&file).unwrap_err();
        assert_eq!(e.flag, "--config (LIVEGATE_CONFIG)");
        assert!(
            e.reason.contains("model_list[0].model_info") && e.reason.contains("max_tokens"),
            "{e}"
        );
        let e = load(&dir.path().join("absent.yaml")).unwrap_err();
        assert!(e.reason.contains("cannot be read"), "{e}");
        let none = ModelListFlags { config: None }.load().unwrap();
        assert!(none.is_none());
    }

    #[test]
    fn a_deployment_without_a_price_anywhere_is_a_start_up_error() {
        let list = ModelList::parse(
            "model_list:\n  - model_name: m\n    litellm_params: { model: openai/m }\n    model_info: { input_cost_per_token: 0.1 }\n",
        )
        .unwrap();
        let e = with_deployment_prices(&PriceTable::default(), Some(&list)).unwrap_err();
        assert_eq!(e.flag, CONFIG.named);
        assert!(e.reason.contains("output_cost_per_token"), "{e}");
    }
}
