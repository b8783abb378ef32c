//! Bookkeeping shared by the connect hooks and `sock_release`: a
//! redirected socket is counted against its cgroup (FLOW_OWNERS remembers
//! which) until it is released, so one cgroup cannot hold more than its
//! quota of the flow table. Only the programs write these two maps; the
//! daemon deletes FLOWS entries (on accept, and stale ones) without
//! touching the counts.

use core::ptr::read_volatile;

use crate::maps::{BPF_NOEXIST, FLOW_COUNTS, FLOW_OWNERS, add_flow_count};

use super::ProbeError;

/// What a full hash map's update returns.
const E2BIG: i32 = 7;

/// Counts one more flow for `cgroup_id`, unless it already holds `quota`
/// (0: no limit).
pub fn count_flow(cgroup_id: u64, quota: u32) -> Result<(), ProbeError> {
    if let Some(c) = FLOW_COUNTS.get_ptr_mut(cgroup_id) {
        // SAFETY: c points into a FLOW_COUNTS value, valid for the program run.
        // Concurrent connects of one cgroup may overshoot by one per CPU.
        if quota != 0 && unsafe { read_volatile(c) } >= i64::from(quota) {
            return Err(ProbeError::Quota);
        }
        add_flow_count(c, 1);
        return Ok(());
    }
    match FLOW_COUNTS.insert(cgroup_id, 1, BPF_NOEXIST) {
        Ok(()) => Ok(()),
        Err(e) if e == -E2BIG => Err(ProbeError::MapFull),
        // Another CPU made the entry first.
        Err(_) => match FLOW_COUNTS.get_ptr_mut(cgroup_id) {
            Some(c) => {
                add_flow_count(c, 1);
                Ok(())
            }
            None => Err(ProbeError::MapUpdate),
        },
    }
}

/// Gives back one flow of `cgroup_id`. An entry that drops to zero (or
/// below, after a lost race) is removed, so cgroups that come and go do
/// not fill the map; a race with a connect can only undercount, never
/// leave a cgroup refused.
pub fn uncount_flow(cgroup_id: u64) {
    if let Some(c) = FLOW_COUNTS.get_ptr_mut(cgroup_id) {
        add_flow_count(c, -1);
        // SAFETY: as in count_flow.
        if unsafe { read_volatile(c) } <= 0 {
            let _ = FLOW_COUNTS.remove(cgroup_id);
        }
    }
}

/// Counts socket `cookie` against `cgroup_id` (unless it holds `quota`).
pub fn own(cookie: u64, cgroup_id: u64, quota: u32) -> Result<(), ProbeError> {
    count_flow(cgroup_id, quota)?;
    FLOW_OWNERS.insert(cookie, cgroup_id, 0).map_err(|e| {
        uncount_flow(cgroup_id);
        if e == -E2BIG {
            ProbeError::MapFull
        } else {
            ProbeError::MapUpdate
        }
    })
}

/// Gives back the count of socket `cookie`, if it holds one.
pub fn disown(cookie: u64) {
    // SAFETY: the value is copied out at once.
    let cgroup_id = match unsafe { FLOW_OWNERS.get(cookie) } {
        Some(c) => *c,
        None => return,
    };
    // Only the remover gives the count back.
    if FLOW_OWNERS.remove(cookie).is_ok() {
        uncount_flow(cgroup_id);
    }
}
