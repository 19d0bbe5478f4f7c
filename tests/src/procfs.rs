//! What `/proc` says about processes: children, descendants, zombies.

use std::path::Path;

/// The state letter (`R`, `S`, `Z`, …) and parent pid of every process on the machine.
fn processes() -> Vec<(u32, char, u32)> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|pid| {
            parse_stat(
                pid,
                &std::fs::read_to_string(Path::new("/proc").join(pid.to_string()).join("stat"))
                    .ok()?,
            )
        })
        .collect()
}

/// `(pid, state, ppid)` from the text of `/proc/<pid>/stat`; the command name may hold spaces.
fn parse_stat(pid: u32, stat: &str) -> Option<(u32, char, u32)> {
    let after_name = &stat[stat.rfind(')')? + 1..];
    let mut fields = after_name.split_whitespace();
    let state = fields.next()?.chars().next()?;
    let ppid = fields.next()?.parse().ok()?;
    Some((pid, state, ppid))
}

/// CPU time `pid` has used (user and system), in the clock ticks of `/proc`: USER_HZ, which
/// is 100 per second on Linux whatever the kernel's own tick rate.
pub fn cpu_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    cpu_ticks_of(&stat)
}

/// Ticks per second of [`cpu_ticks`].
pub const TICKS_PER_SECOND: u64 = 100;

/// `utime + stime`: the 12th and 13th fields after the command name.
fn cpu_ticks_of(stat: &str) -> Option<u64> {
    let after_name = &stat[stat.rfind(')')? + 1..];
    let mut fields = after_name.split_whitespace().skip(11);
    let user: u64 = fields.next()?.parse().ok()?;
    let system: u64 = fields.next()?.parse().ok()?;
    Some(user + system)
}

/// The state letter of `pid` (`R`, `S`, `T` for stopped, `Z`, …), if it exists.
pub fn state(pid: u32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_stat(pid, &stat).map(|(_, state, _)| state)
}

/// Children of `parent`, split into (alive, zombies).
pub fn children(parent: u32) -> (Vec<u32>, Vec<u32>) {
    let mut alive = Vec::new();
    let mut zombies = Vec::new();
    for (pid, state, ppid) in processes() {
        if ppid != parent {
            continue;
        }
        if state == 'Z' {
            zombies.push(pid);
        } else {
            alive.push(pid);
        }
    }
    (alive, zombies)
}

/// Every live descendant of `root` (children, their children, …), parents first.
pub fn descendants(root: u32) -> Vec<u32> {
    let all = processes();
    let mut found = Vec::new();
    let mut frontier = vec![root];
    while let Some(parent) = frontier.pop() {
        for (pid, state, ppid) in &all {
            if *ppid == parent && *state != 'Z' && !found.contains(pid) {
                found.push(*pid);
                frontier.push(*pid);
            }
        }
    }
    found
}

/// Every live (not zombie) member of the process group `pgid`.
pub fn group_members(pgid: u32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            parse_group(&stat).is_some_and(|(state, group)| group == pgid && state != 'Z')
        })
        .collect()
}

/// `(state, pgrp)` from the text of `/proc/<pid>/stat` (pgrp is the field after ppid).
fn parse_group(stat: &str) -> Option<(char, u32)> {
    let after_name = &stat[stat.rfind(')')? + 1..];
    let mut fields = after_name.split_whitespace();
    let state = fields.next()?.chars().next()?;
    let pgrp = fields.nth(1)?.parse().ok()?;
    Some((state, pgrp))
}

/// Every live process whose command line contains all of `needles`.
pub fn with_command_line(needles: &[&str]) -> Vec<u32> {
    processes()
        .into_iter()
        .filter(|(_, state, _)| *state != 'Z')
        .filter(|(pid, _, _)| {
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let text = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            needles.iter().all(|needle| text.contains(needle))
        })
        .map(|(pid, _, _)| pid)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stat_line_with_spaces_in_the_name_parses() {
        assert_eq!(
            parse_stat(42, "42 (tokio worker 1) S 7 42 42 0"),
            Some((42, 'S', 7))
        );
        assert_eq!(parse_stat(9, "9 (x) Z 1 9"), Some((9, 'Z', 1)));
        assert_eq!(parse_stat(9, "garbage"), None);
    }

    #[test]
    fn cpu_ticks_are_user_plus_system_time() {
        let stat = "42 (envoy worker) S 7 42 42 0 -1 4194560 100 0 0 0 250 31 0 0 20 0 9";
        assert_eq!(cpu_ticks_of(stat), Some(281));
        assert_eq!(cpu_ticks_of("42 (x) S 7"), None);
    }

    #[test]
    fn the_group_is_the_field_after_the_parent() {
        assert_eq!(parse_group("42 (a b) S 7 40 40 0"), Some(('S', 40)));
        assert_eq!(parse_group("garbage"), None);
    }

    #[test]
    fn descendants_include_grandchildren() {
        let mut shell = std::process::Command::new("sh")
            .args(["-c", "sleep 30 & wait"])
            .spawn()
            .unwrap();
        let grandchild =
            crate::poll::until("the grandchild", std::time::Duration::from_secs(5), || {
                descendants(std::process::id())
                    .into_iter()
                    .find(|pid| *pid != shell.id())
            });
        let _ = shell.kill();
        let _ = shell.wait();
        assert!(grandchild.is_ok(), "no grandchild found");
    }

    #[test]
    fn this_test_process_has_a_child_while_it_runs_one() {
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let (alive, _) = children(std::process::id());
        let _ = child.kill();
        let _ = child.wait();
        assert!(alive.contains(&child.id()), "{alive:?}");
    }
}
