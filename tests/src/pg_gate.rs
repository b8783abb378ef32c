//! A test [`Gate`]: allows everything except configured statement classes,
//! which it blocks or holds (the test resolves each hold), and keeps every
//! request and record. Plus an in-process proxy that runs
//! `interlock::postgres::serve` per accepted connection.

use std::{
    collections::VecDeque,
    net::SocketAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, SystemTime},
};

use interlock::{
    gate::{
        BoxFuture, ClientLeg, Gate, Held, HoldOutcome, MaskRule, MaskSpec, Record, Request,
        StatementClass, Strategy, Verdict,
    },
    postgres::{CancelRegistry, PgTarget, serve},
};
use tokio::{
    net::TcpListener,
    sync::{Notify, oneshot},
};

/// A mask rule as a policy file would compile it.
pub fn mask_rule(name: &str, columns: &[&str], detectors: &[&str], strategy: Strategy) -> MaskRule {
    let c: Vec<String> = columns.iter().map(|s| s.to_string()).collect();
    let d: Vec<String> = detectors.iter().map(|s| s.to_string()).collect();
    MaskRule {
        rule: name.into(),
        spec: Arc::new(MaskSpec::new(&c, &d, strategy).unwrap()),
    }
}

/// Rule names the gate uses.
pub const BLOCK_RULE: &str = "test-block";
pub const HOLD_RULE: &str = "test-hold";

#[derive(Default)]
pub struct TestGate {
    block: Vec<StatementClass>,
    hold: Vec<StatementClass>,
    block_session: bool,
    hold_session: bool,
    mask: Vec<MaskRule>,
    requests: Mutex<Vec<Request>>,
    records: Mutex<Vec<Record>>,
    holds: Mutex<VecDeque<(String, oneshot::Sender<HoldOutcome>)>>,
    hold_added: Notify,
    withdrawn: Arc<AtomicUsize>,
    seq: AtomicUsize,
}

impl TestGate {
    /// Blocks statements with any class in `block`, holds those in `hold`.
    pub fn new(block: &[StatementClass], hold: &[StatementClass]) -> Arc<TestGate> {
        Arc::new(TestGate {
            block: block.to_vec(),
            hold: hold.to_vec(),
            ..TestGate::default()
        })
    }

    /// Allows everything, masking results with `rules`.
    pub fn masking(rules: Vec<MaskRule>) -> Arc<TestGate> {
        Arc::new(TestGate {
            mask: rules,
            ..TestGate::default()
        })
    }

    /// Holds statements with any class in `hold`, masks with `rules`
    /// (also the held ones, once approved).
    pub fn holding_and_masking(hold: &[StatementClass], rules: Vec<MaskRule>) -> Arc<TestGate> {
        Arc::new(TestGate {
            hold: hold.to_vec(),
            mask: rules,
            ..TestGate::default()
        })
    }

    /// Recorded statements with their parameters.
    pub fn statements_with_params(&self) -> Vec<(String, Vec<Option<String>>)> {
        self.records()
            .into_iter()
            .filter_map(|r| match r {
                Record::Statement { text, params, .. } => Some((text, params)),
                _ => None,
            })
            .collect()
    }

    /// Masked counts recorded, per rule.
    pub fn masked(&self) -> Vec<(String, Vec<(String, u64)>)> {
        self.records()
            .into_iter()
            .filter_map(|r| match r {
                Record::Masked { rule, counts } => Some((rule, counts)),
                _ => None,
            })
            .collect()
    }

    /// Blocks every session.
    pub fn blocking_sessions() -> Arc<TestGate> {
        Arc::new(TestGate {
            block_session: true,
            ..TestGate::default()
        })
    }

    /// Holds every session for approval.
    pub fn holding_sessions() -> Arc<TestGate> {
        Arc::new(TestGate {
            hold_session: true,
            ..TestGate::default()
        })
    }

    fn hold(&self) -> Verdict {
        Verdict::Hold(self.held())
    }

    fn held(&self) -> Held {
        let id = format!("ap-{}", self.seq.fetch_add(1, Ordering::SeqCst));
        let (tx, rx) = oneshot::channel();
        let withdrawn = self.withdrawn.clone();
        let held = Held::new(
            id.clone(),
            HOLD_RULE.into(),
            SystemTime::now() + Duration::from_secs(3600),
            format!("run `interlock approvals approve {id}`"),
            rx,
            Box::new(move || {
                withdrawn.fetch_add(1, Ordering::SeqCst);
            }),
        );
        self.holds.lock().unwrap().push_back((id, tx));
        self.hold_added.notify_one();
        held
    }

