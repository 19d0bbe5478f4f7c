//! Probers: several threads, each hitting a URL at a steady rate, every latency kept.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::recorder::Sample;

/// How to probe.
#[derive(Debug, Clone)]
pub struct ProbePlan {
    pub url: String,
    pub headers: Vec<(String, String)>,
    pub clients: usize,
    /// Each client's time between the starts of two probes.
    pub period: Duration,
    /// A probe that takes longer is recorded as failed with this latency (a kubelet's timeout).
    pub timeout: Duration,
}

/// Running probers; [`Probers::stop`] returns every sample in time order.
pub struct Probers {
    stop: Arc<AtomicBool>,
    samples: Arc<Mutex<Vec<Sample>>>,
    threads: Vec<JoinHandle<()>>,
}

impl Probers {
    /// Starts `plan.clients` threads probing until stopped; times are relative to `epoch`.
    pub fn start(plan: &ProbePlan, epoch: Instant) -> Probers {
        let stop = Arc::new(AtomicBool::new(false));
        let samples = Arc::new(Mutex::new(Vec::new()));
        let threads = (0..plan.clients)
            .map(|client| {
                let plan = plan.clone();
                let stop = Arc::clone(&stop);
                let samples = Arc::clone(&samples);
                // Spread the clients over one period so probes do not arrive in bursts.
                let offset = plan
                    .period
                    .mul_f64(client as f64 / plan.clients.max(1) as f64);
                std::thread::spawn(move || probe_loop(&plan, epoch, offset, &stop, &samples))
            })
            .collect();
        Probers {
            stop,
            samples,
            threads,
        }
    }

    /// The samples recorded so far (the probers keep going).
    pub fn snapshot(&self) -> Vec<Sample> {
        self.samples.lock().map(|s| s.clone()).unwrap_or_default()
    }

    pub fn stop(self) -> Vec<Sample> {
        self.stop.store(true, Ordering::Relaxed);
        for thread in self.threads {
            let _ = thread.join();
        }
        let mut samples = self.samples.lock().map(|s| s.clone()).unwrap_or_default();
        samples.sort_by(|a, b| a.at_ms.total_cmp(&b.at_ms));
        samples
    }
}

fn probe_loop(
    plan: &ProbePlan,
    epoch: Instant,
    offset: Duration,
    stop: &AtomicBool,
    samples: &Mutex<Vec<Sample>>,
) {
    let headers: Vec<(&str, &str)> = plan
        .headers
        .iter()
        .map(|(name, value)| (name.as_str(), value.as_str()))
        .collect();
    let mut next = Instant::now() + offset;
    while !stop.load(Ordering::Relaxed) {
        let now = Instant::now();
        if now < next {
            // Pacing, not synchronisation: a steady probe rate is the point.
            std::thread::sleep(next - now);
        }
        let started = Instant::now();
        let status = crate::http::get_with_headers_within(&plan.url, &headers, plan.timeout)
            .ok()
            .map(|response| response.status);
        let latency = started.elapsed().min(plan.timeout);
        let sample = Sample::new(started - epoch, latency, status);
        if let Ok(mut all) = samples.lock() {
            all.push(sample);
        }
        next += plan.period;
        if next < Instant::now() {
            next = Instant::now();
        }
    }
}
