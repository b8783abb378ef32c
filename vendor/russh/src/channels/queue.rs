//! INTERLOCK PATCH (see INTERLOCK-PATCH.md): the queue between a session
//! loop and one channel's [`super::ChannelReadHalf`].
//!
//! Upstream uses a bounded `tokio::sync::mpsc` and grants the peer new
//! window as soon as data *arrives*; a slow reader then stops the whole
//! session loop on `send().await`, and a stopped loop no longer reads that
//! peer's WINDOW_ADJUSTs (a deadlock once two sessions wait for each other).
//!
//! Here channel data never waits for room: it is bounded by the channel
//! window instead, because the window is granted back only for the bytes the
//! application took out of this queue (`consumed`, collected by the session
//! loop, which is woken through `wake`). Consecutive data of one stream is
//! coalesced while it waits, so a peer sending tiny packets does not queue
//! one item per packet. Other messages (EOF, requests, exit status)
//! keep the upstream bound (`channel_buffer_size`) and its `send().await`
//! backpressure: only a peer flooding control messages meets it.
//! `WindowAdjusted` (informational, made from the peer's WINDOW_ADJUSTs)
//! never waits and is queued at most once.

use std::collections::VecDeque;
use std::future::poll_fn;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use futures::task::AtomicWaker;
use tokio::sync::Notify;
use tokio::sync::mpsc::error::{SendError, TrySendError};

use crate::ChannelMsg;

/// Waiting data of one stream is appended to the last queued item up to
/// this size (the default maximum packet size).
const COALESCE: usize = 32768;

enum Item {
    Data { ext: Option<u32>, data: BytesMut },
    Control(ChannelMsg),
}

#[derive(Default)]
struct State {
    items: VecDeque<Item>,
    controls: usize,
    /// Data bytes taken out (or dropped because nobody reads any more),
    /// not yet granted back to the peer as window.
    consumed: u64,
    /// A `WindowAdjusted` is queued (they do not count in `controls`).
    window_adjusted_queued: bool,
    tx_closed: bool,
    rx_closed: bool,
    /// The session loop's wake-up, registered by the loop itself.
    wake: Option<Arc<Notify>>,
}

struct Inner {
    state: Mutex<State>,
    readable: AtomicWaker,
    room: Notify,
    control_limit: usize,
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, State> {
        match self.state.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        }
    }
}

/// Creates a channel queue; `control_limit` bounds queued non-data messages.
pub(crate) fn queue(control_limit: usize) -> (QueueTx, QueueRx) {
    let inner = Arc::new(Inner {
        state: Mutex::new(State::default()),
        readable: AtomicWaker::new(),
        room: Notify::new(),
        control_limit: control_limit.max(1),
    });
    (QueueTx(inner.clone()), QueueRx(inner))
}

/// The session loop's end.
pub struct QueueTx(Arc<Inner>);

/// The application's end.
pub struct QueueRx(Arc<Inner>);

impl std::fmt::Debug for QueueTx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QueueTx").finish()
    }
}

impl std::fmt::Debug for QueueRx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QueueRx").finish()
    }
}

fn data_of(msg: &ChannelMsg) -> Option<(Option<u32>, &Bytes)> {
    match msg {
        ChannelMsg::Data { data } => Some((None, data)),
        ChannelMsg::ExtendedData { data, ext } => Some((Some(*ext), data)),
        _ => None,
    }
}

impl QueueTx {
    /// Queues `msg`. Data never waits (the window bounds it); other
    /// messages wait while `control_limit` of them are queued.
    pub async fn send(&self, msg: ChannelMsg) -> Result<(), SendError<ChannelMsg>> {
        if data_of(&msg).is_some() {
            return self.push_data(msg);
        }
        let mut msg = msg;
        loop {
            let room = self.0.room.notified();
            tokio::pin!(room);
            room.as_mut().enable();
            match self.try_send(msg) {
                Ok(()) => return Ok(()),
                Err(TrySendError::Closed(m)) => return Err(SendError(m)),
                Err(TrySendError::Full(m)) => {
                    msg = m;
                    room.await;
                }
            }
        }
    }

