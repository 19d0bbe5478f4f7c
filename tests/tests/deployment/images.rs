//! Environment, secrets, images.

use std::collections::BTreeSet;

use super::envoy_config;
use super::support::*;

#[test]
fn every_environment_variable_the_deployments_set_is_read_by_the_code() {
    let control_plane = rust_sources("control-plane/src");
    let demo_upstream = rust_sources("demo-upstream/src");
    let mut set: Vec<(String, &str)> = Vec::new();
    let services = compose();
    for (service, code) in [
        ("control-plane", &control_plane),
        ("upstream", &demo_upstream),
    ] {
        for (name, _) in mapping(&services["services"][service]["environment"]) {
            set.push((name.as_str().unwrap().to_string(), code));
        }
    }
    for (deployment, code) in [
        ("livegate-control-plane", &control_plane),
        ("livegate-demo-upstream", &demo_upstream),
    ] {
        let container =
            &manifest("Deployment", deployment)["spec"]["template"]["spec"]["containers"][0];
        for variable in seq(&container["env"]) {
            set.push((variable["name"].as_str().unwrap().to_string(), code));
        }
    }
    for (name, _) in mapping(&example_secret()["stringData"]) {
        set.push((name.as_str().unwrap().to_string(), &control_plane));
    }
    assert!(set.len() >= 6, "too few variables found: {set:?}");
    for (name, code) in set {
        assert!(
            code.contains(&format!("env = \"{name}\"")),
            "{name} is set by a deployment file but read by no `env = \"{name}\"` in the code"
        );
    }
}

#[test]
fn the_control_plane_gets_its_secrets_from_the_secret_and_from_the_env_file() {
    let container = &manifest("Deployment", "livegate-control-plane")["spec"]["template"]["spec"]
        ["containers"][0];
    for name in ["DATABASE_URL", "LIVEGATE_MASTER_KEY"] {
        let variable = seq(&container["env"])
            .iter()
            .find(|v| v["name"].as_str() == Some(name))
            .unwrap_or_else(|| panic!("{name} is not set"))
            .clone();
        let reference = &variable["valueFrom"]["secretKeyRef"];
        let secret = example_secret();
        assert_eq!(reference["name"], secret["metadata"]["name"], "{name}");
        assert_eq!(reference["key"].as_str(), Some(name));
        assert!(
            secret["stringData"][name].as_str().is_some(),
            "the example Secret has no {name}"
        );
        let compose_value = compose()["services"]["control-plane"]["environment"][name]
            .as_str()
            .map(str::to_string);
        assert!(
            compose_value.is_some_and(|v| v.starts_with(&format!("${{{name}:?"))),
            "compose must take {name} from .env and refuse to start without it"
        );
    }
}

#[test]
fn the_env_example_defines_every_variable_compose_reads_and_a_database_url_that_matches_postgres() {
    let example = env_file(".env.example");
    let compose_text = read("docker-compose.yml");
    let mut referenced = BTreeSet::new();
    for piece in compose_text.split("${").skip(1) {
        let name: String = piece
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        referenced.insert(name);
    }
    assert!(referenced.contains("LIVEGATE_MASTER_KEY") && referenced.contains("DATABASE_URL"));
    for name in &referenced {
        assert!(
            example.iter().any(|(k, _)| k == name),
            ".env.example lacks {name}"
        );
    }
    let value = |name: &str| {
        example
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
            .unwrap()
    };
    let expected = format!(
        "postgres://{}:{}@postgres:5432/{}",
        value("POSTGRES_USER"),
        value("POSTGRES_PASSWORD"),
        value("POSTGRES_DB")
    );
    assert!(
        value("DATABASE_URL").starts_with(&expected),
        "DATABASE_URL does not reach the compose Postgres as {expected}"
    );
    assert!(
        mapping(&compose()["services"])
            .iter()
            .any(|(name, _)| name.as_str() == Some("postgres")),
        "no service is named postgres, the host of DATABASE_URL"
    );
}

