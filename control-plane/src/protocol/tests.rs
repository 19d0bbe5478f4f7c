//! Every operation through the codec both ways, and replies that do not match their request.

use bytes::BytesMut;
use serde_json::json;
use tokio_util::codec::{Decoder, Encoder};

use super::*;
use crate::model::keys::KeyHash;
use crate::model::{KeyChange, KeyFilter, KeyPage, KeyPatch, TeamPatch, TeamWrite, TeamsDeleted};

/// Through the length-delimited codec and back: the bytes the other side reads.
fn through_the_pipe(frame: bytes::Bytes) -> BytesMut {
    let mut codec = codec();
    let mut buf = BytesMut::new();
    codec.encode(frame, &mut buf).unwrap();
    let out = codec.decode(&mut buf).unwrap().unwrap();
    assert!(buf.is_empty());
    out
}

/// Sends `op` as the supervisor does and reads it as the engine does, then answers `reply`
/// as the engine does and reads it as the supervisor does: both arrive as they left.
fn round_trip<O: Op + Clone>(op: O, reply: O::Reply) -> &'static str {
    let sent = serde_json::to_value(op.clone().into_request()).unwrap();
    let bytes = encode(&RequestFrame {
        id: 7,
        request: op.clone().into_request(),
    })
    .unwrap();
    let back: RequestFrame = serde_json::from_slice(&through_the_pipe(bytes)).unwrap();
    assert_eq!(back.id, 7);
    assert_eq!(back.request.name(), O::NAME);
    assert_eq!(
        serde_json::to_value(&back.request).unwrap(),
        sent,
        "{}",
        O::NAME
    );
    assert_eq!(sent["op"], O::NAME, "the request names its operation");

    let bytes = encode(&ResponseFrame {
        id: 7,
        result: op.answer(&reply),
    })
    .unwrap();
    let back: ResponseFrame = serde_json::from_slice(&through_the_pipe(bytes)).unwrap();
    assert_eq!(back.id, 7);
    let answer = back.result.unwrap();
    assert_eq!(answer.op, O::NAME, "the reply names its operation");
    let decoded = O::read_answer(&answer).unwrap();
    assert_eq!(
        serde_json::to_value(&decoded).unwrap(),
        serde_json::to_value(&reply).unwrap(),
        "{}",
        O::NAME
    );
    O::NAME
}

fn token() -> KeyHash {
    KeyHash::of_raw("sk-round-trip")
}

fn key() -> KeyRecord {
    serde_json::from_value(json!({
        "token": token(), "key_name": "sk-...trip", "key_alias": "alias", "team_id": "t1",
        "user_id": null, "models": ["gpt-4o"], "aliases": {"fast": "gpt-4o-mini"},
        "max_budget": 10.5, "budget_duration": "30d", "metadata": {"owner": "ops"},
        "blocked": false, "spend": 1.25, "expires": null,
        "created_at": "2026-01-02T03:04:05Z", "updated_at": "2026-01-02T03:04:06Z",
        "version": 42, "team_models": ["gpt-4o"], "rpm_limit": 60, "team_tpm_limit": 1000,
        "user_models": ["gpt-4o"], "user_max_budget": 5.0, "user_spend": 0.5,
        "user_rpm_limit": 7, "model_rpm_limit": {"gpt-4o": 3},
        "team_model_tpm_limit": {"gpt-4o": 500}
    }))
    .unwrap()
}

fn team() -> TeamRecord {
    serde_json::from_value(json!({
        "team_id": "t1", "team_alias": "one", "models": [], "metadata": {}, "blocked": false,
        "spend": 2.5, "max_budget": 100.0, "rpm_limit": 10,
        "created_at": "2026-01-02T03:04:05Z", "updated_at": "2026-01-02T03:04:06Z"
    }))
    .unwrap()
}

fn user() -> crate::model::UserRecord {
    serde_json::from_value(json!({
        "user_id": "u1", "user_email": "u1@example.com", "user_role": "internal_user",
        "models": ["gpt-4o"], "metadata": {}, "spend": 0.5, "max_budget": 5.0,
        "tpm_limit": 100, "created_at": "2026-01-02T03:04:05Z",
        "updated_at": "2026-01-02T03:04:06Z"
    }))
    .unwrap()
}

fn ledger_entry() -> crate::model::LedgerEntry {
    serde_json::from_value(json!({
        "request_id": "req-1", "key_hash": token(), "key_alias": null, "team_id": "t1",
        "model_requested": "gpt-4o", "model_returned": "gpt-4o-2024-08-06",
        "prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15, "usage_known": true,
        "status": 200, "streamed": true, "start_time_ms": 1_700_000_000_000u64,
        "end_time_ms": 1_700_000_000_900u64, "cost": 0.001, "unpriced": false
    }))
    .unwrap()
}

fn settings() -> EngineSettings {
    serde_json::from_value(json!({
        "database_url": "postgres://livegate@127.0.0.1:5432/livegate", "pool_size": 4,
        "connect_timeout_ms": 1, "keepalive_idle_ms": 2, "keepalive_interval_ms": 3,
        "keepalive_retries": 4, "tcp_user_timeout_ms": 5, "statement_timeout_ms": 6
    }))
    .unwrap()
}

