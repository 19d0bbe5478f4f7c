//! `cargo xtask test` and `cargo xtask lint`.

use crate::build::{self, cargo};
use crate::setup::{self, run, WASM_TARGET};
use crate::step;

/// Checks the layout, installs, builds, then runs every test of the workspace with the artifacts' paths.
pub fn all(cargo_args: &[String]) -> anyhow::Result<()> {
    // The floor plan first: a change that breaks it fails before anything is built.
    crate::layout::check_before_tests()?;
    let tools = setup::all()?;
    let built = build::all(false)?;
    // The mesh tests run the filter as a mesh does: taken out of its OCI image.
    let package =
        crate::package::package(&built.filter_wasm, &livegate_tests::artifacts::target_dir())?;
    step("running every test (unit and end-to-end)");
    run(cargo()
        .args(["test", "--workspace", "--no-fail-fast"])
        .args(cargo_args)
        .envs(build::artifact_env(&tools, &built))
        .env(livegate_tests::mesh::OCI_LAYOUT_ENV, &package.layout))
}

/// Formatting, and clippy with warnings denied, on the host and on the wasm target.
pub fn lint() -> anyhow::Result<()> {
    step("cargo fmt --check");
    run(cargo().args(["fmt", "--all", "--", "--check"]))?;
    step("clippy (host, every target)");
    run(cargo().args([
        "clippy",
        "--workspace",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ]))?;
    step("clippy (the filter and the benchmarks' floor filter on wasm32-wasip1)");
    run(cargo()
        .args([
            "clippy",
            "--package",
            "livegate-filter",
            "--package",
            "livegate-floor-filter",
            "--target",
            WASM_TARGET,
        ])
        .args(["--", "-D", "warnings"]))
}
