//! The engine as an OS process: spawn it tied to our life, and tear it down without ever blocking.

use std::io;
use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use tokio::process::{Child, ChildStdin, ChildStdout, Command};

use super::state::TeardownStep;

/// How to start an engine: a program and its arguments (a test may substitute a wrapper).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EngineCommand {
    pub program: PathBuf,
    pub args: Vec<String>,
}

/// Secrets the engine has no use for in its environment (the URL travels in the first frame).
const SCRUBBED_ENV: &[&str] = &["LIVEGATE_MASTER_KEY", "DATABASE_URL"];

/// A running engine. Its pid stays ours until we reap it, so signalling it is race-free.
pub struct EngineProcess {
    child: Child,
    pid: u32,
}

/// How a teardown ended, for logs and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TeardownOutcome {
    pub sent_term: bool,
    pub sent_kill: bool,
}

impl EngineProcess {
    /// Spawns the engine with piped stdin/stdout, in its own process group (a terminal's
    /// Ctrl-C reaches us, and we drain before stopping it), and with `PR_SET_PDEATHSIG` so the
    /// kernel kills it if we die, even by SIGKILL.
    pub fn spawn(
        cmd: &EngineCommand,
        log_format: &str,
    ) -> io::Result<(EngineProcess, ChildStdout, ChildStdin)> {
        let mut c = Command::new(&cmd.program);
        c.args(&cmd.args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .env("LIVEGATE_LOG_FORMAT", log_format)
            .process_group(0)
            .kill_on_drop(true);
        SCRUBBED_ENV.iter().for_each(|k| {
            c.env_remove(k);
        });
        let parent = nix::unistd::getpid();
        // SAFETY: the closure runs between fork and exec and only makes async-signal-safe
        // syscalls (prctl, getppid); it allocates nothing.
        unsafe {
            c.pre_exec(move || {
                nix::sys::prctl::set_pdeathsig(Signal::SIGKILL)?;
                // If we died between fork and prctl, the signal will never come: give up.
                if nix::unistd::getppid() != parent {
                    return Err(io::Error::other("parent exited before the engine started"));
                }
                Ok(())
            });
        }
        let mut child = c.spawn()?;
        let pid = child
            .id()
            .ok_or_else(|| io::Error::other("engine exited at once"))?;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| io::Error::other("engine stdout missing"))?;
        let stdin = child
            .stdin
            .take()
            .ok_or_else(|| io::Error::other("engine stdin missing"))?;
        Ok((EngineProcess { child, pid }, stdout, stdin))
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Resolves when the engine exits on its own. Cancel-safe, so it can sit in a `select!`.
    pub async fn exited(&mut self) -> io::Result<ExitStatus> {
        self.child.wait().await
    }

    /// Non-blocking check (`waitpid` with `WNOHANG`); reaps the engine if it has exited.
    fn has_exited(&mut self) -> bool {
        !matches!(self.child.try_wait(), Ok(None))
    }

    /// The kill sequence: SIGTERM, async sleep(grace) (ended early by exit), SIGKILL if still
    /// alive, then reap in a background task. Every wait here is a timer or a SIGCHLD-driven
    /// future: nothing blocks the runtime, however wedged the engine is.
    pub async fn teardown(mut self, grace: Duration) -> TeardownOutcome {
        let mut out = TeardownOutcome {
            sent_term: false,
            sent_kill: false,
        };
        let mut step = if self.has_exited() {
            TeardownStep::Done
        } else {
            TeardownStep::Terminate
        };
        loop {
            match step {
                TeardownStep::Terminate => {
                    out.sent_term = kill(Pid::from_raw(self.pid as i32), Signal::SIGTERM).is_ok();
                }
                TeardownStep::AwaitGrace(grace) => {
                    let _ = tokio::time::timeout(grace, self.child.wait()).await;
                }
                TeardownStep::Kill => {
                    out.sent_kill = self.child.start_kill().is_ok();
                }
                TeardownStep::ReapInBackground => {
                    let pid = self.pid;
                    let mut child = self.child;
                    tokio::spawn(async move {
                        match child.wait().await {
                            Ok(status) => tracing::info!(pid, %status, "engine reaped"),
                            Err(e) => tracing::warn!(pid, error = %e, "engine could not be reaped"),
                        }
                    });
                    return out;
                }
                TeardownStep::Done => return out,
            }
            step = step.next(self.has_exited(), grace);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sh(script: &str) -> EngineCommand {
        EngineCommand {
            program: "/bin/sh".into(),
            args: vec!["-c".into(), script.into()],
        }
    }

    #[tokio::test]
    async fn a_cooperative_engine_is_stopped_by_sigterm_alone() {
        let (p, _o, _i) = EngineProcess::spawn(&sh("exec sleep 30"), "text").unwrap();
        let out = p.teardown(Duration::from_secs(5)).await;
        assert_eq!(
            out,
            TeardownOutcome {
                sent_term: true,
                sent_kill: false
            }
        );
    }

    #[tokio::test]
    async fn an_engine_ignoring_sigterm_is_killed_after_the_grace_period() {
        let (p, mut o, _i) =
            EngineProcess::spawn(&sh("trap '' TERM; echo ready; exec sleep 30"), "text").unwrap();
        let pid = p.pid();
        // Signal only once the trap is in place.
        let mut buf = [0u8; 6];
        tokio::io::AsyncReadExt::read_exact(&mut o, &mut buf)
            .await
            .unwrap();
        let started = std::time::Instant::now();
        let out = p.teardown(Duration::from_millis(100)).await;
        assert_eq!(
            out,
            TeardownOutcome {
                sent_term: true,
                sent_kill: true
            }
        );
        assert!(started.elapsed() >= Duration::from_millis(100));
        // Reaped in the background: the pid disappears from /proc.
        for _ in 0..200 {
            if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("engine {pid} still present after SIGKILL");
    }

    #[tokio::test]
    async fn an_engine_that_already_exited_is_not_signalled() {
        let (mut p, _o, _i) = EngineProcess::spawn(&sh("exit 0"), "text").unwrap();
        p.exited().await.unwrap();
        let out = p.teardown(Duration::from_millis(100)).await;
        assert_eq!(
            out,
            TeardownOutcome {
                sent_term: false,
                sent_kill: false
            }
        );
    }

    #[tokio::test]
    async fn secrets_are_scrubbed_from_the_engine_environment() {
        std::env::set_var("LIVEGATE_MASTER_KEY", "sk-secret-master");
        let (mut p, mut o, _i) =
            EngineProcess::spawn(&sh("echo \"[$LIVEGATE_MASTER_KEY]\""), "text").unwrap();
        let mut s = String::new();
        tokio::io::AsyncReadExt::read_to_string(&mut o, &mut s)
            .await
            .unwrap();
        p.exited().await.unwrap();
        assert_eq!(s.trim(), "[]");
    }
}
