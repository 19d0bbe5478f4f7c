//! Real Python clients (the OpenAI SDK from the venv `cargo xtask setup` installs) run
//! against the gateway: a script prints one JSON object, which the test reads.

use std::process::Command;

/// The venv's Python (`LIVEGATE_TEST_PYTHON`, set by `cargo xtask test`).
pub fn python() -> String {
    std::env::var("LIVEGATE_TEST_PYTHON").unwrap_or_else(|_| {
        panic!("LIVEGATE_TEST_PYTHON: a Python with the openai package (cargo xtask test sets it)")
    })
}

/// Runs `script` with `args` and reads the JSON object it prints; its output is in the
/// panic message if it fails.
pub fn run_json(script: &str, args: &[&str]) -> serde_json::Value {
    let output = Command::new(python())
        .arg("-c")
        .arg(script)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("starting Python: {e}"));
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stdout}\n{stderr}");
    serde_json::from_str(stdout.trim())
        .unwrap_or_else(|e| panic!("not one JSON object ({e}): {stdout}\n{stderr}"))
}
