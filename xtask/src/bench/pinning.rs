//! Processes pinned to cores for one measurement (`taskset`), every core given back after.
//!
//! On a machine whose few cores everything shares, pinning separates two parts' costs:
//! what runs on the other core cannot slow the measured one.

use std::process::Command;

use livegate_tests::procfs::descendants;

/// Pinned processes; dropping it lets each run on every core again.
pub struct Pinned {
    pids: Vec<u32>,
    every_core: String,
}

impl Pinned {
    /// Nothing pinned yet; `None` on a machine with one core (nothing to separate).
    pub fn new() -> Option<Pinned> {
        let cores = std::thread::available_parallelism().map_or(1, usize::from);
        (cores >= 2).then(|| Pinned {
            pids: Vec::new(),
            every_core: format!("0-{}", cores - 1),
        })
    }

    /// Pins one process (with all its threads) to `cpus`; children it starts later inherit it.
    pub fn process(&mut self, pid: u32, cpus: &str) -> anyhow::Result<()> {
        set(pid, cpus)?;
        self.pids.push(pid);
        Ok(())
    }

    /// Pins `root` and every process under it (with all their threads) to `cpus` (a
    /// `taskset` list, e.g. `1`); children forked later inherit it.
    pub fn tree(&mut self, root: u32, cpus: &str) -> anyhow::Result<()> {
        for pid in std::iter::once(root).chain(descendants(root)) {
            set(pid, cpus)?;
            self.pids.push(pid);
        }
        Ok(())
    }
}

impl Drop for Pinned {
    fn drop(&mut self) {
        for pid in &self.pids {
            // A process gone since has nothing to give back.
            let _ = set(*pid, &self.every_core);
        }
    }
}

fn set(pid: u32, cpus: &str) -> anyhow::Result<()> {
    let status = Command::new("taskset")
        .args(["--all-tasks", "--pid", "--cpu-list", cpus, &pid.to_string()])
        .stdout(std::process::Stdio::null())
        .status()?;
    anyhow::ensure!(status.success(), "taskset {cpus} {pid}: {status}");
    Ok(())
}
