//! The supervisor's state machine as pure functions: phases, events, backoff.

use std::time::Duration;

use serde::Serialize;

/// Where the supervisor is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// No engine has become ready yet since start-up.
    Starting,
    /// An engine is ready and its heartbeat answers.
    Connected,
    /// The engine was lost; tearing it down or bringing a fresh one up.
    Reconnecting,
    /// Shutting down or shut down: no engine, none coming.
    Stopped,
}

/// What `/health/readiness` reports as `db`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DbStatus {
    Connected,
    Reconnecting,
    #[default]
    Disconnected,
}

impl DbStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            DbStatus::Connected => "connected",
            DbStatus::Reconnecting => "reconnecting",
            DbStatus::Disconnected => "disconnected",
        }
    }
}

/// Things that happen to the supervisor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    EngineReady,
    ConnectFailed,
    HeartbeatFailed,
    HeartbeatLate,
    TransportError,
    EngineExited,
    /// SIGHUP: an operator asks for a reconnect.
    ForceReconnect,
    Shutdown,
}

/// What the supervisor must do after an event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Nothing to do: stay as we are.
    Stay,
    /// Tear the current engine down, wait `delay`, then spawn a fresh one.
    Replace { delay: Duration },
    /// Tear the current engine down and stop.
    Stop,
}

/// Capped exponential backoff.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    pub base: Duration,
    pub cap: Duration,
}

impl Backoff {
    /// Delay before connect attempt number `attempt` (0 = the first try after a loss: no delay).
    /// `jitter` in `[0, 1)` is passed in so the function stays pure; "equal jitter" keeps at
    /// least half of the exponential delay so a fleet does not retry in lock step.
    pub fn delay(&self, attempt: u32, jitter: f64) -> Duration {
        if attempt == 0 {
            return Duration::ZERO;
        }
        let exp = self.base.saturating_mul(1u32 << (attempt - 1).min(16));
        let full = exp.min(self.cap);
        let half = full / 2;
        half + half.mul_f64(jitter.clamp(0.0, 1.0))
    }
}

/// The supervisor's state, small and copyable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SupervisorState {
    pub phase: Phase,
    /// Failed connect attempts since the last time the engine was ready.
    pub attempt: u32,
    /// Times a connected engine was lost and a reconnect began.
    pub reconnects: u64,
}

impl Default for SupervisorState {
    fn default() -> Self {
        SupervisorState {
            phase: Phase::Starting,
            attempt: 0,
            reconnects: 0,
        }
    }
}

impl SupervisorState {
    pub fn db_status(&self) -> DbStatus {
        match self.phase {
            Phase::Connected => DbStatus::Connected,
            Phase::Reconnecting => DbStatus::Reconnecting,
            Phase::Starting | Phase::Stopped => DbStatus::Disconnected,
        }
    }

