//! CancelRequest handling. A client is told the server's real backend pid
//! (so `pg_backend_pid()`, `pg_terminate_backend()` and notification pids
//! agree with what it was told) and a cancel secret interlock issued. The
//! registry (one per daemon, shared by all sessions) is keyed on that
//! secret: it finds the session, checks the pid as the server would, signals
//! the session (a statement held for approval waits on that signal) and
//! forwards the upstream's real key.

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{Arc, Mutex},
};

use bytes::Bytes;
use tokio::{io::AsyncWriteExt, net::TcpStream, sync::watch};

use super::message::StartupPacket;

#[derive(Clone)]
struct Entry {
    upstream: SocketAddr,
    /// The server's BackendKeyData, once it sent it.
    upstream_key: Option<(i32, Bytes)>,
    signal: watch::Sender<u64>,
}

/// Issued secrets -> upstream keys and session cancel signals. Cheap to clone.
#[derive(Clone, Default)]
pub struct CancelRegistry {
    inner: Arc<Mutex<HashMap<Bytes, Entry>>>,
}

/// A session's registration; dropping it removes the secret.
pub(crate) struct Registration {
    registry: CancelRegistry,
    secret: Bytes,
    /// Changes whenever a client cancels this session.
    pub(crate) signal: watch::Receiver<u64>,
}

impl Registration {
    /// Records the upstream's real key and returns the one to give the
    /// client in BackendKeyData: the server's pid with interlock's secret.
    pub(crate) fn client_key(&self, pid: i32, secret: Bytes) -> (i32, Bytes) {
        if let Ok(mut map) = self.registry.inner.lock()
            && let Some(e) = map.get_mut(&self.secret)
        {
            e.upstream_key = Some((pid, secret));
        }
        (pid, self.secret.clone())
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        if let Ok(mut map) = self.registry.inner.lock() {
            map.remove(&self.secret);
        }
    }
}

fn random_secret(len: usize) -> Bytes {
    let mut secret = vec![0u8; len];
    // Without randomness we still issue a key; it only weakens cancel-key guessing.
    let _ = getrandom::fill(&mut secret);
    Bytes::from(secret)
}

impl CancelRegistry {
    /// An empty registry.
    pub fn new() -> CancelRegistry {
        CancelRegistry::default()
    }

    /// Issues a fresh secret (4 bytes for protocol 3.0, 32 bytes for 3.2+),
    /// unique among live sessions.
    pub(crate) fn register(&self, upstream: SocketAddr, minor: u16) -> Registration {
        let len = if minor >= 2 { 32 } else { 4 };
        let (tx, rx) = watch::channel(0u64);
        let mut secret = random_secret(len);
        if let Ok(mut map) = self.inner.lock() {
            while map.contains_key(&secret) {
                secret = random_secret(len);
            }
            map.insert(
                secret.clone(),
                Entry {
                    upstream,
                    upstream_key: None,
                    signal: tx,
                },
            );
        }
        Registration {
            registry: self.clone(),
            secret,
            signal: rx,
        }
    }

    /// Handles a client's CancelRequest: signals the session (so a held
    /// statement is cancelled) and forwards the real key upstream. Returns
    /// false for an unknown secret or a pid that is not its session's,
    /// which are ignored as the server would.
    pub async fn cancel(&self, pid: i32, secret: Bytes) -> bool {
        let entry = match self.inner.lock() {
            Ok(map) => map.get(&secret).cloned(),
            Err(_) => None,
        };
        let Some(entry) = entry else {
            return false;
        };
        // The client learnt the secret together with the pid, from
        // BackendKeyData: before that there is nothing it can cancel.
        let Some((upstream_pid, upstream_secret)) = entry.upstream_key else {
            return false;
        };
        if upstream_pid != pid {
            return false;
        }
        entry.signal.send_modify(|n| *n = n.wrapping_add(1));
        let frame = StartupPacket::Cancel {
            pid,
            secret: upstream_secret,
        }
        .encode();
        if let Ok(mut s) = TcpStream::connect(entry.upstream).await {
            let _ = s.write_all(frame.raw()).await;
            let _ = s.shutdown().await;
        }
        true
    }

    /// Live registrations (for tests and diagnostics).
    pub fn len(&self) -> usize {
        self.inner.lock().map(|m| m.len()).unwrap_or(0)
    }

