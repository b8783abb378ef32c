//! Loading the object, attaching to scopes and pinning. Every program and map
//! is named once, from `agent_common::{programs, maps}`.

use std::{
    fs::File,
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
    process::Command,
};

use agent_common::{
    maps as map_names,
    process::{SCOPES_MAX, ScopeEntry, TracepointOffsets},
    programs as names,
};
use aya::{
    Ebpf, EbpfLoader,
    maps::{Array, MapData, RingBuf},
    programs::{
        CgroupAttachMode, CgroupSock, CgroupSockAddr, SockOps, TracePoint,
        links::{FdLink, PinnedLink},
    },
};
use tracing::{info, warn};

use super::{
    KernelError, KernelMaps, ProcessEventStream, cgroup,
    integrity::{Finding, FindingKind, LinkRecord, MapRecord},
    layout,
    lineage::{self, TRACEFS},
    pins, sys,
};

const BPFFS: &str = "/sys/fs/bpf";

/// The programs attached to every scope cgroup (and pinned there).
pub(super) const CGROUP_PROGRAMS: [&str; 4] = [
    names::CONNECT4,
    names::CONNECT6,
    names::SOCK_OPS,
    names::SOCK_RELEASE,
];

/// What to load and where to attach it.
pub struct LoadOptions {
    /// Names the pin directory, so several daemons can run side by side.
    pub instance: String,
    /// Directory holding every instance's pins (`/sys/fs/bpf/interlock`).
    pub pin_root: PathBuf,
    /// Where cgroup v2 is mounted.
    pub cgroup_mount: PathBuf,
    /// Cgroup directories the programs attach to (and the tracepoints filter on).
    pub scopes: Vec<PathBuf>,
    /// Size of PROC_EVENTS in bytes (power of two, a multiple of the page size).
    pub process_ring_bytes: u32,
    /// Entries of FLOWS, PEERS, FLOW_OWNERS and FLOW_COUNTS when they are created
    /// (adopted pins keep the size they were created with).
    pub flow_entries: u32,
}

/// The loaded kernel side. Dropping it closes our handles; the pins keep the
/// programs attached (fail closed while the daemon is away).
pub struct Kernel {
    hold: KernelHold,
    maps: KernelMaps,
    process_events: RingBuf<MapData>,
    adopted: bool,
    findings: Vec<Finding>,
}

impl Kernel {
    /// Checks the pin tree, loads the object (reusing pinned maps of the
    /// same layout), attaches the programs to every scope that has no
    /// pinned link yet, replaces adopted links that do not run this build's
    /// program on their scope, and unpins links of scopes no longer configured.
    ///
    /// # Errors
    /// Any step of loading, attaching or pinning; the message names the
    /// step. A pin tree others could have written, or maps pinned by a
    /// build with another layout, are refused.
    pub fn load(opts: &LoadOptions) -> Result<Kernel, KernelError> {
        ensure_mounted("bpf", BPFFS)?;
        ensure_mounted("tracefs", TRACEFS)?;
        if opts.scopes.len() > SCOPES_MAX as usize {
            return Err(KernelError::TooManyScopes(opts.scopes.len()));
        }
        let tree = pins::prepare(&opts.pin_root, &opts.instance)?;
        layout::check(&tree.maps, &opts.instance)?;
        let adopted = std::fs::read_dir(&tree.links)
            .map(|mut r| r.next().is_some())
            .unwrap_or(false);

        let object = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/interlock"));
        if object.is_empty() {
            return Err(KernelError::NoObject);
        }
        let mut ebpf = EbpfLoader::new()
            .default_map_pin_directory(&tree.maps)
            .map_max_entries(map_names::PROC_EVENTS, opts.process_ring_bytes)
            .map_max_entries(map_names::FLOWS, opts.flow_entries)
            .map_max_entries(map_names::PEERS, opts.flow_entries)
            .map_max_entries(map_names::FLOW_OWNERS, opts.flow_entries)
            .map_max_entries(map_names::FLOW_COUNTS, opts.flow_entries)
            .load(object)?;
        for name in CGROUP_PROGRAMS {
            load_program(&mut ebpf, name)?;
        }

        let mut hold = KernelHold {
            ebpf,
            links: Vec::new(),
            maps: Vec::new(),
            links_dir: tree.links.clone(),
        };
        let mut findings = Vec::new();
        let mut wanted = Vec::new();
        for scope in &opts.scopes {
            let cgroup_id = std::fs::metadata(scope)
                .map_err(|source| KernelError::Io {
                    what: "stat",
                    path: scope.clone(),
                    source,
                })?
                .ino();
            for name in CGROUP_PROGRAMS {
                let pin = tree.links.join(format!("{name}@{cgroup_id}"));
                wanted.push(pin.clone());
                let record = match hold.adopt(name, scope, cgroup_id, &pin, &mut findings)? {
                    Some(r) => r,
                    None => {
                        let r = hold.attach_and_pin(name, scope, cgroup_id, &pin)?;
                        info!(program = name, scope = %scope.display(), "attached");
                        r
                    }
                };
                hold.links.push(record);
            }
        }
        unpin_unwanted(&tree.links, &wanted);
        attach_lineage(&mut hold.ebpf, opts)?;
        hold.maps = MapRecord::all(&tree.maps)?;

        let maps = KernelMaps::take(&mut hold.ebpf)?;
        let process_events = hold
            .ebpf
            .take_map(map_names::PROC_EVENTS)
            .ok_or(KernelError::MissingMap(map_names::PROC_EVENTS))
            .and_then(|m| {
                RingBuf::try_from(m).map_err(|source| KernelError::Map {
                    name: map_names::PROC_EVENTS,
                    source,
                })
            })?;
        Ok(Kernel {
            hold,
            maps,
            process_events,
            adopted,
            findings,
        })
    }

