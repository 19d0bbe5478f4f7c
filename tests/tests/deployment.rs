//! The deployment files (docker-compose.yml, deploy/docker/Dockerfile, deploy/kubernetes/,
//! envoy/container.yaml) checked against the code they deploy: ports, paths, variable
//! names, the Envoy version, the filter's configuration parser, and the real Envoy's
//! `--mode validate`. No Docker engine or cluster is needed.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use livegate_filter::config::Config as FilterConfig;
use livegate_tests::artifacts;
use livegate_tests::envoy::{Endpoint, Envoy, EnvoyConfig};
use serde::Deserialize;
use serde_norway::Value;

// The very code `cargo xtask envoy-config` runs, so a fresh rendering here is what the
// command writes. The test uses its rendering, not its file writing.
#[allow(dead_code)]
#[path = "../../xtask/src/envoy_config.rs"]
mod envoy_config;

use envoy_config::{Target, FILTER_WASM_IN_IMAGE};

// ---------------------------------------------------------------------------------------
// The committed Envoy configurations are renderings of the one template.

#[test]
fn the_committed_compose_envoy_config_is_a_fresh_rendering_of_the_template() {
    let fresh = Target::Compose.render("{}", None).unwrap();
    assert!(
        read(envoy_config::COMPOSE_FILE) == fresh,
        "{} differs from the template's rendering: run `cargo xtask envoy-config`",
        envoy_config::COMPOSE_FILE
    );
}

#[test]
fn the_committed_kubernetes_configmap_is_a_fresh_rendering_of_the_template() {
    let fresh = Target::Kubernetes.render("{}", None).unwrap();
    assert!(
        read(envoy_config::KUBERNETES_FILE) == fresh,
        "{} differs from the template's rendering: run `cargo xtask envoy-config --kubernetes`",
        envoy_config::KUBERNETES_FILE
    );
}

#[test]
fn envoy_accepts_the_compose_config_with_the_filter_at_its_image_path() {
    assert_envoy_validates("compose", &compose_envoy_text());
}

#[test]
fn envoy_accepts_the_kubernetes_config_from_the_configmap() {
    assert_envoy_validates("kubernetes", &kubernetes_envoy_text());
}

#[test]
fn envoy_accepts_every_template_and_config_under_envoy() {
    let local =
        EnvoyConfig::on_free_ports(Endpoint::loopback(4001), Endpoint::loopback(4002)).unwrap();
    let mut checked = Vec::new();
    for entry in std::fs::read_dir(root().join("envoy")).unwrap() {
        let name = entry.unwrap().file_name().to_string_lossy().into_owned();
        let text = if name.ends_with(".yaml.tmpl") {
            local.render_template(&format!("envoy/{name}")).unwrap()
        } else if name.ends_with(".yaml") {
            read(&format!("envoy/{name}"))
        } else {
            continue;
        };
        assert_envoy_validates(&name, &text);
        checked.push(name);
    }
    for expected in ["livegate.yaml.tmpl", "container.yaml"] {
        assert!(checked.iter().any(|name| name == expected), "{checked:?}");
    }
}

#[test]
fn envoy_refuses_a_config_whose_filter_file_is_missing_so_validation_means_something() {
    assert!(
        !Path::new(FILTER_WASM_IN_IMAGE).exists(),
        "this test needs a machine without the image's {FILTER_WASM_IN_IMAGE}"
    );
    let scratch = tempfile::tempdir().unwrap();
    let path = scratch.path().join("envoy.yaml");
    std::fs::write(&path, compose_envoy_text()).unwrap();
    let (valid, log) = Envoy::validate(&path).unwrap();
    assert!(
        !valid,
        "Envoy accepted a missing {FILTER_WASM_IN_IMAGE}:\n{log}"
    );
}

#[test]
fn envoys_validation_runs_the_filters_configuration_so_a_broken_one_is_refused() {
    let wasm = artifacts::require(&artifacts::filter_wasm(), "the filter (.wasm)").unwrap();
    let broken = compose_envoy_text()
        .replace(FILTER_WASM_IN_IMAGE, &wasm.display().to_string())
        .replace(
            r#"value: "{}""#,
            r#"value: "{\"cache\": {\"max_entries\": \"lots\"}}""#,
        );
    assert!(
        broken.contains("lots"),
        "the plugin configuration was not replaced"
    );
    let scratch = tempfile::tempdir().unwrap();
    let path = scratch.path().join("broken.yaml");
    std::fs::write(&path, broken).unwrap();
    let (valid, log) = Envoy::validate(&path).unwrap();
    assert!(
        !valid,
        "Envoy accepted a plugin configuration the filter refuses:\n{log}"
    );
}