    /// Whether no session is registered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn cancel_needs_the_issued_secret_and_the_server_pid() {
        let reg = CancelRegistry::new();
        let addr: SocketAddr = "127.0.0.1:9".parse().unwrap();
        let r = reg.register(addr, 0);
        let mut sig = r.signal.clone();
        let (pid, secret) = r.client_key(4242, Bytes::from_static(b"srv!"));
        assert_eq!(pid, 4242, "the client is told the server's pid");
        assert_eq!(secret.len(), 4);
        assert_ne!(
            secret,
            Bytes::from_static(b"srv!"),
            "not the server's secret"
        );
        assert!(!reg.cancel(pid, Bytes::from_static(b"nope")).await);
        assert!(!reg.cancel(pid + 1, secret.clone()).await, "another pid");
        assert!(!reg.cancel(4242, Bytes::from_static(b"srv!")).await);
        assert!(!sig.has_changed().unwrap());
        assert!(reg.cancel(pid, secret).await);
        assert!(sig.has_changed().unwrap());
        assert_eq!(*sig.borrow_and_update(), 1);
        drop(r);
        assert!(reg.is_empty());
        let r = reg.register(addr, 2);
        assert_eq!(r.client_key(1, Bytes::new()).1.len(), 32);
    }

    #[tokio::test]
    async fn two_sessions_with_the_same_server_pid_are_told_apart_by_secret() {
        let reg = CancelRegistry::new();
        // Two servers can give two sessions the same pid.
        let (a, b) = (
            reg.register("127.0.0.1:9".parse().unwrap(), 0),
            reg.register("127.0.0.2:9".parse().unwrap(), 0),
        );
        let (sa, mut sb) = (a.signal.clone(), b.signal.clone());
        let (_, secret_a) = a.client_key(77, Bytes::from_static(b"aaaa"));
        let (_, secret_b) = b.client_key(77, Bytes::from_static(b"bbbb"));
        assert_ne!(secret_a, secret_b);
        assert!(reg.cancel(77, secret_b).await);
        assert!(sb.has_changed().unwrap());
        assert!(!sa.has_changed().unwrap());
        let _ = sb.borrow_and_update();
        assert!(reg.cancel(77, secret_a).await);
        assert!(sa.has_changed().unwrap());
    }

    #[tokio::test]
    async fn a_protocol_3_2_key_of_256_bytes_reaches_the_server_unchanged() {
        use tokio::io::AsyncReadExt;

        use crate::postgres::{
            frame::{FrameReader, Payload},
            message::BackendMessage,
        };

        // The server's BackendKeyData as a 3.2 server may send it.
        let long: Vec<u8> = (0..=255u8).collect();
        let frame = Payload::new(b'K').i32(4242).bytes(&long).finish();
        let BackendMessage::BackendKeyData { pid, secret } =
            BackendMessage::decode(&frame).unwrap()
        else {
            panic!("not BackendKeyData");
        };
        assert_eq!(secret.len(), 256);

        let upstream = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let reg = CancelRegistry::new();
        let r = reg.register(upstream.local_addr().unwrap(), 2);
        let (cpid, csecret) = r.client_key(pid, secret);
        assert_eq!(cpid, 4242);
        assert_eq!(csecret.len(), 32, "interlock's own 3.2 key");
        // The client's CancelRequest with interlock's key, as it is framed.
        let req = StartupPacket::Cancel {
            pid: cpid,
            secret: csecret,
        }
        .encode();
        let mut reader = FrameReader::new(&req.raw()[..], 1024);
        let framed = reader.read_startup().await.unwrap().unwrap();
        let StartupPacket::Cancel { pid, secret } = StartupPacket::decode(&framed).unwrap() else {
            panic!("not a CancelRequest");
        };
        let forwarded = tokio::spawn(async move {
            let (mut s, _) = upstream.accept().await.unwrap();
            let mut got = Vec::new();
            s.read_to_end(&mut got).await.unwrap();
            got
        });
        assert!(reg.cancel(pid, secret).await);
        let got = forwarded.await.unwrap();
        let mut reader = FrameReader::new(&got[..], 1024);
        let sent = reader.read_startup().await.unwrap().unwrap();
        assert_eq!(
            StartupPacket::decode(&sent).unwrap(),
            StartupPacket::Cancel {
                pid: 4242,
                secret: Bytes::from(long),
            }
        );
    }
}
