//! `cargo xtask fuzz`: every fuzz target of `fuzz/` for a number of executions, then the
//! corpus minimised in place (docs/fuzzing.md).

use std::path::Path;
use std::process::Command;

use crate::setup::run;
use crate::step;

/// The targets, in the order they run (the same names as `fuzz/checks`' `TARGETS`).
const TARGETS: &[&str] = &[
    "usage_json",
    "usage_sse",
    "include_usage",
    "model_body",
    "credentials",
    "auth_check",
    "change_feed",
    "spend_intake",
    "request_path",
];

/// libFuzzer needs a nightly compiler; cargo-fuzz is installed from crates.io when missing.
pub fn all(runs: u64, only: Option<&str>) -> anyhow::Result<()> {
    let fuzz_dir = livegate_tests::artifacts::workspace_root().join("fuzz");
    toolchain()?;
    for target in TARGETS.iter().filter(|t| only.is_none_or(|o| o == **t)) {
        step(&format!("fuzzing {target} for {runs} executions"));
        run(fuzz(&fuzz_dir).args(["run", "-O", target, "--"]).args([
            format!("-runs={runs}"),
            "-max_len=4096".into(),
            "-timeout=10".into(),
            "-print_final_stats=1".into(),
        ]))?;
        step(&format!("minimising the corpus of {target}"));
        run(fuzz(&fuzz_dir).args(["cmin", "-O", target]))?;
    }
    Ok(())
}

fn fuzz(dir: &Path) -> Command {
    let mut command = Command::new("cargo");
    crate::build::without_this_crate_s_env(&mut command);
    command.current_dir(dir).args(["+nightly", "fuzz"]);
    command
}

fn toolchain() -> anyhow::Result<()> {
    let nightly = Command::new("cargo")
        .args(["+nightly", "--version"])
        .output();
    if !nightly.is_ok_and(|o| o.status.success()) {
        step("installing the nightly toolchain (rustup toolchain install nightly)");
        run(Command::new("rustup").args([
            "toolchain",
            "install",
            "nightly",
            "--profile",
            "minimal",
        ]))?;
    }
    let fuzz = Command::new("cargo").args(["fuzz", "--version"]).output();
    if !fuzz.is_ok_and(|o| o.status.success()) {
        step("installing cargo-fuzz (cargo install cargo-fuzz)");
        run(Command::new("cargo").args(["install", "cargo-fuzz", "--locked"]))?;
    }
    Ok(())
}
