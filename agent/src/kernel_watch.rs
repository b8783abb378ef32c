//! What the daemon reports about its kernel side while it runs: connects
//! the kernel refused (by cgroup, from the per-cgroup records, with the
//! per-CPU slot counters covering what a full record map could not
//! attribute), process records lost, and tampering with its pins and links
//! (checked every [`INTEGRITY_EVERY`], repaired where it can). At start it
//! also notices that the pins it had earlier in this boot are gone.

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::Duration,
};

use tracing::warn;

use crate::{
    audit::{EventKind, KernelFinding, RefusalReason, RefusedBy},
    context::AppContext,
    ebpf::{self, CgroupRefusal, Finding, FindingKind, KernelHold},
};

/// How often pins and links are checked.
pub(crate) const INTEGRITY_EVERY: Duration = Duration::from_secs(2);

/// Cgroup directories walked at most to name a refused cgroup.
const CGROUP_WALK_LIMIT: usize = 200_000;

/// Where the refusal totals already reported are kept, so a restarted
/// daemon reports what the kernel refused while it was down, and nothing twice.
const REFUSALS_FILE: &str = "kernel-refusals.json";

/// Where this boot's id and the instance's pin directory are recorded.
const KERNEL_FILE: &str = "kernel.json";

#[derive(Default, serde::Serialize, serde::Deserialize)]
struct Reported {
    /// Per `refusal` slot: refusals reported (with or without a cgroup).
    slots: ebpf::Refusals,
    /// (cgroup id, slot, count of its record already reported).
    cgroups: Vec<(u64, u32, u64)>,
}

/// Reports increases of the kernel's refusal counters as events.
pub(crate) struct RefusalReports {
    path: PathBuf,
    slots: ebpf::Refusals,
    cgroups: HashMap<(u64, u32), u64>,
    paths: HashMap<u64, Option<String>>,
    mount: Option<PathBuf>,
    checked_reset: bool,
}

impl RefusalReports {
    /// What earlier runs reported, from the state directory.
    pub(crate) fn load(state_dir: &Path, mount: Option<PathBuf>) -> RefusalReports {
        let path = state_dir.join(REFUSALS_FILE);
        let bytes = std::fs::read(&path).unwrap_or_default();
        let reported = serde_json::from_slice::<Reported>(&bytes)
            .or_else(|_| {
                // Written by earlier versions: the slot totals alone.
                serde_json::from_slice::<ebpf::Refusals>(&bytes).map(|slots| Reported {
                    slots,
                    cgroups: Vec::new(),
                })
            })
            .unwrap_or_default();
        RefusalReports {
            path,
            slots: reported.slots,
            cgroups: reported
                .cgroups
                .into_iter()
                .map(|(cg, slot, n)| ((cg, slot), n))
                .collect(),
            paths: HashMap::new(),
            mount,
            checked_reset: false,
        }
    }

    /// Reads the counters and emits one `connects_refused` per cgroup and
    /// reason that grew, plus one without a cgroup for refusals the kernel
    /// could not attribute.
    pub(crate) async fn report(&mut self, ctx: &AppContext) {
        // Slots first: every refusal a slot shows is then already in its
        // cgroup's record (the kernel writes the record first).
        let read =
            ctx.with_maps(|m| Ok::<_, ebpf::KernelError>((m.refusals()?, m.cgroup_refusals()?)));
        let (slots, records) = match read {
            Ok(r) => r,
            Err(e) => {
                warn!(error = %e, "cannot read the refusal counters");
                return;
            }
        };
        let mut changed = false;
        if !self.checked_reset {
            self.checked_reset = true;
            // Fewer than reported: the maps were created anew (detach).
            if slots
                .iter()
                .zip(self.slots.iter())
                .any(|(now, seen)| now < seen)
            {
                self.slots = ebpf::Refusals::default();
                self.cgroups.clear();
                changed = true;
            }
        }
        for rec in records {
            let key = (rec.cgroup_id, rec.slot);
            let seen = self.cgroups.get(&key).copied().unwrap_or(0).min(rec.count);
            let delta = rec.count - seen;
            if delta == 0 {
                // Quiet since the last report: the record goes, so records
                // of cgroups that come and go do not fill the map.
                if let Err(e) = ctx.with_maps(|m| m.forget_cgroup_refusal(rec.cgroup_id, rec.slot))
                {
                    warn!(error = %e, "cannot clear a refusal record");
                } else {
                    self.cgroups.remove(&key);
                    changed = true;
                }
                continue;
            }
            self.cgroups.insert(key, rec.count);
            if let Some(s) = self.slots.get_mut(rec.slot as usize) {
                *s = s.saturating_add(delta);
            }
            changed = true;
            let by = self.refused_by(&rec).await;
            emit(ctx, rec.slot, delta, rec.count, Some(by)).await;
        }
        for (slot, (now, seen)) in (0u32..).zip(slots.iter().zip(self.slots.iter_mut())) {
            // A record can be ahead of its slot (read later); never behind
            // unless the record map was full or cleared in between.
            if *now > *seen {
                let count = *now - *seen;
                *seen = *now;
                changed = true;
                emit(ctx, slot, count, *now, None).await;
            }
        }
        if changed {
            self.save();
        }
    }

