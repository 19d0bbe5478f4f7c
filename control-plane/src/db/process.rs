//! The engine as an OS process: spawn it tied to our life, and tear it down without ever blocking.

use std::io;
use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use tokio::process::{Child, ChildStdin, ChildStdout, Command};

/// How to start an engine: a program and its arguments (a test may substitute a wrapper).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EngineCommand {
    pub program: PathBuf,
    pub args: Vec<String>,
}

/// Secrets the engine has no use for in its environment (the URL travels in the first frame).
const SCRUBBED_ENV: &[&str] = &["LIVEGATE_MASTER_KEY", "DATABASE_URL"];

/// A running engine, leader of its own process group (pgid = pid). The kernel reuses no pid
/// while it names a live group or an unreaped process, so signalling the group is race-free.
pub struct EngineProcess {
    child: Child,
    pid: u32,
}

/// How a teardown ended, for logs and metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TeardownOutcome {
    pub sent_term: bool,
    pub sent_kill: bool,
}

impl EngineProcess {
    /// Spawns the engine with piped stdin/stdout, in its own process group (a terminal's
    /// Ctrl-C reaches us, and we drain before stopping it; and the teardown signals the whole
    /// group, so a wrapper's children go with it), and with `PR_SET_PDEATHSIG` so the
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

    /// The kill sequence, addressed to the engine's process group so that a wrapper (a shell
    /// running the real engine as its child) leaves nothing behind: SIGTERM to the group,
    /// `tokio::time::sleep(grace)` racing the group's exit, SIGKILL to the group if any of it
    /// is still alive, then the leader reaped by a background task. Every wait is a timer or a
    /// SIGCHLD-driven future and every signal a non-blocking syscall: however wedged the
    /// engine is, the runtime never waits on it.
    pub async fn teardown(mut self, grace: Duration) -> TeardownOutcome {
        let group = Pid::from_raw(self.pid as i32);
        let mut out = TeardownOutcome::default();
        if group_alive(group) {
            out.sent_term = killpg(group, Signal::SIGTERM).is_ok();
            tokio::select! {
                _ = tokio::time::sleep(grace) => {}
                _ = group_gone(&mut self.child, group) => {}
            }
            if group_alive(group) {
                out.sent_kill = killpg(group, Signal::SIGKILL).is_ok();
            }
        }
        let (pid, mut child) = (self.pid, self.child);
        tokio::spawn(async move {
            match child.wait().await {
                Ok(status) => tracing::debug!(pid, %status, "engine reaped"),
                Err(e) => tracing::warn!(pid, error = %e, "engine could not be reaped"),
            }
        });
        out
    }
}

/// Whether any process of the group exists (signal 0: a check, nothing is sent). The leader
/// counts until it is reaped, so this stays true while it is an unreaped zombie.
fn group_alive(group: Pid) -> bool {
    killpg(group, None).is_ok()
}

/// Resolves once the leader is reaped and no other member of its group is left. Members
/// other than the leader are not our children, so their end is polled, never waited for.
async fn group_gone(child: &mut Child, group: Pid) {
    let _ = child.wait().await;
    while group_alive(group) {
        tokio::time::sleep(GROUP_POLL).await;
    }
}

/// How often `group_gone` looks again for the members of a group whose leader has gone.
const GROUP_POLL: Duration = Duration::from_millis(10);

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

    /// Polls /proc until `pid` is gone (or a zombie, whose reaping is its new parent's job).
    async fn gone(pid: u32) -> bool {
        for _ in 0..500 {
            match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
                Err(_) => return true,
                Ok(stat)
                    if stat
                        .rsplit(')')
                        .next()
                        .unwrap_or("")
                        .trim_start()
                        .starts_with('Z') =>
                {
                    return true
                }
                Ok(_) => tokio::time::sleep(Duration::from_millis(10)).await,
            }
        }
        false
    }

    async fn first_line(o: &mut ChildStdout) -> String {
        let mut line = Vec::new();
        let mut byte = [0u8; 1];
        while tokio::io::AsyncReadExt::read(o, &mut byte).await.unwrap() == 1 && byte[0] != b'\n' {
            line.push(byte[0]);
        }
        String::from_utf8(line).unwrap()
    }

    #[tokio::test]
    async fn a_wrapper_shell_trapping_sigterm_takes_its_child_with_it() {
        // The shell ignores SIGTERM and keeps the "engine" as a child, not an exec.
        let script = "trap '' TERM; sleep 30 & echo $!; wait";
        let (p, mut o, _i) = EngineProcess::spawn(&sh(script), "text").unwrap();
        let (shell, child) = (p.pid(), first_line(&mut o).await.parse::<u32>().unwrap());
        let out = p.teardown(Duration::from_millis(100)).await;
        assert!(out.sent_term, "{out:?}");
        assert!(
            gone(child).await,
            "the wrapper's child {child} outlived the teardown"
        );
        assert!(
            gone(shell).await,
            "the wrapper {shell} outlived the teardown"
        );
    }

    #[tokio::test]
    async fn the_group_is_ended_even_after_its_leader_exited_on_its_own() {
        // The leader leaves at once; its child (same group) is an orphan holding on.
        let script = "sleep 30 & echo $!";
        let (mut p, mut o, _i) = EngineProcess::spawn(&sh(script), "text").unwrap();
        let child = first_line(&mut o).await.parse::<u32>().unwrap();
        p.exited().await.unwrap();
        let out = p.teardown(Duration::from_secs(5)).await;
        assert!(out.sent_term, "{out:?}");
        assert!(
            gone(child).await,
            "the orphan {child} outlived the teardown"
        );
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
