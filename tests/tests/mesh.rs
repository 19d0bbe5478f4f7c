//! The filter as a service mesh runs it: taken out of the OCI image `cargo xtask package`
//! writes, supplied to a real Envoy 1.40 over extension config discovery (ECDS) in the
//! shape deploy/istio gives it, the control plane's cluster named as Istio names it (and,
//! as Envoy Gateway installs it from deploy/envoy-gateway, in the listener). It behaves as
//! in livegate's own Envoy, with Postgres frozen and with the control plane stopped, and a
//! changed plugin configuration pushed under load fails no request.

#![allow(clippy::unwrap_used, clippy::panic)] // a test file: failures are panics

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use livegate_tests::http::{self, Response};
use livegate_tests::mesh::{self, MeshStack};
use livegate_tests::poll;
use serde_json::{json, Value};

const PATIENCE: Duration = Duration::from_secs(30);
/// Answers in a row that show a change applied at every worker (see the constant's reason).
const IN_A_ROW: usize = poll::EVERY_WORKER_IN_A_ROW;

/// Short cache lifetimes over the manifest's plugin configuration, so the fault phases run
/// on stale allows and the feed, not on fresh answers.
fn overrides(extra: Value) -> Value {
    let mut overrides = json!({
        "cache": {"allow_ttl_ms": 500, "deny_ttl_ms": 200, "stale_if_error_ms": 120000},
    });
    if let (Some(overrides), Value::Object(extra)) = (overrides.as_object_mut(), extra) {
        overrides.extend(extra);
    }
    overrides
}

fn generate(stack: &MeshStack, body: Value) -> String {
    let created = stack.admin("/key/generate", &body).unwrap();
    created["key"].as_str().unwrap().to_string()
}

fn chat(stack: &MeshStack, key: &str, model: &str) -> Response {
    chat_at(&stack.envoy.url(), key, model)
}

/// A chat completion through the gateway at `base` (its listener's URL).
fn chat_at(base: &str, key: &str, model: &str) -> Response {
    let bearer = format!("Bearer {key}");
    http::post_raw(
        &format!("{base}/v1/chat/completions"),
        &[("authorization", &bearer)],
        "application/json",
        &json!({"model": model, "messages": [{"role": "user", "content": "hi"}]}).to_string(),
    )
    .unwrap()
}

/// 200 from the upstream, which saw `model`.
fn reached_as(response: &Response, model: &str, phase: &str) {
    assert_eq!(response.status, 200, "{phase}: {}", response.body);
    let body = response.json().unwrap();
    assert_eq!(body["livegate"]["model"], model, "{phase}: {body}");
}

/// Refused by the filter: `status`, the error `type`, nothing reached the upstream.
fn refused(response: &Response, status: u16, kind: &str, phase: &str) {
    assert_eq!(response.status, status, "{phase}: {}", response.body);
    let body = response.json().unwrap();
    assert_eq!(body["error"]["type"], kind, "{phase}: {body}");
    assert!(body.get("livegate").is_none(), "{phase}: reached: {body}");
}

fn liveness(stack: &MeshStack, phase: &str) {
    for path in ["/health/liveliness", "/health/liveness"] {
        let r = http::get(&stack.url(path), &[]).unwrap();
        assert_eq!(r.status, 200, "{phase}: {path}: {}", r.body);
    }
}

fn spend_rows(stack: &MeshStack, key: &str) -> Option<Vec<Value>> {
    let rows = stack
        .admin_get(&format!("/spend/logs?api_key={key}"))
        .ok()?;
    rows.as_array().cloned()
}

/// `n` requests of a rate-limited key during an outage: how many reached the upstream.
/// Every other answer is the gateway's 429 (the control plane's memory, or a worker's share
/// of the limit) or, at a worker that never saw the key, its 503; at least one is a 429.
fn admitted_in_outage(stack: &MeshStack, key: &str, n: usize, phase: &str) -> usize {
    let mut limited = 0;
    let mut admitted = 0;
    for _ in 0..n {
        let r = chat(stack, key, "gpt-4o");
        match r.status {
            200 => admitted += 1,
            429 => {
                assert!(
                    r.header("retry-after").is_some(),
                    "{phase}: {:?}",
                    r.headers
                );
                limited += 1;
            }
            503 => {}
            other => panic!("{phase}: {other}: {}", r.body),
        }
    }
    assert!(limited > 0, "{phase}: no 429 among {n} answers");
    admitted
}

