use std::sync::Arc;

use tokio::sync::Notify;
use tokio::sync::mpsc::error::{SendError, TrySendError};

use super::WindowSizeRef;
use super::queue::QueueTx;
use crate::ChannelMsg;

/// A handle to the [`super::Channel`]'s to be able to transmit messages
/// to it and update it's `window_size`.
///
/// INTERLOCK PATCH: holds the session end of the channel's queue
/// (`super::queue`) instead of a bounded `mpsc::Sender`.
#[derive(Debug)]
pub struct ChannelRef {
    pub(super) sender: QueueTx,
    pub(super) window_size: WindowSizeRef,
}

impl ChannelRef {
    pub fn new(sender: QueueTx) -> Self {
        Self {
            sender,
            window_size: WindowSizeRef::new(0),
        }
    }

    pub(crate) fn window_size(&self) -> &WindowSizeRef {
        &self.window_size
    }

    /// Queues `msg`; channel data never waits (see `super::queue`).
    pub async fn send(&self, msg: ChannelMsg) -> Result<(), SendError<ChannelMsg>> {
        self.sender.send(msg).await
    }

    pub fn try_send(&self, msg: ChannelMsg) -> Result<(), TrySendError<ChannelMsg>> {
        self.sender.try_send(msg)
    }

    /// Data bytes consumed by the application and not yet granted back.
    pub(crate) fn consumed(&self, wake: &Arc<Notify>) -> u64 {
        self.sender.consumed(wake)
    }

    pub(crate) fn granted(&self, granted: u64) {
        self.sender.granted(granted)
    }
}
