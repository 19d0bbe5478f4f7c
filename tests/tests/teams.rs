//! Teams and key policy through the real control plane and Postgres: LiteLLM's team
//! endpoints and shapes, a key's `team_id` naming a real team, a team's policy reaching
//! its keys' auth checks, fields livegate does not enforce refused by name, and a key
//! reading its own info.

#![allow(clippy::unwrap_used, clippy::panic)] // a test file: failures are panics

mod control_plane_support;

use control_plane_support::*;
use livegate_tests::http;
use serde_json::{json, Value};

#[test]
fn teams_have_litellm_shapes_and_their_policy_reaches_their_keys() {
    let (_pg, cp) = start(&[]);
    let generated = ok(post(&cp, "/team/new", json!({"team_alias": "research"})));
    let generated_id = generated["team_id"].as_str().unwrap();
    assert_eq!(generated_id.len(), 36, "a UUID: {generated}");
    assert_eq!(generated["blocked"], false);
    assert_eq!(generated["models"], json!([]));

    let team = ok(post(
        &cp,
        "/team/new",
        json!({"team_id": "billing", "models": ["gpt-4o"], "metadata": {"cost_center": 7}}),
    ));
    assert_eq!(team["team_alias"], Value::Null);
    refused(
        &post(&cp, "/team/new", json!({"team_id": "billing"})),
        "team_id",
        "already in use",
    );
    refused(
        &post(&cp, "/team/new", json!({"team_alias": "research"})),
        "team_alias",
        "already in use",
    );

    let key = ok(post(
        &cp,
        "/key/generate",
        json!({"team_id": "billing", "models": ["gpt-4o", "o1"]}),
    ));
    let raw = key["key"].as_str().unwrap();
    let allow = auth_check(&cp, raw).json().unwrap();
    assert_eq!(allow["decision"], "allow", "{allow}");
    assert_eq!(allow["models"], json!(["gpt-4o", "o1"]));
    assert_eq!(allow["team_models"], json!(["gpt-4o"]));

    let info = ok(get(&cp, "/team/info?team_id=billing"));
    assert_eq!(info["team_id"], "billing");
    assert_eq!(info["team_info"]["metadata"], json!({"cost_center": 7}));
    assert_eq!(info["keys"][0]["token"], key["token"], "{info}");
    let listed = ok(get(&cp, "/team/list"));
    assert_eq!(listed.as_array().unwrap().len(), 2, "{listed}");
    assert_eq!(ok(get(&cp, "/team/available")), json!([]));

    // The team's policy changes reach the key's next check.
    let updated = ok(post(
        &cp,
        "/team/update",
        json!({"team_id": "billing", "models": ["o1"]}),
    ));
    assert_eq!(updated["data"]["models"], json!(["o1"]), "{updated}");
    let allow = auth_check(&cp, raw).json().unwrap();
    assert_eq!(allow["team_models"], json!(["o1"]), "{allow}");

    ok(post(&cp, "/team/block", json!({"team_id": "billing"})));
    let blocked = auth_check(&cp, raw);
    assert_eq!(blocked.status, 403, "{}", blocked.body);
    assert_eq!(blocked.json().unwrap()["reason"], "team_blocked");
    ok(post(&cp, "/team/unblock", json!({"team_id": "billing"})));
    assert_eq!(auth_check(&cp, raw).status, 200);

    let gone = ok(post(&cp, "/team/delete", json!({"team_ids": ["billing"]})));
    assert_eq!(gone["deleted_teams"], json!(["billing"]));
    assert_eq!(gone["deleted_keys"], json!([key["token"]]));
    assert_eq!(auth_check(&cp, raw).status, 401);
    assert_eq!(get(&cp, "/team/info?team_id=billing").status, 404);
    assert_eq!(
        post(&cp, "/team/block", json!({"team_id": "billing"})).status,
        404
    );
}

