//! A replica cut off from Postgres cannot revive a revoked key: with two control planes
//! behind one Envoy, one reaching Postgres through a relay that is then blackholed, a key
//! revoked through the other stays refused after the filter has forgotten the revocation
//! (its hold made 6 s here): the cut-off replica stops letting keys in from its records
//! once it has not read the change log for longer than its bound (3 s here, below the
//! filter's hold, as the control plane checks at start), and answers 503 instead.

#![allow(clippy::unwrap_used, clippy::panic)] // a test file: failures are panics

use std::net::SocketAddr;
use std::time::Duration;

use livegate_tests::control_plane::ControlPlane;
use livegate_tests::demo_upstream::DemoUpstream;
use livegate_tests::envoy::{Endpoint, Envoy, EnvoyConfig};
use livegate_tests::http::{self, Response};
use livegate_tests::lab::relay::Relay;
use livegate_tests::postgres::Postgres;
use livegate_tests::process::Scratch;
use livegate_tests::{internal_token, poll};
use serde_json::json;

/// The filter holds a revocation for its stale window: 6 s. Denies are not kept long, so
/// a refused key is asked about again at once.
const FILTER_CONFIG: &str =
    r#"{"cache": {"allow_ttl_ms": 500, "deny_ttl_ms": 200, "stale_if_error_ms": 6000}}"#;
/// The control planes' side of the same relation: silence 3 s < hold 6 s.
const BOUNDS: [&str; 6] = [
    "--max-change-log-silence-secs",
    "3",
    "--filter-revocation-hold-secs",
    "6",
    "--key-cache-fresh-secs",
    "1",
];
const PATIENCE: Duration = Duration::from_secs(60);

fn control_plane(database_url: &str, dir: &Scratch, name: &str) -> ControlPlane {
    let log_dir = dir.path().join(name);
    std::fs::create_dir_all(&log_dir).unwrap();
    let mut builder = ControlPlane::builder(database_url).log_dir(log_dir);
    for arg in BOUNDS {
        builder = builder.arg(arg);
    }
    let cp = builder.start().unwrap();
    cp.wait_connected(PATIENCE).unwrap();
    cp
}

fn call(envoy: &Envoy, key: &str) -> Response {
    let bearer = format!("Bearer {key}");
    http::get(
        &format!("{}/v1/models", envoy.url()),
        &[("authorization", &bearer)],
    )
    .unwrap()
}

/// The auth check straight at one control plane.
fn direct_check(cp: &ControlPlane, key: &str) -> Response {
    let url = format!("{}/v1/auth/check", cp.base_url());
    let bearer = format!("Bearer {key}");
    let headers = [("authorization", bearer.as_str()), internal_token::header()];
    http::post_raw(&url, &headers, "application/json", "").unwrap()
}

#[test]
fn a_replica_cut_off_past_the_filters_hold_refuses_instead_of_reviving_a_revoked_key() {
    let scratch = Scratch::new("livegate-cut-off-").unwrap();
    let postgres = Postgres::start().unwrap();
    let relay = Relay::start(SocketAddr::from(([127, 0, 0, 1], postgres.port()))).unwrap();
    let cut_off = control_plane(
        &postgres.url_via(relay.addr().port()),
        &scratch,
        "cp-cut-off",
    );
    let healthy = control_plane(&postgres.url(), &scratch, "cp-healthy");
    let upstream = DemoUpstream::start(None, scratch.path()).unwrap();
    let mut config = EnvoyConfig::on_free_ports(
        Endpoint::loopback(cut_off.port()),
        Endpoint::loopback(upstream.port()),
    )
    .unwrap();
    config.more_control_planes = vec![Endpoint::loopback(healthy.port())];
    config.filter_config = FILTER_CONFIG.to_string();
    let envoy_dir = scratch.path().join("envoy");
    std::fs::create_dir_all(&envoy_dir).unwrap();
    let envoy = Envoy::start(config, &envoy_dir).unwrap();

    let admin = |path: &str, body: serde_json::Value| {
        http::admin_post(
            &healthy.base_url(),
            livegate_tests::control_plane::TEST_MASTER_KEY,
            path,
            &body,
        )
        .unwrap()
    };
    let key = admin("/key/generate", json!({}))["key"]
        .as_str()
        .unwrap()
        .to_string();
    // Both replicas and the filter know the key as good.
    assert_eq!(direct_check(&cut_off, &key).status, 200);
    assert_eq!(direct_check(&healthy, &key).status, 200);
    assert_eq!(call(&envoy, &key).status, 200);

    relay.blackhole();
    admin("/key/block", json!({"key": key}));
    // The revocation reaches the filter through the healthy replica's feed.
    poll::until("the block at the filter", PATIENCE, || {
        (call(&envoy, &key).status == 403).then_some(())
    })
    .unwrap();

    // The cut-off replica still holds the key's good record; once the change log has been
    // silent past its bound it no longer lets the key in from it.
    poll::until("the cut-off replica to refuse", PATIENCE, || {
        let answer = direct_check(&cut_off, &key);
        assert_ne!(
            answer.status, 403,
            "it cannot know of the block: {}",
            answer.body
        );
        (answer.status == 503).then_some(answer)
    })
    .map(|answer| {
        let body = answer.json().unwrap();
        assert_eq!(body["error"]["type"], "no_db_connection", "{body}");
    })
    .unwrap();
    // Its readiness (on its own port) says how long the change log has been silent.
    let readiness = http::get(&format!("{}/health/readiness", cut_off.base_url()), &[]).unwrap();
    let silent = readiness.json().unwrap()["change_log_read_ms_ago"]
        .as_u64()
        .unwrap();
    assert!(silent > 3_000, "{}", readiness.body);
    let readiness = http::get(&format!("{}/health/readiness", healthy.base_url()), &[]).unwrap();
    let heard = readiness.json().unwrap()["change_log_read_ms_ago"]
        .as_u64()
        .unwrap();
    assert!(heard < silent, "{}", readiness.body);

    // Past the filter's hold (shown by the cut-off replica being asked about the key and
    // answering 503, which the filter passes on having no allow to fall back on), the key
    // is never let in, whichever replica Envoy asks.
    let misses = || {
        envoy
            .prometheus_counter("livegate_cache_miss_total")
            .unwrap()
    };
    let before = misses();
    poll::until(
        "the cut-off replica asked after the filter's hold",
        PATIENCE,
        || {
            let answer = call(&envoy, &key);
            assert_ne!(
                answer.status, 200,
                "a revoked key let in again: {}",
                answer.body
            );
            (answer.status == 503 && misses() > before).then_some(())
        },
    )
    .unwrap();
    for _ in 0..40 {
        let answer = call(&envoy, &key);
        assert!(
            answer.status == 403 || answer.status == 503,
            "a revoked key let in again: {} {}",
            answer.status,
            answer.body
        );
    }
    // A good key still works through the healthy replica.
    let good = admin("/key/generate", json!({}))["key"]
        .as_str()
        .unwrap()
        .to_string();
    poll::until("a good key served", PATIENCE, || {
        (call(&envoy, &good).status == 200).then_some(())
    })
    .unwrap();
    relay.heal();
}