fn spend_filter() -> SpendFilter {
    SpendFilter {
        key_hash: Some(token().to_string()),
        start_date: chrono::NaiveDate::from_ymd_opt(2026, 1, 2),
        limit: 50,
        ..SpendFilter::default()
    }
}

#[test]
fn every_operation_and_its_reply_cross_the_pipe_unchanged() {
    let now: chrono::DateTime<chrono::Utc> = "2026-01-02T03:04:05Z".parse().unwrap();
    let window = {
        let mut w = WindowLog::new();
        w.add(1_000, 3, 1_000);
        w
    };
    let mut seen = vec![
        round_trip(
            Init {
                settings: settings(),
            },
            Ready {
                database: Some("db-1".into()),
            },
        ),
        round_trip(Ping {}, ()),
        round_trip(GetKey { token: token() }, Some(key())),
        round_trip(InsertKey { record: key() }, key()),
        round_trip(
            ListKeys {
                filter: KeyFilter {
                    team_id: Some("t1".into()),
                    page: 2,
                    size: 10,
                    ..KeyFilter::default()
                },
            },
            KeyPage {
                keys: vec![key()],
                total: 11,
            },
        ),
        round_trip(
            UpdateKey {
                token: token(),
                patch: KeyPatch {
                    blocked: Some(true),
                    ..KeyPatch::default()
                },
            },
            None,
        ),
        round_trip(
            DeleteKeys {
                tokens: vec![token()],
                aliases: vec!["alias".into()],
            },
            vec![(token(), 43)],
        ),
        round_trip(
            ChangesSince {
                after: 40,
                recent_ms: 5_000,
                limit: 100,
            },
            vec![
                KeyChange {
                    seq: 41,
                    token: token(),
                    record: Some(Box::new(key())),
                },
                KeyChange {
                    seq: 42,
                    token: token(),
                    record: None,
                },
            ],
        ),
        round_trip(
            RegenerateKey {
                old: token(),
                new: KeyHash::of_raw("sk-the-new-secret-0123456789abcdef"),
                new_name: "sk-...cdef".into(),
                revoke_at: Some(now),
                patch: KeyPatch {
                    models: Some(vec!["gpt-4o".into()]),
                    ..KeyPatch::default()
                },
            },
            Some(key()),
        ),
        round_trip(EndGraces {}, 2),
        round_trip(GraceEnd { token: token() }, Some(now)),
        round_trip(LastChange {}, 42),
        round_trip(PruneChanges { keep_ms: 60_000 }, 3),
        round_trip(InsertTeam { team: team() }, team()),
        round_trip(
            InsertUser { user: user() },
            crate::model::UserWrite {
                user: user(),
                keys: vec![key()],
            },
        ),
        round_trip(
            GetUser {
                user_id: "u1".into(),
            },
            Some(crate::model::UserAndKeys {
                user: user(),
                keys: vec![key()],
            }),
        ),
        round_trip(
            ListUsers {
                page: 2,
                size: 25,
                role: Some("internal_user".into()),
                user_ids: Some(vec!["u1".into()]),
            },
            crate::model::UserPage {
                users: vec![user()],
                key_counts: vec![("u1".into(), 2)],
                memberships: vec![("u1".into(), "t1".into())],
                total: 26,
            },
        ),
        round_trip(
            UpdateUser {
                user_id: "u1".into(),
                patch: crate::model::UserPatch {
                    models: Some(vec!["gpt-4o".into()]),
                    ..Default::default()
                },
            },
            Some(crate::model::UserWrite {
                user: user(),
                keys: vec![],
            }),
        ),
        round_trip(
            DeleteUsers {
                user_ids: vec!["u1".into()],
            },
            crate::model::UsersDeleted {
                user_ids: vec!["u1".into()],
                keys: vec![(token(), 43)],
            },
        ),
        round_trip(
            AddMember {
                team_id: "t1".into(),
                member: crate::model::NewMember {
                    who: crate::model::MemberRef::Email("a@example.com".into()),
                    user_email: None,
                    new_user_id: "u2".into(),
                    role: crate::model::MemberRole::Admin,
                    max_budget_in_team: Some(2.5),
                },
            },
            Some(member_write()),
        ),
        round_trip(
            UpdateMember {
                team_id: "t1".into(),
                who: crate::model::MemberRef::UserId("u1".into()),
                patch: crate::model::MemberPatch {
                    role: Some(crate::model::MemberRole::User),
                    max_budget_in_team: Some(1.0),
                },
            },
            Some(member_write()),
        ),
        round_trip(
            DeleteMember {
                team_id: "t1".into(),
                who: crate::model::MemberRef::UserId("u1".into()),
            },
            None::<crate::model::MemberWrite>,
        ),
        round_trip(
            TeamMembers {
                team_id: "t1".into(),
            },
            vec![member_write().member],
        ),
        round_trip(
            UserTeams {
                user_id: "u1".into(),
            },
            vec![team()],
        ),
        round_trip(
            GetTeam {
                team_id: "t1".into(),
                with_keys: true,
            },
            Some(TeamAndKeys {
                team: team(),
                keys: vec![key()],
            }),
        ),
        round_trip(
            ListTeams { page: 1, size: 20 },
            TeamList {
                teams: vec![team()],
                total: 1,
            },
        ),
        round_trip(
            UpdateTeam {
                team_id: "t1".into(),
                patch: TeamPatch {
                    models: Some(vec!["gpt-4o".into()]),
                    ..TeamPatch::default()
                },
            },
            Some(TeamWrite {
                team: team(),
                keys: vec![key()],
            }),
        ),
        round_trip(
            DeleteTeams {
                team_ids: vec!["t1".into()],
            },
            TeamsDeleted {
                team_ids: vec!["t1".into()],
                keys: vec![(token(), 44)],
            },
        ),
        round_trip(
            InsertSpend {
                rows: vec![ledger_entry()],
                database: Some("db-1".into()),
            },
            SpendInserted {
                inserted: 1,
                unpriced: 0,
                duplicates: vec!["req-0".into()],
            },
        ),
        round_trip(
            DeadLetterSpend {
                letters: vec![DeadLetter {
                    request_id: "req-2".into(),
                    data: b"{not json".to_vec(),
                    reason: "unreadable".into(),
                }],
                database: None,
            },
            1,
        ),
        round_trip(
            SpendLogs {
                filter: spend_filter(),
            },
            vec![ledger_entry()],
        ),
        round_trip(
            SpendSummary {
                filter: spend_filter(),
            },
            vec![SpendGroup {
                day: chrono::NaiveDate::from_ymd_opt(2026, 1, 2).unwrap(),
                key_hash: token().to_string(),
                model: "gpt-4o".into(),
                spend: 0.75,
            }],
        ),
        round_trip(GlobalSpend {}, 12.5),
        round_trip(
            KeyModelSpend {
                token: token(),
                model: "gpt-4o".into(),
                since: now,
            },
            0.5,
        ),
        round_trip(
            ResetBudgets { now },
            BudgetsReset {
                keys: 2,
                teams: 1,
                users: 3,
            },
        ),
        round_trip(
            SwapRateWindow {
                scope: "key:abc:rpm".into(),
                expected: 3,
                window: window.clone(),
            },
            WindowSwap::Current { window, version: 4 },
        ),
    ];
    round_trip(
        SwapRateWindow {
            scope: "key:abc:rpm".into(),
            expected: 0,
            window: WindowLog::new(),
        },
        WindowSwap::Swapped { version: 1 },
    );
    seen.sort_unstable();
    let mut all = Request::NAMES.to_vec();
    all.sort_unstable();
    assert_eq!(
        seen, all,
        "every operation in the table is round-tripped here"
    );
}

