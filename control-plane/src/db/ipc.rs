//! Framed, multiplexed JSON over the engine's pipes: length-delimited frames tagged with request ids.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_util::codec::{FramedRead, FramedWrite, LengthDelimitedCodec};
use tokio_util::sync::CancellationToken;

use crate::protocol::{
    codec, encode, Answer, EngineError, LaneSenders, Lanes, Op, Request, RequestFrame,
    ResponseFrame,
};

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

type Reply = oneshot::Sender<Result<Answer, EngineError>>;
type Pending = Arc<Mutex<HashMap<u64, Reply>>>;

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

    /// Sends one operation and waits, at most `deadline`, for its reply: the one place a
    /// reply is decoded as its operation's type.
    pub async fn run<O: Op>(&self, op: O, deadline: Duration) -> Result<O::Reply, CallError> {
        let answer = self.call(op.into_request(), deadline).await?;
        O::read_answer(&answer).map_err(CallError::Engine)
    }

    /// Sends one request and waits, at most `deadline`, for its answer, still encoded.
    pub async fn call(&self, request: Request, deadline: Duration) -> Result<Answer, CallError> {
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
    use crate::model::keys::KeyHash;
    use crate::protocol::{GetKey, LastChange, Ping};

    /// A fake engine answering every request with its own frame id, named for its operation.
    async fn fake_engine(io: tokio::io::DuplexStream) {
        let (r, w) = tokio::io::split(io);
        let mut rd = FramedRead::new(r, codec());
        let mut wr = FramedWrite::new(w, codec());
        while let Some(Ok(b)) = rd.next().await {
            let f: RequestFrame = serde_json::from_slice(&b).unwrap();
            let answer = Answer {
                op: f.request.name().to_owned(),
                reply: serde_json::value::to_raw_value(&f.id).unwrap(),
            };
            let out = ResponseFrame {
                id: f.id,
                result: Ok(answer),
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
        let calls = (0..50).map(|_| link.run(LastChange {}, Duration::from_secs(5)));
        let mut answers: Vec<i64> = futures_util::future::join_all(calls)
            .await
            .into_iter()
            .map(Result::unwrap)
            .collect();
        answers.sort();
        answers.dedup();
        assert_eq!(answers.len(), 50, "{answers:?}");
    }

    #[tokio::test]
    async fn a_reply_to_another_operation_is_a_protocol_error_and_the_link_stays_up() {
        let (link, theirs) = link();
        // The fake answers every request as if it were `LastChange`'s (its frame id).
        tokio::spawn(fake_engine(theirs));
        let mismatched = link
            .run(
                GetKey {
                    token: KeyHash::of_raw("sk-x"),
                },
                Duration::from_secs(5),
            )
            .await
            .unwrap_err();
        assert!(
            matches!(&mismatched, CallError::Engine(EngineError::Protocol(_))),
            "{mismatched:?}"
        );
        assert!(
            !mismatched.is_transport(),
            "a misread is not a lost connection"
        );
        assert!(link
            .run(LastChange {}, Duration::from_secs(5))
            .await
            .is_ok());
    }

    #[tokio::test]
    async fn a_silent_engine_yields_a_deadline_error() {
        let (link, _theirs) = link();
        let r = link.run(Ping {}, Duration::from_millis(20)).await;
        assert_eq!(r.unwrap_err(), CallError::Deadline);
    }

    #[tokio::test]
    async fn a_closed_pipe_fails_waiting_and_later_calls_with_closed() {
        let (link, theirs) = link();
        let waiting = link.run(Ping {}, Duration::from_secs(5));
        drop(theirs);
        assert_eq!(waiting.await.unwrap_err(), CallError::Closed);
        link.closed().await;
        assert_eq!(
            link.run(Ping {}, Duration::from_secs(5)).await.unwrap_err(),
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
                let request = GetKey { token: token() };
                link.run(request, Duration::from_secs(5)).await
            }));
            tokio::task::yield_now().await;
        }
        // The traffic lane is full: one more is refused at once...
        let refused = link
            .run(GetKey { token: token() }, Duration::from_secs(5))
            .await;
        assert_eq!(refused.unwrap_err(), CallError::Busy);
        // ...the heartbeat is not, and the engine reads it before the queued traffic.
        let heartbeat = {
            let link = link.clone();
            tokio::spawn(async move { link.run(Ping {}, Duration::from_secs(5)).await })
        };
        tokio::task::yield_now().await;
        let order = tokio::spawn(recording_engine(theirs));
        assert_eq!(heartbeat.await.unwrap(), Ok(()));
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

    /// Answers every request (a ping's reply, no key otherwise), and returns, in order
    /// of arrival, whether each frame was a ping.
    async fn recording_engine(io: tokio::io::DuplexStream) -> Vec<bool> {
        let (r, w) = tokio::io::split(io);
        let mut rd = FramedRead::new(r, codec());
        let mut wr = FramedWrite::new(w, codec());
        let mut order = Vec::new();
        while let Some(Ok(b)) = rd.next().await {
            let f: RequestFrame = serde_json::from_slice(&b).unwrap();
            order.push(f.request.is_heartbeat());
            let result = match &f.request {
                Request::Ping(op) => op.answer(&()),
                Request::GetKey(op) => op.answer(&None),
                other => panic!("unexpected {other:?}"),
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
