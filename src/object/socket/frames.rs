//! A socket's frame channel: what its owner releases towards the client,
//! in order, bounded.
//!
//! The frames travel boxed. tokio's mpsc allocates a channel's slots 32 at
//! a time, the first block when the channel is made, and every socket keeps
//! one of these channels open for its whole life (at its owner, and again
//! at a cluster's edge): a slot of 8 bytes instead of a 48-byte
//! [`ServerFrame`] saves ~1.25 KiB per idle socket at each, for one small
//! allocation per frame sent.

use tokio::sync::mpsc;
use tokio::sync::mpsc::error::{TryRecvError, TrySendError};

use super::ServerFrame;

/// A bounded channel of frames holding up to `capacity` (at least 1).
pub fn channel(capacity: usize) -> (FrameSender, FrameReceiver) {
    let (tx, rx) = mpsc::channel(capacity.max(1));
    (FrameSender(tx), FrameReceiver(rx))
}

/// The sending end. Cheap to clone.
#[derive(Clone, Debug)]
pub struct FrameSender(mpsc::Sender<Box<ServerFrame>>);

impl FrameSender {
    /// Queues `frame` if there is room and the receiver is still there.
    pub fn try_send(&self, frame: ServerFrame) -> Result<(), TrySendError<Box<ServerFrame>>> {
        self.0.try_send(Box::new(frame))
    }

    /// Queues `frame`, waiting for room; `Err` once the receiver is gone.
    pub async fn send(&self, frame: ServerFrame) -> Result<(), ServerFrame> {
        self.0.send(Box::new(frame)).await.map_err(|e| *e.0)
    }

    /// Completes when the receiver is gone.
    pub async fn closed(&self) {
        self.0.closed().await
    }
}

/// The receiving end.
#[derive(Debug)]
pub struct FrameReceiver(mpsc::Receiver<Box<ServerFrame>>);

impl FrameReceiver {
    /// The next frame; `None` once every sender is gone and the queue is
    /// empty.
    pub async fn recv(&mut self) -> Option<ServerFrame> {
        self.0.recv().await.map(|f| *f)
    }

    pub fn try_recv(&mut self) -> Result<ServerFrame, TryRecvError> {
        self.0.try_recv().map(|f| *f)
    }
}
