//! Revocation that holds: on 2 Envoys × 2 control planes over one Postgres, a key blocked
//! or deleted through one control plane is refused at every Envoy, and stays refused while
//! Postgres is frozen, while both control planes are stopped, and after a control plane
//! restarts with an empty cache during the outage; a good key keeps working throughout.
//! Blocking or deleting a team revokes its keys with the same guarantees.

use std::time::Duration;

use livegate_tests::fleet::{Fleet, FleetOptions};
use livegate_tests::http::{self, Response};
use livegate_tests::{internal_token, poll};
use nix::sys::signal::Signal;
use serde_json::{json, Value};

/// Short allow TTLs, so any allow the filter serves during the faults is a stale one or a
/// fresh answer, never a long-lived cache entry hiding what the control plane would say.
const FILTER_CONFIG: &str =
    r#"{"cache": {"allow_ttl_ms": 1000, "deny_ttl_ms": 200, "stale_if_error_ms": 120000}}"#;
const PATIENCE: Duration = Duration::from_secs(30);
/// Requests per key and Envoy in each fault phase.
const ROUNDS: usize = 15;

fn fleet(envoys: usize, control_planes: usize) -> Fleet {
    Fleet::start(FleetOptions {
        filter_config: FILTER_CONFIG.to_string(),
        ..FleetOptions::new(envoys, control_planes)
    })
    .unwrap()
}

fn generate(fleet: &Fleet, via: usize, body: Value) -> String {
    let created = fleet.admin_via(via, "/key/generate", &body).unwrap();
    created["key"].as_str().unwrap().to_string()
}

fn call(fleet: &Fleet, envoy: usize, key: &str) -> Response {
    let url = format!("{}/v1/models", fleet.envoys[envoy].url());
    http::get(&url, &[("authorization", &format!("Bearer {key}"))]).unwrap()
}

/// Polls every Envoy until `key` gets `status` there.
fn until_everywhere(fleet: &Fleet, key: &str, status: u16, what: &str) {
    for envoy in 0..fleet.envoys.len() {
        poll::until(&format!("{what} at Envoy {envoy}"), PATIENCE, || {
            // Each Envoy has two workers that apply the feed on their own ticks, and each
            // request (a new connection) lands on either at random: 12 in a row all land on
            // one worker once in 2,048.
            (0..12)
                .all(|_| call(fleet, envoy, key).status == status)
                .then_some(())
        })
        .unwrap();
    }
}

/// The auth check straight at control plane `k`: never a 200 for a revoked key.
fn direct_check(fleet: &Fleet, k: usize, key: &str) -> Option<u16> {
    let cp = fleet.control_plane(k).ok()?;
    let url = format!("{}/v1/auth/check", cp.base_url());
    let bearer = format!("Bearer {key}");
    let headers = [("authorization", bearer.as_str()), internal_token::header()];
    let response = http::post_raw(&url, &headers, "application/json", "").ok()?;
    Some(response.status)
}

/// For `ROUNDS` rounds at every Envoy: the good key is let in, the revoked keys never are.
fn holds(fleet: &Fleet, good: &str, revoked: &[&str], phase: &str) {
    for _ in 0..ROUNDS {
        for envoy in 0..fleet.envoys.len() {
            let answer = call(fleet, envoy, good);
            assert_eq!(
                answer.status, 200,
                "{phase}: the good key at Envoy {envoy}: {}",
                answer.body
            );
            for key in revoked {
                let answer = call(fleet, envoy, key);
                assert!(
                    !(200..300).contains(&answer.status),
                    "{phase}: a revoked key got {} at Envoy {envoy}",
                    answer.status
                );
            }
        }
    }
}

