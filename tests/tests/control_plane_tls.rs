//! `sslmode=require` against a Postgres that refuses connections without TLS.

use std::time::Duration;

use livegate_tests::control_plane::ControlPlane;
use livegate_tests::http;
use livegate_tests::postgres::Postgres;
use serde_json::json;

#[test]
fn sslmode_require_connects_over_tls_and_serves_keys() {
    let pg = Postgres::start_with_tls().unwrap();
    let cp = ControlPlane::builder(&format!("{}?sslmode=require", pg.url()))
        .start()
        .unwrap();
    cp.wait_connected(Duration::from_secs(30)).unwrap();

    let created = http::admin_post(
        &cp.base_url(),
        livegate_tests::control_plane::TEST_MASTER_KEY,
        "/key/generate",
        &json!({"key_alias": "over-tls"}),
    )
    .unwrap();
    assert!(created["key"].is_string(), "{created}");
}

#[test]
fn without_tls_the_same_database_refuses_the_control_plane() {
    // Proves the server really demands TLS, so the test above did use it.
    let pg = Postgres::start_with_tls().unwrap();
    let cp = ControlPlane::builder(&format!("{}?sslmode=disable", pg.url()))
        .start()
        .unwrap();
    let readiness = format!("{}/health/readiness", cp.base_url());
    let refused = livegate_tests::poll::until(
        "a refused connection attempt",
        Duration::from_secs(30),
        || {
            let body = http::get(&readiness, &[]).ok()?.json().ok()?;
            body["last_error"].is_string().then_some(body)
        },
    )
    .unwrap();
    assert_ne!(refused["db"], "connected", "{refused}");
    assert!(
        !cp.log_text().contains(pg.password()),
        "the password was logged"
    );
}