    async fn refused_by(&mut self, rec: &CgroupRefusal) -> Box<RefusedBy> {
        let cgroup = match self.paths.get(&rec.cgroup_id) {
            Some(p) => p.clone(),
            None => {
                let (mount, id) = (self.mount.clone(), rec.cgroup_id);
                let found = tokio::task::spawn_blocking(move || {
                    mount.and_then(|m| ebpf::cgroup_path_of(&m, id, CGROUP_WALK_LIMIT))
                })
                .await
                .ok()
                .flatten();
                // Cgroup ids are never reused: a name found stays right.
                if found.is_some() {
                    self.paths.insert(rec.cgroup_id, found.clone());
                }
                found
            }
        };
        Box::new(RefusedBy {
            cgroup_id: rec.cgroup_id,
            cgroup,
            uid: rec.uid,
            pid: rec.tgid,
            comm: rec.comm.clone(),
        })
    }

    fn save(&self) {
        let reported = Reported {
            slots: self.slots,
            cgroups: self
                .cgroups
                .iter()
                .map(|((cg, slot), n)| (*cg, *slot, *n))
                .collect(),
        };
        if let Err(e) = serde_json::to_vec(&reported)
            .map_err(std::io::Error::other)
            .and_then(|b| crate::state_dir::write_private(&self.path, &b))
        {
            warn!(error = %e, path = %self.path.display(), "cannot save the reported refusal totals");
        }
    }
}

async fn emit(ctx: &AppContext, slot: u32, count: u64, total: u64, by: Option<Box<RefusedBy>>) {
    let Some(reason) = RefusalReason::of_slot(slot) else {
        return;
    };
    warn!(
        ?reason,
        count,
        total,
        cgroup = by.as_ref().and_then(|b| b.cgroup.as_deref()),
        uid = by.as_ref().map(|b| b.uid),
        "the kernel could not redirect connects to targets"
    );
    let _ = ctx
        .events()
        .emit(EventKind::ConnectsRefused {
            reason,
            count,
            total,
            by,
        })
        .await;
}

/// Reports process records the kernel dropped since `seen` (a full ring):
/// attribution of those processes then falls back to /proc. Returns the new total.
pub(crate) async fn report_lost_records(ctx: &AppContext, seen: u64) -> u64 {
    let total = match ctx.with_maps(|m| m.lost_process_records()) {
        Ok(t) => t,
        Err(e) => {
            warn!(error = %e, "cannot read the lost-records counter");
            return seen;
        }
    };
    if total > seen {
        warn!(
            lost = total - seen,
            total, "process records dropped: the event ring was full"
        );
        let _ = ctx
            .events()
            .emit(EventKind::ProcessRecordsLost {
                lost: total - seen,
                total,
            })
            .await;
    }
    total
}

/// Checks the pins and links (off the runtime: a few dozen syscalls) and
/// reports what was found.
pub(crate) async fn check_integrity(ctx: &AppContext, hold: &Arc<Mutex<KernelHold>>) {
    let hold = Arc::clone(hold);
    let findings = tokio::task::spawn_blocking(move || {
        hold.lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .check()
    })
    .await
    .unwrap_or_default();
    emit_findings(ctx, findings).await;
}

/// One `kernel_integrity` event per finding.
pub(crate) async fn emit_findings(ctx: &AppContext, findings: Vec<Finding>) {
    for f in findings {
        let _ = ctx
            .events()
            .emit(EventKind::KernelIntegrity {
                finding: finding(f.kind),
                path: f.path.display().to_string(),
                detail: f.detail,
                repaired: f.repaired,
            })
            .await;
    }
}

