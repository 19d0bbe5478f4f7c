//! Key management against a real Postgres: LiteLLM shapes, validation, the master key,
//! cache invalidation, migrations under concurrent start, and no secret in the logs.

mod control_plane_support;

use control_plane_support::*;
use livegate_contract::KeyHash;
use livegate_tests::control_plane::ControlPlane;
use livegate_tests::postgres::Postgres;
use livegate_tests::{http, internal_token};
use serde_json::json;

fn sha256_hex(s: &str) -> String {
    KeyHash::of_raw(s).to_string()
}

fn assert_error(r: &http::Response, status: u16, param: Option<&str>) {
    assert_eq!(r.status, status, "{}", r.body);
    let e = &r.json().unwrap()["error"];
    assert_eq!(e["code"], status.to_string(), "{}", r.body);
    assert!(
        e["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{}",
        r.body
    );
    assert!(e["type"].is_string(), "{}", r.body);
    assert_eq!(e["param"].as_str(), param, "{}", r.body);
}

#[test]
fn generate_returns_a_litellm_shaped_key_that_is_stored_only_as_its_sha256() {
    let (pg, cp) = start(&[]);
    new_team(&cp, "t1");
    let body = json!({"key_alias": "alice", "duration": "24h", "team_id": "t1", "user_id": "u1",
        "models": ["gpt-4o"], "aliases": {"fast": "gpt-4o"}, "metadata": {"env": "test"}});
    let k = generate(&cp, body);
    let raw = k["key"].as_str().unwrap();
    assert!(raw.starts_with("sk-") && raw.len() >= 25, "{raw}");
    assert!(
        raw[3..]
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
        "{raw}"
    );
    assert_eq!(k["token"], sha256_hex(raw));
    assert_eq!(k["key_name"], format!("sk-...{}", &raw[raw.len() - 4..]));
    assert_eq!(
        (
            k["key_alias"].as_str(),
            k["team_id"].as_str(),
            k["user_id"].as_str()
        ),
        (Some("alice"), Some("t1"), Some("u1"))
    );
    assert_eq!(k["models"], json!(["gpt-4o"]));
    assert_eq!(k["aliases"], json!({"fast": "gpt-4o"}));
    assert!(k["max_budget"].is_null(), "{k}");
    assert_eq!(k["metadata"], json!({"env": "test"}));
    assert_eq!(
        (k["blocked"].as_bool(), k["spend"].as_f64()),
        (Some(false), Some(0.0))
    );
    assert!(
        k["expires"].as_str().is_some_and(|e| e.contains('T')),
        "{k}"
    );
    assert!(k["created_at"].is_string());
    let stored = psql(&pg, "SELECT count(*) FROM livegate_keys WHERE row_to_json(livegate_keys)::text LIKE '%' || 'sk-' || '%' AND token <> ''");
    let raw_rows = psql(
        &pg,
        &format!(
            "SELECT count(*) FROM livegate_keys WHERE row_to_json(livegate_keys)::text LIKE '%{}%'",
            &raw[3..]
        ),
    );
    assert_eq!(raw_rows, "0", "the raw key is in the database");
    assert_eq!(stored, "1", "key_name (sk-...) is the only sk- text stored");
    assert_eq!(
        psql(&pg, "SELECT token FROM livegate_keys"),
        sha256_hex(raw)
    );
}

#[test]
fn a_caller_chosen_key_is_accepted_once_and_bad_input_names_its_field() {
    let (_pg, cp) = start(&[]);
    let chosen = "sk-callerchosen_0123456789abcdef";
    assert_eq!(
        generate(&cp, json!({"key": chosen, "key_alias": "c"}))["key"],
        chosen
    );
    assert_error(
        &post(&cp, "/key/generate", json!({"key": chosen})),
        400,
        Some("key"),
    );
    assert_error(
        &post(&cp, "/key/generate", json!({"key_alias": "c"})),
        400,
        Some("key_alias"),
    );
    assert_error(
        &post(&cp, "/key/generate", json!({"key": "sk-short"})),
        400,
        Some("key"),
    );
    assert_error(
        &post(
            &cp,
            "/key/generate",
            json!({"key": "pk-0123456789012345678901234"}),
        ),
        400,
        Some("key"),
    );
    assert_error(
        &post(&cp, "/key/generate", json!({"duration": "3 weeks"})),
        400,
        Some("duration"),
    );
    assert_error(
        &post(&cp, "/key/generate", json!({"models": "gpt-4o"})),
        400,
        Some("models"),
    );
    assert_error(
        &post(&cp, "/key/generate", json!({"max_budget": -1})),
        400,
        Some("max_budget"),
    );
    assert_error(
        &post(&cp, "/key/generate", json!({"metadata": [1]})),
        400,
        Some("metadata"),
    );
    let malformed = http::post_raw(
        &url(&cp, "/key/generate"),
        ADMIN,
        "application/json",
        "{\"key_alias\": ",
    )
    .unwrap();
    assert_eq!(malformed.status, 400, "{}", malformed.body);
    assert!(
        malformed.json().unwrap()["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("malformed JSON"),
        "{}",
        malformed.body
    );
    let huge = format!("{{\"metadata\": {{\"x\": \"{}\"}}}}", "a".repeat(200_000));
    let r = http::post_raw(&url(&cp, "/key/generate"), ADMIN, "application/json", &huge).unwrap();
    assert_error(&r, 413, None);
    assert_eq!(
        slow_oversized_post(&cp, 900_000),
        413,
        "a client still sending a too-large body gets the 413, not a reset"
    );
    for d in ["30s", "30m", "24h", "7d"] {
        assert!(
            generate(&cp, json!({"duration": d}))["expires"].is_string(),
            "{d}"
        );
    }
    assert!(generate(&cp, json!({}))["expires"].is_null());
}

#[test]
fn admin_endpoints_need_the_master_key() {
    let (_pg, cp) = start(&[]);
    let failures = || series(&metrics(&cp), "livegate_master_key_failures_total");
    assert_eq!(failures(), Some(0.0));
    let posts = [
        "/key/generate",
        "/key/update",
        "/key/delete",
        "/key/block",
        "/key/unblock",
    ];
    for p in posts {
        let none = http::post_json(&url(&cp, p), &[], &json!({})).unwrap();
        assert_error(&none, 401, None);
        let wrong = http::post_json(
            &url(&cp, p),
            &[(
                "authorization",
                "Bearer sk-master-test-0123456789abcdef0123456789abcdeX",
            )],
            &json!({}),
        )
        .unwrap();
        assert_error(&wrong, 403, None);
    }
    for p in ["/key/list", "/key/info?key=sk-x"] {
        assert_error(&http::get(&url(&cp, p), &[]).unwrap(), 401, None);
        assert_error(
            &http::get(&url(&cp, p), &[("authorization", "Bearer nope")]).unwrap(),
            403,
            None,
        );
    }
    assert_error(
        &http::get(&url(&cp, "/no/such/path"), &[]).unwrap(),
        404,
        None,
    );
    // Every wrong key counted (5 posts + 2 gets); no key at all is not an attempt.
    assert_eq!(failures(), Some(7.0));
    get(&cp, "/key/list");
    assert_eq!(failures(), Some(7.0), "the right key is not a failure");
}

#[test]
fn the_service_refuses_to_start_without_a_master_key() {
    let pg = Postgres::start().unwrap();
    let err = ControlPlane::builder(&pg.url())
        .master_key(None)
        .start()
        .unwrap_err();
    assert!(err.to_string().contains("LIVEGATE_MASTER_KEY"), "{err}");
}

#[test]
fn the_service_refuses_a_placeholder_or_short_master_key_naming_the_variable() {
    // Refused while the flags are validated: no database is needed to see it.
    for (key, why) in [
        ("sk-master-change-me", "placeholder"),
        ("x", "at least 32"),
        ("sk-0123456789abcdef0123456789a", "at least 32"),
    ] {
        let (status, log) = ControlPlane::builder("postgres://livegate@127.0.0.1:1/livegate")
            .master_key(Some(key))
            .start_expecting_exit()
            .unwrap();
        assert!(!status.success(), "{key}: started\n{log}");
        assert!(
            log.contains("--master-key (LIVEGATE_MASTER_KEY): ") && log.contains(why),
            "{key}: {log}"
        );
        if key.len() > 8 {
            assert!(!log.contains(key), "the log repeats the refused key: {log}");
        }
    }
}

#[test]
fn list_pages_and_filters_like_litellm() {
    let (_pg, cp) = start(&[]);
    new_team(&cp, "red");
    new_team(&cp, "blue");
    for i in 0..7 {
        generate(
            &cp,
            json!({"team_id": if i < 5 { "red" } else { "blue" }, "key_alias": format!("k{i}"), "user_id": "u"}),
        );
    }
    let page = get(&cp, "/key/list?team_id=red&size=2&page=3")
        .json()
        .unwrap();
    assert_eq!(
        (
            page["total_count"].as_u64(),
            page["current_page"].as_u64(),
            page["total_pages"].as_u64()
        ),
        (Some(5), Some(3), Some(3))
    );
    assert_eq!(page["keys"].as_array().unwrap().len(), 1);
    assert!(
        page["keys"][0].as_str().is_some_and(|t| t.len() == 64),
        "{page}"
    );
    let full = get(&cp, "/key/list?key_alias=k6&return_full_object=true")
        .json()
        .unwrap();
    assert_eq!(full["total_count"], 1);
    assert_eq!(full["keys"][0]["team_id"], "blue");
    assert_eq!(
        get(&cp, "/key/list?user_id=u").json().unwrap()["total_count"],
        7
    );
    assert_error(&get(&cp, "/key/list?size=101"), 400, Some("size"));
    assert_error(&get(&cp, "/key/list?page=0"), 400, Some("page"));
}

#[test]
fn info_update_block_unblock_and_delete_take_effect_on_the_next_auth_check() {
    let (_pg, cp) = start(&[]);
    new_team(&cp, "t1");
    new_team(&cp, "t2");
    let k = generate(&cp, json!({"key_alias": "bob", "team_id": "t1"}));
    let (raw, token) = (k["key"].as_str().unwrap(), k["token"].as_str().unwrap());
    assert_eq!(auth_check(&cp, raw).status, 200);
    for by in [raw, token] {
        let info = get(&cp, &format!("/key/info?key={by}")).json().unwrap();
        assert_eq!(
            (info["key"].as_str(), info["info"]["key_alias"].as_str()),
            (Some(token), Some("bob"))
        );
    }
    assert_error(
        &get(&cp, "/key/info?key=sk-doesnotexist0123456789012"),
        404,
        None,
    );
    assert_error(&get(&cp, "/key/info"), 400, Some("key"));

    assert_eq!(
        post(&cp, "/key/block", json!({"key": raw})).json().unwrap()["blocked"],
        true
    );
    assert_eq!(
        auth_check(&cp, raw).json().unwrap()["reason"],
        "key_blocked"
    );
    assert_eq!(
        post(&cp, "/key/unblock", json!({"key": token}))
            .json()
            .unwrap()["blocked"],
        false
    );
    assert_eq!(auth_check(&cp, raw).status, 200);

    let u = post(
        &cp,
        "/key/update",
        json!({"key": raw, "team_id": "t2", "metadata": {"a": 1}}),
    )
    .json()
    .unwrap();
    assert_eq!(
        (u["team_id"].as_str(), u["key_alias"].as_str()),
        (Some("t2"), Some("bob"))
    );
    assert_eq!(auth_check(&cp, raw).json().unwrap()["team_id"], "t2");
    assert_error(
        &post(&cp, "/key/update", json!({"team_id": "t3"})),
        400,
        Some("key"),
    );
    assert_error(
        &post(
            &cp,
            "/key/update",
            json!({"key": "sk-nonexistent0123456789012345"}),
        ),
        404,
        None,
    );

    let d = post(&cp, "/key/delete", json!({"key_aliases": ["bob"]}))
        .json()
        .unwrap();
    assert_eq!(d["deleted_keys"], json!([token]));
    assert_eq!(auth_check(&cp, raw).status, 401);
    assert_error(&post(&cp, "/key/delete", json!({"keys": [raw]})), 404, None);
    assert_error(&post(&cp, "/key/delete", json!({})), 400, Some("keys"));
    let other = generate(&cp, json!({}));
    let d = post(&cp, "/key/delete", json!({"keys": [other["key"]]}))
        .json()
        .unwrap();
    assert_eq!(d["deleted_keys"], json!([other["token"]]));
}

#[test]
fn two_control_planes_starting_at_once_migrate_one_schema() {
    let pg = Postgres::start().unwrap();
    // `start` returns once HTTP listens, before the engine migrates: starting both from this
    // thread (the harness ties each child's life to the thread that spawned it) makes both
    // engines migrate at the same moment.
    let a = ControlPlane::builder(&pg.url()).start().unwrap();
    let b = ControlPlane::builder(&pg.url()).start().unwrap();
    wait_db(&a, "connected");
    wait_db(&b, "connected");
    let k = generate(&a, json!({"key_alias": "shared"}));
    let bearer = format!("Bearer {}", k["key"].as_str().unwrap());
    let r = http::post_raw(
        &url(&b, "/v1/auth/check"),
        &[("authorization", &bearer), internal_token::header()],
        "application/json",
        "",
    );
    assert_eq!(
        r.as_ref().map(|r| r.status).ok(),
        Some(200),
        "{r:?}\n{}\n{}",
        a.log_text(),
        b.log_text()
    );
    assert_eq!(
        psql(
            &pg,
            "SELECT string_agg(version::text, ',' ORDER BY version) FROM livegate_schema_migrations"
        ),
        "1,2,3,4,5,6,7,8,9,10,11,12,13,14,15"
    );
}

#[test]
fn health_endpoints_and_metrics_answer_and_no_secret_is_logged() {
    let (pg, cp) = start(&["--log-format", "json"]);
    let k = generate(&cp, json!({"key_alias": "s"}));
    let raw = k["key"].as_str().unwrap().to_string();
    auth_check(&cp, &raw);
    auth_check(&cp, "sk-unknown-secret-0123456789abcdef");
    let live = http::get(&url(&cp, "/health/liveliness"), &[]).unwrap();
    assert_eq!(live.status, 200);
    let (r, _) = readiness(&cp);
    let body = r.json().unwrap();
    for f in [
        "status",
        "db",
        "engine_pid",
        "reconnects",
        "last_error",
        "version",
    ] {
        assert!(body.get(f).is_some(), "readiness lacks {f}: {body}");
    }
    assert_eq!(body["db"], "connected");
    assert_eq!(
        http::get(&url(&cp, "/health/readiness?strict=true"), &[])
            .unwrap()
            .status,
        200
    );
    let m = metrics(&cp);
    for name in [
        "livegate_loop_lag_max_seconds",
        "livegate_db_reconnects_total",
        "livegate_db_state{state=\"connected\"} 1",
        "livegate_key_cache_hits_total",
        "livegate_http_requests_total",
    ] {
        assert!(m.contains(name), "metrics lack {name}");
    }
    let log = cp.log_text();
    assert!(log.contains("\"level\""), "logs are not JSON: {log}");
    for secret in [raw.as_str(), MASTER, pg.password(), "sk-unknown-secret"] {
        assert!(!log.contains(secret), "a secret is in the log: {secret}");
    }
}

/// Posts a body of `size` bytes to `/key/generate` in pieces, pausing between them so the
/// control plane's answer (and, were it to close with the body unread, its reset) arrives
/// while the client is still sending; the status of the answer read at the end.
fn slow_oversized_post(cp: &ControlPlane, size: usize) -> u16 {
    use std::io::{Read, Write};
    let mut socket = std::net::TcpStream::connect(("127.0.0.1", cp.port())).unwrap();
    let head = format!(
        "POST /key/generate HTTP/1.1\r\nHost: cp\r\nAuthorization: Bearer {}\r\n\
         Content-Type: application/json\r\nContent-Length: {size}\r\n\r\n",
        livegate_tests::control_plane::TEST_MASTER_KEY
    );
    socket.write_all(head.as_bytes()).unwrap();
    let piece = vec![b' '; 60_000];
    let mut sent = 0;
    while sent < size {
        let n = piece.len().min(size - sent);
        socket
            .write_all(&piece[..n])
            .unwrap_or_else(|e| panic!("writing the body after {sent} bytes: {e}"));
        sent += n;
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    let mut answer = [0u8; 12];
    socket.read_exact(&mut answer).unwrap();
    String::from_utf8_lossy(&answer[9..12]).parse().unwrap()
}
