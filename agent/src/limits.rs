//! Resource limits the daemon holds against the jobs it serves, so that one
//! job cannot exhaust what every other job's sessions need: sessions open
//! at once (in all and per cgroup), the size of a PostgreSQL message, the
//! size and time of classifying one statement, and control-socket
//! connections. Each is an `interlock run` option; the defaults are in
//! [`Limits::default`] and documented in the README's "Limits" section.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use crate::postgres::ClassifyBudget;

/// The configured limits.
#[derive(Clone, Debug)]
pub struct Limits {
    /// Intercepted sessions open at once, all cgroups together.
    pub sessions: u32,
    /// Intercepted sessions open at once from one cgroup (one job).
    pub sessions_per_cgroup: u32,
    /// Largest PostgreSQL message after startup, in bytes.
    pub pg_max_message: usize,
    /// Classification's statement size and time budget, and its workers.
    pub classify: ClassifyBudget,
    /// Control-socket connections open at once.
    pub control_connections: u32,
    /// How long a control-socket connection may wait for a request (and
    /// take to send it) before it is closed.
    pub control_idle: Duration,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            sessions: 4096,
            sessions_per_cgroup: 512,
            pg_max_message: crate::postgres::frame::DEFAULT_MAX_FRAME,
            classify: ClassifyBudget::default(),
            control_connections: 64,
            control_idle: Duration::from_secs(30),
        }
    }
}

/// Why a session was refused a slot.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SlotRefused {
    #[error("interlock's limit of {0} concurrent intercepted sessions is reached (--max-sessions)")]
    Global(u32),
    #[error(
        "interlock's limit of {limit} concurrent intercepted sessions per cgroup is reached for cgroup {cgroup} (--max-sessions-per-cgroup)"
    )]
    Cgroup { limit: u32, cgroup: u64 },
}

/// Counts open sessions against the caps.
#[derive(Debug)]
pub struct SessionSlots {
    total_cap: u32,
    cgroup_cap: u32,
    open: Mutex<Open>,
}

#[derive(Debug, Default)]
struct Open {
    total: u32,
    per_cgroup: HashMap<u64, u32>,
}

impl SessionSlots {
    /// Slots for at most `total` sessions, `per_cgroup` from one cgroup.
    pub fn new(total: u32, per_cgroup: u32) -> Arc<SessionSlots> {
        Arc::new(SessionSlots {
            total_cap: total,
            cgroup_cap: per_cgroup,
            open: Mutex::new(Open::default()),
        })
    }

    /// A slot for a session from `cgroup`, held until the guard drops.
    ///
    /// # Errors
    /// A cap is reached (the per-cgroup one is named first: it is the job's
    /// own doing).
    pub fn acquire(self: &Arc<Self>, cgroup: u64) -> Result<SessionSlot, SlotRefused> {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        let mine = open.per_cgroup.get(&cgroup).copied().unwrap_or(0);
        if mine >= self.cgroup_cap {
            return Err(SlotRefused::Cgroup {
                limit: self.cgroup_cap,
                cgroup,
            });
        }
        if open.total >= self.total_cap {
            return Err(SlotRefused::Global(self.total_cap));
        }
        open.total += 1;
        open.per_cgroup.insert(cgroup, mine + 1);
        Ok(SessionSlot {
            slots: Arc::clone(self),
            cgroup,
        })
    }

    /// Sessions open now.
    pub fn open(&self) -> u32 {
        self.open.lock().unwrap_or_else(|e| e.into_inner()).total
    }
}

/// One open session's slot; released on drop.
#[derive(Debug)]
pub struct SessionSlot {
    slots: Arc<SessionSlots>,
    cgroup: u64,
}

impl Drop for SessionSlot {
    fn drop(&mut self) {
        let mut open = self.slots.open.lock().unwrap_or_else(|e| e.into_inner());
        open.total = open.total.saturating_sub(1);
        if let Some(n) = open.per_cgroup.get_mut(&self.cgroup) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                open.per_cgroup.remove(&self.cgroup);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_count_per_cgroup_and_in_all_and_release_on_drop() {
        let slots = SessionSlots::new(3, 2);
        let a1 = slots.acquire(1).unwrap();
        let _a2 = slots.acquire(1).unwrap();
        assert_eq!(
            slots.acquire(1).unwrap_err(),
            SlotRefused::Cgroup {
                limit: 2,
                cgroup: 1
            }
        );
        let _b1 = slots.acquire(2).unwrap();
        assert_eq!(slots.acquire(3).unwrap_err(), SlotRefused::Global(3));
        drop(a1);
        assert_eq!(slots.open(), 2);
        let _a3 = slots.acquire(1).unwrap();
        assert!(
            SlotRefused::Global(3)
                .to_string()
                .contains("--max-sessions")
        );
    }
}
