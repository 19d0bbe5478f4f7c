use super::*;
use crate::key_cache::tests::record;
use chrono::TimeZone;

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 1, 31, 12, 0, 0).unwrap()
}

#[test]
fn a_budget_duration_sets_the_first_reset_from_now() {
    let p = patch(Some(10.0), Some(5.0), Some("30d".into()), t0()).unwrap();
    assert_eq!(
        p.budget_duration.as_ref().map(|d| d.secs()),
        Some(30 * 86_400)
    );
    assert_eq!(
        p.budget_reset_at,
        Some(Utc.with_ymd_and_hms(2026, 3, 2, 12, 0, 0).unwrap())
    );
    let p = patch(None, None, Some("30s".into()), t0()).unwrap();
    assert_eq!(
        p.budget_reset_at,
        Some(t0() + chrono::Duration::seconds(30))
    );
    let p = patch(Some(0.0), None, None, t0()).unwrap();
    assert_eq!((p.max_budget, p.budget_reset_at), (Some(0.0), None));
}

#[test]
fn bad_budget_fields_are_refused_by_name() {
    let param = |r: Result<BudgetPolicy, BudgetFieldError>| r.unwrap_err().param;
    assert_eq!(param(patch(Some(-1.0), None, None, t0())), "max_budget");
    assert_eq!(param(patch(Some(f64::NAN), None, None, t0())), "max_budget");
    assert_eq!(param(patch(None, Some(-0.5), None, t0())), "soft_budget");
    assert_eq!(
        param(patch(None, None, Some("1w".into()), t0())),
        "budget_duration"
    );
    assert_eq!(
        param(patch(None, None, Some("0s".into()), t0())),
        "budget_duration"
    );
    let huge = format!("{}d", i64::MAX / 86_400);
    assert_eq!(
        param(patch(None, None, Some(huge), t0())),
        "budget_duration"
    );
}

#[test]
fn a_crossing_is_from_under_the_budget_to_at_or_over_it() {
    assert!(crosses(0.9, 0.1, Some(1.0)));
    assert!(crosses(0.5, 2.0, Some(1.0)));
    assert!(!crosses(0.5, 0.1, Some(1.0)));
    // Already over: the crossing was logged when it happened.
    assert!(!crosses(1.0, 0.5, Some(1.0)));
    assert!(!crosses(0.5, 100.0, None));
}

#[test]
fn spend_at_the_budget_refuses_and_a_budget_of_zero_admits_nothing() {
    let mut r = record("sk-a");
    assert_eq!(exceeded(&r, pending(0.0, 0.0)), None);
    r.budget.max_budget = Some(0.0);
    let b = exceeded(&r, pending(0.0, 0.0)).unwrap();
    assert_eq!(
        (b.scope, b.spend, b.max_budget),
        (BudgetScope::Key, 0.0, 0.0)
    );
    r.budget.max_budget = Some(1.0);
    r.spend = 0.75;
    assert_eq!(exceeded(&r, pending(0.0, 0.0)), None);
    r.spend = 1.0;
    assert!(exceeded(&r, pending(0.0, 0.0)).is_some());
}

#[test]
fn spooled_cost_counts_toward_the_budget() {
    let mut r = record("sk-a");
    r.budget.max_budget = Some(1.0);
    r.spend = 0.75;
    let b = exceeded(&r, pending(0.25, 0.0)).unwrap();
    assert_eq!(b.spend, 1.0);
}

#[test]
fn the_keys_own_budget_is_checked_before_its_teams() {
    let mut r = record("sk-a");
    r.team_id = Some("team-a".into());
    r.team.max_budget = Some(5.0);
    r.team.spend = 4.0;
    assert_eq!(exceeded(&r, pending(0.0, 0.0)), None);
    let b = exceeded(&r, pending(0.0, 1.0)).unwrap();
    assert_eq!(
        (b.scope, b.team_id.as_deref(), b.spend),
        (BudgetScope::Team, Some("team-a"), 5.0)
    );
    r.budget.max_budget = Some(0.5);
    r.spend = 0.5;
    assert_eq!(
        exceeded(&r, pending(0.0, 1.0)).unwrap().scope,
        BudgetScope::Key
    );
}

fn pending(key: f64, team: f64) -> Pending {
    Pending {
        key,
        user: 0.0,
        team,
        member: 0.0,
    }
}

/// The tighter of key, user and team: each budget refuses on its own, the user's naming
/// the user as LiteLLM does, with the replica's pending spend counted in.
#[test]
fn a_users_budget_refuses_each_of_its_keys() {
    let mut r = record("sk-u");
    r.user_id = Some("alice".into());
    r.user.max_budget = Some(2.0);
    r.user.spend = 1.5;
    r.team.max_budget = Some(1.0);
    r.team.spend = 1.0;
    assert_eq!(
        exceeded(&r, pending(0.0, 0.0)).unwrap().scope,
        BudgetScope::Team
    );
    r.team.max_budget = None;
    assert_eq!(exceeded(&r, pending(0.0, 0.0)), None);
    let at = Pending {
        user: 0.5,
        ..pending(0.0, 0.0)
    };
    let b = exceeded(&r, at).unwrap();
    assert_eq!(b.scope, BudgetScope::User);
    assert_eq!(b.user_id.as_deref(), Some("alice"));
    assert_eq!(b.spend, 2.0);
    assert!(b
        .error()
        .message
        .starts_with("ExceededBudget: User=alice over budget. Spend=2, Budget=2"));
    // The key's own budget is checked first.
    r.budget.max_budget = Some(0.1);
    r.spend = 0.2;
    assert_eq!(exceeded(&r, at).unwrap().scope, BudgetScope::Key);
}

/// A membership's `max_budget_in_team` refuses the member's keys in that team (not its
/// keys elsewhere, nor a key with no user), with LiteLLM's message, pending spend counted.
#[test]
fn a_members_budget_in_a_team_refuses_its_keys_in_that_team() {
    let mut r = record("sk-m");
    r.user_id = Some("bob".into());
    r.team_id = Some("t1".into());
    r.member.max_budget = Some(1.0);
    r.member.spend = 0.75;
    assert_eq!(exceeded(&r, pending(0.0, 0.0)), None);
    let at = Pending {
        member: 0.25,
        ..pending(0.0, 0.0)
    };
    let b = exceeded(&r, at).unwrap();
    assert_eq!(b.scope, BudgetScope::Member);
    assert_eq!(
        (b.user_id.as_deref(), b.team_id.as_deref(), b.spend),
        (Some("bob"), Some("t1"), 1.0)
    );
    assert_eq!(
        b.error().message,
        "Budget has been exceeded! User=bob in Team=t1 Current cost: 1, Max budget: 1"
    );
    assert_eq!(b.error().kind, livegate_contract::ErrorType::BudgetExceeded);
    // A key without a user (or a team) carries no membership, whatever its columns say.
    r.user_id = None;
    assert_eq!(exceeded(&r, at), None);
}

#[test]
fn a_model_budgets_periods_are_aligned_to_the_epoch() {
    let budget = crate::model::ModelBudget {
        budget_limit: 5.0,
        time_period: crate::model::BudgetDuration::parse("1d").unwrap(),
    };
    let day = 86_400_000;
    assert_eq!(budget.period_start_ms(3 * day + 5), 3 * day);
    assert_eq!(budget.period_start_ms(3 * day), 3 * day);
    assert_eq!(budget.period_start_ms(4 * day - 1), 3 * day);
}
