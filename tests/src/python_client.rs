//! Real Python clients from the venv `cargo xtask setup` installs, run against the
//! gateway: a script with the OpenAI or Anthropic SDK prints one JSON object, which the
//! test reads; LiteLLM's `lite` CLI runs as an operator types it.

use std::process::Command;

/// The venv's Python (`LIVEGATE_TEST_PYTHON`, set by `cargo xtask test`).
pub fn python() -> String {
    std::env::var("LIVEGATE_TEST_PYTHON").unwrap_or_else(|_| {
        panic!("LIVEGATE_TEST_PYTHON: the clients venv's Python (cargo xtask test sets it)")
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

/// What a run of LiteLLM's `lite` CLI printed, and whether it succeeded.
#[derive(Debug)]
pub struct LiteOutput {
    pub success: bool,
    pub stdout: String,
    pub stderr: String,
}

impl LiteOutput {
    /// The JSON the command printed (`lite` prints an answer's body as JSON); it must have
    /// succeeded.
    pub fn json(&self) -> serde_json::Value {
        assert!(self.success, "{}\n{}", self.stdout, self.stderr);
        serde_json::from_str(self.stdout.trim())
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}\n{}", self.stdout, self.stderr))
    }

    /// The command failed with HTTP `status`, which `lite` reports in one of three ways:
    /// `Error: HTTP <status>` before the answer's body; LiteLLM's error (its `code` the
    /// status) in a raised message; or requests' `<status> Client Error` (`Server Error`)
    /// in a traceback (`models list`, `users create`).
    pub fn failed_with(&self, status: u16) -> bool {
        let said = [
            format!("Error: HTTP {status}"),
            format!("\"code\":\"{status}\""),
            format!("{status} Client Error"),
            format!("{status} Server Error"),
        ];
        !self.success && said.iter().any(|s| self.stderr.contains(s))
    }
}

/// LiteLLM's `lite` CLI, from the same venv, against the gateway at `base_url` with
/// `api_key` (`LITELLM_PROXY_URL`, `LITELLM_PROXY_API_KEY`); `home` holds what it writes
/// under `~/.litellm`, so runs share nothing with the machine's user.
pub fn lite(base_url: &str, api_key: &str, home: &std::path::Path, args: &[&str]) -> LiteOutput {
    let bin = std::path::PathBuf::from(python()).with_file_name("lite");
    let output = Command::new(&bin)
        .args(args)
        .env("LITELLM_PROXY_URL", base_url)
        .env("LITELLM_PROXY_API_KEY", api_key)
        .env("HOME", home)
        .env("NO_COLOR", "1")
        // Its tables wide enough that no id wraps.
        .env("COLUMNS", "400")
        .output()
        .unwrap_or_else(|e| panic!("starting {}: {e}", bin.display()));
    LiteOutput {
        success: output.status.success(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}
