//! Framed, multiplexed JSON over the engine's pipes: length-delimited frames tagged with request ids.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use serde::Serialize;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_util::codec::{FramedRead, FramedWrite, LengthDelimitedCodec};
use tokio_util::sync::CancellationToken;

use crate::protocol::{EngineError, Request, RequestFrame, Response, ResponseFrame};

/// A key page of 100 full records is far below this; anything larger is a bug.
const MAX_FRAME: usize = 16 * 1024 * 1024;

/// The codec both ends use.
pub fn codec() -> LengthDelimitedCodec {
    LengthDelimitedCodec::builder()
        .max_frame_length(MAX_FRAME)
        .new_codec()
}

/// Serializes one frame.
pub fn encode<T: Serialize>(value: &T) -> Result<Bytes, serde_json::Error> {
    serde_json::to_vec(value).map(Bytes::from)
}

/// Why a call through the link did not produce an engine answer.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CallError {
    #[error("engine link closed")]
    Closed,
    #[error("too many requests in flight to the engine")]
    Busy,
    #[error("engine did not answer within the deadline")]
    Deadline,
    #[error(transparent)]
    Engine(#[from] EngineError),
}

impl CallError {
    /// Failures that put the connection itself in doubt, and so call for a reconnect.
    pub fn is_transport(&self) -> bool {
        matches!(
            self,
            CallError::Closed | CallError::Deadline | CallError::Engine(EngineError::Transport(_))
        )
    }
}

type Reply = oneshot::Sender<Result<Response, EngineError>>;
type Pending = Arc<Mutex<HashMap<u64, Reply>>>;

/// Room in the priority lane: the watchdog has one heartbeat out at a time.
const PRIORITY_LANE: usize = 4;

/// Two queues of frames into one pipe: the heartbeat's lane is always written first, so a
/// heartbeat never waits behind a queue of auth traffic (it waits for at most the one
/// frame being written), and a full traffic lane (`Busy`) never refuses it.
pub struct Lanes {
    priority: mpsc::Receiver<Bytes>,
    traffic: mpsc::Receiver<Bytes>,
}

/// The senders of [`Lanes`].
#[derive(Clone)]
pub struct LaneSenders {
    pub priority: mpsc::Sender<Bytes>,
    pub traffic: mpsc::Sender<Bytes>,
}

impl Lanes {
    /// The traffic lane holds `traffic` frames; the priority lane a few.
    pub fn new(traffic: usize) -> (LaneSenders, Lanes) {
        let (priority_tx, priority) = mpsc::channel(PRIORITY_LANE);
        let (traffic_tx, traffic) = mpsc::channel(traffic.max(1));
        let senders = LaneSenders {
            priority: priority_tx,
            traffic: traffic_tx,
        };
        (senders, Lanes { priority, traffic })
    }

    /// The next frame to write, priority first; `None` once both lanes are closed.
    pub async fn next(&mut self) -> Option<Bytes> {
        tokio::select! {
            biased;
            Some(frame) = self.priority.recv() => Some(frame),
            Some(frame) = self.traffic.recv() => Some(frame),
            else => None,
        }
    }
}

impl LaneSenders {
    /// The lane for a request: the heartbeat's own, or the traffic's.
    pub fn for_request(&self, request: &Request) -> &mpsc::Sender<Bytes> {
        if request.is_heartbeat() {
            &self.priority
        } else {
            &self.traffic
        }
    }
}

/// The supervisor's end of one engine's pipes. Many calls share it concurrently.
pub struct EngineLink {
    tx: LaneSenders,
    pending: Pending,
    next_id: AtomicU64,
    closed: CancellationToken,
    tasks: [JoinHandle<()>; 2],
}

impl EngineLink {
    /// Starts the reader and writer tasks over the engine's stdout and stdin.
    pub fn start<R, W>(reader: R, writer: W, max_in_flight: usize) -> Self
    where
        R: AsyncRead + Unpin + Send + 'static,
        W: AsyncWrite + Unpin + Send + 'static,
    {
        let (tx, rx) = Lanes::new(max_in_flight);
        let pending: Pending = Arc::default();
        let closed = CancellationToken::new();
        let w = tokio::spawn(write_loop(
            FramedWrite::new(writer, codec()),
            rx,
            closed.clone(),
        ));
        let r = tokio::spawn(read_loop(
            FramedRead::new(reader, codec()),
            pending.clone(),
            closed.clone(),
        ));
        EngineLink {
            tx,
            pending,
            next_id: AtomicU64::new(1),
            closed,
            tasks: [w, r],
        }
    }

