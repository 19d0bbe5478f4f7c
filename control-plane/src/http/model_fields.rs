//! The per-model fields of keys and teams (`model_rpm_limit`, `model_tpm_limit`,
//! `model_max_budget`), validated where they enter: a refusal names the entry.

use std::collections::BTreeMap;

use serde_json::Value;

use super::error::ApiError;
use super::keys::check_model_name;
use crate::model::{BudgetDuration, ModelBudget};

/// `model_rpm_limit` or `model_tpm_limit` as given: an object of model names (as other
/// model fields) to whole numbers, 0 or more; a refusal names the entry
/// (`model_rpm_limit.gpt-4o`). `null` leaves the field as it is.
pub(super) fn model_limits_field(
    param: &str,
    value: Option<Value>,
) -> Result<Option<BTreeMap<String, i64>>, ApiError> {
    let Some(value) = value.filter(|v| !v.is_null()) else {
        return Ok(None);
    };
    let Value::Object(entries) = value else {
        return Err(ApiError::bad(
            param,
            format!("{param} must be an object of model names to limits"),
        ));
    };
    let mut limits = BTreeMap::new();
    for (model, limit) in entries {
        check_model_name(param, &model)?;
        let named = format!("{param}.{model}");
        let Some(n) = limit.as_i64().filter(|n| *n >= 0) else {
            let message = format!("{named} must be a whole number, 0 or more");
            return Err(ApiError::bad(&named, message));
        };
        limits.insert(model, n);
    }
    Ok(Some(limits))
}

/// `model_max_budget` as given: an object of model names (as other model fields) to
/// `{"budget_limit": <USD, 0 or more>, "time_period": <a duration: 30s, 1h, 1d>}`; a
/// refusal names the entry's field (`model_max_budget.gpt-4o.time_period`). `null` leaves
/// the field as it is.
pub(super) fn model_budgets_field(
    value: Option<Value>,
) -> Result<Option<BTreeMap<String, ModelBudget>>, ApiError> {
    const PARAM: &str = "model_max_budget";
    let Some(value) = value.filter(|v| !v.is_null()) else {
        return Ok(None);
    };
    let Value::Object(entries) = value else {
        return Err(ApiError::bad(
            PARAM,
            "model_max_budget must be an object of model names to budgets",
        ));
    };
    let mut budgets = BTreeMap::new();
    for (model, entry) in entries {
        check_model_name(PARAM, &model)?;
        let named = |field: &str| format!("{PARAM}.{model}{field}");
        let Value::Object(fields) = entry else {
            let message = format!("{} must be an object", named(""));
            return Err(ApiError::bad(&named(""), message));
        };
        if let Some(unknown) = fields
            .keys()
            .find(|k| !matches!(k.as_str(), "budget_limit" | "time_period"))
        {
            let param = named(&format!(".{unknown}"));
            return Err(ApiError::bad(&param, format!("{param} is not a field")));
        }
        let limit = fields.get("budget_limit").and_then(Value::as_f64);
        let Some(budget_limit) = limit.filter(|l| l.is_finite() && *l >= 0.0) else {
            let param = named(".budget_limit");
            let message = format!("{param} must be a number of USD, 0 or more");
            return Err(ApiError::bad(&param, message));
        };
        let period = fields.get("time_period").and_then(Value::as_str);
        let Some(time_period) = period.and_then(|p| BudgetDuration::parse(p).ok()) else {
            let param = named(".time_period");
            let message = format!("{param} must be a duration such as 30s, 1h, 1d");
            return Err(ApiError::bad(&param, message));
        };
        let budget = ModelBudget {
            budget_limit,
            time_period,
        };
        budgets.insert(model, budget);
    }
    Ok(Some(budgets))
}
