//! The supervisor: spawns the engine, watches it with a heartbeat, and replaces it when it fails.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use serde::Serialize;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::ipc::{CallError, EngineLink};
use super::process::{EngineCommand, EngineProcess};
use super::spawner::Spawner;
use super::state::{Action, Backoff, DbStatus, Event, SupervisorState};
use super::{CurrentLink, Db, DbCounters};
use crate::protocol::{EngineSettings, Init, Ping, Ready};

/// Everything the supervisor needs, validated by `config`.
#[derive(Debug, Clone)]
pub struct SupervisorConfig {
    pub engine: EngineCommand,
    pub settings: EngineSettings,
    pub log_format: String,
    pub heartbeat_interval: Duration,
    pub heartbeat_deadline: Duration,
    pub grace: Duration,
    pub backoff: Backoff,
    pub start_timeout: Duration,
    pub request_deadline: Duration,
    pub max_in_flight: usize,
}

/// What readiness and metrics report, kept in memory and updated by the supervisor only.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Snapshot {
    pub db: DbStatus,
    pub engine_pid: Option<u32>,
    pub reconnects: u64,
    pub last_error: Option<String>,
    /// The identity of the database the current engine reached (`schema::identity`), as of
    /// its last connect: what the spend spool is compared with.
    pub database: Option<String>,
}

/// Controls for the running supervisor.
pub struct SupervisorHandle {
    pub task: JoinHandle<()>,
    pub reconnect: Reconnect,
}

/// Asks the supervisor for a reconnect (SIGHUP); cloneable for signal handlers.
#[derive(Clone)]
pub struct Reconnect(mpsc::Sender<()>);

impl Reconnect {
    /// Ignored if a reconnect is already running or already requested.
    pub fn request(&self) {
        let _ = self.0.try_send(());
    }
}

/// Starts the supervisor task; it runs until `stop` is cancelled, then tears the engine down.
/// Fails only if the engine spawner thread cannot be started.
pub fn start(
    cfg: SupervisorConfig,
    counters: Arc<DbCounters>,
    stop: CancellationToken,
) -> std::io::Result<(Db, SupervisorHandle)> {
    let spawner = Spawner::start(tokio::runtime::Handle::current())?;
    let link: CurrentLink = Arc::new(RwLock::new(None));
    let (snap_tx, snap_rx) = watch::channel(Snapshot::default());
    let (trouble_tx, trouble_rx) = mpsc::channel(16);
    let (hup_tx, hup_rx) = mpsc::channel(1);
    let db = Db {
        link: link.clone(),
        snapshot: snap_rx,
        trouble: trouble_tx,
        deadline: cfg.request_deadline,
    };
    let sup = Supervisor {
        cfg,
        counters,
        stop,
        link,
        snap: snap_tx,
        trouble: trouble_rx,
        hup: hup_rx,
        state: SupervisorState::default(),
        generation: 0,
        spawner,
    };
    let task = tokio::spawn(sup.run());
    Ok((
        db,
        SupervisorHandle {
            task,
            reconnect: Reconnect(hup_tx),
        },
    ))
}

struct Supervisor {
    cfg: SupervisorConfig,
    counters: Arc<DbCounters>,
    stop: CancellationToken,
    link: CurrentLink,
    snap: watch::Sender<Snapshot>,
    trouble: mpsc::Receiver<u64>,
    hup: mpsc::Receiver<()>,
    state: SupervisorState,
    generation: u64,
    spawner: Spawner,
}

/// Why an engine's time ended, with the message readiness shows as `last_error`.
type Ending = (Event, Option<String>);

/// One engine's life: the process and its link (both still to tear down), and its ending.
type EngineRun = (Option<EngineProcess>, Option<Arc<EngineLink>>, Ending);

