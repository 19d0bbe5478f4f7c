//! The columns of the policies keys, users and teams share (`model::{BudgetPolicy,
//! Limits}`) and of the team's and the user's policy a key carries (`model::TeamPolicy`,
//! the `team_*` columns; `model::UserPolicy`, the `user_*` columns), written once for
//! every statement that reads or writes them.

use std::collections::BTreeMap;
use std::sync::LazyLock;

use tokio_postgres::types::{Json, ToSql};
use tokio_postgres::Row;

use super::queries::column;
use crate::model::{
    BudgetDuration, BudgetPolicy, Limits, MemberPolicy, PerModelLimits, TeamPolicy, UserPolicy,
};
use crate::protocol::EngineError;

/// A key's or a team's own policy columns, in the order `PolicyParams::params` binds them.
pub(super) const POLICY: [&str; 8] = [
    "max_budget",
    "soft_budget",
    "budget_duration",
    "budget_duration_secs",
    "budget_reset_at",
    "rpm_limit",
    "tpm_limit",
    "max_parallel_requests",
];

/// The team's columns a key carries (as `team_<column>`), with the value a key without a
/// team reads (`None`: NULL).
const TEAM_POLICY: [(&str, Option<&str>); 10] = [
    ("blocked", Some("false")),
    ("models", Some("'{}'::text[]")),
    ("max_budget", None),
    ("spend", Some("0")),
    ("rpm_limit", None),
    ("tpm_limit", None),
    ("max_parallel_requests", None),
    ("model_aliases", Some("'{}'::jsonb")),
    ("model_rpm_limit", Some("'{}'::jsonb")),
    ("model_tpm_limit", Some("'{}'::jsonb")),
];

/// The user's columns a key carries (as `user_<column>`), with the value a key without a
/// user row reads (`None`: NULL).
const USER_POLICY: [(&str, Option<&str>); 6] = [
    ("models", Some("'{}'::text[]")),
    ("max_budget", None),
    ("spend", Some("0")),
    ("rpm_limit", None),
    ("tpm_limit", None),
    ("max_parallel_requests", None),
];

/// The membership's columns a key carries (as `member_<column>`), with the value a key
/// without a membership reads (`None`: NULL).
const MEMBER_POLICY: [(&str, Option<&str>); 2] = [("max_budget", None), ("spend", Some("0"))];

/// The relation `key_with_policies` reads memberships from: the table as it is.
pub(super) const MEMBERS: &str = "livegate_team_members";

/// A relation of memberships with none in it: keys logged as no member's.
pub(super) const NO_MEMBERS: &str = "(SELECT * FROM livegate_team_members WHERE false)";

