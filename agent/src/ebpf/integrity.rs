//! Noticing that the kernel side was tampered with while the daemon runs:
//! a link or map pin removed or replaced (the next start would adopt the
//! wrong thing, or nothing), a link detached from its cgroup or given
//! another program (interception silently off). Each finding is repaired
//! where the daemon can (re-pin from its own handles, attach a fresh link)
//! and reported; only root can do any of this, so the report is what makes
//! it visible (see the threat model in docs/design-notes.md).

use std::{
    io,
    path::{Path, PathBuf},
};

use aya::programs::links::PinnedLink;
use tracing::warn;

use super::{KernelError, KernelHold, sys};

/// What was found wrong.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FindingKind {
    /// A link's pin was removed (the link lived on in the daemon's hands).
    LinkUnpinned,
    /// Something else was pinned where a link's pin was.
    LinkPinReplaced,
    /// A link was detached from its cgroup: interception was off there.
    LinkDetached,
    /// A link was given another program.
    LinkProgramReplaced,
    /// An adopted link ran another build's program (an upgrade, or tampering).
    LinkFromOtherBuild,
    /// A map's pin was removed.
    MapUnpinned,
    /// Something else was pinned where a map's pin was.
    MapPinReplaced,
    /// The pins this instance had earlier in this boot were gone at start.
    PinsVanished,
}

/// One finding, for the event the daemon emits.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Finding {
    pub kind: FindingKind,
    /// The pin (or pin directory) concerned.
    pub path: PathBuf,
    pub detail: String,
    /// Whether the daemon put things right (re-pinned, re-attached).
    pub repaired: bool,
}

/// A link this daemon pinned, as it expects to find it.
pub(crate) struct LinkRecord {
    program: &'static str,
    scope: PathBuf,
    cgroup_id: u64,
    pin: PathBuf,
    link_id: u32,
    prog_id: u32,
    // Keeps the link alive (and so attached) even if its pin is removed.
    _link: PinnedLink,
}

impl LinkRecord {
    pub(super) fn new(
        program: &'static str,
        scope: &Path,
        cgroup_id: u64,
        pin: &Path,
        link: PinnedLink,
    ) -> Result<LinkRecord, KernelError> {
        let io = |source| KernelError::Io {
            what: "read link info of",
            path: pin.to_path_buf(),
            source,
        };
        let link_id = match sys::pinned(pin).map_err(io)? {
            Some(sys::Obj {
                kind: sys::ObjKind::Link,
                id,
            }) => id,
            _ => {
                return Err(io(io::Error::other("the pin is not a link")));
            }
        };
        let state = sys::link_state(link_id).map_err(io)?;
        Ok(LinkRecord {
            program,
            scope: scope.to_path_buf(),
            cgroup_id,
            pin: pin.to_path_buf(),
            link_id,
            prog_id: state.prog_id,
            _link: link,
        })
    }
}

/// A map this daemon's programs use, and where it is pinned.
pub(crate) struct MapRecord {
    pin: PathBuf,
    map_id: u32,
}

impl MapRecord {
    /// Every map pinned in `maps_dir` (after loading: they are ours).
    pub(super) fn all(maps_dir: &Path) -> Result<Vec<MapRecord>, KernelError> {
        let entries = std::fs::read_dir(maps_dir).map_err(|source| KernelError::Io {
            what: "list",
            path: maps_dir.to_path_buf(),
            source,
        })?;
        let mut out = Vec::new();
        for e in entries.flatten() {
            let pin = e.path();
            if let Ok(Some(sys::Obj {
                kind: sys::ObjKind::Map,
                id,
            })) = sys::pinned(&pin)
            {
                out.push(MapRecord { pin, map_id: id });
            }
        }
        out.sort_by(|a, b| a.pin.cmp(&b.pin));
        Ok(out)
    }
}