fn finding(k: FindingKind) -> KernelFinding {
    match k {
        FindingKind::LinkUnpinned => KernelFinding::LinkUnpinned,
        FindingKind::LinkPinReplaced => KernelFinding::LinkPinReplaced,
        FindingKind::LinkDetached => KernelFinding::LinkDetached,
        FindingKind::LinkProgramReplaced => KernelFinding::LinkProgramReplaced,
        FindingKind::LinkFromOtherBuild => KernelFinding::LinkFromOtherBuild,
        FindingKind::MapUnpinned => KernelFinding::MapUnpinned,
        FindingKind::MapPinReplaced => KernelFinding::MapPinReplaced,
        FindingKind::PinsVanished => KernelFinding::PinsVanished,
    }
}

#[derive(serde::Serialize, serde::Deserialize)]
struct KernelState {
    boot_id: String,
    pin_dir: PathBuf,
}

fn boot_id() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .ok()
        .map(|s| s.trim().to_string())
}

/// Before loading: whether the pins this instance had earlier in this boot
/// (as recorded by the previous run) are gone. Pins survive daemon
/// restarts; only `interlock detach` or someone with root removes them, and
/// in between intercepted connects went direct.
pub(crate) fn pins_vanished(state_dir: &Path, pin_dir: &Path) -> Option<Finding> {
    let bytes = std::fs::read(state_dir.join(KERNEL_FILE)).ok()?;
    let last: KernelState = serde_json::from_slice(&bytes).ok()?;
    let has_links = std::fs::read_dir(pin_dir.join("links"))
        .map(|mut r| r.next().is_some())
        .unwrap_or(false);
    (Some(&last.boot_id) == boot_id().as_ref() && last.pin_dir == pin_dir && !has_links).then(
        || Finding {
            kind: FindingKind::PinsVanished,
            path: pin_dir.to_path_buf(),
            detail: "the links pinned by this instance's previous run in this boot are gone (`interlock detach`, or someone with root): connects to targets were not intercepted until now".into(),
            repaired: true,
        },
    )
}

/// After loading: records this boot and pin directory for the next start.
pub(crate) fn record_pins(state_dir: &Path, pin_dir: &Path) {
    let Some(boot_id) = boot_id() else {
        return;
    };
    let state = KernelState {
        boot_id,
        pin_dir: pin_dir.to_path_buf(),
    };
    if let Err(e) = serde_json::to_vec(&state)
        .map_err(std::io::Error::other)
        .and_then(|b| crate::state_dir::write_private(&state_dir.join(KERNEL_FILE), &b))
    {
        warn!(error = %e, "cannot record the pin directory");
    }
}

#[cfg(test)]
mod tests {
    use agent_common::flow::refusal;

    use super::*;

    #[test]
    fn reported_totals_of_older_versions_still_load() {
        let dir = crate::test_dir::TestDir::new("refusals");
        std::fs::write(dir.join(REFUSALS_FILE), b"[1,2,3,0,0,0,0,0]").unwrap();
        let r = RefusalReports::load(&dir, None);
        assert_eq!(r.slots.get(..3), Some(&[1u64, 2, 3][..]));
        assert!(r.cgroups.is_empty());
        let mut r = r;
        r.cgroups.insert((77, refusal::FLOW_QUOTA), 9);
        r.save();
        let back = RefusalReports::load(&dir, None);
        assert_eq!(back.cgroups.get(&(77, refusal::FLOW_QUOTA)), Some(&9));
        assert_eq!(back.slots, r.slots);
    }

    #[test]
    fn vanished_pins_are_noticed_only_within_the_same_boot() {
        let state = crate::test_dir::TestDir::new("kstate");
        let pins = state.join("pins");
        assert!(pins_vanished(&state, &pins).is_none(), "no earlier run");
        record_pins(&state, &pins);
        let found = pins_vanished(&state, &pins).expect("links gone since the last run");
        assert_eq!(found.kind, FindingKind::PinsVanished);
        std::fs::create_dir_all(pins.join("links")).unwrap();
        std::fs::write(pins.join("links/connect4@1"), b"").unwrap();
        assert!(pins_vanished(&state, &pins).is_none(), "links are there");
        std::fs::remove_dir_all(&pins).unwrap();
        let other = KernelState {
            boot_id: "another-boot".into(),
            pin_dir: pins.clone(),
        };
        std::fs::write(state.join(KERNEL_FILE), serde_json::to_vec(&other).unwrap()).unwrap();
        assert!(
            pins_vanished(&state, &pins).is_none(),
            "a reboot clears bpffs"
        );
    }
}