#[test]
fn a_reply_to_another_operation_is_a_protocol_error() {
    let answer = LastChange {}.answer(&5).unwrap();
    match GetKey::read_answer(&answer) {
        Err(EngineError::Protocol(m)) => {
            assert!(m.contains("GetKey") && m.contains("LastChange"), "{m}")
        }
        other => panic!("expected a protocol error, got {other:?}"),
    }
}

#[test]
fn a_reply_of_the_wrong_shape_is_a_protocol_error() {
    for reply in ["42", "\"x\"", "{\"token\": 1}", "[]"] {
        let answer = Answer {
            op: "GetKey".into(),
            reply: RawValue::from_string(reply.into()).unwrap(),
        };
        assert!(
            matches!(GetKey::read_answer(&answer), Err(EngineError::Protocol(_))),
            "{reply}"
        );
    }
    // A unit reply is not a number: the heartbeat's `()` is not `LastChange`'s `i64`.
    let pong = Ping {}.answer(&()).unwrap();
    let renamed = Answer {
        op: "LastChange".into(),
        reply: pong.reply,
    };
    assert!(matches!(
        LastChange::read_answer(&renamed),
        Err(EngineError::Protocol(_))
    ));
}

#[test]
fn the_wire_names_the_operation_and_errors_keep_their_shape() {
    let request = serde_json::to_value(GetKey { token: token() }.into_request()).unwrap();
    assert_eq!(request, json!({"op": "GetKey", "token": token()}));
    let error = ResponseFrame {
        id: 1,
        result: Err(EngineError::Conflict("key_alias".into())),
    };
    assert_eq!(
        serde_json::to_value(&error).unwrap(),
        json!({"id": 1, "result": {"Err": {"kind": "conflict", "message": "key_alias"}}})
    );
    assert!(Ping {}.into_request().is_heartbeat());
    assert!(!LastChange {}.into_request().is_heartbeat());
}

fn member_write() -> crate::model::MemberWrite {
    let at = chrono::DateTime::from_timestamp(1_700_000_000, 0).unwrap_or_default();
    crate::model::MemberWrite {
        member: crate::model::Membership {
            team_id: "t1".into(),
            user_id: "u1".into(),
            user_email: Some("a@example.com".into()),
            role: crate::model::MemberRole::Admin,
            max_budget_in_team: Some(2.5),
            spend: 0.5,
            created_at: at,
            updated_at: at,
        },
        keys: vec![key()],
    }
}
