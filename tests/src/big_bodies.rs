//! Many clients each starting a large request body at the gateway, and a watch on Envoy's
//! memory meanwhile: the driver the "no memory for strangers" test and `cargo xtask bench
//! flood` share.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

/// Who the clients claim to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Credential {
    /// No key at all.
    None,
    /// A random `Bearer sk-…` nobody issued: an auth check per client.
    RandomKey,
}

/// `count` clients at once, each sending `POST path` with a `size`-byte body to
/// `base_url`; the answers by status (0: none before the connection closed).
pub fn send(
    base_url: &str,
    path: &str,
    count: usize,
    size: usize,
    credential: Credential,
) -> BTreeMap<u16, u64> {
    let handles: Vec<JoinHandle<u16>> = (0..count)
        .map(|i| {
            let (base_url, path) = (base_url.to_string(), path.to_string());
            std::thread::spawn(move || {
                let bearer = format!("Bearer sk-stranger-{}-{i:08}", std::process::id());
                let headers: Vec<(&str, &str)> = match credential {
                    Credential::None => Vec::new(),
                    Credential::RandomKey => vec![("authorization", bearer.as_str())],
                };
                crate::http::post_sized_body(&base_url, &path, &headers, size)
                    .map_or(0, |r| r.status)
            })
        })
        .collect();
    let mut statuses = BTreeMap::new();
    for handle in handles {
        *statuses.entry(handle.join().unwrap_or(0)).or_default() += 1;
    }
    statuses
}

/// The most Envoy held while watched.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MemoryPeak {
    /// Bytes the allocator handed out (admin `/memory` `allocated`).
    pub allocated: u64,
    /// The heap the overload manager's `fixed_heap` monitor measures: reserved heap less
    /// what is unmapped or free (`heap_size - pageheap_unmapped - pageheap_free`).
    pub heap_in_use: u64,
    /// The process' resident memory (`VmRSS`), the Wasm VMs included.
    pub rss: u64,
    pub samples: u64,
}

/// Samples Envoy's admin `/memory` and `/proc/<pid>/status` every 20 ms until stopped.
pub struct MemoryWatch {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<MemoryPeak>,
}

impl MemoryWatch {
    pub fn start(admin_url: &str, pid: u32) -> MemoryWatch {
        let stop = Arc::new(AtomicBool::new(false));
        let url = format!("{admin_url}/memory");
        let flag = Arc::clone(&stop);
        let thread = std::thread::spawn(move || {
            let mut peak = MemoryPeak::default();
            while !flag.load(Ordering::Relaxed) {
                if let Some((allocated, heap_in_use)) = admin_memory(&url) {
                    peak.allocated = peak.allocated.max(allocated);
                    peak.heap_in_use = peak.heap_in_use.max(heap_in_use);
                    peak.samples += 1;
                }
                peak.rss = peak.rss.max(rss_bytes(pid).unwrap_or(0));
                std::thread::sleep(Duration::from_millis(20));
            }
            peak
        });
        MemoryWatch { stop, thread }
    }

    pub fn stop(self) -> MemoryPeak {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().unwrap_or_default()
    }
}

/// (`allocated`, heap in use) from Envoy's admin `/memory` (numbers as JSON strings).
pub fn admin_memory(url: &str) -> Option<(u64, u64)> {
    let body = crate::http::get_within(url, Duration::from_secs(2))
        .ok()?
        .json()
        .ok()?;
    let field = |name: &str| -> Option<u64> { body[name].as_str()?.parse().ok() };
    let heap_in_use = field("heap_size")?
        .saturating_sub(field("pageheap_unmapped")?)
        .saturating_sub(field("pageheap_free")?);
    Some((field("allocated")?, heap_in_use))
}

/// Resident memory of `pid` in bytes.
pub fn rss_bytes(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kib * 1024)
}

/// `401: 60`, in status order.
pub fn describe(statuses: &BTreeMap<u16, u64>) -> String {
    statuses
        .iter()
        .map(|(status, n)| match status {
            0 => format!("no answer: {n}"),
            s => format!("{s}: {n}"),
        })
        .collect::<Vec<_>>()
        .join(", ")
}
