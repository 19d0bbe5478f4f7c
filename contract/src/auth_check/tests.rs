use super::*;

#[test]
fn every_deny_reason_pairs_a_4xx_status_with_its_own_error() {
    for reason in DenyReason::ALL {
        let error = reason.error();
        assert!(matches!(reason.status(), 401 | 403), "{reason:?}");
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
