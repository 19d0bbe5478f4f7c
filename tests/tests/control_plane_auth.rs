//! `POST /v1/auth/check` against a real Postgres: the contract's bodies, and the key cache
//! that carries known keys (and only those) through a database outage, for a bounded time.

mod control_plane_support;

use control_plane_support::*;
use livegate_tests::{http, internal_token};
use serde_json::json;

#[test]
fn allow_carries_the_identity_and_a_ttl_hint_per_the_contract() {
    let _serial = serial();
    let (_pg, cp) = start(&[]);
    new_team(&cp, "t");
    let k = generate(
        &cp,
        json!({"key_alias": "svc", "team_id": "t", "user_id": "u", "duration": "5s"}),
    );
    let r = auth_check(&cp, k["key"].as_str().unwrap());
    assert_eq!(r.status, 200, "{}", r.body);
    let b = r.json().unwrap();
    assert_eq!(b["decision"], "allow");
    assert_eq!(b["key_hash"], k["token"]);
    assert_eq!(
        (
            b["key_alias"].as_str(),
            b["team_id"].as_str(),
            b["user_id"].as_str()
        ),
        (Some("svc"), Some("t"), Some("u"))
    );
    let ttl = b["cache_ttl_seconds"].as_u64().unwrap();
    assert!(ttl <= 5, "the hint outlives the key: {ttl}");
    let bare = generate(&cp, json!({}));
    let b = auth_check(&cp, bare["key"].as_str().unwrap())
        .json()
        .unwrap();
    assert_eq!(
        (
            b["key_alias"].is_null(),
            b["team_id"].is_null(),
            b["user_id"].is_null()
        ),
        (true, true, true)
    );
    assert!(b["cache_ttl_seconds"].as_u64().unwrap() > 0);
    let x = http::post_raw(
        &url(&cp, "/v1/auth/check"),
        &[
            ("x-api-key", bare["key"].as_str().unwrap()),
            internal_token::header(),
        ],
        "application/json",
        "",
    )
    .unwrap();
    assert_eq!(x.status, 200);
}

#[test]
fn deny_reasons_are_invalid_blocked_and_expired_with_their_statuses() {
    let _serial = serial();
    let (_pg, cp) = start(&[]);
    let check_deny = |r: http::Response, status: u16, reason: &str| {
        assert_eq!(r.status, status, "{}", r.body);
        let b = r.json().unwrap();
        assert_eq!(
            (b["decision"].as_str(), b["reason"].as_str()),
            (Some("deny"), Some(reason)),
            "{b}"
        );
        assert_eq!(b["error"]["code"], status.to_string());
    };
    check_deny(
        auth_check(&cp, "sk-never-issued-0123456789abcdef"),
        401,
        "invalid_key",
    );
    check_deny(
        http::post_raw(
            &url(&cp, "/v1/auth/check"),
            &[internal_token::header()],
            "application/json",
            "",
        )
        .unwrap(),
        401,
        "invalid_key",
    );
    let blocked = generate(&cp, json!({"blocked": true}));
    check_deny(
        auth_check(&cp, blocked["key"].as_str().unwrap()),
        403,
        "key_blocked",
    );
    let short = generate(&cp, json!({"duration": "1s"}));
    let raw = short["key"].as_str().unwrap().to_string();
    let expired = livegate_tests::poll::until("the key to expire", RECOVERY, || {
        let r = auth_check(&cp, &raw);
        (r.status != 200).then_some(r)
    });
    check_deny(expired.unwrap(), 403, "key_expired");
}

#[test]
fn known_keys_keep_working_while_the_database_is_away_and_unknown_keys_get_503() {
    let (pg, cp) = start(&["--key-cache-fresh-secs", "0"]);
    let known = generate(&cp, json!({"key_alias": "known"}))["key"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(auth_check(&cp, &known).status, 200);
    pg.pause().unwrap();
    let (_, w) = during(&cp, || {
        wait_db(&cp, "reconnecting");
        let r = auth_check(&cp, &known);
        assert_eq!(
            r.status, 200,
            "a known key was refused during the outage: {}",
            r.body
        );
        let u = auth_check(&cp, "sk-unknown-during-outage-0123456789");
        assert_eq!(u.status, 503, "{}", u.body);
        let b = u.json().unwrap();
        assert_eq!(
            (b["decision"].as_str(), b["reason"].as_str()),
            (Some("unavailable"), Some("db_unavailable"))
        );
        assert!(u
            .header("retry-after")
            .is_some_and(|v| v.parse::<u64>().is_ok_and(|s| s > 0)));
        let admin = http::post_json(&url(&cp, "/key/generate"), ADMIN, &json!({})).unwrap();
        assert_eq!(admin.status, 503, "{}", admin.body);
        assert_eq!(admin.json().unwrap()["error"]["type"], "no_db_connection");
        let strict = http::get(&url(&cp, "/health/readiness?strict=true"), &[]).unwrap();
        assert_eq!(strict.status, 503);
        pg.resume().unwrap();
        wait_db(&cp, "connected");
    });
    assert!(w.states.iter().any(|s| s == "reconnecting"), "{w:?}");
    let stale = series(&metrics(&cp), "livegate_key_cache_stale_served_total").unwrap();
    assert!(
        stale >= 1.0,
        "the known key was not served from the cache: {stale}"
    );
    assert_eq!(auth_check(&cp, &known).status, 200);
}

#[test]
fn staleness_is_bounded_a_known_key_is_refused_with_503_once_its_record_is_too_old() {
    let (pg, cp) = start(&[
        "--key-cache-fresh-secs",
        "0",
        "--key-cache-staleness-secs",
        "2",
    ]);
    let known = generate(&cp, json!({}))["key"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(auth_check(&cp, &known).status, 200);
    pg.pause().unwrap();
    wait_db(&cp, "reconnecting");
    let refused = livegate_tests::poll::until("the cached record to go stale", RECOVERY, || {
        let r = auth_check(&cp, &known);
        assert_ne!(
            r.status, 401,
            "a known key must never be called invalid during an outage"
        );
        (r.status == 503).then_some(r)
    });
    pg.resume().unwrap();
    assert_eq!(refused.unwrap().json().unwrap()["reason"], "db_unavailable");
    wait_db(&cp, "connected");
    assert_eq!(auth_check(&cp, &known).status, 200);
}
