//! Key rotation with LiteLLM's routes: `POST /key/regenerate` and `POST /key/{key}/regenerate`
//! give the key a new secret (same record: alias, policy, spend, ledger), with the /key/update
//! fields applied at the same time; the old secret works until `grace_period` ends.

use std::time::Instant;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::Json;
use chrono::{DateTime, SubsecRound, Utc};
use serde_json::{json, Map, Value};

use super::error::ApiError;
use super::extract::{parse_fields, parse_json, MasterKey};
use super::keys::{key_ref, not_found, remember, shown, KeyFields};
use super::AppState;
use crate::db::{DbError, Regenerate};
use crate::key_cache::KeyState;
use crate::model::keys::{self, KeyHash};
use crate::model::rotation::grace_end;
use crate::model::KeyRecord;

/// The field of `/key/info` and of the regenerate answer that says when the key's old
/// secret (the last still in its grace period) stops working; `null`: none works.
pub const PREVIOUS_KEY_EXPIRES: &str = "previous_key_expires";

/// The fields of a regenerate beyond /key/update's.
const ROTATION_FIELDS: [&str; 3] = ["grace_period", "new_key", "new_master_key"];

type ApiResult = Result<Json<Value>, ApiError>;

pub async fn regenerate(
    State(s): State<AppState>,
    _: MasterKey,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult {
    rotate(&s, None, body).await
}

pub async fn regenerate_path(
    State(s): State<AppState>,
    _: MasterKey,
    Path(key): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult {
    rotate(&s, Some(key), body).await
}

/// What a regenerate asks beyond an update.
#[derive(Debug, Default, PartialEq)]
struct Rotation {
    grace_period: Option<String>,
    new_key: Option<String>,
}

/// Splits the body into the rotation's own fields and /key/update's (read as an update
/// reads them, every field named in its errors).
fn parse(bytes: &[u8]) -> Result<(Rotation, KeyFields), ApiError> {
    let mut object: Map<String, Value> = if bytes.iter().all(u8::is_ascii_whitespace) {
        Map::new()
    } else {
        match parse_json::<Value>(bytes)? {
            Value::Object(o) => o,
            _ => {
                return Err(ApiError::BadRequest {
                    message: "the body must be a JSON object".into(),
                    param: None,
                })
            }
        }
    };
    let mut own = ROTATION_FIELDS.map(|name| match object.remove(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(v)) => Ok(Some(v)),
        Some(_) => Err(ApiError::bad(name, format!("{name} must be a string"))),
    });
    if !matches!(own[2], Ok(None)) {
        return Err(ApiError::bad(
            "new_master_key",
            "new_master_key is not supported by livegate: the master key is the control plane's LIVEGATE_MASTER_KEY (a secret of its deployment); rotate it there",
        ));
    }
    let [grace_period, new_key, _] = std::mem::replace(&mut own, [Ok(None), Ok(None), Ok(None)]);
    let rotation = Rotation {
        grace_period: grace_period?,
        new_key: new_key?,
    };
    let rest = serde_json::to_vec(&Value::Object(object))
        .map_err(|e| ApiError::Internal(format!("re-encoding a parsed body: {e}")))?;
    Ok((rotation, parse_fields::<KeyFields>(&rest)?))
}

async fn rotate(
    s: &AppState,
    path_key: Option<String>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult {
    let bytes = body.map_err(|_| ApiError::PayloadTooLarge {
        limit: s.config.body_limit,
    })?;
    let (rotation, mut fields) = parse(&bytes)?;
    // As LiteLLM: the body's `key` if given, else the path's.
    let asked = fields.key.take().or(path_key);
    let old = key_ref("key", asked.as_deref())?;
    let now = Utc::now().trunc_subsecs(6);
    let revoke_at = grace_end(now, rotation.grace_period.as_deref())
        .map_err(|e| ApiError::bad("grace_period", format!("grace_period: {e}")))?;
    let raw = match rotation.new_key {
        Some(k) => {
            keys::validate_key(&k).map_err(|e| ApiError::bad("new_key", e.to_string()))?;
            if KeyHash::of_raw(&k) == old {
                return Err(ApiError::bad(
                    "new_key",
                    "new_key must differ from the key it replaces",
                ));
            }
            k
        }
        None => keys::generate_key().map_err(|e| ApiError::Internal(format!("OS RNG: {e}")))?,
    };
    let patch = fields.into_patch(now)?;
    let regenerate = Regenerate {
        old: old.clone(),
        new: KeyHash::of_raw(&raw),
        new_name: keys::key_name(&raw),
        revoke_at,
        patch,
    };
    let record = match s.db.regenerate_key(regenerate).await {
        // The new secret is another key's (or an old secret in its grace).
        Err(DbError::Conflict(_)) => {
            return Err(ApiError::bad("new_key", "this new_key is already in use"))
        }
        other => other?.ok_or_else(not_found)?,
    };
    remember(s, &record);
    // This replica knows the old secret's new state at once; the change log (the key's
    // change copied to it, or its tombstone) brings the same to its peers and the filters.
    s.cache.put(
        &old,
        old_secret(&record, revoke_at),
        record.version,
        Instant::now(),
    );
    tracing::info!(key_name = %record.key_name, grace_ends = ?revoke_at, "key regenerated");
    let mut answer = shown(&record, &raw);
    answer["token_id"] = json!(record.token);
    answer[PREVIOUS_KEY_EXPIRES] = json!(s
        .db
        .grace_end(&record.token)
        .await
        .ok()
        .flatten()
        .or(revoke_at));
    Ok(Json(answer))
}

/// What the old secret is after a rotation that ends its grace at `revoke_at`: the key,
/// expiring then at the latest; with no grace, gone, as a deleted key's.
fn old_secret(record: &KeyRecord, revoke_at: Option<DateTime<Utc>>) -> KeyState {
    match revoke_at {
        None => KeyState::Deleted,
        Some(end) => {
            let mut r = record.clone();
            r.expires = Some(r.expires.map_or(end, |e| e.min(end)));
            KeyState::Present(Box::new(r))
        }
    }
}

/// Adds `previous_key_expires` to a key's info.
pub(super) async fn with_grace(
    s: &AppState,
    record: &KeyRecord,
    info: &mut Value,
) -> Result<(), ApiError> {
    info[PREVIOUS_KEY_EXPIRES] = json!(s.db.grace_end(&record.token).await?);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn param(e: ApiError) -> Option<String> {
        match e {
            ApiError::BadRequest { param, .. } => param,
            other => panic!("expected a 400, got {other:?}"),
        }
    }

    #[test]
    fn a_body_splits_into_the_rotation_and_the_update() {
        let (rotation, _) =
            parse(br#"{"key": "sk-x", "grace_period": "24h", "max_budget": 5}"#).unwrap();
        assert_eq!(rotation.grace_period.as_deref(), Some("24h"));
        assert_eq!(rotation.new_key, None);
        let (rotation, _) = parse(b"").unwrap();
        assert_eq!(rotation, Rotation::default());
    }

    #[test]
    fn wrong_fields_are_refused_by_name() {
        let e = parse(br#"{"grace_period": 24}"#).unwrap_err();
        assert_eq!(param(e).as_deref(), Some("grace_period"));
        for body in [
            &br#"{"new_master_key": "sk-new-master"}"#[..],
            br#"{"new_master_key": 5}"#,
        ] {
            let e = parse(body).unwrap_err();
            assert_eq!(param(e).as_deref(), Some("new_master_key"));
        }
        let e = parse(br#"{"max_budget": "lots"}"#).unwrap_err();
        assert_eq!(param(e).as_deref(), Some("max_budget"));
        let e = parse(br#"{"tags": ["a"]}"#).unwrap_err();
        assert_eq!(param(e).as_deref(), Some("tags"));
        let e = parse(br#"{"grace": "1h"}"#).unwrap_err();
        assert_eq!(param(e).as_deref(), Some("grace"));
    }
}
