//! The two legs of a proxied session as framed halves, and the replies
//! interlock itself words.

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

/// Client and server halves.
pub(crate) struct Legs {
    pub(crate) client_r: Reader,
    pub(crate) client_w: Writer,
    pub(crate) server_r: Reader,
    pub(crate) server_w: Writer,
}

impl Legs {
    /// Writes out what is queued for either side unless another whole
    /// message is already buffered to be handled: called before waiting
    /// for input, so nothing queued waits on the peer that should answer it.
    pub(crate) async fn flush_before_waiting(&mut self) -> std::io::Result<()> {
        if self.server_r.has_frame() || self.client_r.has_frame() {
            return Ok(());
        }
        if self.server_w.has_queued() {
            self.server_w.flush().await?;
        }
        if self.client_w.has_queued() {
            self.client_w.flush().await?;
        }
        Ok(())
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
