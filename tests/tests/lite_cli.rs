//! LiteLLM's own `lite` CLI (the `litellm` package `cargo xtask setup` pins) driving the real
//! gateway as an operator scripts it: keys and users it makes are enforced by the real
//! Envoy and filter (a key's models; its duration sets its expiry), keep working with
//! Postgres frozen and with the control plane stopped, and are refused once `lite` deletes
//! them; what livegate does not enforce is refused by name (`--spend`, `--budget-id`); a
//! key's own credential may not list teams; an admin write while Postgres is frozen fails
//! loudly with a 503.

#![allow(clippy::unwrap_used, clippy::panic)] // a test file: failures are panics

use std::path::Path;
use std::time::Duration;

use livegate_tests::http::{self, Response};
use livegate_tests::poll;
use livegate_tests::python_client::{lite, LiteOutput};
use livegate_tests::stack::{Stack, StackOptions};
use nix::sys::signal::Signal;
use serde_json::{json, Value};

const PATIENCE: Duration = Duration::from_secs(60);

/// `lite` with the master key, as the operator runs it.
fn admin(stack: &Stack, home: &Path, args: &[&str]) -> LiteOutput {
    lite(&stack.url(""), stack.master_key(), home, args)
}

fn chat(stack: &Stack, key: &str, model: &str) -> Response {
    http::demo_chat(&stack.url(""), key, json!({"model": model})).unwrap()
}

fn served(stack: &Stack, key: &str) -> bool {
    let r = chat(stack, key, "livegate-demo");
    r.status == 200 && r.json().is_ok_and(|b| b.get("choices").is_some())
}

/// Waits until `key` is refused as an unknown key (401) at the gateway.
fn refused_at_the_gateway(stack: &Stack, key: &str) {
    poll::until("the key refused at the gateway", PATIENCE, || {
        (chat(stack, key, "livegate-demo").status == 401).then_some(())
    })
    .unwrap();
}

/// The `param` of the error body `lite` printed for a refused command.
fn refused_param(output: &LiteOutput) -> Value {
    assert!(output.failed_with(400), "{output:?}");
    let body: Value = serde_json::from_str(output.stdout.trim()).unwrap();
    body["error"]["param"].clone()
}

#[test]
fn a_key_lite_generates_is_enforced_through_faults_until_lite_deletes_it() {
    let stack = Stack::start(StackOptions::full()).unwrap();
    let home = tempfile::tempdir().unwrap();
    let generated = admin(
        &stack,
        home.path(),
        &[
            "keys",
            "generate",
            "--models",
            "livegate-demo",
            "--key-alias",
            "cli-key",
            "--duration",
            "1h",
        ],
    )
    .json();
    let key = generated["key"].as_str().unwrap().to_string();
    assert_eq!(generated["key_alias"], "cli-key");
    assert_eq!(generated["models"], json!(["livegate-demo"]));
    assert!(generated["expires"].is_string(), "{generated}");

    // The key's models are the gateway's to enforce: the demo's model passes, another is
    // refused before the upstream.
    assert!(served(&stack, &key));
    assert_eq!(chat(&stack, &key, "gpt-4o").status, 401);

    let listed = admin(&stack, home.path(), &["keys", "list", "--format", "json"]).json();
    let aliases: Vec<&Value> = listed["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| &k["key_alias"])
        .collect();
    assert_eq!(aliases, [&json!("cli-key")]);

    // Fields livegate would not enforce are refused by name, and nothing is made.
    let spend = admin(&stack, home.path(), &["keys", "generate", "--spend", "5"]);
    assert_eq!(refused_param(&spend), "spend");
    let budget_id = admin(
        &stack,
        home.path(),
        &["keys", "generate", "--budget-id", "b"],
    );
    assert_eq!(refused_param(&budget_id), "budget_id");
    let listed = admin(&stack, home.path(), &["keys", "list", "--format", "json"]).json();
    assert_eq!(listed["keys"].as_array().unwrap().len(), 1, "{listed}");

    // Postgres frozen: the key keeps working; an admin write fails loudly.
    let postgres = stack.postgres.as_ref().unwrap();
    postgres.pause().unwrap();
    assert!(served(&stack, &key));
    let frozen = admin(
        &stack,
        home.path(),
        &["keys", "generate", "--key-alias", "late"],
    );
    assert!(frozen.failed_with(503), "{frozen:?}");
    postgres.resume().unwrap();

    // The control plane stopped: the filter still knows the key.
    let control_plane = stack.control_plane.as_ref().unwrap();
    control_plane.signal(Signal::SIGSTOP).unwrap();
    let still_served = served(&stack, &key);
    control_plane.signal(Signal::SIGCONT).unwrap();
    assert!(still_served);

    let deleted = admin(&stack, home.path(), &["keys", "delete", "--keys", &key]);
    assert!(deleted.success, "{deleted:?}");
    refused_at_the_gateway(&stack, &key);
}

#[test]
fn a_user_lite_creates_has_a_working_key_until_lite_deletes_the_user() {
    let stack = Stack::start(StackOptions::full()).unwrap();
    let home = tempfile::tempdir().unwrap();
    let created = admin(
        &stack,
        home.path(),
        &[
            "users",
            "create",
            "--email",
            "ada@example.com",
            "--role",
            "internal_user",
            "--max-budget",
            "5",
        ],
    )
    .json();
    let user_id = created["user_id"].as_str().unwrap().to_string();
    let key = created["key"].as_str().unwrap().to_string();
    assert_eq!(created["user_email"], "ada@example.com");
    assert_eq!(created["max_budget"], 5.0);
    assert!(served(&stack, &key));

    let shown = admin(&stack, home.path(), &["users", "get", "--id", &user_id]).json();
    assert_eq!(shown["user_id"], user_id.as_str(), "{shown}");

    // A key's own credential reads its own team, never the list of every team.
    let teams = lite(&stack.url(""), &key, home.path(), &["teams", "list"]);
    assert!(teams.failed_with(403), "{teams:?}");

    // With Postgres frozen the user's key is still served from what the gateway knows.
    let postgres = stack.postgres.as_ref().unwrap();
    postgres.pause().unwrap();
    let frozen_served = served(&stack, &key);
    postgres.resume().unwrap();
    assert!(frozen_served);

    let deleted = admin(&stack, home.path(), &["users", "delete", &user_id]);
    assert!(deleted.success, "{deleted:?}");
    refused_at_the_gateway(&stack, &key);
    let gone = admin(&stack, home.path(), &["users", "get", "--id", &user_id]);
    assert!(gone.failed_with(404), "{gone:?}");
}