#[test]
fn the_filter_accepts_the_plugin_configuration_of_every_container_config() {
    for (name, envoy) in [
        ("compose", compose_envoy()),
        ("kubernetes", kubernetes_envoy()),
    ] {
        let raw = wasm_filter(&envoy)["config"]["configuration"]["value"]
            .as_str()
            .map(str::to_string)
            .unwrap_or_else(|| panic!("{name}: no plugin configuration string"));
        let parsed = FilterConfig::parse(Some(raw.as_bytes()));
        assert!(
            parsed.is_ok(),
            "{name}: the filter refuses {raw}: {parsed:?}"
        );
    }
}

#[test]
fn the_filter_wasm_is_copied_where_both_container_configs_load_it() {
    for (name, envoy) in [
        ("compose", compose_envoy()),
        ("kubernetes", kubernetes_envoy()),
    ] {
        let filename = &wasm_filter(&envoy)["config"]["vm_config"]["code"]["local"]["filename"];
        assert_eq!(filename.as_str(), Some(FILTER_WASM_IN_IMAGE), "{name}");
    }
    let envoy_stage = stage(&dockerfile(), "envoy");
    assert!(
        envoy_stage.iter().any(|line| line.starts_with("COPY")
            && line.contains("livegate_filter.wasm")
            && line.ends_with(&format!(" {FILTER_WASM_IN_IMAGE}"))),
        "the envoy stage does not copy the filter to {FILTER_WASM_IN_IMAGE}"
    );
}