    /// Splits off the maps and the process event stream (the programs stay
    /// loaded while the [`KernelHold`] lives). Call inside the runtime.
    ///
    /// # Errors
    /// The event ring cannot be registered with the runtime.
    pub fn into_parts(self) -> Result<(KernelHold, KernelMaps, ProcessEventStream), KernelError> {
        let events =
            ProcessEventStream::new(self.process_events).map_err(|source| KernelError::Io {
                what: "poll",
                path: PathBuf::from(map_names::PROC_EVENTS),
                source,
            })?;
        Ok((self.hold, self.maps, events))
    }

    /// Whether an earlier daemon's pins were found and adopted.
    pub fn adopted(&self) -> bool {
        self.adopted
    }

    /// What loading found wrong with adopted pins (and repaired), for events.
    pub fn take_findings(&mut self) -> Vec<Finding> {
        std::mem::take(&mut self.findings)
    }
}

/// Keeps the program and link handles open while the daemon runs, and
/// knows what this daemon pinned, so it can notice pins or links that
/// disappear or are replaced ([`KernelHold::check`]).
pub struct KernelHold {
    pub(super) ebpf: Ebpf,
    pub(super) links: Vec<LinkRecord>,
    pub(super) maps: Vec<MapRecord>,
    pub(super) links_dir: PathBuf,
}

