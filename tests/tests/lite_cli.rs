//! LiteLLM's own `lite` CLI (the `litellm` package `cargo xtask setup` pins) driving the real
//! gateway as an operator scripts it: keys and users it makes are enforced by the real
//! Envoy and filter (a key's models and aliases; its duration sets its expiry), keep
//! working with Postgres frozen and with the control plane stopped, and are refused once
//! `lite` deletes them; what livegate does not enforce is refused by name (`--spend`,
//! `--budget-id`, `--config`, a user's `--alias`); a key's own credential may not list
//! teams or move itself into one, and lists the models it may call (answered by the
//! gateway with Postgres frozen and the control plane stopped); `keys import` from another
//! gateway makes new secrets, refuses a key with spend by name and makes nothing while the
//! destination's Postgres is frozen; an admin write while Postgres is frozen fails loudly
//! with a 503; on 2 Envoys × 2 control planes what `lite` makes or deletes through one
//! Envoy holds at both.

#![allow(clippy::unwrap_used, clippy::panic)] // a test file: failures are panics

use std::path::Path;
use std::time::Duration;

use livegate_tests::fleet::{Fleet, FleetOptions};
use livegate_tests::http::{self, Response};
use livegate_tests::poll;
use livegate_tests::provider_double::ProviderDouble;
use livegate_tests::providers::Providers;
use livegate_tests::python_client::{lite, LiteOutput};
use livegate_tests::stack::{Stack, StackOptions};
use nix::sys::signal::Signal;
use serde_json::{json, Value};

const PATIENCE: Duration = Duration::from_secs(60);

/// `lite` with the master key, as the operator runs it.
fn admin(stack: &Stack, home: &Path, args: &[&str]) -> LiteOutput {
    lite(&stack.url(""), stack.master_key(), home, args)
}

/// A demo chat through the Envoy at `gateway` (its base URL).
fn chat(gateway: &str, key: &str, model: &str) -> Response {
    http::demo_chat(gateway, key, json!({"model": model})).unwrap()
}

fn served(gateway: &str, key: &str) -> bool {
    let r = chat(gateway, key, "livegate-demo");
    r.status == 200 && r.json().is_ok_and(|b| b.get("choices").is_some())
}

