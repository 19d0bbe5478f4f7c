//! The user reads: `/user/info` (a key may read its own user's) and `/user/list`.

use super::*;

/// `GET /user/info?user_id=`: with the master key, any user's; with a key, its own user's
/// only (`user_id` naming it or absent), as LiteLLM lets a key read its own user.
pub async fn info(State(s): State<AppState>, caller: Caller, RawQuery(raw): RawQuery) -> ApiResult {
    let q = parse_query(raw)?;
    check_query(&q, &["user_id"], &[])?;
    let asked = query_param(&q, "user_id").filter(|u| !u.is_empty());
    let user_id = match &caller {
        Caller::Master => required("user_id", asked)?,
        Caller::Key(own) => {
            // The key's own credential must still be good, checked as /key/info checks it.
            let record = s
                .gate
                .resolve(own)
                .await
                .map_err(|_| ApiError::DbUnavailable)?;
            let record = match decide(record, Utc::now(), 0) {
                Decision::Allow { record, .. } => record,
                Decision::Deny(reason) => return Err(ApiError::Denied(reason)),
                _ => return Err(ApiError::DbUnavailable),
            };
            let own_user = record.user_id.clone();
            match (asked, own_user) {
                (Some(a), Some(o)) if a == o => a,
                (None, Some(o)) => o,
                (asked, own) => {
                    return Err(ApiError::NotAllowed(format!(
                        "key not allowed to access this user's info. user_id={}, key's user_id={}",
                        asked.as_deref().unwrap_or("None"),
                        own.as_deref().unwrap_or("None"),
                    )))
                }
            }
        }
    };
    let found =
        s.db.run(crate::protocol::GetUser {
            user_id: user_id.clone(),
        })
        .await?
        .ok_or_else(|| not_found(&user_id))?;
    let keys: Vec<Value> = found.keys.iter().map(info_of).collect();
    let teams =
        s.db.run(crate::protocol::UserTeams {
            user_id: user_id.clone(),
        })
        .await?;
    let teams: Vec<Value> = teams.iter().map(crate::http::teams::shown).collect();
    Ok(Json(json!({
        "user_id": found.user.user_id,
        "user_info": shown(&found.user),
        "keys": keys,
        "teams": teams,
    })))
}

/// `GET /user/list`: LiteLLM's pages (`page`, `page_size` 1–100, default 25), newest
/// first, filtered by `role` and `user_ids` (comma-separated).
pub async fn list(State(s): State<AppState>, _: MasterKey, RawQuery(raw): RawQuery) -> ApiResult {
    let q = parse_query(raw)?;
    check_query(
        &q,
        &["page", "page_size", "role", "user_ids"],
        &[
            "sso_user_ids",
            "user_email",
            "search",
            "team",
            "sort_by",
            "sort_order",
            "organization_ids",
        ],
    )?;
    let page = number(&q, "page", 1, u32::MAX)?;
    let page_size = number(&q, "page_size", 25, 100)?;
    let user_ids = query_param(&q, "user_ids").map(|ids| {
        ids.split(',')
            .map(str::trim)
            .filter(|id| !id.is_empty())
            .map(str::to_owned)
            .collect::<Vec<_>>()
    });
    let result =
        s.db.run(crate::protocol::ListUsers {
            page,
            size: page_size,
            role: query_param(&q, "role"),
            user_ids,
        })
        .await?;
    let users: Vec<Value> = result
        .users
        .iter()
        .map(|u| {
            let mut v = shown(u);
            let count = result.key_counts.iter().find(|(id, _)| *id == u.user_id);
            v["key_count"] = json!(count.map_or(0, |(_, n)| *n));
            let teams = result.memberships.iter().filter(|(id, _)| *id == u.user_id);
            v["teams"] = json!(teams.map(|(_, team)| team).collect::<Vec<_>>());
            v
        })
        .collect();
    Ok(Json(json!({
        "users": users,
        "total": result.total,
        "page": page,
        "page_size": page_size,
        "total_pages": result.total.div_ceil(u64::from(page_size)),
    })))
}
