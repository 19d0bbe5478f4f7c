//! One outage scenario from start to finish: the stack, the observers (liveness
//! probers, a readiness timeline, authenticated traffic), the fault, and the report.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use serde::Serialize;
use serde_json::json;

use super::looplag::{LagDuring, LagSnapshot};
use super::prober::{ProbePlan, Probers};
use super::recorder::{summarize, Sample, Summary};
use super::relay::Relay;
use crate::http;
use crate::postgres::Postgres;
use crate::stack::{Database, Stack, StackOptions, Upstream};

/// The faults the lab injects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Fault {
    /// Postgres frozen with SIGSTOP (what `docker pause` does), then SIGCONT.
    Pause,
    /// Postgres killed with SIGKILL, restarted on the same port.
    Kill,
    /// The path to Postgres blackholed: bytes dropped, sockets left open.
    Partition,
    /// An engine that ignores SIGTERM while Postgres is frozen: only SIGKILL ends it.
    WedgedEngine,
    /// The control plane killed with SIGKILL, then started again.
    ControlPlaneKilled,
    /// Postgres paused and resumed over and over.
    Flapping,
}

impl Fault {
    pub const ALL: [Fault; 6] = [
        Fault::Pause,
        Fault::Kill,
        Fault::Partition,
        Fault::WedgedEngine,
        Fault::ControlPlaneKilled,
        Fault::Flapping,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Fault::Pause => "pause",
            Fault::Kill => "kill",
            Fault::Partition => "partition",
            Fault::WedgedEngine => "wedged-engine",
            Fault::ControlPlaneKilled => "control-plane-killed",
            Fault::Flapping => "flapping",
        }
    }
}

/// How long each phase lasts.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Timing {
    pub baseline: Duration,
    pub fault: Duration,
    /// Flapping only: one pause plus one resume.
    pub flap_period: Duration,
    /// How long recovery may take before the scenario gives up on it.
    pub recovery_timeout: Duration,
    pub tail: Duration,
    pub liveness_clients: usize,
    pub liveness_period: Duration,
}

impl Timing {
    /// The published benchmark: the fault lengths.
    pub fn full(fault: Fault) -> Timing {
        let fault_length = match fault {
            Fault::Pause | Fault::Partition | Fault::WedgedEngine => 20,
            Fault::Kill | Fault::ControlPlaneKilled => 10,
            Fault::Flapping => 60,
        };
        Timing {
            baseline: Duration::from_secs(3),
            fault: Duration::from_secs(fault_length),
            flap_period: Duration::from_secs(4),
            recovery_timeout: Duration::from_secs(60),
            tail: Duration::from_secs(3),
            liveness_clients: 4,
            liveness_period: Duration::from_millis(10),
        }
    }

    /// A few seconds each, for `cargo xtask test`: functional, not timed.
    pub fn short() -> Timing {
        Timing {
            baseline: Duration::from_millis(500),
            fault: Duration::from_secs(3),
            flap_period: Duration::from_secs(1),
            recovery_timeout: Duration::from_secs(60),
            tail: Duration::from_millis(500),
            liveness_clients: 2,
            liveness_period: Duration::from_millis(20),
        }
    }
}

/// Requests with a known key and with unknown keys, during the whole scenario.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct AuthOutcomes {
    pub known_served: u64,
    pub known_refused: u64,
    pub unknown_refused: u64,
    /// Must be zero: an unknown key that got a 2xx.
    pub unknown_admitted: u64,
}

/// One readiness observation.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ReadinessSample {
    pub at_ms: f64,
    /// `connected`, `reconnecting`, `disconnected`, or `unreachable`.
    pub db: String,
}

/// Everything one scenario measured.
#[derive(Debug, Clone, Serialize)]
pub struct ScenarioReport {
    pub scenario: &'static str,
    pub timing: Timing,
    /// (start, end) of every fault window, in ms since the scenario began.
    pub fault_windows: Vec<(f64, f64)>,
    pub liveness: Option<Summary>,
    pub auth: AuthOutcomes,
    /// From the first fault to readiness first saying anything but `connected`.
    pub readiness_noticed_ms: Option<f64>,
    /// From the end of the last fault to readiness saying `connected` again.
    pub reconnected_ms: Option<f64>,
    /// A live `GET /key/list` through the gateway after recovery answered 200.
    pub key_list_after: bool,
    /// The control plane's `livegate_loop_lag_max_seconds`, since it started.
    pub loop_lag_max_ms: Option<f64>,
    /// The loop lag within the scenario (the control plane's own start-up excluded).
    pub loop_lag_during: LagDuring,
    pub engines_left: usize,
    pub zombies_left: usize,
    pub liveness_samples: Vec<Sample>,
    pub readiness: Vec<ReadinessSample>,
}

/// The lab's stack: Postgres behind a relay, the control plane, the demo upstream, Envoy.
pub struct Lab {
    // Dropped in order: the gateway, then the path to the database, then the database.
    pub stack: Stack,
    pub relay: Relay,
    pub postgres: Postgres,
    pub known_key: String,
}

