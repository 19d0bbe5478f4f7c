//! A flood of random `Bearer sk-…` keys at the gateway's listener: the driver the flood
//! test and `cargo xtask bench flood` share. Each thread keeps one HTTP/1.1 connection
//! alive and sends `GET /v1/models` with a key nobody has seen, paced to a total rate.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// What a flood got: requests sent and answers by status (0: no answer).
#[derive(Debug, Clone, Default)]
pub struct FloodTally {
    pub sent: u64,
    pub elapsed: Duration,
    pub statuses: BTreeMap<u16, u64>,
}

impl FloodTally {
    pub fn requests_per_second(&self) -> f64 {
        self.sent as f64 / self.elapsed.as_secs_f64().max(f64::EPSILON)
    }

    /// `401: 6323, 503: 2020`, in status order.
    pub fn describe(&self) -> String {
        self.statuses
            .iter()
            .map(|(status, n)| match status {
                0 => format!("no answer: {n}"),
                s => format!("{s}: {n}"),
            })
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// A running flood; [`RandomKeyFlood::stop`] ends it and tells what it got.
pub struct RandomKeyFlood {
    started: Instant,
    stop: Arc<AtomicBool>,
    sent: Arc<AtomicU64>,
    statuses: Arc<Mutex<BTreeMap<u16, u64>>>,
    threads: Vec<JoinHandle<()>>,
}

impl RandomKeyFlood {
    /// `threads` connections to `address` (host:port), `rate` requests per second in all.
    pub fn start(address: &str, threads: u64, rate: u64) -> RandomKeyFlood {
        let stop = Arc::new(AtomicBool::new(false));
        let sent = Arc::new(AtomicU64::new(0));
        let statuses = Arc::new(Mutex::new(BTreeMap::new()));
        let interval = Duration::from_secs_f64(threads.max(1) as f64 / rate.max(1) as f64);
        let threads = (0..threads)
            .map(|thread| {
                let worker = Worker {
                    seed: u64::from(std::process::id()) ^ (thread << 32) ^ nanos(),
                    address: address.to_string(),
                    interval,
                    stop: Arc::clone(&stop),
                    sent: Arc::clone(&sent),
                    statuses: Arc::clone(&statuses),
                };
                std::thread::spawn(move || worker.run())
            })
            .collect();
        RandomKeyFlood {
            started: Instant::now(),
            stop,
            sent,
            statuses,
            threads,
        }
    }

    pub fn stop(self) -> FloodTally {
        self.stop.store(true, Ordering::Relaxed);
        let elapsed = self.started.elapsed();
        for thread in self.threads {
            let _ = thread.join();
        }
        let statuses = self.statuses.lock().map(|s| s.clone()).unwrap_or_default();
        FloodTally {
            sent: self.sent.load(Ordering::Relaxed),
            elapsed,
            statuses,
        }
    }
}

/// One flooding thread.
struct Worker {
    seed: u64,
    address: String,
    interval: Duration,
    stop: Arc<AtomicBool>,
    sent: Arc<AtomicU64>,
    statuses: Arc<Mutex<BTreeMap<u16, u64>>>,
}

impl Worker {
    fn run(self) {
        let mut connection: Option<TcpStream> = None;
        let mut next = Instant::now();
        let mut counter: u64 = 0;
        while !self.stop.load(Ordering::Relaxed) {
            let now = Instant::now();
            if now < next {
                std::thread::sleep(next - now);
            }
            next += self.interval;
            counter += 1;
            let key = format!(
                "sk-flood-{:016x}{counter:016x}",
                splitmix(self.seed ^ counter)
            );
            let status = self.request(&mut connection, &key);
            self.sent.fetch_add(1, Ordering::Relaxed);
            if let Ok(mut statuses) = self.statuses.lock() {
                *statuses.entry(status.unwrap_or(0)).or_default() += 1;
            }
        }
    }

    /// One request on the kept connection (or a new one); its status, if answered.
    fn request(&self, connection: &mut Option<TcpStream>, key: &str) -> Option<u16> {
        let mut stream = match connection.take() {
            Some(stream) => stream,
            None => {
                let stream = TcpStream::connect(&self.address).ok()?;
                stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
                stream
            }
        };
        let request = format!(
            "GET /v1/models HTTP/1.1\r\nHost: livegate\r\nAuthorization: Bearer {key}\r\n\r\n"
        );
        stream.write_all(request.as_bytes()).ok()?;
        let (status, keep) = read_response(&mut stream)?;
        if keep {
            *connection = Some(stream);
        }
        Some(status)
    }
}

/// Reads one response with a content-length body; (status, connection reusable).
fn read_response(stream: &mut TcpStream) -> Option<(u16, bool)> {
    let mut data = Vec::new();
    let mut buffer = [0u8; 4096];
    loop {
        let n = stream.read(&mut buffer).ok()?;
        if n == 0 {
            return None;
        }
        data.extend_from_slice(buffer.get(..n)?);
        let text = String::from_utf8_lossy(&data);
        let Some((head, body)) = text.split_once("\r\n\r\n") else {
            continue;
        };
        let status = head.split_whitespace().nth(1)?.parse().ok()?;
        let mut length = 0;
        let mut keep = true;
        for line in head.lines().skip(1) {
            let Some((name, value)) = line.split_once(':') else {
                continue;
            };
            if name.eq_ignore_ascii_case("content-length") {
                length = value.trim().parse().ok()?;
            } else if name.eq_ignore_ascii_case("connection") && value.trim() == "close" {
                keep = false;
            }
        }
        if body.len() >= length {
            return Some((status, keep));
        }
    }
}

fn nanos() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::from(d.subsec_nanos()))
}

fn splitmix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}
