//! CancelRequest handling. Clients only ever see keys interlock issued; the
//! registry (one per daemon, shared by all sessions) maps them to the
//! upstream's real key and to the session's cancel signal, which a statement
//! held for approval waits on.

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
    upstream_key: Option<(i32, Bytes)>,
    signal: watch::Sender<u64>,
}

/// Issued keys -> upstream keys and session cancel signals. Cheap to clone.
#[derive(Clone, Default)]
pub struct CancelRegistry {
    inner: Arc<Mutex<HashMap<(i32, Bytes), Entry>>>,
}

/// A session's registration; dropping it removes the key.
pub(crate) struct Registration {
    registry: CancelRegistry,
    key: (i32, Bytes),
    /// Changes whenever a client cancels this session.
    pub(crate) signal: watch::Receiver<u64>,
}

impl Registration {
    /// The key to give the client in BackendKeyData.
    pub(crate) fn client_key(&self) -> (i32, Bytes) {
        self.key.clone()
    }

    /// Records the upstream's real key once the server sent it.
    pub(crate) fn set_upstream_key(&self, pid: i32, secret: Bytes) {
        if let Ok(mut map) = self.registry.inner.lock()
            && let Some(e) = map.get_mut(&self.key)
        {
            e.upstream_key = Some((pid, secret));
        }
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        if let Ok(mut map) = self.registry.inner.lock() {
            map.remove(&self.key);
        }
    }
}

fn random_key(secret_len: usize) -> (i32, Bytes) {
    let mut pid = [0u8; 4];
    let mut secret = vec![0u8; secret_len];
    // Without randomness we still issue a key; it only weakens cancel-key guessing.
    let _ = getrandom::fill(&mut pid);
    let _ = getrandom::fill(&mut secret);
    (i32::from_be_bytes(pid) & 0x7fff_ffff, Bytes::from(secret))
}

impl CancelRegistry {
    /// An empty registry.
    pub fn new() -> CancelRegistry {
        CancelRegistry::default()
    }

    /// Issues a fresh key (4-byte secret for protocol 3.0, 32 bytes for 3.2+).
    pub(crate) fn register(&self, upstream: SocketAddr, minor: u16) -> Registration {
        let secret_len = if minor >= 2 { 32 } else { 4 };
        let (tx, rx) = watch::channel(0u64);
        let mut key = random_key(secret_len);
        if let Ok(mut map) = self.inner.lock() {
            while map.contains_key(&key) {
                key = random_key(secret_len);
            }
            map.insert(
                key.clone(),
                Entry {
                    upstream,
                    upstream_key: None,
                    signal: tx,
                },
            );
        }
        Registration {
            registry: self.clone(),
            key,
            signal: rx,
        }
    }

    /// Handles a client's CancelRequest: signals the session (so a held
    /// statement is cancelled) and forwards the real key upstream. Returns
    /// false for unknown keys, which are ignored as the server would.
    pub async fn cancel(&self, pid: i32, secret: Bytes) -> bool {
        let entry = match self.inner.lock() {
            Ok(map) => map.get(&(pid, secret)).cloned(),
            Err(_) => None,
        };
        let Some(entry) = entry else {
            return false;
        };
        entry.signal.send_modify(|n| *n = n.wrapping_add(1));
        if let Some((pid, secret)) = entry.upstream_key {
            let frame = StartupPacket::Cancel { pid, secret }.encode();
            if let Ok(mut s) = TcpStream::connect(entry.upstream).await {
                let _ = s.write_all(frame.raw()).await;
                let _ = s.shutdown().await;
            }
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
    async fn cancel_signals_the_session_and_unregisters_on_drop() {
        let reg = CancelRegistry::new();
        let addr: SocketAddr = "127.0.0.1:9".parse().unwrap();
        let r = reg.register(addr, 0);
        let mut sig = r.signal.clone();
        let (pid, secret) = r.client_key();
        assert_eq!(secret.len(), 4);
        assert!(!reg.cancel(pid, Bytes::from_static(b"nope")).await);
        assert!(reg.cancel(pid, secret).await);
        assert!(sig.has_changed().unwrap());
        assert_eq!(*sig.borrow_and_update(), 1);
        drop(r);
        assert!(reg.is_empty());
        assert_eq!(reg.register(addr, 2).client_key().1.len(), 32);
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
        r.set_upstream_key(pid, secret);
        let (cpid, csecret) = r.client_key();
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
