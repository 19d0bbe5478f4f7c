//! `GET /model/info` and `/v1/model/info`: the model list's deployments in LiteLLM's shape
//! (`{"data": [{"model_name", "litellm_params", "model_info"}]}`), read from `--config`.
//!
//! The master key sees every deployment, its `api_base` included; a key sees the
//! deployments of the models it (and its team and user) may call, without `api_base`
//! (LiteLLM documents this view as "except api key and api base"). `api_key` is never
//! shown: the control plane holds only the variable's name and shows not even that.
//! The admin view needs no database; a key is resolved through the key cache, so a known
//! key is answered while Postgres is away and an unknown one gets 503.
//! `model_info.id` is the deployment's route, the id its spend records carry; prices are
//! the deployment's own (`model_info`) over the price file's for its model.

use axum::extract::{RawQuery, State};
use axum::Json;
use chrono::Utc;
use livegate_contract::model_list::{ModelList, Routed};
use livegate_contract::ModelAccess;
use serde_json::{json, Map, Value};

use super::error::ApiError;
use super::extract::Caller;
use super::keys::{check_query, parse_query, query_param};
use super::AppState;
use crate::gate::decision::{decide, Decision};
use crate::pricing::PriceTable;

/// The one query parameter (LiteLLM's): a deployment's `model_info.id`.
const MODEL_ID: &str = "litellm_model_id";

pub async fn info(
    State(s): State<AppState>,
    caller: Caller,
    RawQuery(raw): RawQuery,
) -> Result<Json<Value>, ApiError> {
    let q = parse_query(raw)?;
    check_query(&q, &[MODEL_ID], &[])?;
    let id = query_param(&q, MODEL_ID);
    let viewer = match caller {
        Caller::Master => Viewer::Admin,
        Caller::Key(own) => {
            let record = s
                .gate
                .resolve(&own)
                .await
                .map_err(|_| ApiError::DbUnavailable)?;
            match decide(record, Utc::now(), 0) {
                Decision::Deny(reason) => return Err(ApiError::Denied(reason)),
                Decision::Allow { record, .. } => Viewer::Key(ModelAccess {
                    models: record.models,
                    team_models: record.team.models,
                    user_models: record.user.models,
                    aliases: record.aliases,
                    team_aliases: record.team.model_aliases,
                }),
                // `decide` with no spend settles nothing else; anything but an allow
                // learns nothing.
                _ => return Err(ApiError::Forbidden),
            }
        }
    };
    let list = s.config.model_list.as_deref();
    Ok(Json(render(list, &s.ledger.prices, &viewer, id.as_deref())))
}

/// Who is asking.
pub enum Viewer {
    Admin,
    Key(ModelAccess),
}

/// The answer: every deployment the viewer may see (and, with `id`, only that one).
pub fn render(
    list: Option<&ModelList>,
    prices: &PriceTable,
    viewer: &Viewer,
    id: Option<&str>,
) -> Value {
    let data: Vec<Value> = list
        .map(|l| l.deployments.as_slice())
        .unwrap_or_default()
        .iter()
        .filter(|r| id.is_none_or(|id| r.deployment.route == id))
        .filter(|r| match viewer {
            Viewer::Admin => true,
            Viewer::Key(access) => access.check(&r.deployment.model_name).is_ok(),
        })
        .map(|r| entry(r, prices, matches!(viewer, Viewer::Admin)))
        .collect();
    json!({ "data": data })
}