    /// Sends one request and waits, at most `deadline`, for its answer.
    pub async fn call(&self, request: Request, deadline: Duration) -> Result<Response, CallError> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let lane = self.tx.for_request(&request);
        let frame = encode(&RequestFrame { id, request })
            .map_err(|e| EngineError::Protocol(e.to_string()))?;
        let (reply, answer) = oneshot::channel();
        self.lock().insert(id, reply);
        // The reader cancels before it clears `pending`: checking after inserting closes the race.
        if self.closed.is_cancelled() {
            self.lock().remove(&id);
            return Err(CallError::Closed);
        }
        if let Err(e) = lane.try_send(frame) {
            self.lock().remove(&id);
            return Err(match e {
                mpsc::error::TrySendError::Full(_) => CallError::Busy,
                mpsc::error::TrySendError::Closed(_) => CallError::Closed,
            });
        }
        match tokio::time::timeout(deadline, answer).await {
            Ok(Ok(result)) => result.map_err(CallError::Engine),
            Ok(Err(_)) => Err(CallError::Closed),
            Err(_) => {
                self.lock().remove(&id);
                Err(CallError::Deadline)
            }
        }
    }

    /// Fails every waiting call with `Closed` at once, leaving the pipes open.
    pub fn abandon(&self) {
        self.lock().clear();
    }

    /// Resolves once either pipe has failed or closed.
    pub async fn closed(&self) {
        self.closed.cancelled().await
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Reply>> {
        // A poisoned map only means a panic elsewhere; the map itself is still consistent.
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Drop for EngineLink {
    fn drop(&mut self) {
        self.closed.cancel();
        self.tasks.iter().for_each(JoinHandle::abort);
    }
}

async fn write_loop<W>(
    mut sink: FramedWrite<W, LengthDelimitedCodec>,
    mut rx: Lanes,
    closed: CancellationToken,
) where
    W: AsyncWrite + Unpin,
{
    loop {
        let frame = tokio::select! {
            f = rx.next() => f,
            _ = closed.cancelled() => None,
        };
        let Some(frame) = frame else { break };
        if sink.send(frame).await.is_err() {
            break;
        }
    }
    closed.cancel();
}

async fn read_loop<R>(
    mut stream: FramedRead<R, LengthDelimitedCodec>,
    pending: Pending,
    closed: CancellationToken,
) where
    R: AsyncRead + Unpin,
{
    while let Some(Ok(bytes)) = stream.next().await {
        let Ok(frame) = serde_json::from_slice::<ResponseFrame>(&bytes) else {
            tracing::warn!("engine sent an unreadable frame; dropping the link");
            break;
        };
        let reply = pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&frame.id);
        if let Some(reply) = reply {
            let _ = reply.send(frame.result);
        }
    }
    closed.cancel();
    // Dropping the senders wakes every waiting caller with `Closed`.
    pending.lock().unwrap_or_else(|p| p.into_inner()).clear();
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::KeyHash;

    /// A fake engine answering `Ping` with `Pong`, in reverse order of arrival per batch.
    async fn fake_engine(io: tokio::io::DuplexStream) {
        let (r, w) = tokio::io::split(io);
        let mut rd = FramedRead::new(r, codec());
        let mut wr = FramedWrite::new(w, codec());
        while let Some(Ok(b)) = rd.next().await {
            let f: RequestFrame = serde_json::from_slice(&b).unwrap();
            let out = ResponseFrame {
                id: f.id,
                result: Ok(Response::Pong),
            };
            wr.send(encode(&out).unwrap()).await.unwrap();
        }
    }

    fn link() -> (EngineLink, tokio::io::DuplexStream) {
        let (ours, theirs) = tokio::io::duplex(64 * 1024);
        let (r, w) = tokio::io::split(ours);
        (EngineLink::start(r, w, 64), theirs)
    }

    #[tokio::test]
    async fn many_calls_are_in_flight_at_once_and_each_gets_its_own_answer() {
        let (link, theirs) = link();
        tokio::spawn(fake_engine(theirs));
        // Traffic, not heartbeats: the watchdog has one heartbeat out at a time.
        let calls = (0..50).map(|_| link.call(Request::LastChange, Duration::from_secs(5)));
        for r in futures_util::future::join_all(calls).await {
            assert!(matches!(r, Ok(Response::Pong)));
        }
    }

    #[tokio::test]
    async fn a_silent_engine_yields_a_deadline_error() {
        let (link, _theirs) = link();
        let r = link.call(Request::Ping, Duration::from_millis(20)).await;
        assert_eq!(r.unwrap_err(), CallError::Deadline);
    }

    #[tokio::test]
    async fn a_closed_pipe_fails_waiting_and_later_calls_with_closed() {
        let (link, theirs) = link();
        let waiting = link.call(Request::Ping, Duration::from_secs(5));
        drop(theirs);
        assert_eq!(waiting.await.unwrap_err(), CallError::Closed);
        link.closed().await;
        assert_eq!(
            link.call(Request::Ping, Duration::from_secs(5))
                .await
                .unwrap_err(),
            CallError::Closed
        );
    }

    #[tokio::test]
    async fn a_heartbeat_overtakes_queued_traffic_and_is_never_refused_as_busy() {
        // A pipe of a few bytes and an engine that reads nothing yet: frames queue up.
        let (ours, theirs) = tokio::io::duplex(16);
        let (r, w) = tokio::io::split(ours);
        let link = Arc::new(EngineLink::start(r, w, 2));
        let token = || KeyHash::of_raw("sk-queued");
        let mut traffic = Vec::new();
        for _ in 0..3 {
            let link = link.clone();
            traffic.push(tokio::spawn(async move {
                let request = Request::GetKey { token: token() };
                link.call(request, Duration::from_secs(5)).await
            }));
            tokio::task::yield_now().await;
        }
        // The traffic lane is full: one more is refused at once...
        let refused = link
            .call(Request::GetKey { token: token() }, Duration::from_secs(5))
            .await;
        assert_eq!(refused.unwrap_err(), CallError::Busy);
        // ...the heartbeat is not, and the engine reads it before the queued traffic.
        let heartbeat = {
            let link = link.clone();
            tokio::spawn(async move { link.call(Request::Ping, Duration::from_secs(5)).await })
        };
        tokio::task::yield_now().await;
        let order = tokio::spawn(recording_engine(theirs));
        assert!(matches!(heartbeat.await.unwrap(), Ok(Response::Pong)));
        for call in traffic {
            assert!(call.await.unwrap().is_ok());
        }
        drop(link);
        let order = order.await.unwrap();
        let ping_at = order.iter().position(|ping| *ping).unwrap();
        // At most the frame the writer had begun before the heartbeat came goes first.
        assert!(
            ping_at <= 1,
            "the heartbeat was frame {ping_at} of {order:?}"
        );
    }

    /// Answers every request (`Pong` for a ping, no key otherwise), and returns, in order
    /// of arrival, whether each frame was a ping.
    async fn recording_engine(io: tokio::io::DuplexStream) -> Vec<bool> {
        let (r, w) = tokio::io::split(io);
        let mut rd = FramedRead::new(r, codec());
        let mut wr = FramedWrite::new(w, codec());
        let mut order = Vec::new();
        while let Some(Ok(b)) = rd.next().await {
            let f: RequestFrame = serde_json::from_slice(&b).unwrap();
            order.push(f.request.is_heartbeat());
            let result = match f.request {
                Request::Ping => Ok(Response::Pong),
                _ => Ok(Response::Key { record: None }),
            };
            let out = ResponseFrame { id: f.id, result };
            if wr.send(encode(&out).unwrap()).await.is_err() {
                break;
            }
        }
        order
    }

    #[test]
    fn transport_failures_call_for_a_reconnect_and_query_errors_do_not() {
        assert!(CallError::Deadline.is_transport());
        assert!(CallError::Engine(EngineError::Transport("x".into())).is_transport());
        assert!(!CallError::Engine(EngineError::Conflict("key_alias".into())).is_transport());
        assert!(!CallError::Busy.is_transport());
    }
}
