//! The real control-plane binary, started on a free port against a given database.

use std::path::PathBuf;
use std::process::{Command, ExitStatus};
use std::time::Duration;

use nix::sys::signal::Signal;

use crate::process::{Owned, Scratch, SpawnOptions, StopPolicy};

const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// The master key the tests start control planes with: as long as the control plane
/// demands (32 characters or more), and no placeholder.
pub const TEST_MASTER_KEY: &str = "sk-master-test-0123456789abcdef0123456789abcdef";

/// A running control plane; SIGTERM then SIGKILL on drop.
#[derive(Debug)]
pub struct ControlPlane {
    process: Owned,
    port: u16,
    metrics_port: u16,
    _scratch: Option<Scratch>,
}

/// How to start a [`ControlPlane`].
#[derive(Debug, Clone)]
pub struct Builder {
    database_url: String,
    master_key: Option<String>,
    /// The internal API's token (default: the test process's, `internal_token`).
    internal_token: Option<String>,
    port: Option<u16>,
    args: Vec<String>,
    env: Vec<(String, String)>,
    log_dir: Option<PathBuf>,
}

impl ControlPlane {
    pub fn builder(database_url: &str) -> Builder {
        Builder {
            database_url: database_url.to_string(),
            master_key: Some(TEST_MASTER_KEY.to_string()),
            internal_token: Some(crate::internal_token::internal_token().to_string()),
            port: None,
            args: Vec::new(),
            env: Vec::new(),
            log_dir: None,
        }
    }

    pub fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `/metrics`, on the control plane's own metrics listener (`--metrics-listen`).
    pub fn metrics_url(&self) -> String {
        format!("http://127.0.0.1:{}/metrics", self.metrics_port)
    }

    pub fn pid(&self) -> u32 {
        self.process.pid()
    }

    pub fn signal(&self, signal: Signal) -> anyhow::Result<()> {
        self.process.signal(signal)
    }

    pub fn log_text(&self) -> String {
        self.process.log_text()
    }

    /// Polls readiness until it says `db: "connected"`.
    pub fn wait_connected(&self, timeout: Duration) -> anyhow::Result<()> {
        let url = format!("{}/health/readiness", self.base_url());
        crate::poll::until("the control plane's database to connect", timeout, || {
            let response = crate::http::get_within(&url, Duration::from_secs(2)).ok()?;
            let body = response.json().ok()?;
            (body["db"] == "connected").then_some(())
        })
        .map_err(|error| anyhow::anyhow!("{error}:\n{}", self.log_text()))
    }

    /// Waits for the process to exit (after a signal the test sent).
    pub fn wait_exit(&mut self, timeout: Duration) -> anyhow::Result<ExitStatus> {
        self.process.wait_exit(timeout)
    }
}

impl Builder {
    /// `None` starts it without a master key (it must refuse to start).
    pub fn master_key(mut self, key: Option<&str>) -> Builder {
        self.master_key = key.map(str::to_string);
        self
    }

    /// `None` starts it without an internal token (it must refuse to start).
    pub fn internal_token(mut self, token: Option<&str>) -> Builder {
        self.internal_token = token.map(str::to_string);
        self
    }

    pub fn port(mut self, port: u16) -> Builder {
        self.port = Some(port);
        self
    }

    pub fn arg(mut self, arg: impl Into<String>) -> Builder {
        self.args.push(arg.into());
        self
    }

    pub fn env(mut self, name: &str, value: &str) -> Builder {
        self.env.push((name.to_string(), value.to_string()));
        self
    }

    /// Where the log goes (default: a temporary directory).
    pub fn log_dir(mut self, dir: PathBuf) -> Builder {
        self.log_dir = Some(dir);
        self
    }

    /// Starts it and waits until `GET /health/liveliness` answers 200.
    pub fn start(self) -> anyhow::Result<ControlPlane> {
        let mut control_plane = self.spawn()?;
        let url = format!("{}/health/liveliness", control_plane.base_url());
        let waited = crate::poll::until("the control plane to listen", READY_TIMEOUT, || {
            if let Some(status) = control_plane.process.try_exit_code() {
                return Some(Err(anyhow::anyhow!(
                    "the control plane exited ({status}):\n{}",
                    control_plane.log_text()
                )));
            }
            let answered = crate::http::get_within(&url, Duration::from_secs(2)).ok()?;
            (answered.status == 200).then_some(Ok(()))
        });
        waited.and_then(|inner| inner).map(|()| control_plane)
    }

    /// Starts it and waits for it to exit by itself (for start-up refusals).
    pub fn start_expecting_exit(self) -> anyhow::Result<(ExitStatus, String)> {
        let mut control_plane = self.spawn()?;
        let status = control_plane.process.wait_exit(READY_TIMEOUT)?;
        Ok((status, control_plane.log_text()))
    }

    fn spawn(self) -> anyhow::Result<ControlPlane> {
        let binary = crate::artifacts::require(
            &crate::artifacts::control_plane_bin(),
            "the control-plane binary",
        )?;
        let port = match self.port {
            Some(port) => port,
            None => crate::ports::free_port()?,
        };
        let (scratch, log_dir) = match self.log_dir {
            Some(dir) => (None, dir),
            None => {
                let scratch = Scratch::new("livegate-cp-")?;
                let dir = scratch.path().to_path_buf();
                (Some(scratch), dir)
            }
        };
        let metrics_port = crate::ports::free_port()?;
        let mut command = Command::new(binary);
        command
            .arg("serve")
            .arg("--listen")
            .arg(format!("127.0.0.1:{port}"))
            .arg("--metrics-listen")
            .arg(format!("127.0.0.1:{metrics_port}"))
            .args(&self.args)
            .env_remove(crate::internal_token::ENV)
            .env_remove("LIVEGATE_INTERNAL_TOKEN_FILE")
            .env("DATABASE_URL", &self.database_url)
            .env_remove("LIVEGATE_MASTER_KEY")
            // Each control plane its own spend spool (a `--spend-spool-path` argument or an
            // `env` of the builder wins): next to its log, kept across a restart on it.
            .env("LIVEGATE_SPEND_SPOOL_PATH", log_dir.join("spend.spool"));
        if let Some(key) = &self.master_key {
            command.env("LIVEGATE_MASTER_KEY", key);
        }
        if let Some(token) = &self.internal_token {
            command.env(crate::internal_token::ENV, token);
        }
        command.envs(self.env.iter().map(|(k, v)| (k, v)));
        let options = SpawnOptions {
            own_process_group: false,
            stop: StopPolicy {
                signal: Signal::SIGTERM,
                grace: Duration::from_secs(10),
            },
        };
        let log = log_dir.join("control-plane.log");
        let process = Owned::spawn("control-plane", command, &log, options)?;
        Ok(ControlPlane {
            process,
            port,
            metrics_port,
            _scratch: scratch,
        })
    }
}