impl Supervisor {
    async fn run(mut self) {
        let mut delay = Duration::ZERO;
        loop {
            if !delay.is_zero() {
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = self.stop.cancelled() => { self.apply(Event::Shutdown, None); break; }
                }
            }
            let (engine, link, (event, error)) = self.run_one_engine().await;
            let action = self.apply(event, error);
            if let Some(link) = &link {
                link.abandon();
            }
            if let Some(engine) = engine {
                self.teardown(engine).await;
            }
            // The pipes close only now: an engine must not get to leave on EOF before the
            // kill sequence has had its say (a wedged one would not notice EOF anyway).
            drop(link);
            match action {
                Action::Stop => break,
                Action::Replace { delay: d } => delay = d,
                Action::Stay => delay = Duration::ZERO,
            }
        }
        self.snap.send_modify(|s| s.engine_pid = None);
        tracing::info!("database supervisor stopped");
    }

    /// Spawns one engine, brings it up, and watches it until something ends its time.
    async fn run_one_engine(&mut self) -> EngineRun {
        let spawned = self
            .spawner
            .spawn(&self.cfg.engine, &self.cfg.log_format)
            .await;
        let (mut engine, stdout, stdin) = match spawned {
            Ok(x) => x,
            Err(e) => {
                return (
                    None,
                    None,
                    (
                        Event::ConnectFailed,
                        Some(format!("spawning the engine failed: {e}")),
                    ),
                )
            }
        };
        self.counters.engine_spawns.fetch_add(1, Relaxed);
        self.generation += 1;
        let pid = engine.pid();
        tracing::info!(pid, generation = self.generation, "engine spawned");
        self.snap.send_modify(|s| s.engine_pid = Some(pid));
        let link = Arc::new(EngineLink::start(stdout, stdin, self.cfg.max_in_flight));
        if let Err(ending) = self.bring_up(&mut engine, &link).await {
            return (Some(engine), Some(link), ending);
        }
        self.apply(Event::EngineReady, None);
        // Operator requests that arrived while we were reconnecting are already satisfied.
        while self.hup.try_recv().is_ok() {}
        *self.link.write().unwrap_or_else(|p| p.into_inner()) =
            Some((self.generation, link.clone()));
        tracing::info!(pid, "engine ready; database connected");
        let ending = self.watch(&mut engine, &link).await;
        (Some(engine), Some(link), ending)
    }

    /// Sends `Init` and waits for `Ready`, bounded by the start timeout.
    async fn bring_up(
        &mut self,
        engine: &mut EngineProcess,
        link: &EngineLink,
    ) -> Result<(), Ending> {
        let init = Init {
            settings: self.cfg.settings.clone(),
        };
        let run = link.run(init, self.cfg.start_timeout);
        tokio::pin!(run);
        tokio::select! {
            r = &mut run => match r {
                Ok(Ready { database }) => {
                    self.snap.send_modify(|s| s.database = database);
                    Ok(())
                }
                Err(CallError::Deadline) => Err((Event::ConnectFailed, Some("engine did not connect within the start timeout".into()))),
                Err(e) => Err((Event::ConnectFailed, Some(format!("engine failed to connect: {e}")))),
            },
            st = engine.exited() => {
                // An engine that cannot connect answers why, then exits: the two arrive in
                // either order, and its answer says more than its exit status.
                let answer = tokio::time::timeout(EXIT_AFTER_EOF_WAIT, &mut run).await;
                let why = match answer {
                    Ok(Err(e @ CallError::Engine(_))) => format!("engine failed to connect: {e}"),
                    _ => exit_message(st),
                };
                Err((Event::ConnectFailed, Some(why)))
            }
            _ = self.stop.cancelled() => Err((Event::Shutdown, None)),
        }
    }

    /// The watchdog: heartbeats with a deadline, engine exit, failed queries, SIGHUP, shutdown.
    async fn watch(&mut self, engine: &mut EngineProcess, link: &EngineLink) -> Ending {
        let mut tick = tokio::time::interval(self.cfg.heartbeat_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            tokio::select! {
                _ = tick.tick() => {
                    if let Some(ending) = self.heartbeat(engine, link).await {
                        return ending;
                    }
                }
                st = engine.exited() => return (Event::EngineExited, Some(exit_message(st))),
                _ = link.closed() => return pipes_closed(engine).await,
                Some(g) = self.trouble.recv() => {
                    if g == self.generation {
                        return (Event::TransportError, Some("a query failed in transit".into()));
                    }
                }
                Some(()) = self.hup.recv() => return (Event::ForceReconnect, Some("reconnect requested (SIGHUP)".into())),
                _ = self.stop.cancelled() => return (Event::Shutdown, None),
            }
        }
    }

    async fn heartbeat(&mut self, engine: &mut EngineProcess, link: &EngineLink) -> Option<Ending> {
        let started = tokio::time::Instant::now();
        let deadline = self.cfg.heartbeat_deadline;
        let result = tokio::select! {
            r = link.run(Ping {}, deadline) => r,
            st = engine.exited() => return Some((Event::EngineExited, Some(exit_message(st)))),
            _ = self.stop.cancelled() => return Some((Event::Shutdown, None)),
        };
        match result {
            Ok(()) => {
                self.counters.heartbeat.observe(started.elapsed());
                None
            }
            Err(CallError::Deadline) => {
                self.counters.heartbeat_failures.fetch_add(1, Relaxed);
                Some((
                    Event::HeartbeatLate,
                    Some(format!(
                        "heartbeat missed its {} ms deadline",
                        deadline.as_millis()
                    )),
                ))
            }
            Err(e) => {
                self.counters.heartbeat_failures.fetch_add(1, Relaxed);
                Some((
                    Event::HeartbeatFailed,
                    Some(format!("heartbeat failed: {e}")),
                ))
            }
        }
    }

    /// Feeds one event to the pure state machine and publishes the result.
    fn apply(&mut self, event: Event, error: Option<String>) -> Action {
        let jitter = random_unit();
        let (next, action) = self.state.on(event.clone(), self.cfg.backoff, jitter);
        if next.db_status() != DbStatus::Connected {
            // Requests fail fast from here on, before any teardown starts.
            *self.link.write().unwrap_or_else(|p| p.into_inner()) = None;
        }
        if let Some(e) = &error {
            tracing::warn!(?event, error = %e, phase = ?next.phase, ?action, "database engine event");
        }
        self.state = next;
        self.snap.send_modify(|s| {
            s.db = next.db_status();
            s.reconnects = next.reconnects;
            if error.is_some() {
                s.last_error = error;
            }
        });
        action
    }

    async fn teardown(&mut self, engine: EngineProcess) {
        let pid = engine.pid();
        let out = engine.teardown(self.cfg.grace).await;
        self.counters
            .engine_sigterms
            .fetch_add(u64::from(out.sent_term), Relaxed);
        self.counters
            .engine_sigkills
            .fetch_add(u64::from(out.sent_kill), Relaxed);
        tracing::info!(
            pid,
            sigterm = out.sent_term,
            sigkill = out.sent_kill,
            "engine torn down"
        );
        self.snap.send_modify(|s| s.engine_pid = None);
    }
}

/// How long closed pipes wait for the engine's exit status before being reported as such.
const EXIT_AFTER_EOF_WAIT: Duration = Duration::from_millis(200);

/// A dead engine's pipes and its exit reach us as two events in either order; waiting a
/// moment (asynchronously) for the exit lets `last_error` say how it died, not just that
/// the pipes closed.
async fn pipes_closed(engine: &mut EngineProcess) -> Ending {
    match tokio::time::timeout(EXIT_AFTER_EOF_WAIT, engine.exited()).await {
        Ok(st) => (Event::EngineExited, Some(exit_message(st))),
        Err(_) => (Event::TransportError, Some("engine pipes closed".into())),
    }
}

fn exit_message(st: std::io::Result<std::process::ExitStatus>) -> String {
    match st {
        Ok(st) => format!("engine exited on its own ({st})"),
        Err(e) => format!("engine wait failed: {e}"),
    }
}

/// Backoff jitter from the OS RNG, in `[0, 1)`.
fn random_unit() -> f64 {
    let mut b = [0u8; 8];
    if getrandom::getrandom(&mut b).is_err() {
        return 0.5;
    }
    (u64::from_le_bytes(b) >> 11) as f64 / (1u64 << 53) as f64
}