#[test]
fn a_key_must_name_a_real_team_and_unenforced_fields_are_refused_by_name() {
    let (pg, cp) = start(&[]);
    refused(
        &post(&cp, "/key/generate", json!({"team_id": "nobody"})),
        "team_id",
        "names no team",
    );
    // LiteLLM's own first example, as a new user types it: every field is enforced now.
    let body = json!({"models": ["gpt-4o"], "max_budget": 0, "rpm_limit": 2, "tpm_limit": 10});
    let created = ok(post(&cp, "/key/generate", body));
    assert_eq!(created["rpm_limit"], 2, "{created}");
    assert_eq!(created["tpm_limit"], 10, "{created}");
    // A per-model limit is enforced now (tests/tests/model_limits.rs): taken and shown.
    let body = json!({"models": ["gpt-4o"], "model_rpm_limit": {"gpt-4o": 1}});
    let created = ok(post(&cp, "/key/generate", body));
    assert_eq!(
        created["model_rpm_limit"],
        json!({"gpt-4o": 1}),
        "{created}"
    );
    // A team's per-model budget is not enforced: refused by name.
    let budget = json!({"gpt-4o": {"budget_limit": 1.0, "time_period": "1d"}});
    let r = post(&cp, "/team/new", json!({"model_max_budget": budget}));
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(
        r.body.contains("not supported") && r.body.contains("model_max_budget"),
        "the refusal names the field and says why: {}",
        r.body
    );
    refused(
        &post(&cp, "/key/generate", json!({"rpm_limt": 2})),
        "rpm_limt",
        "unknown field",
    );
    refused(
        &post(&cp, "/team/new", json!({"model_tpm_limit": {"gpt-4o": -5}})),
        "model_tpm_limit.gpt-4o",
        "0 or more",
    );
    refused(
        &post(&cp, "/team/new", json!({"tpm_limt": 5})),
        "tpm_limt",
        "unknown field",
    );
    // Not-supported fields that ask for nothing pass: clients that send every field
    // with null keep working.
    ok(post(
        &cp,
        "/key/generate",
        json!({"max_budget": null, "tags": [], "aliases": {}}),
    ));
    refused(
        &get(&cp, "/key/list?organization_id=o1"),
        "organization_id",
        "not supported",
    );
    // Nothing refused was stored.
    assert_eq!(
        psql(
            &pg,
            "SELECT count(*) FROM livegate_keys WHERE team_id IS NOT NULL"
        ),
        "0"
    );
}

#[test]
fn a_key_reads_its_own_info_and_no_one_elses() {
    let (_pg, cp) = start(&[]);
    let mine = ok(post(&cp, "/key/generate", json!({"key_alias": "mine"})));
    let other = ok(post(&cp, "/key/generate", json!({"key_alias": "other"})));
    let raw = mine["key"].as_str().unwrap();
    let bearer = format!("Bearer {raw}");
    let as_key = |path: &str| http::get(&url(&cp, path), &[("authorization", &bearer)]).unwrap();

    let own = ok(as_key("/key/info"));
    assert_eq!(own["info"]["key_alias"], "mine", "{own}");
    let named = ok(as_key(&format!("/key/info?key={raw}")));
    assert_eq!(named["key"], mine["token"]);
    let by_hash = ok(as_key(&format!(
        "/key/info?key={}",
        mine["token"].as_str().unwrap()
    )));
    assert_eq!(by_hash["info"]["key_alias"], "mine");

    let r = as_key(&format!(
        "/key/info?key={}",
        other["token"].as_str().unwrap()
    ));
    assert_eq!(r.status, 403, "{}", r.body);
    assert_eq!(as_key("/key/list").status, 403);
    assert_eq!(as_key("/team/list").status, 403);
    // Any good key may ask which teams it could join on its own (none, in livegate).
    assert_eq!(ok(as_key("/team/available")), json!([]));

    ok(post(&cp, "/key/block", json!({"key": raw})));
    let r = as_key("/key/info");
    assert_eq!(r.status, 403, "{}", r.body);
    assert_eq!(r.json().unwrap()["error"]["reason"], "key_blocked");
    assert_eq!(as_key("/team/available").status, 403);
    let as_stranger = |path: &str| {
        let bearer = [("authorization", "Bearer sk-unknown-0123456789abcdefghij")];
        http::get(&url(&cp, path), &bearer).unwrap()
    };
    let unknown = as_stranger("/key/info");
    assert_eq!(unknown.status, 401, "{}", unknown.body);
    assert_eq!(as_stranger("/team/available").status, 403);
}