/// `column = COALESCE($n, column)` for each policy column, numbered from `first`: a patch's
/// `None` leaves a column as it is.
pub(super) fn updates(first: usize) -> String {
    POLICY
        .iter()
        .enumerate()
        .map(|(i, c)| format!("{c} = COALESCE(${}, {c})", first + i))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The team's policy as a key's `team_*` columns, from the team row `t` (NULL when the key
/// has none, with `defaults`).
pub(super) fn team_columns(t: &str, defaults: bool) -> String {
    TEAM_POLICY
        .iter()
        .map(|(c, default)| match default.filter(|_| defaults) {
            Some(d) => format!("COALESCE({t}.{c}, {d}) AS team_{c}"),
            None => format!("{t}.{c} AS team_{c}"),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// The user's policy as a key's `user_*` columns, from the user row `u` (open when the key
/// names no user row).
pub(super) fn user_columns(u: &str) -> String {
    USER_POLICY
        .iter()
        .map(|(c, default)| match default {
            Some(d) => format!("COALESCE({u}.{c}, {d}) AS user_{c}"),
            None => format!("{u}.{c} AS user_{c}"),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// The membership's policy as a key's `member_*` columns, from the membership row `m`.
fn member_columns(m: &str) -> String {
    MEMBER_POLICY
        .iter()
        .map(|(c, default)| match default {
            Some(d) => format!("COALESCE({m}.{c}, {d}) AS member_{c}"),
            None => format!("{m}.{c} AS member_{c}"),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// The written key rows `w` with the policies they carry, as the view shows them: the team
/// from `team_row` (a relation with the team's columns, joined on `team_id`), the user
/// from `user_row` (joined on `user_id`) and the membership from `member_row` (joined on
/// both; [`MEMBERS`] unless the statement writes it). Every statement that logs a key
/// builds its record here, so no change-log record lacks a policy column.
pub(super) fn key_with_policies(team_row: &str, user_row: &str, member_row: &str) -> String {
    format!(
        "SELECT w.*, {team}, {user}, {member} FROM w
            LEFT JOIN {team_row} t ON t.team_id = w.team_id
            LEFT JOIN {user_row} u ON u.user_id = w.user_id
            LEFT JOIN {member_row} m ON m.team_id = w.team_id AND m.user_id = w.user_id",
        team = team_columns("t", true),
        user = user_columns("u"),
        member = member_columns("m"),
    )
}

/// Whether the user's policy differs between its rows `old` and `new` (SQL).
pub(super) fn user_policy_changed(old: &str, new: &str) -> String {
    policy_changed(&USER_POLICY, old, new)
}

/// Whether the team's policy differs between its rows `old` and `new` (SQL).
pub(super) fn team_policy_changed(old: &str, new: &str) -> String {
    policy_changed(&TEAM_POLICY, old, new)
}

fn policy_changed(policy: &[(&str, Option<&str>)], old: &str, new: &str) -> String {
    policy
        .iter()
        .map(|(c, _)| format!("{old}.{c} IS DISTINCT FROM {new}.{c}"))
        .collect::<Vec<_>>()
        .join(" OR ")
}

/// The `team_*` column names, as the view and `COLUMNS` list them.
pub(super) static TEAM_COLUMN_NAMES: LazyLock<String> =
    LazyLock::new(|| prefixed_names(&TEAM_POLICY, "team"));

/// The `user_*` column names, as the view and `COLUMNS` list them.
pub(super) static USER_COLUMN_NAMES: LazyLock<String> =
    LazyLock::new(|| prefixed_names(&USER_POLICY, "user"));

/// The `member_*` column names, as the view and `COLUMNS` list them.
pub(super) static MEMBER_COLUMN_NAMES: LazyLock<String> =
    LazyLock::new(|| prefixed_names(&MEMBER_POLICY, "member"));

fn prefixed_names(policy: &[(&str, Option<&str>)], prefix: &str) -> String {
    policy
        .iter()
        .map(|(c, _)| format!("{prefix}_{c}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The CTEs that give the keys of the owner just written (the CTE `written`, one row
/// whose `owner_column` the keys carry; `o` is its row before the write) new versions
/// when `changed` (the policy they carry changed), and log each as `p`: the keys with the
/// policies of `policies` (the view would still show the old ones inside the statement).
pub(super) fn relog_keys(
    owner_column: &str,
    written: &str,
    changed: &str,
    policies: &str,
) -> String {
    format!(
        "
    w AS (UPDATE livegate_keys SET version = nextval('livegate_key_changes_seq_seq')
          WHERE {owner_column} = (SELECT {owner_column} FROM {written}) AND EXISTS (SELECT 1 FROM o, {written} WHERE {changed})
          RETURNING *),
    p AS ({policies}),
    c AS (INSERT INTO livegate_key_changes (seq, token, record)
          SELECT version, token, to_jsonb(p) - 'version' FROM p)"
    )
}

/// The policy columns' names, comma-separated.
pub(super) static POLICY_COLUMN_NAMES: LazyLock<String> = LazyLock::new(|| POLICY.join(", "));

/// A budget and limits ready to bind in `POLICY`'s order.
pub(super) struct PolicyParams<'a> {
    budget: &'a BudgetPolicy,
    limits: &'a Limits,
    duration: Option<&'a str>,
    duration_secs: Option<i64>,
}

impl<'a> PolicyParams<'a> {
    pub(super) fn new(budget: &'a BudgetPolicy, limits: &'a Limits) -> PolicyParams<'a> {
        let duration = budget.budget_duration.as_ref();
        PolicyParams {
            budget,
            limits,
            duration: duration.map(BudgetDuration::as_str),
            duration_secs: duration.map(BudgetDuration::secs),
        }
    }

    pub(super) fn params(&self) -> [&(dyn ToSql + Sync); 8] {
        [
            &self.budget.max_budget,
            &self.budget.soft_budget,
            &self.duration,
            &self.duration_secs,
            &self.budget.budget_reset_at,
            &self.limits.rpm_limit,
            &self.limits.tpm_limit,
            &self.limits.max_parallel_requests,
        ]
    }
}

/// `$first, $first+1, …` for `n` parameters.
pub(super) fn placeholders(first: usize, n: usize) -> String {
    (first..first + n)
        .map(|i| format!("${i}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// A row's budget columns; a stored duration that no longer parses is a corrupt row.
pub(super) fn budget(row: &Row) -> Result<BudgetPolicy, EngineError> {
    let duration: Option<String> = column(row, "budget_duration")?;
    let budget_duration = duration
        .map(|d| {
            BudgetDuration::parse(&d)
                .map_err(|_| EngineError::Query("budget_duration holds no duration".into()))
        })
        .transpose()?;
    Ok(BudgetPolicy {
        max_budget: column(row, "max_budget")?,
        soft_budget: column(row, "soft_budget")?,
        budget_duration,
        budget_reset_at: column(row, "budget_reset_at")?,
    })
}

/// A row's limits, its own (`prefix` "") or its team's (`prefix` "team_").
pub(super) fn limits(row: &Row, prefix: &str) -> Result<Limits, EngineError> {
    Ok(Limits {
        rpm_limit: column(row, &format!("{prefix}rpm_limit"))?,
        tpm_limit: column(row, &format!("{prefix}tpm_limit"))?,
        max_parallel_requests: column(row, &format!("{prefix}max_parallel_requests"))?,
    })
}

/// A row's per-model limits, its own (`prefix` "") or its team's (`prefix` "team_").
pub(super) fn model_limits(row: &Row, prefix: &str) -> Result<PerModelLimits, EngineError> {
    let map = |name: &str| -> Result<BTreeMap<String, i64>, EngineError> {
        Ok(column::<Json<BTreeMap<String, i64>>>(row, &format!("{prefix}{name}"))?.0)
    };
    Ok(PerModelLimits {
        model_rpm_limit: map("model_rpm_limit")?,
        model_tpm_limit: map("model_tpm_limit")?,
    })
}

/// A key row's `team_*` columns.
pub(super) fn team_policy(row: &Row) -> Result<TeamPolicy, EngineError> {
    Ok(TeamPolicy {
        blocked: column(row, "team_blocked")?,
        models: column(row, "team_models")?,
        max_budget: column(row, "team_max_budget")?,
        spend: column(row, "team_spend")?,
        limits: limits(row, "team_")?,
        model_aliases: column::<Json<BTreeMap<String, String>>>(row, "team_model_aliases")?.0,
        model_limits: model_limits(row, "team_")?,
    })
}

/// A key row's `user_*` columns.
pub(super) fn user_policy(row: &Row) -> Result<UserPolicy, EngineError> {
    Ok(UserPolicy {
        models: column(row, "user_models")?,
        max_budget: column(row, "user_max_budget")?,
        spend: column(row, "user_spend")?,
        limits: limits(row, "user_")?,
    })
}

/// A key row's `member_*` columns.
pub(super) fn member_policy(row: &Row) -> Result<MemberPolicy, EngineError> {
    Ok(MemberPolicy {
        max_budget: column(row, "member_max_budget")?,
        spend: column(row, "member_spend")?,
    })
}

/// Whether a statement that logs keys writes every policy column a key carries (`team_*`,
/// `user_*`, `member_*`): a record logged without one would read as an open policy.
#[cfg(test)]
pub(super) fn names_every_carried_column(sql: &str) -> bool {
    TEAM_POLICY
        .iter()
        .map(|(c, _)| format!("AS team_{c}"))
        .chain(USER_POLICY.iter().map(|(c, _)| format!("AS user_{c}")))
        .chain(MEMBER_POLICY.iter().map(|(c, _)| format!("AS member_{c}")))
        .all(|column| sql.contains(&column))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_patch_leaves_each_policy_column_it_does_not_name() {
        assert!(updates(10).starts_with("max_budget = COALESCE($10, max_budget), "));
        assert!(
            updates(10).ends_with("max_parallel_requests = COALESCE($17, max_parallel_requests)")
        );
    }

    #[test]
    fn a_key_without_a_team_reads_an_open_policy() {
        let sql = team_columns("t", true);
        assert!(sql.starts_with("COALESCE(t.blocked, false) AS team_blocked"));
        assert!(sql.contains("t.max_budget AS team_max_budget"));
        assert!(!team_columns("t", false).contains("COALESCE"));
        assert_eq!(TEAM_COLUMN_NAMES.split(", ").count(), TEAM_POLICY.len());
    }

    /// The column lists name exactly the fields of the types they fill.
    #[test]
    fn the_column_lists_match_the_policy_types() {
        let fields = |v: serde_json::Value| -> Vec<String> {
            let mut names: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
            names.sort();
            names
        };
        let mut team: Vec<String> = TEAM_POLICY.iter().map(|(c, _)| c.to_string()).collect();
        team.sort();
        assert_eq!(fields(serde_json::json!(TeamPolicy::default())), team);
        let mut user: Vec<String> = USER_POLICY.iter().map(|(c, _)| c.to_string()).collect();
        user.sort();
        assert_eq!(fields(serde_json::json!(UserPolicy::default())), user);
        assert_eq!(USER_COLUMN_NAMES.split(", ").count(), USER_POLICY.len());
        let mut member: Vec<String> = MEMBER_POLICY.iter().map(|(c, _)| c.to_string()).collect();
        member.sort();
        assert_eq!(fields(serde_json::json!(MemberPolicy::default())), member);
        let mut own: Vec<String> = POLICY
            .iter()
            .filter(|c| **c != "budget_duration_secs")
            .map(|c| c.to_string())
            .collect();
        own.sort();
        let mut both = fields(serde_json::json!(BudgetPolicy::default()));
        both.extend(fields(serde_json::json!(Limits::default())));
        both.sort();
        assert_eq!(both, own);
    }
}