/// Removes whatever is at `path` (a pin, or a directory planted in its place).
pub(crate) fn remove_pin(path: &Path) -> io::Result<()> {
    match path.symlink_metadata() {
        Ok(m) if m.is_dir() => std::fs::remove_dir_all(path),
        Ok(_) => std::fs::remove_file(path),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

/// What is at a pin path compared with what should be.
enum PinState {
    Ours,
    Missing,
    Other(String),
}

fn pin_state(path: &Path, kind: sys::ObjKind, id: u32) -> PinState {
    match sys::pinned(path) {
        Ok(Some(o)) if o.kind == kind && o.id == id => PinState::Ours,
        Ok(Some(o)) => PinState::Other(format!("{:?} {} is pinned there", o.kind, o.id)),
        Ok(None) => PinState::Missing,
        Err(e) => match path.symlink_metadata() {
            Ok(_) => PinState::Other(format!("not a BPF object ({e})")),
            Err(_) => PinState::Missing,
        },
    }
}

impl KernelHold {
    /// Checks every link and map this daemon pinned; repairs what it can
    /// and returns what it found (empty when all is as it was).
    pub fn check(&mut self) -> Vec<Finding> {
        let mut findings = Vec::new();
        for i in 0..self.links.len() {
            self.check_link(i, &mut findings);
        }
        for m in &self.maps {
            let (kind, detail) = match pin_state(&m.pin, sys::ObjKind::Map, m.map_id) {
                PinState::Ours => continue,
                PinState::Missing => (FindingKind::MapUnpinned, "the map's pin was removed".into()),
                PinState::Other(what) => (FindingKind::MapPinReplaced, what),
            };
            let repaired = repin(&m.pin, sys::map_fd(m.map_id));
            findings.push(Finding {
                kind,
                path: m.pin.clone(),
                detail,
                repaired,
            });
        }
        for f in &findings {
            warn!(kind = ?f.kind, path = %f.path.display(), detail = %f.detail, repaired = f.repaired, "the kernel side was tampered with");
        }
        findings
    }

    fn check_link(&mut self, i: usize, findings: &mut Vec<Finding>) {
        let Some(rec) = self.links.get(i) else {
            return;
        };
        let (program, scope, cgroup_id, pin) = (
            rec.program,
            rec.scope.clone(),
            rec.cgroup_id,
            rec.pin.clone(),
        );
        let problem = match sys::link_state(rec.link_id) {
            Ok(s) if s.cgroup_id == 0 => Some((
                FindingKind::LinkDetached,
                format!("{program} was detached from {}", scope.display()),
            )),
            Ok(s) if s.prog_id != rec.prog_id => Some((
                FindingKind::LinkProgramReplaced,
                format!(
                    "{program}'s link now runs program {} (was {})",
                    s.prog_id, rec.prog_id
                ),
            )),
            Ok(_) => None,
            Err(e) => Some((
                FindingKind::LinkDetached,
                format!("{program}'s link cannot be read: {e}"),
            )),
        };
        if let Some((kind, detail)) = problem {
            // A fresh link of ours in its place; the tampered one is
            // detached (a replaced program must not keep running).
            let old = rec.link_id;
            let repaired = match self.reattach(program, &scope, cgroup_id, &pin) {
                Ok(new) => {
                    if let Some(slot) = self.links.get_mut(i) {
                        *slot = new;
                    }
                    let _ = sys::link_detach(old);
                    true
                }
                Err(e) => {
                    warn!(error = %e, "cannot re-attach {program}");
                    false
                }
            };
            findings.push(Finding {
                kind,
                path: pin,
                detail,
                repaired,
            });
            return;
        }
        let (kind, detail) = match pin_state(&pin, sys::ObjKind::Link, rec.link_id) {
            PinState::Ours => return,
            PinState::Missing => (
                FindingKind::LinkUnpinned,
                format!("{program}'s pin was removed"),
            ),
            PinState::Other(what) => (FindingKind::LinkPinReplaced, what),
        };
        let repaired = repin(&pin, sys::link_fd(rec.link_id));
        findings.push(Finding {
            kind,
            path: pin,
            detail,
            repaired,
        });
    }

    fn reattach(
        &mut self,
        program: &'static str,
        scope: &Path,
        cgroup_id: u64,
        pin: &Path,
    ) -> Result<LinkRecord, KernelError> {
        let link = self.attach(program, scope)?;
        private_dirs(&self.links_dir).map_err(|source| KernelError::Io {
            what: "create",
            path: self.links_dir.clone(),
            source,
        })?;
        remove_pin(pin).map_err(|source| KernelError::Io {
            what: "remove pin",
            path: pin.to_path_buf(),
            source,
        })?;
        let pinned = link.pin(pin).map_err(|source| KernelError::Pin {
            path: pin.to_path_buf(),
            source,
        })?;
        LinkRecord::new(program, scope, cgroup_id, pin, pinned)
    }
}

/// Creates a removed pin directory again, 0700 like the rest of the tree.
fn private_dirs(dir: &Path) -> io::Result<()> {
    use std::os::unix::fs::DirBuilderExt as _;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
}

/// Puts our object back at `pin`, replacing whatever is there.
fn repin(pin: &Path, fd: io::Result<std::os::fd::OwnedFd>) -> bool {
    let result = fd.and_then(|fd| {
        if let Some(dir) = pin.parent() {
            private_dirs(dir)?;
        }
        remove_pin(pin)?;
        sys::obj_pin(&fd, pin)
    });
    match result {
        Ok(()) => true,
        Err(e) => {
            warn!(pin = %pin.display(), error = %e, "cannot re-pin");
            false
        }
    }
}
