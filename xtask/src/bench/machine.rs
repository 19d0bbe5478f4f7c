//! What the benchmarks ran on, for the tables.

use std::process::Command;

/// One line: CPU model and count, memory, kernel, Envoy and rustc versions.
pub fn describe() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|line| line.strip_prefix("model name"))
        .and_then(|rest| rest.split(':').nth(1))
        .map_or("unknown CPU".to_string(), |m| m.trim().to_string());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let memory_gib = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .next()
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map_or(0.0, |kib| kib / 1024.0 / 1024.0);
    let kernel = first_line(Command::new("uname").arg("-r"));
    // `…/envoy  version: <sha>/1.40.0/Clean/RELEASE/BoringSSL`
    let envoy = first_line(Command::new(livegate_tests::artifacts::envoy_bin()).arg("--version"));
    let envoy = envoy
        .split("version:")
        .nth(1)
        .and_then(|v| v.trim().split('/').nth(1))
        .unwrap_or("?")
        .to_string();
    let rustc = first_line(Command::new("rustc").arg("--version"));
    format!("{model}, {cores} cores, {memory_gib:.0} GiB; Linux {kernel}; Envoy {envoy}; {rustc}")
}

fn first_line(command: &mut Command) -> String {
    command
        .output()
        .ok()
        .map(|out| {
            String::from_utf8_lossy(&out.stdout)
                .lines()
                .find(|l| !l.trim().is_empty())
                .unwrap_or("")
                .trim()
                .to_string()
        })
        .unwrap_or_default()
}
