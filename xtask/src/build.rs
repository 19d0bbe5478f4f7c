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
        filter_wasm: target.join(WASM_TARGET).join("wasm/livegate_filter.wasm"),
        control_plane: target.join(profile).join("livegate-control-plane"),
        demo_upstream: target.join(profile).join("livegate-demo-upstream"),
    })
}

/// `cargo`, the same one running this xtask.
pub fn cargo() -> Command {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut command = Command::new(cargo);
    command.current_dir(livegate_tests::artifacts::workspace_root());
    command
}