impl KernelHold {
    /// Adopts the link pinned at `pin` if it runs this build's `name` on
    /// this scope; otherwise attaches a fresh link in its place (before the
    /// old one is detached, so the scope is never without the program) and
    /// says why. `None` if nothing is pinned there.
    fn adopt(
        &mut self,
        name: &'static str,
        scope: &Path,
        cgroup_id: u64,
        pin: &Path,
        findings: &mut Vec<Finding>,
    ) -> Result<Option<LinkRecord>, KernelError> {
        let io = |what: &'static str| {
            move |source| KernelError::Io {
                what,
                path: pin.to_path_buf(),
                source,
            }
        };
        let found = match sys::pinned(pin) {
            Ok(f) => f,
            // Not a BPF object at all (e.g. a directory): replaced below.
            Err(_) if pin.symlink_metadata().is_ok() => Some(sys::Obj {
                kind: sys::ObjKind::Other,
                id: 0,
            }),
            Err(e) => return Err(io("open pinned link")(e)),
        };
        let Some(found) = found else {
            return Ok(None);
        };
        let ours = self.program_tag(name)?;
        let problem = if found.kind != sys::ObjKind::Link {
            Some((
                FindingKind::LinkPinReplaced,
                "the pin is not a link".to_string(),
            ))
        } else {
            let state = sys::link_state(found.id).map_err(io("read pinned link"))?;
            let tag = sys::prog_tag(state.prog_id).map_err(io("read the pinned link's program"))?;
            if state.cgroup_id == 0 {
                Some((
                    FindingKind::LinkDetached,
                    "the pinned link was detached".into(),
                ))
            } else if state.cgroup_id != cgroup_id {
                Some((
                    FindingKind::LinkPinReplaced,
                    format!("the pinned link is attached to cgroup {}", state.cgroup_id),
                ))
            } else if tag != ours {
                Some((
                    FindingKind::LinkFromOtherBuild,
                    format!(
                        "the pinned link runs program {} (tag {}), this build's is {}",
                        state.prog_id,
                        hex::encode(tag),
                        hex::encode(ours)
                    ),
                ))
            } else {
                None
            }
        };
        let Some((kind, detail)) = problem else {
            let link = PinnedLink::from_pin(pin).map_err(|source| KernelError::Adopt {
                path: pin.to_path_buf(),
                source,
            })?;
            return Ok(Some(LinkRecord::new(name, scope, cgroup_id, pin, link)?));
        };
        // Attach ours first; then the old pin goes and, if it is a link
        // still attached, the link too (a replaced program must not keep running).
        let fresh = self.attach(name, scope)?;
        super::integrity::remove_pin(pin).map_err(io("remove pin"))?;
        let record = self.pin(name, scope, cgroup_id, pin, fresh)?;
        if found.kind == sys::ObjKind::Link
            && let Err(e) = sys::link_detach(found.id)
        {
            warn!(link = found.id, error = %e, "cannot detach the replaced link");
        }
        warn!(path = %pin.display(), %detail, "replaced an adopted link");
        findings.push(Finding {
            kind,
            path: pin.to_path_buf(),
            detail,
            repaired: true,
        });
        Ok(Some(record))
    }

    /// Attaches `name` to `scope` and pins the link at `pin`.
    pub(super) fn attach_and_pin(
        &mut self,
        name: &'static str,
        scope: &Path,
        cgroup_id: u64,
        pin: &Path,
    ) -> Result<LinkRecord, KernelError> {
        let link = self.attach(name, scope)?;
        self.pin(name, scope, cgroup_id, pin, link)
    }

    fn pin(
        &mut self,
        name: &'static str,
        scope: &Path,
        cgroup_id: u64,
        pin: &Path,
        link: FdLink,
    ) -> Result<LinkRecord, KernelError> {
        let pinned = link.pin(pin).map_err(|source| KernelError::Pin {
            path: pin.to_path_buf(),
            source,
        })?;
        LinkRecord::new(name, scope, cgroup_id, pin, pinned)
    }

    /// The tag of this build's program `name` (loaded at start).
    pub(super) fn program_tag(&self, name: &'static str) -> Result<[u8; 8], KernelError> {
        let id = self.program_id(name)?;
        sys::prog_tag(id).map_err(|source| KernelError::Io {
            what: "read program info of",
            path: PathBuf::from(name),
            source,
        })
    }

    /// The kernel id of this build's program `name`.
    pub(super) fn program_id(&self, name: &'static str) -> Result<u32, KernelError> {
        let prog = self
            .ebpf
            .program(name)
            .ok_or(KernelError::MissingProgram(name))?;
        prog.info().map(|i| i.id()).map_err(program_err(name))
    }

    /// Attaches the loaded program `name` to the cgroup at `scope`.
    pub(super) fn attach(
        &mut self,
        name: &'static str,
        scope: &Path,
    ) -> Result<FdLink, KernelError> {
        let cgroup = File::open(scope).map_err(|source| KernelError::Io {
            what: "open cgroup",
            path: scope.to_path_buf(),
            source,
        })?;
        attach(&mut self.ebpf, name, &cgroup)
    }
}

fn program_err(name: &'static str) -> impl Fn(aya::programs::ProgramError) -> KernelError {
    move |source| KernelError::Program { name, source }
}

fn load_program(ebpf: &mut Ebpf, name: &'static str) -> Result<(), KernelError> {
    let prog = ebpf
        .program_mut(name)
        .ok_or(KernelError::MissingProgram(name))?;
    let err = program_err(name);
    match name {
        names::SOCK_OPS => {
            let p: &mut SockOps = prog.try_into().map_err(&err)?;
            p.load().map_err(&err)
        }
        names::SOCK_RELEASE => {
            let p: &mut CgroupSock = prog.try_into().map_err(&err)?;
            p.load().map_err(&err)
        }
        _ => {
            let p: &mut CgroupSockAddr = prog.try_into().map_err(&err)?;
            p.load().map_err(&err)
        }
    }
}

fn attach(ebpf: &mut Ebpf, name: &'static str, cgroup: &File) -> Result<FdLink, KernelError> {
    let prog = ebpf
        .program_mut(name)
        .ok_or(KernelError::MissingProgram(name))?;
    let err = program_err(name);
    let link_err = |source| KernelError::Adopt {
        path: PathBuf::from(name),
        source,
    };
    // Cgroup links are multi-attach, so several instances (and other tools'
    // programs) coexist on one cgroup; `Single` only sets no legacy flags.
    match name {
        names::SOCK_OPS => {
            let p: &mut SockOps = prog.try_into().map_err(&err)?;
            let id = p.attach(cgroup, CgroupAttachMode::Single).map_err(&err)?;
            FdLink::try_from(p.take_link(id).map_err(&err)?).map_err(link_err)
        }
        names::SOCK_RELEASE => {
            let p: &mut CgroupSock = prog.try_into().map_err(&err)?;
            let id = p.attach(cgroup, CgroupAttachMode::Single).map_err(&err)?;
            FdLink::try_from(p.take_link(id).map_err(&err)?).map_err(link_err)
        }
        _ => {
            let p: &mut CgroupSockAddr = prog.try_into().map_err(&err)?;
            let id = p.attach(cgroup, CgroupAttachMode::Single).map_err(&err)?;
            FdLink::try_from(p.take_link(id).map_err(&err)?).map_err(link_err)
        }
    }
}