fn entry(routed: &Routed, prices: &PriceTable, admin: bool) -> Value {
    let d = &routed.deployment;
    let model = format!("{}/{}", d.provider.prefix(), d.model);
    let mut params = Map::new();
    params.insert("model".into(), json!(model));
    if admin {
        params.insert("api_base".into(), json!(routed.api_base()));
    }
    if let Some(version) = &d.api_version {
        params.insert("api_version".into(), json!(version));
    }
    if let Some(timeout) = routed.timeout {
        params.insert("timeout".into(), json!(timeout));
    }
    params.insert("weight".into(), json!(d.weight));
    let mut info = Map::new();
    info.insert("id".into(), json!(d.route));
    info.insert("db_model".into(), json!(false));
    info.insert("litellm_provider".into(), json!(d.provider.prefix()));
    if let Some(price) = prices.shown(&d.route, &model) {
        info.insert(
            "input_cost_per_token".into(),
            json!(price.input_cost_per_token),
        );
        info.insert(
            "output_cost_per_token".into(),
            json!(price.output_cost_per_token),
        );
        let optional = [
            (
                "cache_read_input_token_cost",
                price.cache_read_input_token_cost,
            ),
            (
                "cache_creation_input_token_cost",
                price.cache_creation_input_token_cost,
            ),
            (
                "output_cost_per_reasoning_token",
                price.output_cost_per_reasoning_token,
            ),
        ];
        for (name, value) in optional {
            if let Some(value) = value {
                info.insert(name.into(), json!(value));
            }
        }
    }
    json!({ "model_name": d.model_name, "litellm_params": params, "model_info": info })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    const LIST: &str = "model_list:
  - model_name: gpt-4o
    litellm_params:
      model: openai/gpt-4o
      api_base: https://api.openai.com/v1
      api_key: os.environ/OPENAI_API_KEY
      timeout: 30
    model_info: { input_cost_per_token: 0.000001, output_cost_per_token: 0.000002 }
  - model_name: claude
    litellm_params:
      model: anthropic/claude-3-5-sonnet
      api_key: os.environ/ANTHROPIC_API_KEY
";

    fn table() -> (ModelList, PriceTable) {
        let list = ModelList::parse(LIST).unwrap();
        let file = r#"{"claude-3-5-sonnet": {"input_cost_per_token": 0.000003, "output_cost_per_token": 0.000015,
            "cache_creation_input_token_cost": 0.00000375}}"#;
        let prices = PriceTable::parse(file, Path::new("p.json"))
            .unwrap()
            .with_deployments(&list)
            .unwrap();
        (list, prices)
    }

    #[test]
    fn the_admin_sees_every_deployment_with_its_prices_and_never_its_key() {
        let (list, prices) = table();
        let body = render(Some(&list), &prices, &Viewer::Admin, None);
        let data = body["data"].as_array().unwrap();
        assert_eq!(data.len(), 2);
        assert_eq!(data[0]["model_name"], "gpt-4o");
        assert_eq!(data[0]["litellm_params"]["model"], "openai/gpt-4o");
        assert_eq!(
            data[0]["litellm_params"]["api_base"],
            "https://api.openai.com/v1"
        );
        assert_eq!(data[0]["litellm_params"]["timeout"], 30.0);
        assert_eq!(data[0]["model_info"]["id"], "livegate_deployment_0");
        assert_eq!(data[0]["model_info"]["input_cost_per_token"], 0.000001);
        assert_eq!(
            data[1]["litellm_params"]["api_base"],
            "https://api.anthropic.com"
        );
        assert_eq!(
            data[1]["model_info"]["cache_creation_input_token_cost"],
            0.00000375
        );
        let text = body.to_string();
        assert!(
            !text.contains("api_key") && !text.contains("OPENAI_API_KEY"),
            "{text}"
        );
        let one = render(
            Some(&list),
            &prices,
            &Viewer::Admin,
            Some("livegate_deployment_1"),
        );
        assert_eq!(one["data"].as_array().unwrap().len(), 1);
        assert_eq!(one["data"][0]["model_name"], "claude");
    }

    #[test]
    fn a_key_sees_its_own_models_without_api_base() {
        let (list, prices) = table();
        let access = ModelAccess {
            models: vec!["claude".into()],
            ..ModelAccess::default()
        };
        let body = render(Some(&list), &prices, &Viewer::Key(access), None);
        let data = body["data"].as_array().unwrap();
        assert_eq!(data.len(), 1);
        assert_eq!(data[0]["model_name"], "claude");
        assert!(
            data[0]["litellm_params"].get("api_base").is_none(),
            "{body}"
        );
        let team_bars = ModelAccess {
            team_models: vec!["gpt-4o".into()],
            ..ModelAccess::default()
        };
        let body = render(Some(&list), &prices, &Viewer::Key(team_bars), None);
        assert_eq!(body["data"].as_array().unwrap().len(), 1);
        assert_eq!(body["data"][0]["model_name"], "gpt-4o");
        let open = render(
            Some(&list),
            &prices,
            &Viewer::Key(ModelAccess::default()),
            None,
        );
        assert_eq!(open["data"].as_array().unwrap().len(), 2);
        assert_eq!(
            render(None, &prices, &Viewer::Admin, None),
            json!({"data": []})
        );
    }
}