/// What must hold in every phase: liveness, the good key (fresh or stale), its model
/// policy and alias, and the blocked key refused.
fn holds(stack: &MeshStack, good: &str, restricted: &str, blocked: &str, phase: &str) {
    liveness(stack, phase);
    for _ in 0..2 {
        reached_as(&chat(stack, good, "anything"), "anything", phase);
        reached_as(&chat(stack, restricted, "fast"), "gpt-4o", phase);
        refused(
            &chat(stack, restricted, "o1"),
            401,
            "key_model_access_denied",
            phase,
        );
        let revoked = chat(stack, blocked, "gpt-4o");
        assert_eq!(revoked.status, 403, "{phase}: {}", revoked.body);
    }
}

#[test]
fn the_filter_from_its_oci_image_over_ecds_behaves_as_in_its_own_envoy_through_outages() {
    // The control plane's cluster as the mesh names it, in the manifest's configuration.
    let manifest = mesh::extension_config(&json!({}), std::path::Path::new("plugin.wasm")).unwrap();
    assert_eq!(
        mesh::control_plane_cluster(&manifest).unwrap(),
        mesh::istio_cluster(
            mesh::CONTROL_PLANE_PORT,
            mesh::CONTROL_PLANE_SERVICE,
            mesh::NAMESPACE
        )
    );
    assert_eq!(
        manifest["typed_config"]["config"]["allow_on_headers_stop_iteration"],
        true
    );
    let mut stack = MeshStack::start(&overrides(json!({}))).unwrap();
    // The module the mesh runs is the release build, byte for byte.
    let release = std::fs::read(livegate_tests::artifacts::filter_wasm()).unwrap();
    assert_eq!(
        std::fs::read(stack.envoy.plugin_wasm()).unwrap(),
        release,
        "plugin.wasm out of the image is not the release build"
    );
    liveness(&stack, "all up");
    let ready = http::get(&stack.url("/health/readiness"), &[]).unwrap();
    assert_eq!(ready.status, 200, "{}", ready.body);
    assert_eq!(ready.json().unwrap()["db"], "connected");

    // A fresh key: the first request is checked through the mesh-named cluster, the
    // second answered from the filter's cache.
    let good = generate(&stack, json!({"key_alias": "good"}));
    let restricted = generate(
        &stack,
        json!({"models": ["gpt-4o"], "aliases": {"fast": "gpt-4o"}}),
    );
    let blocked = generate(&stack, json!({"key_alias": "to-block"}));
    let unknown = "sk-never-generated-0123456789";
    refused(
        &chat(&stack, unknown, "gpt-4o"),
        401,
        "token_not_found_in_db",
        "unknown key",
    );

    // A rate-limited key: its rpm_limit, then 429 with retry-after.
    let limited = generate(&stack, json!({"rpm_limit": 2}));
    for _ in 0..2 {
        reached_as(&chat(&stack, &limited, "gpt-4o"), "gpt-4o", "rate limit");
    }
    let over = chat(&stack, &limited, "gpt-4o");
    assert_eq!(over.status, 429, "{}", over.body);
    assert!(over.header("retry-after").is_some(), "{:?}", over.headers);

    // A metered stream and a JSON answer, both sent with the same client-chosen request id:
    // the whole stream reaches the client, and each request is one spend row with its usage
    // under an id of the gateway's (a client cannot make two requests count once).
    let metered = generate(&stack, json!({"key_alias": "metered"}));
    let bearer = format!("Bearer {metered}");
    for stream in [true, false] {
        let answered = http::post_raw(
            &stack.url("/v1/chat/completions"),
            &[
                ("authorization", &bearer),
                ("x-request-id", "client-chosen"),
            ],
            "application/json",
            &json!({"model": "gpt-4o", "stream": stream,
                    "messages": [{"role": "user", "content": "abcd"}]})
            .to_string(),
        )
        .unwrap();
        assert_eq!(answered.status, 200, "{}", answered.body);
        assert_eq!(
            answered.body.contains("data: [DONE]"),
            stream,
            "{}",
            answered.body
        );
    }
    let rows = poll::until("the spend rows", PATIENCE, || {
        spend_rows(&stack, &metered).filter(|rows| rows.len() >= 2)
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", stack.envoy.log_text()));
    assert_eq!(rows.len(), 2, "{rows:?}");
    assert_ne!(rows[0]["request_id"], rows[1]["request_id"], "{rows:?}");
    for row in &rows {
        assert_ne!(row["request_id"], "client-chosen", "{row}");
        assert_eq!(row["prompt_tokens"], 4, "{row}");
        assert!(row["completion_tokens"].as_u64().unwrap() > 0, "{row}");
        assert_eq!(row["metadata"]["usage_known"], true, "{row}");
    }

    // A revocation reaches the mesh's Envoy (the feed through the same cluster).
    reached_as(
        &chat(&stack, &blocked, "gpt-4o"),
        "gpt-4o",
        "before the block",
    );
    stack.admin("/key/block", &json!({"key": blocked})).unwrap();
    // Each of Envoy's two workers applies the feed on its own tick: the block holds once
    // it is answered on many connections in a row (see `poll::EVERY_WORKER_IN_A_ROW`).
    poll::until("the block at the mesh's Envoy", PATIENCE, || {
        (0..IN_A_ROW)
            .all(|_| chat(&stack, &blocked, "gpt-4o").status == 403)
            .then_some(())
    })
    .unwrap();
    holds(&stack, &good, &restricted, &blocked, "all up");
    // Each worker has its own decision cache: the keys are asked on many connections in a
    // row, so both workers hold their allows (see `poll::EVERY_WORKER_IN_A_ROW`) before the
    // outages, which they serve from it.
    for _ in 0..IN_A_ROW {
        reached_as(&chat(&stack, &good, "anything"), "anything", "warming");
        reached_as(&chat(&stack, &restricted, "fast"), "gpt-4o", "warming");
    }

    // Postgres frozen: the control plane answers from its cache, the filter from its own.
    stack.postgres.pause().unwrap();
    holds(&stack, &good, &restricted, &blocked, "postgres frozen");
    // The limited key used its limit: the control plane refuses it from memory; a check it
    // answers later than the filter waits is decided by the worker's share, max(1, ⌊0.25 ·
    // 2⌋) = 1, at each of the two workers.
    let admitted = admitted_in_outage(&stack, &limited, 12, "postgres frozen");
    assert!(admitted <= 2, "{admitted} admitted");
    stack.postgres.resume().unwrap();

    // The control plane stopped: stale allows, the feed's revocations, liveness; a key
    // never seen is refused with 503 and retry-after, never let in.
    stack.control_plane = None;
    holds(
        &stack,
        &good,
        &restricted,
        &blocked,
        "control plane stopped",
    );
    let stranger = chat(&stack, unknown, "gpt-4o");
    assert_eq!(stranger.status, 503, "{}", stranger.body);
    assert!(stranger.header("retry-after").is_some());
}

/// Envoy Gateway's way: the filter in the listener, disabled but on the routes the
/// EnvoyExtensionPolicy targets, its PluginConfig built from the policy with the
/// EnvoyPatchPolicy applied, the control plane's cluster the HTTPRoute rule's. The same
/// behaviour, through the same outages.
#[test]
fn the_filter_as_envoy_gateway_installs_it_behaves_the_same_through_outages() {
    let generated =
        mesh::envoy_gateway_filter(&json!({}), std::path::Path::new("plugin.wasm")).unwrap();
    let config = &generated.typed_config["config"];
    assert_eq!(config["allow_on_headers_stop_iteration"], true);
    let plugin: Value =
        serde_json::from_str(config["configuration"]["value"].as_str().unwrap()).unwrap();
    assert_eq!(plugin["control_plane_cluster"], generated.rule_clusters[0]);

    let mut stack = MeshStack::start_envoy_gateway(&overrides(json!({}))).unwrap();
    liveness(&stack, "all up");
    let ready = http::get(&stack.url("/health/readiness"), &[]).unwrap();
    assert_eq!(ready.status, 200, "{}", ready.body);
    let good = generate(&stack, json!({"key_alias": "good"}));
    let restricted = generate(
        &stack,
        json!({"models": ["gpt-4o"], "aliases": {"fast": "gpt-4o"}}),
    );
    let blocked = generate(&stack, json!({"key_alias": "to-block"}));
    let unknown = "sk-never-generated-0123456789";
    refused(
        &chat(&stack, unknown, "gpt-4o"),
        401,
        "token_not_found_in_db",
        "unknown key",
    );
    reached_as(
        &chat(&stack, &blocked, "gpt-4o"),
        "gpt-4o",
        "before the block",
    );
    stack.admin("/key/block", &json!({"key": blocked})).unwrap();
    poll::until("the block at Envoy Gateway's Envoy", PATIENCE, || {
        (0..IN_A_ROW)
            .all(|_| chat(&stack, &blocked, "gpt-4o").status == 403)
            .then_some(())
    })
    .unwrap();
    holds(&stack, &good, &restricted, &blocked, "all up");
    for _ in 0..IN_A_ROW {
        reached_as(&chat(&stack, &good, "anything"), "anything", "warming");
        reached_as(&chat(&stack, &restricted, "fast"), "gpt-4o", "warming");
    }

    stack.postgres.pause().unwrap();
    holds(&stack, &good, &restricted, &blocked, "postgres frozen");
    stack.postgres.resume().unwrap();

    stack.control_plane = None;
    holds(
        &stack,
        &good,
        &restricted,
        &blocked,
        "control plane stopped",
    );
    let stranger = chat(&stack, unknown, "gpt-4o");
    assert_eq!(stranger.status, 503, "{}", stranger.body);
}

#[test]
fn a_changed_plugin_config_pushed_over_ecds_under_load_fails_no_request() {
    let mut stack = MeshStack::start(&overrides(json!({}))).unwrap();
    let key = generate(&stack, json!({"key_alias": "under-load"}));
    reached_as(&chat(&stack, &key, "gpt-4o"), "gpt-4o", "before the load");
    let reloads = stack.envoy.config_reloads().unwrap();
    assert!(reloads >= 1.0, "the first config came over ECDS: {reloads}");

    // Four clients send without pause; each answer is kept: its status, and whether the
    // upstream saw the credential only the new configuration gives it.
    let base = stack.envoy.url();
    let stop = AtomicBool::new(false);
    let answers: Mutex<Vec<(u16, Option<bool>)>> = Mutex::new(Vec::new());
    let count = |credential: Option<bool>| {
        answers
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, c)| *c == credential)
            .count()
    };
    std::thread::scope(|scope| {
        for _ in 0..4 {
            scope.spawn(|| {
                while !stop.load(Ordering::Relaxed) {
                    let r = chat_at(&base, &key, "gpt-4o");
                    let credential = r
                        .json()
                        .ok()
                        .and_then(|b| b["livegate"]["authorization_present"].as_bool());
                    answers.lock().unwrap().push((r.status, credential));
                }
            });
        }
        poll::until("answers under the first config", PATIENCE, || {
            (count(Some(false)) >= 20).then_some(())
        })
        .unwrap();
        stack
            .envoy
            .push_plugin_config(&overrides(
                json!({"upstream_authorization": "Bearer upstream-credential-of-the-test"}),
            ))
            .unwrap();
        let pushed = poll::until("answers under the new config", PATIENCE, || {
            (count(Some(true)) >= 20).then_some(())
        });
        stop.store(true, Ordering::Relaxed);
        pushed.unwrap_or_else(|e| panic!("{e}\n{}", stack.envoy.log_text()));
    });

    assert!(stack.envoy.config_reloads().unwrap() > reloads);
    let answers = answers.into_inner().unwrap();
    let mut statuses: BTreeMap<u16, usize> = BTreeMap::new();
    for (status, _) in &answers {
        *statuses.entry(*status).or_default() += 1;
    }
    assert_eq!(
        statuses.keys().copied().collect::<Vec<_>>(),
        vec![200],
        "every request of {} answered 200: {statuses:?}",
        answers.len()
    );
    assert!(
        answers.iter().all(|(_, credential)| credential.is_some()),
        "every answer came from the upstream"
    );
}

