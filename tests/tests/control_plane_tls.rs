//! TLS to a Postgres that refuses connections without it: `sslmode=require` encrypts,
//! `verify-ca` and `verify-full` also authenticate the server against `sslrootcert`.

use std::time::Duration;

use livegate_tests::control_plane::ControlPlane;
use livegate_tests::http;
use livegate_tests::postgres::{Postgres, TestCa};
use serde_json::{json, Value};

/// The database's URL with libpq TLS options; `host` is the name the certificate is
/// checked against (the server's certificate names `localhost`), the connection goes to
/// 127.0.0.1 whatever the name.
fn url(pg: &Postgres, host: &str, options: &str) -> String {
    pg.url().replacen("@127.0.0.1:", &format!("@{host}:"), 1)
        + &format!("?hostaddr=127.0.0.1&{options}")
}

fn sslrootcert(path: &std::path::Path) -> String {
    format!("sslrootcert={}", path.display())
}

/// The control plane connects and serves keys.
fn assert_connects(database_url: &str) {
    let cp = ControlPlane::builder(database_url).start().unwrap();
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

/// The control plane keeps refusing the server: readiness on its own port says not
/// connected, and `last_error` says why. Returns that readiness.
fn assert_refused(database_url: &str, password: &str) -> Value {
    let cp = ControlPlane::builder(database_url).start().unwrap();
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
    assert!(!cp.log_text().contains(password), "the password was logged");
    refused
}

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

#[test]
fn verify_full_with_the_servers_ca_and_its_name_connects() {
    let pg = Postgres::start_with_tls().unwrap();
    let ca = pg.ca_cert().unwrap().to_path_buf();
    assert_connects(&url(
        &pg,
        "localhost",
        &format!("sslmode=verify-full&{}", sslrootcert(&ca)),
    ));
}

#[test]
fn verify_full_refuses_a_server_signed_by_another_ca() {
    let pg = Postgres::start_with_tls().unwrap();
    let scratch = tempfile::tempdir().unwrap();
    let other = scratch.path().join("other-ca.crt");
    std::fs::write(&other, TestCa::new("another CA").unwrap().pem()).unwrap();
    let refused = assert_refused(
        &url(
            &pg,
            "localhost",
            &format!("sslmode=verify-full&{}", sslrootcert(&other)),
        ),
        pg.password(),
    );
    let error = refused["last_error"].as_str().unwrap();
    assert!(error.contains("certificate"), "{refused}");
    assert!(error.to_lowercase().contains("issuer"), "{refused}");
}

#[test]
fn verify_full_refuses_a_certificate_that_does_not_name_the_host() {
    let pg = Postgres::start_with_tls().unwrap();
    let ca = pg.ca_cert().unwrap().to_path_buf();
    // The certificate names localhost; the URL says 127.0.0.1.
    let refused = assert_refused(
        &url(
            &pg,
            "127.0.0.1",
            &format!("sslmode=verify-full&{}", sslrootcert(&ca)),
        ),
        pg.password(),
    );
    let error = refused["last_error"].as_str().unwrap();
    assert!(error.contains("certificate"), "{refused}");
    assert!(error.to_lowercase().contains("name"), "{refused}");
}

#[test]
fn verify_ca_checks_the_ca_but_not_the_host_name() {
    let pg = Postgres::start_with_tls().unwrap();
    let ca = pg.ca_cert().unwrap().to_path_buf();
    assert_connects(&url(
        &pg,
        "127.0.0.1",
        &format!("sslmode=verify-ca&{}", sslrootcert(&ca)),
    ));
}
