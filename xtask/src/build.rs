//! Builds what the stack runs: the filter for wasm, and the native binaries.

use std::path::PathBuf;
use std::process::Command;

use crate::setup::{run, WASM_TARGET};
use crate::step;

/// Where the built artifacts are.
pub struct Built {
    pub filter_wasm: PathBuf,
    pub control_plane: PathBuf,
    pub demo_upstream: PathBuf,
}

pub fn all(release: bool) -> anyhow::Result<Built> {
    let filter_wasm = filter()?;
    let profile = if release { "release" } else { "debug" };
    step(&format!(
        "building the control plane and the demo upstream ({profile})"
    ));
    let mut native = cargo();
    native.args(["build", "--package", "livegate-control-plane"]);
    native.args(["--package", "livegate-demo-upstream"]);
    if release {
        native.arg("--release");
    }
    run(&mut native)?;
    let target = livegate_tests::artifacts::target_dir();
    Ok(Built {
        filter_wasm,
        control_plane: target.join(profile).join("livegate-control-plane"),
        demo_upstream: target.join(profile).join("livegate-demo-upstream"),
    })
}

/// Builds the filter alone (wasm32-wasip1, profile `wasm`: the release build that ships).
pub fn filter() -> anyhow::Result<PathBuf> {
    step("building the filter (wasm32-wasip1, profile wasm)");
    run(cargo()
        .args([
            "build",
            "--package",
            "livegate-filter",
            "--target",
            WASM_TARGET,
        ])
        .args(["--profile", "wasm"]))?;
    Ok(livegate_tests::artifacts::target_dir()
        .join(WASM_TARGET)
        .join("wasm/livegate_filter.wasm"))
}

/// `cargo`, the same one running this xtask.
pub fn cargo() -> Command {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut command = Command::new(cargo);
    command.current_dir(livegate_tests::artifacts::workspace_root());
    command
}

/// Installs, builds, and points the harness at the artifacts (`up` and `bench`).
pub fn prepare_stack(release: bool) -> anyhow::Result<()> {
    let tools = crate::setup::all()?;
    let built = all(release)?;
    for (name, value) in artifact_env(&tools, &built) {
        std::env::set_var(name, value);
    }
    Ok(())
}

/// The environment through which the harness finds every tool and artifact.
pub fn artifact_env(tools: &crate::setup::Tools, built: &Built) -> [(&'static str, PathBuf); 6] {
    [
        ("LIVEGATE_TEST_PYTHON", tools.client_python.clone()),
        ("LIVEGATE_ENVOY", tools.envoy.clone()),
        ("LIVEGATE_PG_BIN", tools.postgres_bin.clone()),
        ("LIVEGATE_FILTER_WASM", built.filter_wasm.clone()),
        ("LIVEGATE_CONTROL_PLANE_BIN", built.control_plane.clone()),
        ("LIVEGATE_DEMO_UPSTREAM_BIN", built.demo_upstream.clone()),
    ]
}
