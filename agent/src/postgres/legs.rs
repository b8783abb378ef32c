//! The two legs of a proxied session as framed halves, the one place that
//! waits on them during the relay, and the replies interlock itself words.
//!
//! # Why the relay cannot deadlock
//!
//! PostgreSQL stops reading its socket while its own output is blocked,
//! and so may a client. A proxy that waits for one side to take bytes
//! while it does not read that same side closes a cycle: the server waits
//! for interlock to read its results, interlock waits for the server to
//! read the next query. So nothing in the relay waits on one thing:
//!
//! - Frames for either side are *queued* ([`FrameWriter::push`] never
//!   waits); the only wait is [`Legs::next`], which writes out both queues
//!   and reads both sides at once (one `select!`), and returns as soon as
//!   either side sent a whole message.
//! - Backpressure goes to the producer: interlock stops reading the client
//!   while the server's queue holds [`QUEUE_BOUND`] bytes or more, and
//!   stops reading the server while the client's queue does. It never
//!   stops reading the server because the *server's* queue is full, nor
//!   the client because the client's is: a side that does not read what
//!   it is sent is still read, so its own writes always drain.
//! - So interlock waits on a peer only when that peer is the one holding
//!   things up (it sends more than it reads), exactly as if it were
//!   connected directly; memory per session stays around twice
//!   [`QUEUE_BOUND`] plus one message being read on each side.
//!
//! Every branch of the `select!` is cancel-safe: a read keeps partial
//! input in its reader's buffer, a write counts bytes only once the socket
//! took them, and a flush (which pushes TLS records out) is repeated.

use tokio::io::{ReadHalf, WriteHalf};

use super::{
    error::{PgError, ProtocolError},
    frame::{Frame, FrameReader, FrameWriter, ReadError},
    message::ErrorFields,
    tls::BoxIo,
};
use crate::gate::Side;

pub(crate) type Reader = FrameReader<ReadHalf<BoxIo>>;
pub(crate) type Writer = FrameWriter<WriteHalf<BoxIo>>;

/// Bytes queued for one side at which interlock stops reading the other
/// side (the one producing them) until the queue drains below it again.
pub(crate) const QUEUE_BOUND: usize = 256 * 1024;

/// How long a closing session may take to hand its last queued bytes to
/// peers that do not read them, before its sockets are simply closed.
pub(crate) const CLOSE_GRACE: std::time::Duration = std::time::Duration::from_secs(10);

/// Client and server halves.
pub(crate) struct Legs {
    pub(crate) client_r: Reader,
    pub(crate) client_w: Writer,
    pub(crate) server_r: Reader,
    pub(crate) server_w: Writer,
}

/// What [`Legs::next`] returned for.
pub(crate) enum Input {
    /// A client message; `None`: the client closed its side.
    Client(Option<Frame>),
    /// A server message; `None`: the server closed its side.
    Server(Option<Frame>),
    /// Some queued bytes were written (or flushed); nothing was read.
    Wrote,
}

impl Legs {
    /// Whether the server's queue has room for more client messages.
    pub(crate) fn server_has_room(&self) -> bool {
        self.server_w.queued() < QUEUE_BOUND
    }

    /// The one wait of the relay: writes out what is queued for either
    /// side while reading both, and returns the next whole message from
    /// either side, or [`Input::Wrote`] after a write step (so the caller
    /// can re-check its own bounds). With `want_client` false the client
    /// is not read. Cancel-safe (see the module doc).
    ///
    /// Messages already buffered are returned first, without a write in
    /// between: a server's answer is then gathered into few writes.
    ///
    /// Errors: I/O failures, and protocol errors in what either side sent.
    pub(crate) async fn next(&mut self, want_client: bool) -> Result<Input, PgError> {
        let read_client = want_client && self.server_has_room();
        let read_server = self.client_w.queued() < QUEUE_BOUND;
        if read_server && self.server_r.has_frame() {
            let f = self.server_r.read_frame().await;
            return Ok(Input::Server(f.map_err(|e| read_err(Side::Server, e))?));
        }
        if read_client && self.client_r.has_frame() {
            let f = self.client_r.read_frame().await;
            return Ok(Input::Client(f.map_err(|e| read_err(Side::Client, e))?));
        }
        let (write_server, write_client) = (!self.server_w.is_idle(), !self.client_w.is_idle());
        tokio::select! {
            r = self.server_w.write_some(), if write_server => r.map(|()| Input::Wrote).map_err(PgError::Io),
            r = self.client_w.write_some(), if write_client => r.map(|()| Input::Wrote).map_err(PgError::Io),
            r = self.server_r.read_frame(), if read_server => {
                Ok(Input::Server(r.map_err(|e| read_err(Side::Server, e))?))
            }
            r = self.client_r.read_frame(), if read_client => {
                Ok(Input::Client(r.map_err(|e| read_err(Side::Client, e))?))
            }
            // Unreachable: with the server unread, the client's queue is
            // at its bound, so it has bytes to write.
            else => Err(PgError::Io(std::io::Error::other("relay has nothing to wait for"))),
        }
    }

    /// Ends the session's I/O: hands what is queued to both sides and
    /// shuts their write halves, reading (and dropping) what the server
    /// still sends meanwhile, so a server blocked on its output takes the
    /// Terminate. Peers that take nothing for [`CLOSE_GRACE`] are cut off
    /// (their sockets close when the legs drop).
    pub(crate) async fn close(&mut self) {
        let drain = async {
            let (mut client_done, mut server_done) = (false, false);
            let mut server_open = true;
            while !(client_done && server_done) {
                tokio::select! {
                    r = self.client_w.write_some(), if !client_done => {
                        if r.is_err() || self.client_w.is_idle() {
                            client_done = true;
                        }
                    }
                    r = self.server_w.write_some(), if !server_done => {
                        if r.is_err() || self.server_w.is_idle() {
                            server_done = true;
                        }
                    }
                    r = self.server_r.read_frame(), if server_open => {
                        server_open = matches!(r, Ok(Some(_)));
                    }
                }
            }
            self.client_w.shutdown().await;
            self.server_w.shutdown().await;
        };
        let _ = tokio::time::timeout(CLOSE_GRACE, drain).await;
    }
}

/// A read error attributed to `side`.
pub(crate) fn read_err(side: Side, e: ReadError) -> PgError {
    match e {
        ReadError::Io(e) => PgError::Io(e),
        ReadError::Protocol(p) => PgError::protocol(side, p),
    }
}

/// A protocol error attributed to `side`.
pub(crate) fn proto(side: Side) -> impl Fn(ProtocolError) -> PgError {
    move |e| PgError::protocol(side, e)
}

/// An ERROR-severity ErrorResponse.
pub(crate) fn error(code: &str, message: &str) -> Frame {
    ErrorFields::new("ERROR", code, message).error_frame()
}

/// A FATAL-severity ErrorResponse.
pub(crate) fn fatal(code: &str, message: &str) -> Frame {
    ErrorFields::new("FATAL", code, message).error_frame()
}
