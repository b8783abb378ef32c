//! The bounded storage behind the process table: no /proc, no policy about events, only which
//! entry goes when the table is full.

use std::collections::{HashMap, VecDeque};

use super::process::ProcessInfo;

/// Stale queue pairs tolerated beyond twice the capacity before the queues are compacted.
const QUEUE_SLACK: usize = 64;

struct Slot {
    info: ProcessInfo,
    /// Unique per insertion, so queue pairs left behind by a replaced or evicted process are
    /// recognised as stale.
    seq: u64,
}

/// At most `capacity` processes by tgid. When full, exited entries go first (earliest exit
/// first), then the oldest inserted.
///
/// Memory is bounded whatever callers do: every slot has exactly one live pair in
/// `by_insertion`, and stale pairs are compacted away. Changing `exited` through
/// [`Store::get_mut`] instead of [`Store::mark_exited`] would only change eviction order.
pub(crate) struct Store {
    capacity: usize,
    slots: HashMap<u32, Slot>,
    /// `(tgid, seq)` in insertion order; pairs whose slot is gone or has another seq are stale.
    by_insertion: VecDeque<(u32, u64)>,
    /// `(tgid, seq)` in exit order, with the same staleness rule.
    by_exit: VecDeque<(u32, u64)>,
    next_seq: u64,
}

impl Store {
    /// An empty store; a `capacity` of 0 is treated as 1.
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            capacity: capacity.max(1),
            slots: HashMap::new(),
            by_insertion: VecDeque::new(),
            by_exit: VecDeque::new(),
            next_seq: 0,
        }
    }

    pub(crate) fn capacity(&self) -> usize {
        self.capacity
    }

    pub(crate) fn len(&self) -> usize {
        self.slots.len()
    }

    pub(crate) fn get(&self, tgid: u32) -> Option<&ProcessInfo> {
        self.slots.get(&tgid).map(|slot| &slot.info)
    }

    pub(crate) fn get_mut(&mut self, tgid: u32) -> Option<&mut ProcessInfo> {
        self.slots.get_mut(&tgid).map(|slot| &mut slot.info)
    }

    /// Inserts (or replaces: a new process under the same tgid) and evicts down to capacity.
    pub(crate) fn insert(&mut self, info: ProcessInfo) {
        let seq = self.next_seq;
        self.next_seq += 1;
        let tgid = info.tgid;
        let exited = info.exited;
        self.slots.insert(tgid, Slot { info, seq });
        self.by_insertion.push_back((tgid, seq));
        if exited {
            self.by_exit.push_back((tgid, seq));
        }
        self.evict_over_capacity();
        self.compact_queues();
    }

    /// Marks `tgid` exited, first in line for eviction; unknown or already exited: no-op.
    pub(crate) fn mark_exited(&mut self, tgid: u32) {
        if let Some(slot) = self.slots.get_mut(&tgid).filter(|s| !s.info.exited) {
            slot.info.exited = true;
            self.by_exit.push_back((tgid, slot.seq));
            self.compact_queues();
        }
    }

    fn evict_over_capacity(&mut self) {
        while self.slots.len() > self.capacity {
            let victim = pop_live(&mut self.by_exit, &self.slots, true)
                .or_else(|| pop_live(&mut self.by_insertion, &self.slots, false));
            match victim {
                Some(tgid) => {
                    self.slots.remove(&tgid);
                }
                // Unreachable: every slot has a live pair in `by_insertion`.
                None => break,
            }
        }
    }

    /// Drops stale pairs once they pile up, so replaced and evicted processes cannot make the
    /// queues grow without bound.
    fn compact_queues(&mut self) {
        let limit = self.capacity.saturating_mul(2).saturating_add(QUEUE_SLACK);
        let slots = &self.slots;
        if self.by_insertion.len() > limit {
            self.by_insertion
                .retain(|&pair| is_live(slots, pair, false));
        }
        if self.by_exit.len() > limit {
            self.by_exit.retain(|&pair| is_live(slots, pair, true));
        }
    }

    #[cfg(test)]
    pub(crate) fn queue_lens(&self) -> (usize, usize) {
        (self.by_insertion.len(), self.by_exit.len())
    }
}

fn is_live(slots: &HashMap<u32, Slot>, (tgid, seq): (u32, u64), exited: bool) -> bool {
    slots
        .get(&tgid)
        .is_some_and(|slot| slot.seq == seq && (!exited || slot.info.exited))
}

/// Pops pairs until one names a current slot (and, with `exited`, an exited one).
fn pop_live(
    queue: &mut VecDeque<(u32, u64)>,
    slots: &HashMap<u32, Slot>,
    exited: bool,
) -> Option<u32> {
    while let Some(pair) = queue.pop_front() {
        if is_live(slots, pair, exited) {
            return Some(pair.0);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(tgid: u32) -> ProcessInfo {
        ProcessInfo {
            tgid,
            ppid: 1,
            uid: 0,
            gid: 0,
            comm: String::new(),
            exe: None,
            argv: Vec::new(),
            start_ticks: None,
            exited: false,
            execs: None,
        }
    }

    #[test]
    fn replacing_a_tgid_leaves_one_entry_and_bounded_queues() {
        let mut store = Store::new(4);
        for _ in 0..10_000 {
            store.insert(info(7));
            store.mark_exited(7);
        }
        assert_eq!(store.len(), 1);
        let (inserted, exited) = store.queue_lens();
        assert!(inserted <= 4 * 2 + QUEUE_SLACK + 1);
        assert!(exited <= 4 * 2 + QUEUE_SLACK + 1);
    }

    #[test]
    fn un_exiting_through_get_mut_only_changes_order() {
        let mut store = Store::new(2);
        store.insert(info(1));
        store.insert(info(2));
        store.mark_exited(2);
        if let Some(p) = store.get_mut(2) {
            p.exited = false;
        }
        store.insert(info(3));
        assert!(store.get(1).is_none(), "no exited entry left: oldest goes");
        assert_eq!(store.len(), 2);
    }
}