impl Lab {
    pub fn start(fault: Fault) -> anyhow::Result<Lab> {
        let postgres = Postgres::start()?;
        let relay = Relay::start(([127, 0, 0, 1], postgres.port()).into())?;
        let mut control_plane_args = vec!["--heartbeat-interval-ms".to_string(), "250".to_string()];
        if fault == Fault::WedgedEngine {
            control_plane_args.extend(wedged_engine_args()?);
        }
        let stack = Stack::start(StackOptions {
            database: Some(Database::External(postgres.url_via(relay.addr().port()))),
            upstream: Upstream::Demo,
            control_plane_args,
            ..StackOptions::envoy_only()
        })?;
        let known_key = generate_key(&stack)?;
        Ok(Lab {
            stack,
            relay,
            postgres,
            known_key,
        })
    }
}

/// The control-plane arguments that make its engine ignore SIGTERM: the engine
/// command wrapped in a shell that sets SIGTERM to ignored, which `exec` keeps.
fn wedged_engine_args() -> anyhow::Result<Vec<String>> {
    let binary = crate::artifacts::control_plane_bin();
    Ok(vec![
        "--engine-command".to_string(),
        format!("sh -c 'trap \"\" TERM; exec {} engine'", binary.display()),
    ])
}

fn generate_key(stack: &Stack) -> anyhow::Result<String> {
    let created = stack.admin("/key/generate", &json!({"key_alias": "lab-known"}))?;
    created["key"]
        .as_str()
        .map(str::to_string)
        .ok_or_else(|| anyhow::anyhow!("no key in {created}"))
}

/// Runs `fault` on a fresh lab with `timing`.
pub fn run(fault: Fault, timing: Timing) -> anyhow::Result<ScenarioReport> {
    let mut lab = Lab::start(fault)?;
    let lag_before = lag_snapshot(&lab.stack);
    let epoch = Instant::now();
    let observers = Observers::start(&lab, &timing, epoch);
    std::thread::sleep(timing.baseline);
    let fault_windows = inject(&mut lab, fault, &timing, epoch)?;
    let last_end = fault_windows.last().map_or(0.0, |w| w.1);
    let ready_url = lab.stack.url("/health/readiness");
    let _ = crate::poll::until(
        "readiness to say connected",
        timing.recovery_timeout,
        || (readiness_state(&ready_url) == "connected").then_some(()),
    );
    std::thread::sleep(timing.tail);
    let (liveness_samples, readiness, auth) = observers.stop();

    let first_start = fault_windows.first().map_or(0.0, |w| w.0);
    let readiness_noticed_ms = readiness
        .iter()
        .find(|s| s.at_ms >= first_start && s.db != "connected")
        .map(|s| s.at_ms - first_start);
    let reconnected_ms = readiness
        .iter()
        .find(|s| s.at_ms >= last_end && s.db == "connected")
        .map(|s| s.at_ms - last_end);
    let (engines_left, zombies_left) = engines(&lab);
    // A restarted control plane's histogram starts from zero within the scenario.
    let lag_from = if fault == Fault::ControlPlaneKilled {
        LagSnapshot::default()
    } else {
        lag_before
    };
    Ok(ScenarioReport {
        scenario: fault.name(),
        timing,
        fault_windows,
        liveness: summarize(&liveness_samples),
        auth,
        readiness_noticed_ms,
        reconnected_ms,
        key_list_after: key_list_works(&lab.stack),
        loop_lag_max_ms: loop_lag_max_ms(&lab.stack),
        loop_lag_during: lag_from.until(&lag_snapshot(&lab.stack)),
        engines_left,
        zombies_left,
        liveness_samples,
        readiness,
    })
}

/// Applies the fault; returns its windows in ms since `epoch`.
fn inject(
    lab: &mut Lab,
    fault: Fault,
    timing: &Timing,
    epoch: Instant,
) -> anyhow::Result<Vec<(f64, f64)>> {
    let since = |at: Instant| (at - epoch).as_secs_f64() * 1e3;
    let mut windows = Vec::new();
    let start = Instant::now();
    match fault {
        Fault::Pause | Fault::WedgedEngine => {
            lab.postgres.pause()?;
            std::thread::sleep(timing.fault);
            lab.postgres.resume()?;
        }
        Fault::Kill => {
            lab.postgres.kill()?;
            std::thread::sleep(timing.fault);
            lab.postgres.restart()?;
        }
        Fault::Partition => {
            lab.relay.blackhole();
            std::thread::sleep(timing.fault);
            lab.relay.heal();
        }
        Fault::ControlPlaneKilled => {
            if let Some(control_plane) = lab.stack.control_plane.as_mut() {
                control_plane.signal(Signal::SIGKILL)?;
                control_plane.wait_exit(Duration::from_secs(10))?;
            }
            std::thread::sleep(timing.fault);
            lab.stack.restart_control_plane()?;
        }
        Fault::Flapping => {
            let half = timing.flap_period / 2;
            while start.elapsed() < timing.fault {
                let paused = Instant::now();
                lab.postgres.pause()?;
                std::thread::sleep(half);
                lab.postgres.resume()?;
                windows.push((since(paused), since(Instant::now())));
                std::thread::sleep(half);
            }
            return Ok(windows);
        }
    }
    windows.push((since(start), since(Instant::now())));
    Ok(windows)
}