#[test]
fn revocations_reach_every_envoy_and_hold_through_outages_and_restarts() {
    let mut fleet = fleet(2, 2);
    let good = generate(&fleet, 0, json!({"key_alias": "good"}));
    let blocked = generate(&fleet, 0, json!({"key_alias": "to-block"}));
    let deleted = generate(&fleet, 1, json!({"key_alias": "to-delete"}));
    for team in ["team-to-block", "team-to-delete"] {
        fleet
            .admin_via(0, "/team/new", &json!({ "team_id": team }))
            .unwrap();
    }
    let in_blocked_team = generate(&fleet, 1, json!({"team_id": "team-to-block"}));
    let in_deleted_team = generate(&fleet, 0, json!({"team_id": "team-to-delete"}));
    for key in [
        &good,
        &blocked,
        &deleted,
        &in_blocked_team,
        &in_deleted_team,
    ] {
        until_everywhere(&fleet, key, 200, "the key to be let in");
    }

    // Revoked through one control plane each: every Envoy learns it.
    fleet
        .admin_via(1, "/key/block", &json!({"key": blocked}))
        .unwrap();
    fleet
        .admin_via(0, "/key/delete", &json!({"keys": [deleted]}))
        .unwrap();
    until_everywhere(&fleet, &blocked, 403, "the block");
    until_everywhere(&fleet, &deleted, 401, "the delete");
    fleet
        .admin_via(1, "/team/block", &json!({"team_id": "team-to-block"}))
        .unwrap();
    fleet
        .admin_via(0, "/team/delete", &json!({"team_ids": ["team-to-delete"]}))
        .unwrap();
    until_everywhere(&fleet, &in_blocked_team, 403, "the team block");
    let refusal = call(&fleet, 1, &in_blocked_team).json().unwrap();
    assert_eq!(refusal["error"]["reason"], "team_blocked", "{refusal}");
    until_everywhere(&fleet, &in_deleted_team, 401, "the team delete");
    let revoked = [
        blocked.as_str(),
        deleted.as_str(),
        in_blocked_team.as_str(),
        in_deleted_team.as_str(),
    ];

    // Every control plane has read the revocations from the log (within a poll, 250 ms):
    // the documented guarantee covers a control plane that saw the change before the
    // outage, not one whose next read the outage pre-empted.
    for k in 0..2 {
        for key in revoked {
            poll::until("the control plane to read the revocation", PATIENCE, || {
                matches!(direct_check(&fleet, k, key), Some(401 | 403)).then_some(())
            })
            .unwrap();
        }
    }

    fleet.postgres.pause().unwrap();
    holds(&fleet, &good, &revoked, "Postgres frozen");
    for k in 0..2 {
        for key in revoked {
            let status = direct_check(&fleet, k, key);
            assert!(
                status != Some(200),
                "control plane {k} allowed the revoked key {}",
                &key[..8]
            );
        }
    }

    fleet.signal_control_planes(Signal::SIGSTOP).unwrap();
    holds(
        &fleet,
        &good,
        &revoked,
        "Postgres frozen, both control planes stopped",
    );
    fleet.signal_control_planes(Signal::SIGCONT).unwrap();

    // A control plane that starts with nothing while the database is away knows neither
    // key: it answers 503 for both, never an allow.
    fleet.restart_control_plane(1).unwrap();
    poll::until("the restarted control plane to answer", PATIENCE, || {
        direct_check(&fleet, 1, &good)
    })
    .unwrap();
    for key in revoked {
        assert_eq!(direct_check(&fleet, 1, key), Some(503));
    }
    holds(
        &fleet,
        &good,
        &revoked,
        "Postgres frozen, a control plane restarted empty",
    );

    fleet.postgres.resume().unwrap();
    for k in 0..2 {
        fleet
            .control_plane(k)
            .unwrap()
            .wait_connected(PATIENCE)
            .unwrap();
    }
    fleet
        .admin_via(1, "/key/unblock", &json!({"key": blocked}))
        .unwrap();
    until_everywhere(&fleet, &blocked, 200, "the unblock");
    fleet
        .admin_via(0, "/team/unblock", &json!({"team_id": "team-to-block"}))
        .unwrap();
    until_everywhere(&fleet, &in_blocked_team, 200, "the team unblock");
    until_everywhere(&fleet, &deleted, 401, "the deleted key to stay refused");
}

#[test]
fn a_key_that_expires_while_everything_behind_envoy_is_away_is_refused_from_then_on() {
    let fleet = fleet(1, 1);
    let created = fleet
        .admin_via(0, "/key/generate", &json!({"duration": "6s"}))
        .unwrap();
    let key = created["key"].as_str().unwrap().to_string();
    let expires = chrono_free_unix_ms(created["expires"].as_str().unwrap());
    until_everywhere(&fleet, &key, 200, "the key to be let in");
    fleet.postgres.pause().unwrap();
    fleet
        .control_plane(0)
        .unwrap()
        .signal(Signal::SIGSTOP)
        .unwrap();
    // Until its expiry the key may be served stale; from its expiry on, never.
    poll::until("the key's expiry to pass", PATIENCE, || {
        (unix_ms_now() > expires).then_some(())
    })
    .unwrap();
    for _ in 0..ROUNDS {
        let answer = call(&fleet, 0, &key);
        assert_ne!(
            answer.status, 200,
            "an expired key was served: {}",
            answer.body
        );
    }
    fleet
        .control_plane(0)
        .unwrap()
        .signal(Signal::SIGCONT)
        .unwrap();
    fleet.postgres.resume().unwrap();
}

fn unix_ms_now() -> u64 {
    let since = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
    since.map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// `2026-11-25T16:51:44.607068Z` (what `/key/generate` answers) → Unix milliseconds.
fn chrono_free_unix_ms(rfc3339: &str) -> u64 {
    let out = std::process::Command::new("date")
        .args(["-u", "-d", rfc3339, "+%s%3N"])
        .output()
        .unwrap();
    String::from_utf8(out.stdout)
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}
