//! The demo upstream binary, started on a free port.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::process::{Owned, SpawnOptions};

/// A running demo upstream; stopped on drop.
#[derive(Debug)]
pub struct DemoUpstream {
    process: Owned,
    port: u16,
}

impl DemoUpstream {
    /// Starts it on `port` (or a free one), logging into `log_dir`.
    pub fn start(port: Option<u16>, log_dir: &Path) -> anyhow::Result<DemoUpstream> {
        let binary = crate::artifacts::require(
            &crate::artifacts::demo_upstream_bin(),
            "the demo upstream binary",
        )?;
        let port = match port {
            Some(port) => port,
            None => crate::ports::free_port()?,
        };
        let mut command = Command::new(binary);
        command.arg("--listen").arg(format!("127.0.0.1:{port}"));
        let log = log_dir.join("demo-upstream.log");
        let process = Owned::spawn("demo-upstream", command, &log, SpawnOptions::default())?;
        let upstream = DemoUpstream { process, port };
        let url = format!("{}/v1/models", upstream.base_url());
        crate::poll::until(
            "the demo upstream to listen",
            Duration::from_secs(30),
            || {
                crate::http::get_within(&url, Duration::from_secs(2))
                    .ok()
                    .filter(|response| response.status == 200)
            },
        )?;
        Ok(upstream)
    }

    pub fn pid(&self) -> u32 {
        self.process.pid()
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn log_text(&self) -> String {
        self.process.log_text()
    }
}