#[test]
fn the_control_plane_waits_for_a_healthy_postgres_on_a_named_volume() {
    let services = compose();
    let postgres = &services["services"]["postgres"];
    assert!(
        !postgres["healthcheck"]["test"].is_null(),
        "postgres has no healthcheck"
    );
    let volume = strings(&postgres["volumes"])
        .first()
        .and_then(|v| v.split(':').next().map(str::to_string))
        .expect("postgres has a volume");
    assert!(
        mapping(&services["volumes"])
            .iter()
            .any(|(name, _)| name.as_str() == Some(volume.as_str())),
        "{volume} is not a named volume"
    );
    assert_eq!(
        services["services"]["control-plane"]["depends_on"]["postgres"]["condition"].as_str(),
        Some("service_healthy")
    );
    for service in ["envoy", "control-plane"] {
        assert!(
            !services["services"][service]["healthcheck"]["test"].is_null(),
            "{service} has no healthcheck"
        );
    }
}

#[test]
fn the_envoy_image_is_the_official_one_at_the_version_xtask_pins() {
    let version = xtask_envoy_version();
    let from = dockerfile()
        .into_iter()
        .find(|line| line.starts_with("FROM envoyproxy/envoy:"))
        .expect("a stage FROM envoyproxy/envoy");
    assert_eq!(from, format!("FROM envoyproxy/envoy:v{version} AS envoy"));
    for (name, service) in mapping(&compose()["services"]) {
        if !service["build"].is_null() {
            assert_eq!(
                service["pull_policy"].as_str(),
                Some("build"),
                "{name:?} could be pulled from a registry instead of built"
            );
        }
    }
    let build = &compose()["services"]["envoy"]["build"];
    assert_eq!(build["target"].as_str(), Some("envoy"));
    assert_eq!(
        build["dockerfile"].as_str(),
        Some("deploy/docker/Dockerfile")
    );
}

#[test]
fn every_base_image_is_pinned_by_version() {
    let lines = dockerfile();
    let stages: BTreeSet<String> = lines
        .iter()
        .filter_map(|line| line.split(" AS ").nth(1).map(str::to_string))
        .collect();
    let mut images: Vec<String> = lines
        .iter()
        .filter_map(|line| line.strip_prefix("FROM "))
        .map(|rest| rest.split_whitespace().next().unwrap().to_string())
        .filter(|image| image != "scratch" && !stages.contains(image))
        .collect();
    for (_, service) in mapping(&compose()["services"]) {
        if service["build"].is_null() {
            images.push(service["image"].as_str().unwrap().to_string());
        }
    }
    assert!(images.len() >= 4, "{images:?}");
    for image in images {
        let tag = image.rsplit_once(':').map(|(_, tag)| tag).unwrap_or("");
        assert!(
            tag.chars().any(|c| c.is_ascii_digit()) && !tag.contains("latest"),
            "{image} is not pinned by version"
        );
    }
}

#[test]
fn the_images_build_commands_are_the_ones_xtask_build_runs() {
    let build_rs = read("xtask/src/build.rs");
    let wasm_target = xtask_const("WASM_TARGET");
    let commands: Vec<Vec<String>> = dockerfile_cargo_builds();
    let filter = commands
        .iter()
        .find(|c| has_pair(c, "--package", "livegate-filter"))
        .expect("a cargo build of livegate-filter");
    assert!(has_pair(filter, "--target", &wasm_target), "{filter:?}");
    assert!(has_pair(filter, "--profile", "wasm"), "{filter:?}");
    let native = commands
        .iter()
        .find(|c| has_pair(c, "--package", "livegate-control-plane"))
        .expect("a cargo build of livegate-control-plane");
    assert!(
        has_pair(native, "--package", "livegate-demo-upstream"),
        "{native:?}"
    );
    assert!(native.iter().any(|arg| arg == "--release"), "{native:?}");
    // The same packages, target and profiles as xtask/src/build.rs.
    for literal in [
        "\"livegate-filter\"",
        "WASM_TARGET",
        "[\"--profile\", \"wasm\"]",
        "\"livegate-control-plane\"",
        "\"livegate-demo-upstream\"",
        "\"--release\"",
        "\"wasm/livegate_filter.wasm\"",
    ] {
        assert!(
            build_rs.contains(literal),
            "xtask/src/build.rs no longer has {literal}"
        );
    }
    assert!(read("Cargo.toml").contains("[profile.wasm]"));
    // And the artifacts are taken from where those commands put them.
    let text = dockerfile().join("\n");
    assert!(text.contains(&format!("target/{wasm_target}/wasm/livegate_filter.wasm")));
    assert!(text.contains("target/release/livegate-control-plane"));
}

