//! The SSH proxy: a russh server terminates the client (with a host key or
//! a host certificate from interlock's SSH CA), a russh client opens the
//! upstream with the injected credential, and every exec, shell, subsystem,
//! sftp file operation and forwarding request is decided by the session's
//! [`Gate`](crate::gate::Gate) before it reaches the server. PTY channels are
//! recorded as asciicast v2; sftp operations are recorded with byte counts.
//! SSH library types stay inside this module.

mod ca;
mod cast;
mod channel;
mod config;
mod decision;
mod error;
mod forward;
mod inbound;
mod meaning;
mod relay;
mod reverse;
mod server;
mod sftp;

/// The SFTP fuzz target's driver (see `crate::fuzzing`).
#[cfg(feature = "fuzzing")]
pub(crate) fn fuzz_sftp(script: &[u8]) {
    sftp::fuzz::run(script);
}

/// Seed scripts for the SFTP fuzz target.
#[cfg(feature = "fuzzing")]
pub(crate) fn sftp_seeds() -> Vec<Vec<u8>> {
    sftp::fuzz::seeds()
}
mod upstream;

pub use ca::SshCa;
pub use config::{ClientAuth, Credential, HostIdentity, HostKeyCheck, SshTarget};
pub use error::SshError;
pub use server::serve;