/// A changed plugin configuration is a new plugin in each worker (in the worker's root
/// context reconfigured, or in a fresh one): the filter's cached allows start empty
/// (docs/operations.md, "In a service mesh"). Pushed while no control plane answers, it
/// fails closed: a known key or one never seen is refused with 503, none let in
/// unchecked; a revoked key stays refused (403 or 503); and the known keys are served
/// again as soon as a control plane answers.
#[test]
fn a_plugin_config_pushed_while_the_control_plane_is_away_fails_closed_until_it_is_back() {
    let mut stack = MeshStack::start(&overrides(json!({}))).unwrap();
    let good = generate(&stack, json!({"key_alias": "good"}));
    let blocked = generate(&stack, json!({"key_alias": "to-block"}));
    stack.admin("/key/block", &json!({"key": blocked})).unwrap();
    // Both workers hold the allow and the revocation (many connections in a row).
    poll::until("both keys decided at both workers", PATIENCE, || {
        (0..IN_A_ROW)
            .all(|_| {
                chat(&stack, &good, "gpt-4o").status == 200
                    && chat(&stack, &blocked, "gpt-4o").status == 403
            })
            .then_some(())
    })
    .unwrap();
    stack.control_plane = None;
    for _ in 0..IN_A_ROW {
        reached_as(&chat(&stack, &good, "gpt-4o"), "gpt-4o", "stale allow");
    }

    let reloads = stack.envoy.config_reloads().unwrap();
    stack
        .envoy
        .push_plugin_config(&overrides(json!({"retry_after_seconds": 7})))
        .unwrap();
    poll::until("the new config", PATIENCE, || {
        (stack.envoy.config_reloads().unwrap() > reloads).then_some(())
    })
    .unwrap();
    // Envoy counts the config when it takes it and then hands it to each worker: until a
    // worker has it, the old root context answers there (its revocation too, rightly). A
    // stranger's 503 carries the configuration's retry-after, so many in a row with the new
    // one mean both workers serve it.
    let stranger = "sk-never-generated-0123456789";
    poll::until("both workers serving the new config", PATIENCE, || {
        (0..IN_A_ROW)
            .all(|_| chat(&stack, stranger, "gpt-4o").header("retry-after") == Some("7"))
            .then_some(())
    })
    .unwrap();
    liveness(&stack, "after the push, control plane away");
    for key in [good.as_str(), stranger] {
        for _ in 0..IN_A_ROW {
            let r = chat(&stack, key, "gpt-4o");
            assert_eq!(r.status, 503, "{}", r.body);
            // The new configuration's retry-after: the answer is the new root context's.
            assert_eq!(r.header("retry-after"), Some("7"));
        }
    }
    // A revoked key stays refused: 503 like the others when Envoy reconfigured the
    // worker's root context, 403 when it started a fresh one (which applies the change
    // feed's window, shared data that outlives the plugin, at its first tick).
    for _ in 0..IN_A_ROW {
        let r = chat(&stack, &blocked, "gpt-4o");
        assert!(matches!(r.status, 403 | 503), "{}", r.body);
    }

    stack.control_plane = Some(
        livegate_tests::control_plane::ControlPlane::builder(&stack.postgres.url())
            .port(stack.control_plane_port)
            .log_dir(stack.scratch.path().to_path_buf())
            .start()
            .unwrap(),
    );
    poll::until("the good key served again", PATIENCE, || {
        (chat(&stack, &good, "gpt-4o").status == 200).then_some(())
    })
    .unwrap();
    assert_eq!(chat(&stack, &blocked, "gpt-4o").status, 403);
}
