//! The framing both ends of the engine's pipes use: length-delimited JSON frames, and two
//! lanes into one pipe so the heartbeat never queues behind traffic.

use bytes::Bytes;
use serde::Serialize;
use tokio::sync::mpsc;
use tokio_util::codec::LengthDelimitedCodec;

use super::Request;

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