/// The threads that watch the gateway during a scenario.
struct Observers {
    probers: Probers,
    stop: Arc<AtomicBool>,
    readiness: std::thread::JoinHandle<Vec<ReadinessSample>>,
    auth: std::thread::JoinHandle<AuthOutcomes>,
}

impl Observers {
    fn start(lab: &Lab, timing: &Timing, epoch: Instant) -> Observers {
        let plan = ProbePlan {
            url: lab.stack.url("/health/liveliness"),
            headers: Vec::new(),
            clients: timing.liveness_clients,
            period: timing.liveness_period,
            timeout: Duration::from_secs(10),
        };
        let probers = Probers::start(&plan, epoch);
        let stop = Arc::new(AtomicBool::new(false));
        let ready_url = lab.stack.url("/health/readiness");
        let ready_stop = Arc::clone(&stop);
        let readiness = std::thread::spawn(move || {
            let mut timeline = Vec::new();
            while !ready_stop.load(Ordering::Relaxed) {
                let at_ms = epoch.elapsed().as_secs_f64() * 1e3;
                timeline.push(ReadinessSample {
                    at_ms,
                    db: readiness_state(&ready_url),
                });
                std::thread::sleep(Duration::from_millis(50));
            }
            timeline
        });
        let auth_url = lab.stack.url("/v1/models");
        let known = format!("Bearer {}", lab.known_key);
        let auth_stop = Arc::clone(&stop);
        let auth = std::thread::spawn(move || auth_traffic(&auth_url, &known, &auth_stop));
        Observers {
            probers,
            stop,
            readiness,
            auth,
        }
    }

    fn stop(self) -> (Vec<Sample>, Vec<ReadinessSample>, AuthOutcomes) {
        self.stop.store(true, Ordering::Relaxed);
        let samples = self.probers.stop();
        let readiness = self.readiness.join().unwrap_or_default();
        let auth = self.auth.join().unwrap_or_default();
        (samples, readiness, auth)
    }
}

/// The readiness endpoint's `db` field, or `unreachable`.
fn readiness_state(url: &str) -> String {
    match http::get_within(url, Duration::from_secs(2)) {
        Ok(response) => response
            .json()
            .ok()
            .and_then(|body| body["db"].as_str().map(str::to_string))
            .unwrap_or_else(|| "unreachable".to_string()),
        Err(_) => "unreachable".to_string(),
    }
}

fn auth_traffic(url: &str, known: &str, stop: &AtomicBool) -> AuthOutcomes {
    let served = |key: &str| {
        http::get_with_headers_within(url, &[("authorization", key)], Duration::from_secs(5))
            .is_ok_and(|r| (200..300).contains(&r.status))
    };
    let mut tally = AuthOutcomes::default();
    let mut unknown = 0u64;
    while !stop.load(Ordering::Relaxed) {
        if served(known) {
            tally.known_served += 1;
        } else {
            tally.known_refused += 1;
        }
        // A new unknown key each time: none can be answered from a negative cache.
        unknown += 1;
        if served(&format!("Bearer sk-lab-unknown-{unknown:020}")) {
            tally.unknown_admitted += 1;
        } else {
            tally.unknown_refused += 1;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    tally
}

fn key_list_works(stack: &Stack) -> bool {
    let bearer = format!("Bearer {}", stack.master_key());
    http::get(&stack.url("/key/list"), &[("authorization", &bearer)]).is_ok_and(|r| r.status == 200)
}

fn control_plane_metrics(stack: &Stack) -> Option<String> {
    let control_plane = stack.control_plane.as_ref()?;
    let metrics = http::get(&control_plane.metrics_url(), &[]).ok()?;
    Some(metrics.body)
}

fn loop_lag_max_ms(stack: &Stack) -> Option<f64> {
    let metrics = control_plane_metrics(stack)?;
    crate::envoy::prometheus_value(&metrics, "livegate_loop_lag_max_seconds").map(|s| s * 1e3)
}

fn lag_snapshot(stack: &Stack) -> LagSnapshot {
    control_plane_metrics(stack).map_or_else(LagSnapshot::default, |m| LagSnapshot::parse(&m))
}

/// Live engines and zombies under the control plane.
fn engines(lab: &Lab) -> (usize, usize) {
    match &lab.stack.control_plane {
        Some(control_plane) => {
            let (alive, zombies) = crate::procfs::children(control_plane.pid());
            (alive.len(), zombies.len())
        }
        None => (0, 0),
    }
}