/// Waits until `key` is refused as an unknown key (401) at the gateway: by every worker,
/// as 40 in a row are (each request lands on any of an Envoy's workers).
fn refused_at_the_gateway(gateway: &str, key: &str) {
    poll::until("the key refused at the gateway", PATIENCE, || {
        (0..40)
            .all(|_| chat(gateway, key, "livegate-demo").status == 401)
            .then_some(())
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
    assert!(served(&stack.url(""), &key));
    assert_eq!(chat(&stack.url(""), &key, "gpt-4o").status, 401);

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
    let config = admin(
        &stack,
        home.path(),
        &["keys", "generate", "--config", r#"{"tier": "gold"}"#],
    );
    assert_eq!(refused_param(&config), "config");
    let listed = admin(&stack, home.path(), &["keys", "list", "--format", "json"]).json();
    assert_eq!(listed["keys"].as_array().unwrap().len(), 1, "{listed}");

    // Postgres frozen: the key keeps working; an admin write fails loudly.
    let postgres = stack.postgres.as_ref().unwrap();
    postgres.pause().unwrap();
    assert!(served(&stack.url(""), &key));
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
    let still_served = served(&stack.url(""), &key);
    control_plane.signal(Signal::SIGCONT).unwrap();
    assert!(still_served);

    let deleted = admin(&stack, home.path(), &["keys", "delete", "--keys", &key]);
    assert!(deleted.success, "{deleted:?}");
    refused_at_the_gateway(&stack.url(""), &key);

    // A key in a team, for a user, with a model alias, deleted by its alias.
    let team = stack
        .admin("/team/new", &json!({"team_alias": "ops"}))
        .unwrap();
    let team_id = team["team_id"].as_str().unwrap();
    let user = json!({"user_id": "ops-user", "auto_create_key": false});
    stack.admin("/user/new", &user).unwrap();
    let generated = admin(
        &stack,
        home.path(),
        &[
            "keys",
            "generate",
            "--key-alias",
            "second",
            "--team-id",
            team_id,
            "--user-id",
            "ops-user",
            "--aliases",
            r#"{"demo": "livegate-demo"}"#,
        ],
    )
    .json();
    assert_eq!(generated["team_id"], team_id, "{generated}");
    assert_eq!(generated["user_id"], "ops-user", "{generated}");
    let second = generated["key"].as_str().unwrap().to_string();
    let aliased = chat(&stack.url(""), &second, "demo");
    assert_eq!(aliased.status, 200, "{}", aliased.body);
    let by_alias = admin(
        &stack,
        home.path(),
        &["keys", "delete", "--key-aliases", "second"],
    );
    assert!(by_alias.success, "{by_alias:?}");
    refused_at_the_gateway(&stack.url(""), &second);
    let listed = admin(&stack, home.path(), &["keys", "list", "--format", "json"]).json();
    assert_eq!(listed["keys"], json!([]), "{listed}");
}

#[test]
fn a_user_lite_creates_has_a_working_key_until_lite_deletes_the_user() {
    let stack = Stack::start(StackOptions::full()).unwrap();
    let home = tempfile::tempdir().unwrap();
    let team = stack
        .admin("/team/new", &json!({"team_alias": "research"}))
        .unwrap();
    let team_id = team["team_id"].as_str().unwrap().to_string();
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
            "--team",
            &team_id,
        ],
    )
    .json();
    let user_id = created["user_id"].as_str().unwrap().to_string();
    let key = created["key"].as_str().unwrap().to_string();
    assert_eq!(created["user_email"], "ada@example.com");
    assert_eq!(created["max_budget"], 5.0);
    assert!(served(&stack.url(""), &key));

    let shown = admin(&stack, home.path(), &["users", "get", "--id", &user_id]).json();
    assert_eq!(shown["user_id"], user_id.as_str(), "{shown}");
    assert_eq!(shown["teams"][0]["team_id"], team_id.as_str(), "{shown}");

    // `--team` made the user a member of the team; its table shows the user with it.
    let info = stack
        .admin_get(&format!("/team/info?team_id={team_id}"))
        .unwrap();
    let members: Vec<&Value> = info["team_info"]["members_with_roles"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| &m["user_id"])
        .collect();
    assert_eq!(members, [&json!(user_id)], "{info}");
    let users = admin(&stack, home.path(), &["users", "list"]);
    assert!(users.success, "{users:?}");
    let row = users.stdout.lines().find(|l| l.contains(&user_id));
    assert!(
        row.is_some_and(|r| r.contains("ada@example.com") && r.contains(&team_id)),
        "{users:?}"
    );
    let teams = admin(&stack, home.path(), &["teams", "list"]);
    assert!(
        teams.success && teams.stdout.contains("research") && teams.stdout.contains(&team_id),
        "{teams:?}"
    );

    // An alias is not stored (livegate does not implement it): refused (`lite` shows no body
    // here, only the status; the control-plane suite checks the `param`), and no user made.
    let alias = admin(
        &stack,
        home.path(),
        &[
            "users",
            "create",
            "--email",
            "al@example.com",
            "--alias",
            "al",
        ],
    );
    assert!(alias.failed_with(400), "{alias:?}");
    let users = admin(&stack, home.path(), &["users", "list"]);
    assert!(
        users.success && !users.stdout.contains("al@example.com"),
        "{users:?}"
    );

    // A key's own credential reads its own team, never the list of every team.
    let teams = lite(&stack.url(""), &key, home.path(), &["teams", "list"]);
    assert!(teams.failed_with(403), "{teams:?}");

    // With Postgres frozen the user's key is still served from what the gateway knows.
    let postgres = stack.postgres.as_ref().unwrap();
    postgres.pause().unwrap();
    let frozen_served = served(&stack.url(""), &key);
    postgres.resume().unwrap();
    assert!(frozen_served);

    let deleted = admin(&stack, home.path(), &["users", "delete", &user_id]);
    assert!(deleted.success, "{deleted:?}");
    refused_at_the_gateway(&stack.url(""), &key);
    let gone = admin(&stack, home.path(), &["users", "get", "--id", &user_id]);
    assert!(gone.failed_with(404), "{gone:?}");
}

#[test]
fn what_lite_makes_through_one_envoy_holds_at_every_envoy_of_two_by_two() {
    let fleet = Fleet::start(FleetOptions::new(2, 2)).unwrap();
    let home = tempfile::tempdir().unwrap();
    let gateways: Vec<String> = fleet.envoys.iter().map(|e| e.url()).collect();
    let through =
        |i: usize, args: &[&str]| lite(&gateways[i], fleet.master_key(), home.path(), args);
    // Each Envoy has two workers, each with its own decision cache, and a request lands on
    // either: 40 in a row reach both but once in 2^39.
    let everywhere = |key: &str| gateways.iter().all(|g| (0..40).all(|_| served(g, key)));

    let generated = through(0, &["keys", "generate", "--models", "livegate-demo"]).json();
    let key = generated["key"].as_str().unwrap().to_string();
    let created = through(1, &["users", "create", "--email", "bo@example.com"]).json();
    let user_id = created["user_id"].as_str().unwrap().to_string();
    let user_key = created["key"].as_str().unwrap().to_string();
    assert!(everywhere(&key) && everywhere(&user_key));
    for gateway in &gateways {
        assert_eq!(chat(gateway, &key, "gpt-4o").status, 401);
    }

    // Postgres frozen, then every control plane stopped: both Envoys still serve both keys.
    fleet.postgres.pause().unwrap();
    let frozen = everywhere(&key) && everywhere(&user_key);
    fleet.postgres.resume().unwrap();
    assert!(frozen);
    fleet.signal_control_planes(Signal::SIGSTOP).unwrap();
    let stopped = everywhere(&key) && everywhere(&user_key);
    fleet.signal_control_planes(Signal::SIGCONT).unwrap();
    assert!(stopped);

    // Deleted through the other Envoy: refused at both.
    assert!(through(1, &["keys", "delete", "--keys", &key]).success);
    assert!(through(0, &["users", "delete", &user_id]).success);
    for gateway in &gateways {
        refused_at_the_gateway(gateway, &key);
        refused_at_the_gateway(gateway, &user_key);
    }
    let listed = through(1, &["keys", "list", "--format", "json"]).json();
    assert_eq!(listed["keys"], json!([]), "{listed}");
}

/// A price for the demo's model, so that a chat gives its key a spend.
const PRICES: &str =
    r#"{"livegate-demo": {"input_cost_per_token": 0.5, "output_cost_per_token": 0.25}}"#;

/// The secrets `lite keys import` printed for the keys it generated (`Generated key: {…}`,
/// a Python dict), in order.
fn imported_secrets(output: &LiteOutput) -> Vec<String> {
    output
        .stdout
        .lines()
        .filter_map(|line| line.strip_prefix("Generated key: "))
        .filter_map(|dict| dict.split("'key': '").nth(1))
        .filter_map(|rest| rest.split('\'').next())
        .map(str::to_string)
        .collect()
}

/// `lite keys import` ran to its summary: `imported` keys made here, `failed` refused.
fn assert_import(output: &LiteOutput, imported: usize, failed: usize) {
    let said = |line: String| output.stdout.lines().any(|l| l.trim() == line);
    assert!(
        output.success
            && said(format!("Successfully imported: {imported}"))
            && said(format!("Failed to import: {failed}")),
        "{output:?}"
    );
}

#[test]
fn lite_imports_keys_from_another_gateway_with_new_secrets_and_none_while_postgres_is_frozen() {
    let prices = tempfile::tempdir().unwrap();
    let prices_file = prices.path().join("prices.json");
    std::fs::write(&prices_file, PRICES).unwrap();
    let source = Stack::start(StackOptions {
        control_plane_args: vec!["--prices-file".into(), prices_file.display().to_string()],
        ..StackOptions::full()
    })
    .unwrap();
    let carried = source
        .generate_key(&json!({
            "key_alias": "carried",
            "models": ["livegate-demo"],
            "aliases": {"demo": "livegate-demo"},
        }))
        .unwrap();
    // A key that has spent: LiteLLM's import sends its `spend`, which livegate refuses by
    // name on /key/generate (it would not be enforced as the limit lite's flag calls it).
    let spent = source.generate_key(&json!({"key_alias": "spent"})).unwrap();
    assert!(served(&source.url(""), &spent));
    poll::until("the spent key's spend drained", PATIENCE, || {
        let info = source.admin_get(&format!("/key/info?key={spent}")).ok()?;
        (info["info"]["spend"].as_f64()? > 0.0).then_some(())
    })
    .unwrap();

    let destination = Stack::start(StackOptions::full()).unwrap();
    let home = tempfile::tempdir().unwrap();
    let import = || {
        admin(
            &destination,
            home.path(),
            &[
                "keys",
                "import",
                "--source-base-url",
                &source.url(""),
                "--source-api-key",
                source.master_key(),
            ],
        )
    };
    let keys_here = || {
        let listed = admin(
            &destination,
            home.path(),
            &["keys", "list", "--format", "json"],
        );
        listed.json()["keys"].as_array().unwrap().clone()
    };

    // The destination's Postgres frozen: every key fails to import, and nothing is half made.
    let postgres = destination.postgres.as_ref().unwrap();
    postgres.pause().unwrap();
    let frozen = import();
    postgres.resume().unwrap();
    assert_import(&frozen, 0, 2);
    assert!(keys_here().is_empty());

    let imported = import();
    assert_import(&imported, 1, 1);
    assert!(
        imported.stderr.contains("Failed to import key spent"),
        "{imported:?}"
    );
    let here = keys_here();
    assert_eq!(here.len(), 1, "{here:?}");
    assert_eq!(here[0]["key_alias"], "carried");
    assert_eq!(here[0]["models"], json!(["livegate-demo"]));
    assert_eq!(here[0]["aliases"], json!({"demo": "livegate-demo"}));

    // The import makes new secrets (LiteLLM's import copies no key's secret): the new one is
    // served here, with its models and aliases enforced, and the source's is unknown here.
    let secrets = imported_secrets(&imported);
    assert_eq!(secrets.len(), 1, "{imported:?}");
    let new = &secrets[0];
    assert_ne!(new, &carried);
    assert!(served(&destination.url(""), new));
    assert_eq!(chat(&destination.url(""), new, "demo").status, 200);
    assert_eq!(chat(&destination.url(""), new, "gpt-4o").status, 401);
    assert_eq!(
        chat(&destination.url(""), &carried, "livegate-demo").status,
        401
    );
    assert!(served(&source.url(""), &carried));

    // The imported key is the destination's own: served with its control plane stopped.
    let control_plane = destination.control_plane.as_ref().unwrap();
    control_plane.signal(Signal::SIGSTOP).unwrap();
    let still_served = served(&destination.url(""), new);
    control_plane.signal(Signal::SIGCONT).unwrap();
    assert!(still_served);

    // Imported again, the alias is taken: refused, nothing duplicated.
    assert_import(&import(), 0, 2);
    assert_eq!(keys_here().len(), 1);
}

const PROVIDER_KEY_ENV: &str = "LIVEGATE_TEST_PROVIDER_KEY";
const PROVIDER_KEY: &str = "sk-provider-double-secret-lite";

/// A stack whose model list has two models at an HTTPS provider double.
fn with_providers(double: &ProviderDouble) -> Stack {
    let base = double.base_url();
    let model_list = format!(
        "model_list:
  - model_name: gpt-4o
    litellm_params:
      model: openai/gpt-4o
      api_base: {base}/v1
      api_key: os.environ/{PROVIDER_KEY_ENV}
  - model_name: mini
    litellm_params:
      model: openai/gpt-4o-mini
      api_base: {base}/v1
      api_key: os.environ/{PROVIDER_KEY_ENV}
"
    );
    let keys = [(PROVIDER_KEY_ENV, PROVIDER_KEY)];
    let providers = Providers::with_keys(&model_list, &keys, double.ca_file()).unwrap();
    Stack::start(StackOptions {
        providers,
        ..StackOptions::full()
    })
    .unwrap()
}

/// The model ids `lite models list` printed.
fn models_listed(output: &LiteOutput) -> Vec<String> {
    let listed = output.json();
    let models = listed.as_array().unwrap_or_else(|| panic!("{listed}"));
    models
        .iter()
        .map(|m| m["id"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn a_keys_own_credential_lists_the_models_it_may_call_and_moves_itself_into_no_team() {
    let scratch = tempfile::tempdir().unwrap();
    let double = ProviderDouble::start(scratch.path(), PROVIDER_KEY).unwrap();
    let stack = with_providers(&double);
    let home = tempfile::tempdir().unwrap();
    let team = stack
        .admin("/team/new", &json!({"team_alias": "t"}))
        .unwrap();
    let team_id = team["team_id"].as_str().unwrap().to_string();
    let key = stack.generate_key(&json!({"models": ["mini"]})).unwrap();
    let as_key = |args: &[&str]| lite(&stack.url(""), &key, home.path(), args);
    let models = ["models", "list", "--format", "json"];

    // The model list as the key may call it; the master key opens the admin API only.
    assert_eq!(models_listed(&as_key(&models)), ["mini"]);
    let master = admin(&stack, home.path(), &models);
    assert!(master.failed_with(401), "{master:?}");

    // The gateway answers the list itself, from what it knows of the key.
    let postgres = stack.postgres.as_ref().unwrap();
    postgres.pause().unwrap();
    let frozen = as_key(&models);
    postgres.resume().unwrap();
    assert_eq!(models_listed(&frozen), ["mini"]);
    let control_plane = stack.control_plane.as_ref().unwrap();
    control_plane.signal(Signal::SIGSTOP).unwrap();
    let stopped = as_key(&models);
    control_plane.signal(Signal::SIGCONT).unwrap();
    assert_eq!(models_listed(&stopped), ["mini"]);

    // livegate offers no team to join on one's own, to the master key or to a key.
    let available = admin(&stack, home.path(), &["teams", "available"]);
    assert!(available.success, "{available:?}");
    assert_eq!(available.stdout.trim(), "No available teams to join.");
    let asked_by_key = as_key(&["teams", "available"]);
    assert!(asked_by_key.success, "{asked_by_key:?}");
    assert_eq!(asked_by_key.stdout.trim(), "No available teams to join.");

    // Only the master key moves a key into a team: the key stays where it was.
    let assigned = as_key(&["teams", "assign-key", "--team-id", &team_id]);
    assert!(assigned.failed_with(403), "{assigned:?}");
    let info = stack.admin_get(&format!("/key/info?key={key}")).unwrap();
    assert_eq!(info["info"]["team_id"], Value::Null, "{info}");
}