    /// The one transition function. Exactly one reconnect runs at a time because a loss
    /// only counts while `Connected`; losses reported during a reconnect change nothing.
    pub fn on(self, event: Event, backoff: Backoff, jitter: f64) -> (SupervisorState, Action) {
        use Event::*;
        use Phase::*;
        let mut next = self;
        let action = match (self.phase, event) {
            (Stopped, _) => Action::Stay,
            (_, Shutdown) => {
                next.phase = Stopped;
                Action::Stop
            }
            (Starting | Reconnecting, EngineReady) => {
                next.phase = Connected;
                next.attempt = 0;
                Action::Stay
            }
            (
                Starting | Reconnecting,
                ConnectFailed | EngineExited | HeartbeatFailed | HeartbeatLate | TransportError,
            ) => {
                next.attempt = self.attempt.saturating_add(1);
                Action::Replace {
                    delay: backoff.delay(next.attempt, jitter),
                }
            }
            (Starting | Reconnecting, ForceReconnect) => Action::Stay,
            (Connected, EngineReady) => Action::Stay,
            (
                Connected,
                ConnectFailed | HeartbeatFailed | HeartbeatLate | TransportError | EngineExited
                | ForceReconnect,
            ) => {
                next.phase = Reconnecting;
                next.attempt = 0;
                next.reconnects += 1;
                Action::Replace {
                    delay: Duration::ZERO,
                }
            }
        };
        (next, action)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const B: Backoff = Backoff {
        base: Duration::from_millis(100),
        cap: Duration::from_secs(5),
    };

    fn connected() -> SupervisorState {
        SupervisorState::default().on(Event::EngineReady, B, 0.0).0
    }

    #[test]
    fn the_first_ready_engine_connects_and_reports_connected() {
        let s = connected();
        assert_eq!(s.phase, Phase::Connected);
        assert_eq!(s.db_status(), DbStatus::Connected);
        assert_eq!(
            SupervisorState::default().db_status(),
            DbStatus::Disconnected
        );
    }

    #[test]
    fn every_kind_of_loss_starts_one_immediate_reconnect() {
        for ev in [
            Event::HeartbeatFailed,
            Event::HeartbeatLate,
            Event::TransportError,
            Event::EngineExited,
            Event::ForceReconnect,
        ] {
            let (s, a) = connected().on(ev.clone(), B, 0.5);
            assert_eq!(s.phase, Phase::Reconnecting, "{ev:?}");
            assert_eq!(s.reconnects, 1);
            assert_eq!(
                a,
                Action::Replace {
                    delay: Duration::ZERO
                }
            );
        }
    }

    #[test]
    fn losses_reported_during_a_reconnect_do_not_start_another() {
        let (s, _) = connected().on(Event::HeartbeatLate, B, 0.0);
        let (s2, a) = s.on(Event::ForceReconnect, B, 0.0);
        assert_eq!((s2, a), (s, Action::Stay));
        let (s3, _) = s.on(Event::TransportError, B, 0.0);
        assert_eq!(
            s3.reconnects, 1,
            "a reconnect in progress is not counted twice"
        );
    }

    #[test]
    fn failed_attempts_back_off_and_readiness_says_reconnecting() {
        let (mut s, _) = connected().on(Event::EngineExited, B, 0.0);
        let mut delays = vec![];
        for _ in 0..8 {
            let (n, a) = s.on(Event::ConnectFailed, B, 0.0);
            let Action::Replace { delay } = a else {
                panic!("{a:?}")
            };
            delays.push(delay);
            s = n;
        }
        assert_eq!(s.db_status(), DbStatus::Reconnecting);
        assert_eq!(delays[0], Duration::from_millis(50));
        assert!(delays.windows(2).all(|w| w[0] <= w[1]));
        assert_eq!(*delays.last().unwrap(), Duration::from_millis(2500));
        let (s, _) = s.on(Event::EngineReady, B, 0.0);
        assert_eq!((s.phase, s.attempt), (Phase::Connected, 0));
    }

    #[test]
    fn backoff_is_capped_and_jitter_stays_within_half_to_full() {
        for attempt in 1..40 {
            for j in [0.0, 0.3, 0.999] {
                let d = B.delay(attempt, j);
                assert!(d <= B.cap, "{attempt} {j} {d:?}");
            }
        }
        assert_eq!(B.delay(3, 0.0), Duration::from_millis(200));
        assert_eq!(B.delay(3, 1.0), Duration::from_millis(400));
        assert_eq!(B.delay(0, 0.7), Duration::ZERO);
    }

    #[test]
    fn shutdown_stops_from_any_phase_and_nothing_follows() {
        for s in [
            SupervisorState::default(),
            connected(),
            connected().on(Event::EngineExited, B, 0.0).0,
        ] {
            let (s, a) = s.on(Event::Shutdown, B, 0.0);
            assert_eq!((s.phase, a), (Phase::Stopped, Action::Stop));
            assert_eq!(s.on(Event::EngineReady, B, 0.0), (s, Action::Stay));
        }
    }
}