    /// Queues `msg` if there is room, without waiting.
    pub fn try_send(&self, msg: ChannelMsg) -> Result<(), TrySendError<ChannelMsg>> {
        if data_of(&msg).is_some() {
            return self
                .push_data(msg)
                .map_err(|SendError(m)| TrySendError::Closed(m));
        }
        let mut st = self.0.lock();
        if st.rx_closed {
            return Err(TrySendError::Closed(msg));
        }
        if matches!(msg, ChannelMsg::WindowAdjusted { .. }) {
            // Informational (the write half already has the window): one
            // queued is enough, and it never takes a control slot, or a
            // reader busy writing the other way would fill the slots with
            // them and then make the loop wait on the peer's EOF.
            if !st.window_adjusted_queued {
                st.window_adjusted_queued = true;
                st.items.push_back(Item::Control(msg));
                drop(st);
                self.0.readable.wake();
            }
            return Ok(());
        }
        if st.controls >= self.0.control_limit {
            return Err(TrySendError::Full(msg));
        }
        st.controls += 1;
        st.items.push_back(Item::Control(msg));
        drop(st);
        self.0.readable.wake();
        Ok(())
    }

    fn push_data(&self, msg: ChannelMsg) -> Result<(), SendError<ChannelMsg>> {
        let Some((ext, data)) = data_of(&msg) else {
            return Err(SendError(msg));
        };
        let mut st = self.0.lock();
        if st.rx_closed {
            // Nobody will read it: give the window back, as upstream did.
            st.consumed = st.consumed.saturating_add(data.len() as u64);
            let wake = st.wake.clone();
            drop(st);
            if let Some(w) = wake {
                w.notify_one();
            }
            return Err(SendError(msg));
        }
        if data.is_empty() {
            return Ok(());
        }
        if let Some(Item::Data { ext: e, data: tail }) = st.items.back_mut()
            && *e == ext
            && tail.len() + data.len() <= COALESCE
        {
            tail.extend_from_slice(data);
        } else {
            let data = BytesMut::from(&data[..]);
            st.items.push_back(Item::Data { ext, data });
        }
        drop(st);
        self.0.readable.wake();
        Ok(())
    }

    /// Data bytes the application consumed and the peer was not yet given
    /// back as window; registers `wake` to be notified when it grows.
    pub(crate) fn consumed(&self, wake: &Arc<Notify>) -> u64 {
        let mut st = self.0.lock();
        if st.wake.is_none() {
            st.wake = Some(wake.clone());
        }
        st.consumed
    }

    /// Records that `granted` consumed bytes were given back as window.
    pub(crate) fn granted(&self, granted: u64) {
        let mut st = self.0.lock();
        st.consumed = st.consumed.saturating_sub(granted);
    }
}

impl Drop for QueueTx {
    fn drop(&mut self) {
        self.0.lock().tx_closed = true;
        self.0.readable.wake();
    }
}

impl QueueRx {
    pub async fn recv(&mut self) -> Option<ChannelMsg> {
        poll_fn(|cx| self.poll_recv(cx)).await
    }

    pub fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Option<ChannelMsg>> {
        self.0.readable.register(cx.waker());
        let mut st = self.0.lock();
        match st.items.pop_front() {
            Some(Item::Data { ext, data }) => {
                st.consumed = st.consumed.saturating_add(data.len() as u64);
                let wake = st.wake.clone();
                drop(st);
                if let Some(w) = wake {
                    w.notify_one();
                }
                let data = data.freeze();
                Poll::Ready(Some(match ext {
                    None => ChannelMsg::Data { data },
                    Some(ext) => ChannelMsg::ExtendedData { data, ext },
                }))
            }
            Some(Item::Control(msg @ ChannelMsg::WindowAdjusted { .. })) => {
                st.window_adjusted_queued = false;
                Poll::Ready(Some(msg))
            }
            Some(Item::Control(msg)) => {
                st.controls = st.controls.saturating_sub(1);
                drop(st);
                self.0.room.notify_waiters();
                Poll::Ready(Some(msg))
            }
            None if st.tx_closed => Poll::Ready(None),
            None => Poll::Pending,
        }
    }

    /// Stops further messages; what is queued can still be received.
    pub fn close(&mut self) {
        self.0.lock().rx_closed = true;
        self.0.room.notify_waiters();
    }
}

impl Drop for QueueRx {
    fn drop(&mut self) {
        let mut st = self.0.lock();
        st.rx_closed = true;
        // What was never read counts as consumed, so the peer is not left
        // waiting for window of a channel nobody reads.
        let dropped: u64 = st
            .items
            .drain(..)
            .map(|i| match i {
                Item::Data { data, .. } => data.len() as u64,
                Item::Control(_) => 0,
            })
            .sum();
        st.controls = 0;
        st.window_adjusted_queued = false;
        st.consumed = st.consumed.saturating_add(dropped);
        let wake = st.wake.clone();
        drop(st);
        self.0.room.notify_waiters();
        if let Some(w) = wake {
            w.notify_one();
        }
    }
}
