//! Classification's budget: parsing a statement with the grammar and
//! walking its tree costs time and memory that grow with the text (a 60 MB
//! `SELECT 1 IN (1,1,...)` takes minutes). Short texts are classified in
//! place; longer ones on a small pool of blocking threads, off the async
//! runtime, so that one job's statements cannot stall other sessions or
//! the daemon's heartbeat. A text over the size budget, or one whose
//! classification does not finish within the time budget (waiting for a
//! worker included), is one `unparseable` statement: policies decide it
//! fail closed, as any text interlock cannot read.

use std::{sync::Arc, time::Duration};

use tokio::sync::{Mutex, OwnedMutexGuard, Semaphore};

use super::Classified;
use crate::gate::StatementClass;

/// Texts up to this size are classified on the session's task (a parse of
/// a few KiB takes well under a millisecond).
const INLINE_MAX: usize = 16 * 1024;

/// How big a statement interlock classifies, and for how long.
#[derive(Clone, Debug)]
pub struct ClassifyBudget {
    /// Largest text classified, in bytes.
    pub max_bytes: usize,
    /// Longest one classification may take, waiting for a worker included.
    pub time: Duration,
    /// Blocking threads classifying at once, all sessions together.
    workers: Arc<Semaphore>,
}

impl ClassifyBudget {
    /// A budget of `max_bytes` and `time`, with `workers` threads.
    pub fn new(max_bytes: usize, time: Duration, workers: usize) -> ClassifyBudget {
        ClassifyBudget {
            max_bytes,
            time,
            workers: Arc::new(Semaphore::new(workers.max(1))),
        }
    }
}

impl Default for ClassifyBudget {
    fn default() -> ClassifyBudget {
        ClassifyBudget::new(1024 * 1024, Duration::from_secs(10), 4)
    }
}

/// One session's access to the workers: a classification abandoned at the
/// time budget keeps its thread until it finishes, and the session's next
/// one waits for it, so a session occupies at most one worker.
#[derive(Default)]
pub(crate) struct SessionClassifier {
    busy: Arc<Mutex<()>>,
}

/// The one statement a text over budget stands for: recorded without its
/// text (which may be megabytes, and unredacted).
fn over_budget(len: usize, why: String) -> Vec<Classified> {
    vec![Classified {
        opaque: Some(why.clone()),
        ..Classified::other(
            format!("(a statement of {len} bytes: {why})"),
            vec![StatementClass::Unparseable],
        )
    }]
}

impl SessionClassifier {
    /// Classifies `sql` (`len` bytes as the client sent it) with `work`
    /// within `budget`.
    pub(crate) async fn run<F>(
        &self,
        budget: &ClassifyBudget,
        len: usize,
        work: F,
    ) -> Vec<Classified>
    where
        F: FnOnce() -> Vec<Classified> + Send + 'static,
    {
        if len > budget.max_bytes {
            return over_budget(
                len,
                format!(
                    "over interlock's classification limit of {} bytes (--pg-classify-max-kib)",
                    budget.max_bytes
                ),
            );
        }
        if len <= INLINE_MAX {
            return work();
        }
        let deadline = tokio::time::Instant::now() + budget.time;
        let on_pool = async {
            let mine: OwnedMutexGuard<()> = Arc::clone(&self.busy).lock_owned().await;
            let permit = Arc::clone(&budget.workers).acquire_owned().await.ok()?;
            tokio::task::spawn_blocking(move || {
                let out = work();
                drop((permit, mine));
                out
            })
            .await
            .ok()
        };
        match tokio::time::timeout_at(deadline, on_pool).await {
            Ok(Some(out)) => out,
            Ok(None) => over_budget(len, "classification failed".into()),
            Err(_) => over_budget(
                len,
                format!(
                    "classification took longer than interlock's limit of {} s (--pg-classify-secs)",
                    budget.time.as_secs_f64()
                ),
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::postgres::classify::classify;

    #[tokio::test]
    async fn texts_over_the_size_budget_are_unparseable_without_their_text() {
        let budget = ClassifyBudget::new(INLINE_MAX * 2, Duration::from_secs(60), 1);
        let c = SessionClassifier::default();
        let big = format!("select '{}'", "x".repeat(INLINE_MAX * 2));
        let got = c.run(&budget, big.len(), move || classify(&big)).await;
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].classes, vec![StatementClass::Unparseable]);
        assert!(
            got[0].text.contains("classification limit of 32768 bytes"),
            "{}",
            got[0].text
        );
        assert!(!got[0].text.contains("xxx"));
        // Under the budget but not inline: classified on the pool, the same answer.
        let mid = format!("delete from t; select '{}'", "x".repeat(INLINE_MAX));
        let want = classify(&mid);
        let m = mid.clone();
        assert_eq!(c.run(&budget, mid.len(), move || classify(&m)).await, want);
    }

    #[tokio::test]
    async fn a_classification_over_time_is_unparseable_and_keeps_its_worker() {
        let budget = ClassifyBudget::new(1 << 20, Duration::from_millis(50), 1);
        let c = SessionClassifier::default();
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let len = INLINE_MAX + 1;
        let got = c
            .run(&budget, len, move || {
                // Blocks until the test lets it go: longer than any budget.
                let _ = rx.recv();
                vec![]
            })
            .await;
        assert_eq!(got[0].classes, vec![StatementClass::Unparseable]);
        assert!(got[0].text.contains("longer than"), "{}", got[0].text);
        // The worker is still taken: the next one waits and runs out too.
        let other = SessionClassifier::default();
        let got = other.run(&budget, len, Vec::new).await;
        assert_eq!(got[0].classes, vec![StatementClass::Unparseable]);
        let _ = tx.send(());
        // Released: classified again.
        let ok = ClassifyBudget {
            time: Duration::from_secs(60),
            ..budget
        };
        assert!(other.run(&ok, len, Vec::new).await.is_empty());
    }
}
