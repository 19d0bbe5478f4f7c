//! The auth check's answers: statuses, errors, and the budget refusal's message.

use super::*;

#[test]
fn every_deny_reason_pairs_a_4xx_status_with_its_own_error() {
    for reason in DenyReason::ALL {
        let error = reason.error();
        assert!(
            matches!(reason.status(), 400 | 401 | 403 | 429),
            "{reason:?}"
        );
        assert_eq!(error.code, reason.status().to_string());
        assert_eq!(error.reason.as_deref(), Some(reason.as_str()));
        assert_eq!(error.kind, reason.error_type());
    }
}

#[test]
fn an_answer_carries_the_status_of_its_decision() {
    assert_eq!(AuthCheckResponse::db_unavailable().status(), 503);
    assert_eq!(
        AuthCheckResponse::deny(DenyReason::InvalidKey).status(),
        401
    );
    assert_eq!(
        AuthCheckResponse::deny(DenyReason::KeyBlocked).status(),
        403
    );
}

#[test]
fn a_key_over_budget_reads_as_litellm_says_it() {
    let budget = Budget {
        scope: BudgetScope::Key,
        team_id: None,
        user_id: None,
        spend: 0.5,
        max_budget: 0.25,
        model: None,
    };
    let answer = AuthCheckResponse::over_budget(budget);
    assert_eq!(answer.status(), 400);
    let AuthCheckResponse::Deny { error, .. } = answer else {
        panic!("not a deny");
    };
    assert_eq!(error.kind.as_str(), "budget_exceeded");
    assert_eq!(error.code, "400");
    assert_eq!(
        error.message,
        "ExceededTokenBudget: Current spend for token: 0.5; Max Budget for Token: 0.25"
    );
}

#[test]
fn a_team_over_budget_names_the_team_and_its_numbers() {
    let error = Budget {
        scope: BudgetScope::Team,
        team_id: Some("team-a".into()),
        user_id: None,
        spend: 2.0,
        max_budget: 1.5,
        model: None,
    }
    .error();
    assert_eq!(
        error.message,
        "Budget has been exceeded! Team=team-a Current cost: 2, Max budget: 1.5"
    );
}

/// A member's budget in a team names both, as LiteLLM's team-member check does, and its
/// scope crosses the wire as `member`.
#[test]
fn a_member_over_its_budget_in_a_team_names_the_user_and_the_team() {
    let budget = Budget {
        scope: BudgetScope::Member,
        team_id: Some("team-a".into()),
        user_id: Some("bob".into()),
        spend: 3.0,
        max_budget: 2.5,
        model: None,
    };
    assert_eq!(
        budget.error().message,
        "Budget has been exceeded! User=bob in Team=team-a Current cost: 3, Max budget: 2.5"
    );
    let wire = serde_json::to_value(&budget).unwrap();
    assert_eq!(wire["scope"], "member");
    assert_eq!(serde_json::from_value::<Budget>(wire).unwrap(), budget);
}