#[test]
fn the_runtime_images_and_every_pod_run_as_non_root() {
    let lines = dockerfile();
    let user = stage(&lines, "runtime")
        .iter()
        .rev()
        .find_map(|line| line.strip_prefix("USER "))
        .expect("the runtime stage sets USER")
        .to_string();
    let uid: u32 = user
        .split(':')
        .next()
        .unwrap()
        .parse()
        .expect("a numeric USER");
    assert_ne!(uid, 0);
    for stage_name in ["control-plane", "demo-upstream"] {
        assert!(
            lines.contains(&format!("FROM runtime AS {stage_name}")),
            "{stage_name} is not built on the non-root runtime stage"
        );
        assert!(
            !stage(&lines, stage_name)
                .iter()
                .any(|l| l.starts_with("USER")),
            "{stage_name} changes the user"
        );
    }
    for document in kubernetes() {
        if document["kind"].as_str() != Some("Deployment") {
            continue;
        }
        let name = document["metadata"]["name"].as_str().unwrap().to_string();
        let security = &document["spec"]["template"]["spec"]["securityContext"];
        assert_eq!(security["runAsNonRoot"].as_bool(), Some(true), "{name}");
        let run_as = security["runAsUser"].as_u64().expect("runAsUser");
        if name == "livegate-envoy" {
            assert_eq!(run_as, 101, "the official Envoy image's envoy user");
        } else {
            assert_eq!(run_as, u64::from(uid), "{name} runs as the image's user");
        }
    }
}

#[test]
fn the_dockerignore_keeps_every_workspace_member_in_the_build_context() {
    let patterns: Vec<String> = read(".dockerignore")
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .map(|line| line.trim_end_matches('/').to_string())
        .collect();
    assert!(
        patterns.iter().any(|p| p == "target"),
        "target/ is sent to the builder"
    );
    assert!(patterns.iter().any(|p| p == ".livegate"));
    let members = workspace_members();
    let needed = members
        .iter()
        .map(String::as_str)
        .chain([
            "Cargo.toml",
            "Cargo.lock",
            "envoy",
            envoy_config::COMPOSE_FILE,
            ".cargo",
        ])
        .collect::<Vec<_>>();
    assert!(needed.contains(&"filter") && needed.contains(&"xtask"));
    for path in needed {
        for pattern in &patterns {
            let first = path.split('/').next().unwrap();
            assert!(
                pattern != path && pattern != first && !glob_prefix_matches(pattern, first),
                ".dockerignore pattern {pattern:?} excludes {path}, which the build needs"
            );
        }
    }
}

#[test]
fn the_demo_price_file_prices_the_demo_model_and_compose_mounts_it_where_it_points() {
    let path = "deploy/prices/model_prices.json";
    let prices =
        livegate_control_plane::pricing::PriceTable::parse(&read(path), std::path::Path::new(path))
            .expect("the demo price file parses");
    let usage = livegate_control_plane::pricing::TokenUsage::new(1000, 8);
    let priced = prices.cost(livegate_demo_upstream::MODEL, usage);
    assert!(
        !priced.unpriced && priced.cost > 0.0,
        "{path} must price the demo model: {priced:?}"
    );
    let control_plane = &compose()["services"]["control-plane"];
    let target = control_plane["environment"]["LIVEGATE_PRICES_FILE"]
        .as_str()
        .expect("compose sets LIVEGATE_PRICES_FILE");
    let mount = format!("./{path}:{target}:ro");
    assert!(
        strings(&control_plane["volumes"]).contains(&mount),
        "compose mounts {mount}"
    );
}