/// Writes the tracepoint offsets and scope entries, then attaches the
/// lineage tracepoints. They are not pinned: they only matter while a daemon
/// consumes their events.
fn attach_lineage(ebpf: &mut Ebpf, opts: &LoadOptions) -> Result<(), KernelError> {
    let offsets = lineage::tracepoint_offsets(Path::new(TRACEFS))?;
    let map_err = |name: &'static str| move |source| KernelError::Map { name, source };
    let mut tp: Array<_, TracepointOffsets> = ebpf
        .map_mut(map_names::TP_OFFSETS)
        .ok_or(KernelError::MissingMap(map_names::TP_OFFSETS))?
        .try_into()
        .map_err(map_err(map_names::TP_OFFSETS))?;
    tp.set(0, offsets, 0)
        .map_err(map_err(map_names::TP_OFFSETS))?;
    let mut scopes: Array<_, ScopeEntry> = ebpf
        .map_mut(map_names::SCOPES)
        .ok_or(KernelError::MissingMap(map_names::SCOPES))?
        .try_into()
        .map_err(map_err(map_names::SCOPES))?;
    for i in 0..SCOPES_MAX {
        let entry = match opts.scopes.get(i as usize) {
            Some(dir) => lineage::scope_entry(&opts.cgroup_mount, dir)?,
            None => ScopeEntry::default(),
        };
        scopes
            .set(i, entry, 0)
            .map_err(map_err(map_names::SCOPES))?;
    }
    for (name, category, tracepoint) in [
        (names::FORK, "sched", "sched_process_fork"),
        (names::EXEC, "sched", "sched_process_exec"),
        (names::EXIT, "sched", "sched_process_exit"),
        (names::EXECVE, "syscalls", "sys_enter_execve"),
    ] {
        let err = program_err(name);
        let p: &mut TracePoint = ebpf
            .program_mut(name)
            .ok_or(KernelError::MissingProgram(name))?
            .try_into()
            .map_err(&err)?;
        p.load().map_err(&err)?;
        p.attach(category, tracepoint).map_err(&err)?;
    }
    Ok(())
}

/// Links of scopes no longer configured are unpinned, which detaches them.
fn unpin_unwanted(links_dir: &Path, wanted: &[PathBuf]) {
    let Ok(entries) = std::fs::read_dir(links_dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if !wanted.contains(&path) {
            match super::integrity::remove_pin(&path) {
                Ok(()) => {
                    info!(link = %path.display(), "detached link of a scope no longer configured")
                }
                Err(e) => warn!(link = %path.display(), error = %e, "cannot remove stale link pin"),
            }
        }
    }
}

/// Mounts `fstype` at `dir` unless it is there (bpffs for pins, tracefs for
/// tracepoint formats; fresh hosts often have neither). bpffs is mounted
/// 0700: only root needs it, and a world-writable one lets users plant
/// directories where pins go.
fn ensure_mounted(fstype: &'static str, dir: &'static str) -> Result<(), KernelError> {
    if cgroup::is_mounted(fstype, dir) {
        return Ok(());
    }
    let fail = |message: String| KernelError::Mount {
        fstype,
        dir,
        message,
    };
    let mut cmd = Command::new("mount");
    cmd.args(["-t", fstype]);
    if fstype == "bpf" {
        cmd.args(["-o", "mode=0700"]);
    }
    let out = cmd
        .args([fstype, dir])
        .output()
        .map_err(|e| fail(e.to_string()))?;
    if out.status.success() {
        info!("mounted {fstype} at {dir}");
        Ok(())
    } else {
        Err(fail(
            String::from_utf8_lossy(&out.stderr).trim().to_string(),
        ))
    }
}

/// Takes the instance's lock (its pin directory under `pin_root`, made
/// 0700 and checked if missing) for as long as the daemon runs: a second
/// daemon on the same instance is refused, naming the first one's pid.
///
/// # Errors
/// [`KernelError::InUse`] when another process holds it; bpffs cannot be
/// mounted; the pin tree is unsafe or cannot be made.
pub fn lock_instance(pin_root: &Path, instance: &str) -> Result<crate::lock::Held, KernelError> {
    ensure_mounted("bpf", BPFFS)?;
    pins::lock(pin_root, instance)
}