    /// Waits for the next held statement: its approval id and the sender
    /// that decides it.
    pub async fn next_hold(&self) -> (String, oneshot::Sender<HoldOutcome>) {
        loop {
            if let Some(h) = self.holds.lock().unwrap().pop_front() {
                return h;
            }
            self.hold_added.notified().await;
        }
    }

    /// Holds dropped without an outcome (client cancelled or left).
    pub fn withdrawn(&self) -> usize {
        self.withdrawn.load(Ordering::SeqCst)
    }

    pub fn records(&self) -> Vec<Record> {
        self.records.lock().unwrap().clone()
    }

    pub fn requests(&self) -> Vec<Request> {
        self.requests.lock().unwrap().clone()
    }

    /// Recorded statements as (text, rows, error).
    pub fn statements(&self) -> Vec<(String, Option<u64>, Option<String>)> {
        self.records()
            .into_iter()
            .filter_map(|r| match r {
                Record::Statement {
                    text, rows, error, ..
                } => Some((text, rows, error)),
                _ => None,
            })
            .collect()
    }

    /// The client leg the session reported: how it is protected and why
    /// TLS was unavailable, if it was asked for and refused.
    pub fn client_legs(&self) -> Vec<(ClientLeg, Option<String>)> {
        self.records()
            .into_iter()
            .filter_map(|r| match r {
                Record::ClientLeg {
                    leg,
                    tls_unavailable,
                } => Some((leg, tls_unavailable)),
                _ => None,
            })
            .collect()
    }

    /// Recorded protocol errors as (side, message).
    pub fn protocol_errors(&self) -> Vec<String> {
        self.records()
            .into_iter()
            .filter_map(|r| match r {
                Record::ProtocolError { side, message } => Some(format!("{side:?}: {message}")),
                _ => None,
            })
            .collect()
    }
}

impl Gate for TestGate {
    fn decide<'a>(&'a self, request: &'a Request) -> BoxFuture<'a, Verdict> {
        self.requests.lock().unwrap().push(request.clone());
        let verdict = match request {
            Request::Session if self.block_session => Verdict::Block {
                rule: BLOCK_RULE.into(),
                message: "no sessions today".into(),
            },
            Request::Statement { classes, .. }
                if classes.iter().any(|c| self.block.contains(c)) =>
            {
                Verdict::Block {
                    rule: BLOCK_RULE.into(),
                    message: "not allowed in tests".into(),
                }
            }
            Request::Session if self.hold_session => self.hold(),
            Request::Statement { classes, .. } if classes.iter().any(|c| self.hold.contains(c)) => {
                Verdict::Hold(self.held().with_mask(self.mask.clone()))
            }
            Request::Statement { .. } => Verdict::Allow {
                rule: None,
                mask: self.mask.clone(),
            },
            _ => Verdict::Allow {
                rule: None,
                mask: vec![],
            },
        };
        Box::pin(async move { verdict })
    }

    fn record(&self, record: Record) -> BoxFuture<'_, ()> {
        self.records.lock().unwrap().push(record);
        Box::pin(async {})
    }

    fn possible_masks(&self) -> Vec<MaskRule> {
        self.mask.clone()
    }
}

/// An in-process proxy on 127.0.0.1:0 in front of `target`.
pub struct Proxy {
    pub addr: SocketAddr,
    pub cancels: CancelRegistry,
    /// Each ended session's result (`Ok` or the error's text).
    pub ended: Arc<Mutex<Vec<Result<(), String>>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Proxy {
    pub async fn start(target: PgTarget, gate: Arc<TestGate>) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let cancels = CancelRegistry::new();
        let ended = Arc::new(Mutex::new(Vec::new()));
        let (c, e) = (cancels.clone(), ended.clone());
        let task = tokio::spawn(async move {
            while let Ok((sock, _)) = listener.accept().await {
                let (target, gate, cancels, ended) =
                    (target.clone(), gate.clone(), c.clone(), e.clone());
                tokio::spawn(async move {
                    let r = serve(sock, target, gate as Arc<dyn Gate>, cancels).await;
                    ended.lock().unwrap().push(r.map_err(|e| e.to_string()));
                });
            }
        });
        Proxy {
            addr,
            cancels,
            ended,
            task,
        }
    }

    /// Waits until `n` sessions have ended; returns their results.
    pub async fn wait_ended(&self, n: usize) -> Vec<Result<(), String>> {
        loop {
            let ended = self.ended.lock().unwrap().clone();
            if ended.len() >= n {
                return ended;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// A libpq connection string for the proxy.
    pub fn conninfo(&self, user: &str, password: &str) -> String {
        format!(
            "host={} port={} user={user} password={password} dbname={}",
            self.addr.ip(),
            self.addr.port(),
            crate::postgres::DATABASE
        )
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}
