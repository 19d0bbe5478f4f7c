//! A child process the harness owns: output to a log file, a parent-death signal so
//! nothing outlives the harness, a graceful stop on drop, logs shown when a test fails.

use std::fs::File;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, killpg, Signal};
use nix::unistd::Pid;

/// How a process is asked to stop on drop before it is killed.
#[derive(Debug, Clone, Copy)]
pub struct StopPolicy {
    /// The signal sent first (SIGTERM for most; SIGINT for Postgres' fast shutdown).
    pub signal: Signal,
    /// How long the process gets to exit before SIGKILL.
    pub grace: Duration,
}

impl Default for StopPolicy {
    fn default() -> Self {
        StopPolicy {
            signal: Signal::SIGTERM,
            grace: Duration::from_secs(5),
        }
    }
}

/// Options for [`Owned::spawn`].
#[derive(Debug, Clone, Copy, Default)]
pub struct SpawnOptions {
    /// Start the child as the leader of a new process group, so a signal can reach
    /// it and every process it forks (Postgres' backends).
    pub own_process_group: bool,
    pub stop: StopPolicy,
}

/// A running child process with its log file.
#[derive(Debug)]
pub struct Owned {
    name: String,
    child: Child,
    log_path: PathBuf,
    options: SpawnOptions,
}

impl Owned {
    /// Spawns `command`, appending its stdout and stderr to `log_path`.
    pub fn spawn(
        name: &str,
        mut command: Command,
        log_path: &Path,
        options: SpawnOptions,
    ) -> anyhow::Result<Owned> {
        let log = File::options().create(true).append(true).open(log_path)?;
        command
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        if options.own_process_group {
            command.process_group(0);
        }
        // The kernel ties the parent-death signal to the spawning *thread*: spawn
        // from the thread that owns the process (the test's), not a helper thread.
        // SAFETY: prctl is async-signal-safe; nothing else runs between fork and exec.
        unsafe {
            command.pre_exec(|| {
                nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).map_err(std::io::Error::from)
            });
        }
        let child = command
            .spawn()
            .map_err(|error| anyhow::anyhow!("cannot start {name} ({command:?}): {error}"))?;
        Ok(Owned {
            name: name.to_string(),
            child,
            log_path: log_path.to_path_buf(),
            options,
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// Everything the process has written so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// Sends `signal` to the process (or its whole group when it leads one).
    pub fn signal(&self, signal: Signal) -> anyhow::Result<()> {
        let pid = Pid::from_raw(self.child.id() as i32);
        if self.options.own_process_group {
            killpg(pid, signal)?;
        } else {
            kill(pid, signal)?;
        }
        Ok(())
    }

    /// The exit status, if the process has exited.
    pub fn try_exit_code(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// Waits (polling) for the process to exit on its own.
    pub fn wait_exit(&mut self, timeout: Duration) -> anyhow::Result<std::process::ExitStatus> {
        let name = self.name.clone();
        crate::poll::until(&format!("{name} to exit"), timeout, || self.try_exit_code())
    }

    /// Stops the process: the policy's signal, then SIGKILL after the grace period.
    pub fn stop(&mut self) {
        if self.try_exit_code().is_some() {
            return;
        }
        let _ = self.signal(self.options.stop.signal);
        let deadline = Instant::now() + self.options.stop.grace;
        while Instant::now() < deadline {
            if self.try_exit_code().is_some() {
                return;
            }
            std::thread::sleep(crate::poll::POLL_INTERVAL);
        }
        let _ = self.signal(Signal::SIGKILL);
        let _ = self.child.wait();
    }
}

impl Drop for Owned {
    fn drop(&mut self) {
        // A failing test shows what the process said.
        self.stop();
        if std::thread::panicking() {
            eprintln!(
                "---- {} log ({}) ----\n{}",
                self.name,
                self.log_path.display(),
                tail(&self.log_text(), 200)
            );
        }
    }
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// A scratch directory for a test's processes; kept on disk when the test fails.
#[derive(Debug)]
pub struct Scratch {
    dir: Option<tempfile::TempDir>,
    path: PathBuf,
}

impl Scratch {
    /// A new directory under the system temp dir, readable by other users (Postgres
    /// runs as `postgres` and must reach its data directory inside it).
    pub fn new(prefix: &str) -> anyhow::Result<Scratch> {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::Builder::new().prefix(prefix).tempdir()?;
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))?;
        let path = dir.path().to_path_buf();
        Ok(Scratch {
            dir: Some(dir),
            path,
        })
    }

    /// A directory the caller manages (the local stack's `.livegate/`), never removed.
    pub fn persistent(path: &Path) -> anyhow::Result<Scratch> {
        std::fs::create_dir_all(path)?;
        Ok(Scratch {
            dir: None,
            path: path.to_path_buf(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if std::thread::panicking() {
            if let Some(dir) = self.dir.take() {
                let kept = dir.keep();
                eprintln!("---- test files kept in {}", kept.display());
            }
        }
    }
}