#[test]
fn the_envoy_image_carries_the_compose_config_where_its_command_reads_it() {
    let envoy_stage = stage(&dockerfile(), "envoy");
    let copy = format!("COPY {} /etc/envoy/envoy.yaml", envoy_config::COMPOSE_FILE);
    assert!(
        envoy_stage.contains(&copy),
        "no `{copy}` in the envoy stage"
    );
    let cmd = envoy_stage
        .iter()
        .find(|line| line.starts_with("CMD"))
        .expect("the envoy stage has a CMD");
    assert!(cmd.contains(r#""-c", "/etc/envoy/envoy.yaml""#), "{cmd}");
}

#[test]
fn kubernetes_mounts_the_envoy_configmap_where_envoy_reads_its_config() {
    let deployment = manifest("Deployment", "livegate-envoy");
    let pod = &deployment["spec"]["template"]["spec"];
    let container = &pod["containers"][0];
    let args = strings(&container["args"]);
    let config_path = args
        .iter()
        .position(|arg| arg == "-c")
        .and_then(|i| args.get(i + 1))
        .expect("envoy is started with -c PATH");
    let volume = seq(&pod["volumes"])
        .iter()
        .find(|v| v["configMap"]["name"].as_str() == Some(envoy_config::KUBERNETES_CONFIGMAP))
        .expect("a volume from the envoy ConfigMap");
    let mount = seq(&container["volumeMounts"])
        .iter()
        .find(|m| m["name"] == volume["name"])
        .expect("the ConfigMap volume is mounted");
    let mount_path = mount["mountPath"].as_str().unwrap();
    assert_eq!(
        config_path,
        &format!("{mount_path}/envoy.yaml"),
        "Envoy reads a file the ConfigMap does not provide"
    );
    assert!(
        manifest("ConfigMap", envoy_config::KUBERNETES_CONFIGMAP)["data"]["envoy.yaml"]
            .as_str()
            .is_some()
    );
}

// ---------------------------------------------------------------------------------------
// Ports and addresses: the documented contracts and the defaults of `cargo xtask up`.

#[test]
fn the_listener_port_is_the_documented_one_in_compose_kubernetes_and_xtask_up() {
    let documented = documented_port("Envoy listener");
    assert_eq!(up_default("port"), documented);
    for envoy in [compose_envoy(), kubernetes_envoy()] {
        let listener = &envoy["static_resources"]["listeners"][0]["address"]["socket_address"];
        assert_eq!(listener["port_value"].as_u64(), Some(documented.into()));
        assert_eq!(listener["address"].as_str(), Some("0.0.0.0"));
    }
    let services = compose();
    let published = seq(&services["services"]["envoy"]["ports"]);
    assert_eq!(published.len(), 1, "compose publishes one port of Envoy");
    let mapping = published[0].as_str().expect("a port mapping string");
    assert!(
        mapping.ends_with(&format!(":{documented}")),
        "compose publishes {mapping}, not the listener {documented}"
    );
    assert_eq!(container_port("livegate-envoy", "http"), documented);
    assert_eq!(service_port("livegate-envoy"), documented);
}

#[test]
fn the_control_plane_port_is_the_documented_one_everywhere_it_is_named() {
    let documented = documented_port("control plane");
    assert_eq!(up_default("control_plane_port"), documented);
    let compose_listen = compose()["services"]["control-plane"]["environment"]["LIVEGATE_LISTEN"]
        .as_str()
        .map(str::to_string);
    assert_eq!(compose_listen, Some(format!("0.0.0.0:{documented}")));
    assert_eq!(
        kubernetes_env("livegate-control-plane", "LIVEGATE_LISTEN"),
        format!("0.0.0.0:{documented}")
    );
    assert_eq!(container_port("livegate-control-plane", "http"), documented);
    assert_eq!(service_port("livegate-control-plane"), documented);
    let dockerfile_listen = format!("LIVEGATE_LISTEN=0.0.0.0:{documented}");
    assert!(
        stage(&dockerfile(), "control-plane")
            .iter()
            .any(|line| line.contains(&dockerfile_listen)),
        "the control-plane image does not set {dockerfile_listen}"
    );
    assert_eq!(
        cluster_endpoint(&compose_envoy(), "livegate_control_plane"),
        ("control-plane".to_string(), documented)
    );
    assert_eq!(
        cluster_endpoint(&kubernetes_envoy(), "livegate_control_plane"),
        ("livegate-control-plane".to_string(), documented)
    );
}

#[test]
fn the_demo_upstream_port_is_the_documented_one_and_envoy_resolves_its_service_names() {
    let documented = documented_port("demo upstream");
    assert_eq!(up_default("demo_upstream_port"), documented);
    let listen = compose()["services"]["upstream"]["environment"]["LIVEGATE_DEMO_UPSTREAM_LISTEN"]
        .as_str()
        .map(str::to_string);
    assert_eq!(listen, Some(format!("0.0.0.0:{documented}")));
    assert_eq!(
        cluster_endpoint(&compose_envoy(), "livegate_upstream"),
        ("upstream".to_string(), documented)
    );
    assert_eq!(
        cluster_endpoint(&kubernetes_envoy(), "livegate_upstream"),
        ("livegate-upstream".to_string(), documented)
    );
    assert_eq!(service_port("livegate-upstream"), documented);
    assert_eq!(container_port("livegate-demo-upstream", "http"), documented);
}

#[test]
fn envoy_admin_is_on_the_documented_port_and_never_published() {
    let documented = documented_port("Envoy admin");
    assert_eq!(up_default("admin_port"), documented);
    let compose_admin = &compose_envoy()["admin"]["address"]["socket_address"];
    let kubernetes_admin = &kubernetes_envoy()["admin"]["address"]["socket_address"];
    assert_eq!(
        compose_admin["port_value"].as_u64(),
        Some(documented.into())
    );
    assert_eq!(
        kubernetes_admin["port_value"].as_u64(),
        Some(documented.into())
    );
    // Inside the compose network only: no service publishes anything but Envoy's listener.
    assert_eq!(compose_admin["address"].as_str(), Some("0.0.0.0"));
    for (name, service) in mapping(&compose()["services"]) {
        let ports = strings(&service["ports"]);
        assert!(
            ports.iter().all(|p| !p.contains(&documented.to_string())),
            "compose publishes admin through {name:?}: {ports:?}"
        );
        assert!(
            service["network_mode"].is_null(),
            "{name:?} uses network_mode"
        );
    }
    // A pod's address is reachable from the whole cluster: loopback, and no port for it.
    assert_eq!(kubernetes_admin["address"].as_str(), Some("127.0.0.1"));
    for document in kubernetes() {
        let text = serde_norway::to_string(&document).unwrap();
        assert!(
            !text.contains(&format!("Port: {documented}"))
                && !text.contains(&format!("port: {documented}")),
            "a manifest exposes the admin port:\n{text}"
        );
    }
}

#[test]
fn compose_publishes_nothing_but_envoys_listener() {
    let services = compose();
    for (name, service) in mapping(&services["services"]) {
        let published = seq(&service["ports"]).len();
        if name.as_str() == Some("envoy") {
            assert_eq!(published, 1);
        } else {
            assert_eq!(published, 0, "{name:?} publishes a port");
        }
    }
}

// ---------------------------------------------------------------------------------------
// Probes.

#[test]
fn envoys_liveness_probe_is_a_path_the_filter_answers_itself() {
    let probe = probe("livegate-envoy", "livenessProbe");
    let liveness_paths = effective_filter_config(&kubernetes_envoy()).liveness_paths;
    assert!(
        liveness_paths.contains(&probe.path),
        "{} is not one of the filter's liveness paths {liveness_paths:?}",
        probe.path
    );
    assert_eq!(probe.port, "http");
    assert!(
        FilterConfig::default().liveness_paths.contains(&probe.path),
        "the probe relies on a non-default liveness path"
    );
    // The issue asks that the manifest say so, where an operator reads the probe.
    let text = read("deploy/kubernetes/envoy-deployment.yaml");
    let comment = text
        .split("livenessProbe:")
        .next()
        .unwrap_or_default()
        .to_lowercase();
    assert!(
        comment.contains("liveness probe is answered by the livegate filter"),
        "no comment above livenessProbe says the filter answers it"
    );
}

#[test]
fn envoys_readiness_probe_is_routed_to_the_control_plane_and_passed_through_by_the_filter() {
    let probe = probe("livegate-envoy", "readinessProbe");
    let routes = &seq(
        &compose_envoy()["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]
            ["typed_config"]["route_config"]["virtual_hosts"][0]["routes"],
    )
    .to_vec();
    let routed = routes.iter().any(|route| {
        route["match"]["path"].as_str() == Some(probe.path.as_str())
            && route["route"]["cluster"].as_str() == Some("livegate_control_plane")
    });
    assert!(
        routed,
        "the template routes no exact {} to the control plane",
        probe.path
    );
    let filter = effective_filter_config(&kubernetes_envoy());
    assert!(
        filter
            .passthrough_prefixes
            .iter()
            .any(|p| probe.path.starts_with(p.as_str())),
        "the filter would demand a key on {}",
        probe.path
    );
}

#[test]
fn the_control_planes_probes_are_routes_it_serves_from_memory() {
    let router = read("control-plane/src/http/mod.rs");
    for kind in ["livenessProbe", "readinessProbe"] {
        let probe = probe("livegate-control-plane", kind);
        assert!(
            router.contains(&format!(".route(\"{}\"", probe.path)),
            "the control plane has no route {} for its {kind}",
            probe.path
        );
        assert!(
            !probe.path.contains("strict"),
            "the {kind} must not fail while the database is away"
        );
    }
    for service in ["control-plane", "envoy"] {
        let test = compose()["services"][service]["healthcheck"]["test"].clone();
        let words = strings(&test);
        assert_eq!(
            words.len(),
            seq(&test).len(),
            "{service}: a healthcheck word is not a string"
        );
        assert!(
            words.join(" ").contains("/health/liveliness"),
            "{service}: {words:?}"
        );
    }
}

// ---------------------------------------------------------------------------------------
// Environment, secrets, images.

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

// ---------------------------------------------------------------------------------------
// Kubernetes objects fit together.

#[test]
fn kustomization_lists_every_manifest_and_every_manifest_parses() {
    let listed: BTreeSet<String> = strings(&kustomization()["resources"]).into_iter().collect();
    let on_disk: BTreeSet<String> = std::fs::read_dir(root().join("deploy/kubernetes"))
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.ends_with(".yaml") && name != "kustomization.yaml")
        // Examples to fill in are never applied as they are.
        .filter(|name| !name.ends_with(".example.yaml"))
        .collect();
    assert_eq!(listed, on_disk);
    assert!(kubernetes().len() >= 9);
}

#[test]
fn every_service_and_budget_selects_the_pods_of_a_deployment() {
    let documents = kubernetes();
    let deployments: Vec<&Value> = documents
        .iter()
        .filter(|d| d["kind"].as_str() == Some("Deployment"))
        .collect();
    let selects = |selector: &Value| {
        deployments.iter().find(|d| {
            let labels = &d["spec"]["template"]["metadata"]["labels"];
            !mapping(selector).is_empty()
                && mapping(selector)
                    .iter()
                    .all(|(k, v)| &labels[k.as_str().unwrap()] == v)
        })
    };
    let mut budgets = 0;
    for document in &documents {
        match document["kind"].as_str() {
            Some("Service") => {
                let deployment = selects(&document["spec"]["selector"]).unwrap_or_else(|| {
                    panic!("{:?} selects no pods", document["metadata"]["name"])
                });
                let ports =
                    seq(&deployment["spec"]["template"]["spec"]["containers"][0]["ports"]).to_vec();
                for port in seq(&document["spec"]["ports"]) {
                    let target = &port["targetPort"];
                    assert!(
                        ports
                            .iter()
                            .any(|p| &p["name"] == target || &p["containerPort"] == target),
                        "targetPort {target:?} is no port of the pods"
                    );
                }
            }
            Some("PodDisruptionBudget") => {
                budgets += 1;
                assert!(
                    selects(&document["spec"]["selector"]["matchLabels"]).is_some(),
                    "{:?} protects no pods",
                    document["metadata"]["name"]
                );
            }
            _ => {}
        }
    }
    assert!(
        budgets >= 2,
        "Envoy and the control plane each have a budget"
    );
}

#[test]
fn every_container_requests_resources_and_the_control_plane_runs_several_replicas() {
    for document in kubernetes() {
        if document["kind"].as_str() != Some("Deployment") {
            continue;
        }
        for container in seq(&document["spec"]["template"]["spec"]["containers"]) {
            let requests = &container["resources"]["requests"];
            assert!(
                !requests["cpu"].is_null() && !requests["memory"].is_null(),
                "{:?} requests no cpu or memory",
                container["name"]
            );
        }
    }
    let replicas = manifest("Deployment", "livegate-control-plane")["spec"]["replicas"]
        .as_u64()
        .unwrap();
    assert!(replicas >= 2, "{replicas}");
}

#[test]
fn the_envoy_deployment_runs_the_livegate_envoy_image_on_as_many_workers_as_its_cpu_limit() {
    let deployment = manifest("Deployment", "livegate-envoy");
    let container = &deployment["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(container["image"].as_str(), Some("livegate/envoy"));
    let images: Vec<String> = seq(&kustomization()["images"])
        .iter()
        .filter_map(|image| image["name"].as_str().map(str::to_string))
        .collect();
    assert!(images.contains(&"livegate/envoy".to_string()), "{images:?}");
    let args = strings(&container["args"]);
    let workers = args
        .iter()
        .position(|a| a == "--concurrency")
        .and_then(|i| args.get(i + 1))
        .expect("--concurrency N");
    assert_eq!(
        container["resources"]["limits"]["cpu"].as_str(),
        Some(workers.as_str())
    );
}

#[test]
fn only_envoy_pods_may_reach_the_control_plane_and_only_on_its_port() {
    let policy = manifest("NetworkPolicy", "livegate-control-plane");
    let pod_labels =
        |name: &str| manifest("Deployment", name)["spec"]["template"]["metadata"]["labels"].clone();
    let selects = |selector: &Value, labels: &Value| {
        let wanted = mapping(selector);
        !wanted.is_empty()
            && wanted
                .iter()
                .all(|(k, v)| &labels[k.as_str().unwrap()] == v)
    };
    assert!(selects(
        &policy["spec"]["podSelector"]["matchLabels"],
        &pod_labels("livegate-control-plane")
    ));
    let rules = seq(&policy["spec"]["ingress"]);
    assert_eq!(rules.len(), 1, "one rule: from Envoy");
    let from = seq(&rules[0]["from"]);
    assert!(from.iter().all(|peer| selects(
        &peer["podSelector"]["matchLabels"],
        &pod_labels("livegate-envoy")
    )));
    let ports: Vec<u64> = seq(&rules[0]["ports"])
        .iter()
        .filter_map(|p| p["port"].as_u64())
        .collect();
    assert_eq!(ports, vec![u64::from(documented_port("control plane"))]);
}

// ---------------------------------------------------------------------------------------
// docs/operations.md is the configuration reference: complete and true to the code.

#[test]
fn operations_md_documents_every_control_plane_flag_with_its_variable_and_default() {
    let doc = read("docs/operations.md");
    let flags = control_plane_flags();
    assert!(flags.len() >= 5, "{flags:?}");
    for flag in flags {
        let row = doc
            .lines()
            .find(|line| line.starts_with(&format!("| `{}` |", flag.long)))
            .unwrap_or_else(|| panic!("docs/operations.md has no row for {}", flag.long));
        assert!(
            row.contains(&format!("`{}`", flag.env)),
            "{}: the row does not name {}",
            flag.long,
            flag.env
        );
        let default = row.split('|').nth(3).unwrap_or_default().trim();
        match &flag.default {
            Some(value) => assert_eq!(default, format!("`{value}`"), "{}", flag.long),
            None => assert!(!default.is_empty(), "{}: no default documented", flag.long),
        }
    }
}

#[test]
fn operations_md_documents_the_filters_fields_with_the_parsers_defaults() {
    let doc = read("docs/operations.md");
    let section = doc
        .split("### The filter")
        .nth(1)
        .expect("a section on the filter's configuration");
    let json = section
        .split("```json")
        .nth(1)
        .and_then(|rest| rest.split("```").next())
        .expect("a JSON block of the defaults");
    assert_eq!(
        FilterConfig::parse(Some(json.as_bytes())),
        Ok(FilterConfig::default()),
        "the documented defaults are not the parser's"
    );
    for field in filter_config_fields() {
        assert!(
            section.contains(&format!("| `{field}` |")),
            "docs/operations.md has no row for the filter field {field}"
        );
    }
}

#[test]
fn operations_md_explains_every_metric_the_filter_and_the_control_plane_export() {
    let doc = read("docs/operations.md");
    let mut names: Vec<String> = livegate_filter::metrics::Metric::ALL
        .iter()
        .map(|metric| metric.name().to_string())
        .collect();
    let source = read("control-plane/src/metrics.rs");
    for piece in source.split('"').skip(1).step_by(2) {
        if piece.starts_with("livegate_")
            && piece.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')
        {
            names.push(piece.to_string());
        }
    }
    assert!(names.len() >= 20, "{names:?}");
    for name in names {
        assert!(
            doc.contains(&format!("| `{name}` |")) || doc.contains(&format!("| `{name}{{")),
            "docs/operations.md does not explain {name}"
        );
    }
}

// ---------------------------------------------------------------------------------------
// Helpers.

fn root() -> PathBuf {
    artifacts::workspace_root()
}

fn read(path: &str) -> String {
    std::fs::read_to_string(root().join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn yaml(text: &str) -> Value {
    serde_norway::from_str(text).unwrap()
}

fn compose() -> Value {
    yaml(&read("docker-compose.yml"))
}

fn kustomization() -> Value {
    yaml(&read("deploy/kubernetes/kustomization.yaml"))
}

/// Every document of every manifest the kustomization lists.
fn kubernetes() -> Vec<Value> {
    let mut documents = Vec::new();
    for file in strings(&kustomization()["resources"]) {
        let text = read(&format!("deploy/kubernetes/{file}"));
        for document in serde_norway::Deserializer::from_str(&text) {
            documents.push(Value::deserialize(document).unwrap_or_else(|e| panic!("{file}: {e}")));
        }
    }
    documents
}

fn manifest(kind: &str, name: &str) -> Value {
    kubernetes()
        .into_iter()
        .find(|d| d["kind"].as_str() == Some(kind) && d["metadata"]["name"].as_str() == Some(name))
        .unwrap_or_else(|| panic!("no {kind} {name} in deploy/kubernetes"))
}

/// The Secret the control plane reads, as the example documents it (not applied by kustomize).
fn example_secret() -> Value {
    let secret = yaml(&read("deploy/kubernetes/secret.example.yaml"));
    assert_eq!(secret["kind"].as_str(), Some("Secret"));
    assert!(
        !strings(&kustomization()["resources"]).contains(&"secret.example.yaml".to_string()),
        "placeholders would overwrite the operator's secrets"
    );
    secret
}

fn compose_envoy_text() -> String {
    read(envoy_config::COMPOSE_FILE)
}

fn kubernetes_envoy_text() -> String {
    manifest("ConfigMap", envoy_config::KUBERNETES_CONFIGMAP)["data"]["envoy.yaml"]
        .as_str()
        .expect("the ConfigMap has envoy.yaml")
        .to_string()
}

fn compose_envoy() -> Value {
    yaml(&compose_envoy_text())
}

fn kubernetes_envoy() -> Value {
    yaml(&kubernetes_envoy_text())
}

fn wasm_filter(envoy: &Value) -> Value {
    seq(
        &envoy["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]
            ["typed_config"]["http_filters"],
    )
    .iter()
    .find(|f| f["name"].as_str() == Some("envoy.filters.http.wasm"))
    .expect("the wasm filter")["typed_config"]
        .clone()
}

fn effective_filter_config(envoy: &Value) -> FilterConfig {
    let raw = wasm_filter(envoy)["config"]["configuration"]["value"]
        .as_str()
        .unwrap()
        .to_string();
    FilterConfig::parse(Some(raw.as_bytes())).unwrap()
}

fn cluster_endpoint(envoy: &Value, name: &str) -> (String, u16) {
    let cluster = seq(&envoy["static_resources"]["clusters"])
        .iter()
        .find(|c| c["name"].as_str() == Some(name))
        .unwrap_or_else(|| panic!("no cluster {name}"))
        .clone();
    let address = &cluster["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]
        ["address"]["socket_address"];
    (
        address["address"].as_str().unwrap().to_string(),
        address["port_value"].as_u64().unwrap() as u16,
    )
}

/// `envoy --mode validate` on `text`, with the image's filter path pointed at the built one.
fn assert_envoy_validates(name: &str, text: &str) {
    let wasm = artifacts::require(&artifacts::filter_wasm(), "the filter (.wasm)").unwrap();
    let text = text.replace(FILTER_WASM_IN_IMAGE, &wasm.display().to_string());
    let scratch = tempfile::tempdir().unwrap();
    let path = scratch.path().join(format!("{name}.yaml"));
    std::fs::write(&path, text).unwrap();
    let (valid, log) = Envoy::validate(&path).unwrap();
    assert!(valid, "Envoy refuses the {name} configuration:\n{log}");
}

struct Probe {
    path: String,
    port: String,
}

fn probe(deployment: &str, kind: &str) -> Probe {
    let container =
        &manifest("Deployment", deployment)["spec"]["template"]["spec"]["containers"][0];
    let get = &container[kind]["httpGet"];
    Probe {
        path: get["path"]
            .as_str()
            .unwrap_or_else(|| panic!("{deployment} has no {kind}"))
            .to_string(),
        port: get["port"].as_str().unwrap_or_default().to_string(),
    }
}

fn container_port(deployment: &str, name: &str) -> u16 {
    let container =
        &manifest("Deployment", deployment)["spec"]["template"]["spec"]["containers"][0];
    seq(&container["ports"])
        .iter()
        .find(|p| p["name"].as_str() == Some(name))
        .and_then(|p| p["containerPort"].as_u64())
        .unwrap_or_else(|| panic!("{deployment} has no port {name}")) as u16
}

fn service_port(service: &str) -> u16 {
    manifest("Service", service)["spec"]["ports"][0]["port"]
        .as_u64()
        .unwrap() as u16
}

fn kubernetes_env(deployment: &str, name: &str) -> String {
    let container =
        &manifest("Deployment", deployment)["spec"]["template"]["spec"]["containers"][0];
    seq(&container["env"])
        .iter()
        .find(|v| v["name"].as_str() == Some(name))
        .and_then(|v| v["value"].as_str())
        .unwrap_or_else(|| panic!("{deployment} does not set {name}"))
        .to_string()
}

/// The port in the `| what | host:port |` table of docs/architecture.md.
fn documented_port(what: &str) -> u16 {
    let doc = read("docs/architecture.md");
    let row = doc
        .lines()
        .find(|line| line.starts_with(&format!("| {what}")))
        .unwrap_or_else(|| panic!("docs/architecture.md documents no port for {what}"));
    let cell = row.split('|').nth(2).expect("a second cell");
    let address = cell.split('`').nth(1).expect("a `host:port` cell");
    address.rsplit(':').next().unwrap().parse().unwrap()
}

/// The `default_value_t` of the `cargo xtask up` flag stored in field `field`.
fn up_default(field: &str) -> u16 {
    let source = read("xtask/src/up.rs");
    let lines: Vec<&str> = source.lines().map(str::trim).collect();
    let at = lines
        .iter()
        .position(|line| *line == format!("{field}: u16,"))
        .unwrap_or_else(|| panic!("xtask up has no {field}"));
    let attribute = lines[at - 1];
    let value = attribute
        .split("default_value_t = ")
        .nth(1)
        .unwrap_or_else(|| panic!("{field} has no default: {attribute}"));
    value.trim_end_matches(")]").parse().unwrap()
}

fn xtask_const(name: &str) -> String {
    let source = read("xtask/src/setup.rs");
    let line = source
        .lines()
        .find(|line| line.starts_with(&format!("pub const {name}: &str = ")))
        .unwrap_or_else(|| panic!("xtask/src/setup.rs has no {name}"));
    line.split('"').nth(1).unwrap().to_string()
}

fn xtask_envoy_version() -> String {
    let version = xtask_const("ENVOY_VERSION");
    assert!(version.split('.').count() == 3, "{version}");
    version
}

/// The Dockerfile's instructions, continuation lines joined, comments dropped.
fn dockerfile() -> Vec<String> {
    let mut lines = Vec::new();
    let mut current = String::new();
    for line in read("deploy/docker/Dockerfile").lines() {
        let trimmed = line.trim();
        if trimmed.starts_with('#') || trimmed.is_empty() {
            continue;
        }
        match trimmed.strip_suffix('\\') {
            Some(part) => {
                current.push_str(part.trim());
                current.push(' ');
            }
            None => {
                current.push_str(trimmed);
                lines.push(std::mem::take(&mut current));
            }
        }
    }
    lines
}

/// The instructions of one stage, from its FROM to the next.
fn stage(lines: &[String], name: &str) -> Vec<String> {
    let start = lines
        .iter()
        .position(|line| line.starts_with("FROM ") && line.ends_with(&format!(" AS {name}")))
        .unwrap_or_else(|| panic!("no stage {name}"));
    lines[start..]
        .iter()
        .enumerate()
        .take_while(|(i, line)| *i == 0 || !line.starts_with("FROM "))
        .map(|(_, line)| line.clone())
        .collect()
}

/// Every `cargo build …` in the Dockerfile's RUN instructions, as words.
fn dockerfile_cargo_builds() -> Vec<Vec<String>> {
    dockerfile()
        .iter()
        .filter(|line| line.starts_with("RUN"))
        .flat_map(|line| line.split("&&").map(str::to_string).collect::<Vec<_>>())
        .filter_map(|part| {
            let at = part.find("cargo build")?;
            Some(part[at..].split_whitespace().map(str::to_string).collect())
        })
        .collect()
}

fn has_pair(words: &[String], flag: &str, value: &str) -> bool {
    words
        .windows(2)
        .any(|pair| pair[0] == flag && pair[1] == value)
}

fn rust_sources(dir: &str) -> String {
    let mut text = String::new();
    let mut stack = vec![root().join(dir)];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                text.push_str(&std::fs::read_to_string(&path).unwrap());
            }
        }
    }
    text
}

fn env_file(path: &str) -> Vec<(String, String)> {
    read(path)
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .filter_map(|line| line.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn glob_prefix_matches(pattern: &str, name: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) if !prefix.contains('*') => name.starts_with(prefix),
        _ => false,
    }
}

fn seq(value: &Value) -> &[Value] {
    value.as_sequence().map(Vec::as_slice).unwrap_or_default()
}

fn mapping(value: &Value) -> Vec<(Value, Value)> {
    value
        .as_mapping()
        .map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
        .unwrap_or_default()
}

fn strings(value: &Value) -> Vec<String> {
    seq(value)
        .iter()
        .filter_map(|v| v.as_str().map(str::to_string))
        .collect()
}

/// The workspace members of the root Cargo.toml (one `members = [...]` line).
fn workspace_members() -> Vec<String> {
    let manifest = read("Cargo.toml");
    let line = manifest
        .lines()
        .find(|line| line.trim_start().starts_with("members"))
        .expect("[workspace] members");
    line.split('"')
        .skip(1)
        .step_by(2)
        .map(str::to_string)
        .collect()
}

#[derive(Debug)]
struct Flag {
    long: String,
    env: String,
    default: Option<String>,
}

/// The `serve` flags of control-plane/src/cli.rs: `#[arg(long, env = …, default…)] pub name`.
fn control_plane_flags() -> Vec<Flag> {
    let source = read("control-plane/src/cli.rs");
    let mut flags = Vec::new();
    for chunk in source.split("#[arg(").skip(1) {
        let (attribute, rest) = chunk.split_once(")]").expect("an #[arg(...)] attribute");
        let attribute: String = attribute.split_whitespace().collect::<Vec<_>>().join(" ");
        let Some(env) = attribute.split("env = \"").nth(1) else {
            continue;
        };
        let env = env.split('"').next().unwrap().to_string();
        let field = rest
            .split("pub ")
            .nth(1)
            .and_then(|r| r.split(':').next())
            .expect("the field after the attribute")
            .trim()
            .to_string();
        let default = if let Some(value) = attribute.split("default_value_t = ").nth(1) {
            Some(value.split([',', ' ']).next().unwrap().replace('_', ""))
        } else {
            attribute
                .split("default_value = \"")
                .nth(1)
                .map(|value| value.split('"').next().unwrap().to_string())
        };
        flags.push(Flag {
            long: format!("--{}", field.replace('_', "-")),
            env,
            default,
        });
    }
    flags
}

/// The fields of the filter's `Config` and `CacheConfig` (as `cache.<field>`).
fn filter_config_fields() -> Vec<String> {
    let source = read("filter/src/config.rs");
    let fields = |name: &str| -> Vec<String> {
        let body = source
            .split(&format!("pub struct {name} {{"))
            .nth(1)
            .and_then(|rest| rest.split('}').next())
            .unwrap_or_else(|| panic!("filter/src/config.rs has no struct {name}"));
        body.lines()
            .filter_map(|line| line.trim().strip_prefix("pub "))
            .filter_map(|line| line.split(':').next().map(str::to_string))
            .collect()
    };
    let mut all = fields("Config");
    all.retain(|field| field != "cache");
    all.extend(
        fields("CacheConfig")
            .into_iter()
            .map(|f| format!("cache.{f}")),
    );
    assert!(all.len() >= 10, "{all:?}");
    all
}
