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
        CgroupAttachMode, CgroupSockAddr, SockOps, TracePoint,
        links::{FdLink, PinnedLink},
    },
};
use tracing::{info, warn};

use super::{
    KernelError, KernelMaps, ProcessEventStream, cgroup,
    lineage::{self, TRACEFS},
};

const BPFFS: &str = "/sys/fs/bpf";

/// Where one instance pins its maps and links.
pub fn pin_dir(instance: &str) -> PathBuf {
    Path::new(BPFFS).join("interlock").join(instance)
}

/// What to load and where to attach it.
pub struct LoadOptions {
    /// Names the pin directory, so several daemons can run side by side.
    pub instance: String,
    /// Where cgroup v2 is mounted.
    pub cgroup_mount: PathBuf,
    /// Cgroup directories the programs attach to (and the tracepoints filter on).
    pub scopes: Vec<PathBuf>,
    /// Size of PROC_EVENTS in bytes (power of two, a multiple of the page size).
    pub process_ring_bytes: u32,
    /// Entries of FLOWS and PEERS when they are created (adopted pins keep
    /// the size they were created with).
    pub flow_entries: u32,
}

/// The loaded kernel side. Dropping it closes our handles; the pins keep the
/// programs attached (fail closed while the daemon is away).
pub struct Kernel {
    // Holds the program fds alive while we run.
    _ebpf: Ebpf,
    _links: Vec<PinnedLink>,
    maps: KernelMaps,
    process_events: RingBuf<MapData>,
    adopted: bool,
}

impl Kernel {
    /// Loads the object (reusing pinned maps), attaches the programs to every
    /// scope that has no pinned link yet, and unpins links of scopes that are
    /// no longer configured.
    ///
    /// # Errors
    /// Any step of loading, attaching or pinning; the message names the step.
    pub fn load(opts: &LoadOptions) -> Result<Kernel, KernelError> {
        ensure_mounted("bpf", BPFFS)?;
        ensure_mounted("tracefs", TRACEFS)?;
        if opts.scopes.len() > SCOPES_MAX as usize {
            return Err(KernelError::TooManyScopes(opts.scopes.len()));
        }
        let dir = pin_dir(&opts.instance);
        let maps_dir = dir.join("maps");
        let links_dir = dir.join("links");
        for d in [&maps_dir, &links_dir] {
            std::fs::create_dir_all(d).map_err(|source| KernelError::Io {
                what: "create",
                path: d.clone(),
                source,
            })?;
        }
        let adopted = std::fs::read_dir(&links_dir)
            .map(|mut r| r.next().is_some())
            .unwrap_or(false);

        let mut ebpf = EbpfLoader::new()
            .default_map_pin_directory(&maps_dir)
            .map_max_entries(map_names::PROC_EVENTS, opts.process_ring_bytes)
            .map_max_entries(map_names::FLOWS, opts.flow_entries)
            .map_max_entries(map_names::PEERS, opts.flow_entries)
            .load(aya::include_bytes_aligned!(concat!(
                env!("OUT_DIR"),
                "/interlock"
            )))?;

        let mut wanted = Vec::new();
        let mut links = Vec::new();
        for scope in &opts.scopes {
            let cgroup = File::open(scope).map_err(|source| KernelError::Io {
                what: "open cgroup",
                path: scope.clone(),
                source,
            })?;
            let ino = cgroup
                .metadata()
                .map_err(|source| KernelError::Io {
                    what: "stat",
                    path: scope.clone(),
                    source,
                })?
                .ino();
            for name in [names::CONNECT4, names::CONNECT6, names::SOCK_OPS] {
                let pin = links_dir.join(format!("{name}@{ino}"));
                wanted.push(pin.clone());
                if pin.exists() {
                    let link = PinnedLink::from_pin(&pin).map_err(|source| KernelError::Adopt {
                        path: pin.clone(),
                        source,
                    })?;
                    links.push(link);
                    continue;
                }
                let link = attach(&mut ebpf, name, &cgroup)?;
                let pinned = link.pin(&pin).map_err(|source| KernelError::Pin {
                    path: pin.clone(),
                    source,
                })?;
                info!(program = name, scope = %scope.display(), "attached");
                links.push(pinned);
            }
        }
        unpin_unwanted(&links_dir, &wanted);
        attach_lineage(&mut ebpf, opts)?;

        let maps = KernelMaps::take(&mut ebpf)?;
        let process_events = ebpf
            .take_map(map_names::PROC_EVENTS)
            .ok_or(KernelError::MissingMap(map_names::PROC_EVENTS))
            .and_then(|m| {
                RingBuf::try_from(m).map_err(|source| KernelError::Map {
                    name: map_names::PROC_EVENTS,
                    source,
                })
            })?;
        Ok(Kernel {
            _ebpf: ebpf,
            _links: links,
            maps,
            process_events,
            adopted,
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
        Ok((
            KernelHold {
                _ebpf: self._ebpf,
                _links: self._links,
            },
            self.maps,
            events,
        ))
    }

    /// Whether an earlier daemon's pins were found and adopted.
    pub fn adopted(&self) -> bool {
        self.adopted
    }
}

/// Keeps the program and link handles open while the daemon runs.
pub struct KernelHold {
    _ebpf: Ebpf,
    _links: Vec<PinnedLink>,
}

fn program_err(name: &'static str) -> impl Fn(aya::programs::ProgramError) -> KernelError {
    move |source| KernelError::Program { name, source }
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
    if name == names::SOCK_OPS {
        let p: &mut SockOps = prog.try_into().map_err(&err)?;
        if p.fd().is_err() {
            p.load().map_err(&err)?;
        }
        let id = p.attach(cgroup, CgroupAttachMode::Single).map_err(&err)?;
        FdLink::try_from(p.take_link(id).map_err(&err)?).map_err(link_err)
    } else {
        let p: &mut CgroupSockAddr = prog.try_into().map_err(&err)?;
        if p.fd().is_err() {
            p.load().map_err(&err)?;
        }
        let id = p.attach(cgroup, CgroupAttachMode::Single).map_err(&err)?;
        FdLink::try_from(p.take_link(id).map_err(&err)?).map_err(link_err)
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
            match std::fs::remove_file(&path) {
                Ok(()) => {
                    info!(link = %path.display(), "detached link of a scope no longer configured")
                }
                Err(e) => warn!(link = %path.display(), error = %e, "cannot remove stale link pin"),
            }
        }
    }
}

/// Mounts `fstype` at `dir` unless it is there (bpffs for pins, tracefs for
/// tracepoint formats; fresh hosts often have neither).
fn ensure_mounted(fstype: &'static str, dir: &'static str) -> Result<(), KernelError> {
    if cgroup::is_mounted(fstype, dir) {
        return Ok(());
    }
    let fail = |message: String| KernelError::Mount {
        fstype,
        dir,
        message,
    };
    let out = Command::new("mount")
        .args(["-t", fstype, fstype, dir])
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

/// What a refused instance lock tells the user to do.
const INSTANCE_HINT: &str =
    "two daemons must not share pins: stop that one first, or give this one another --instance";

/// Takes the instance's lock (its pin directory, made if missing) for as
/// long as the daemon runs: a second daemon on the same instance is
/// refused, naming the first one's pid.
///
/// # Errors
/// [`KernelError::InUse`] when another process holds it; bpffs cannot be
/// mounted or the directory made.
pub fn lock_instance(instance: &str) -> Result<crate::lock::Held, KernelError> {
    ensure_mounted("bpf", BPFFS)?;
    let dir = pin_dir(instance);
    std::fs::create_dir_all(&dir).map_err(|source| KernelError::Io {
        what: "create",
        path: dir.clone(),
        source,
    })?;
    Ok(crate::lock::exclusive(
        &dir,
        &format!("instance `{instance}` ({})", dir.display()),
        INSTANCE_HINT,
    )?)
}

/// Removes an instance's pins, which detaches its programs and frees its
/// maps once no daemon holds them. Returns what was removed; empty if the
/// instance had no pins.
///
/// # Errors
/// A pin exists but cannot be removed; [`KernelError::InUse`] while a
/// daemon runs the instance (its pins are not touched).
pub fn detach(instance: &str) -> Result<Vec<PathBuf>, KernelError> {
    let dir = pin_dir(instance);
    // Held while removing, so no daemon starts on pins being removed.
    let _lock = match dir.is_dir() {
        true => Some(crate::lock::exclusive(
            &dir,
            &format!("instance `{instance}` ({})", dir.display()),
            "a running daemon's pins are not removed: stop it first",
        )?),
        false => None,
    };
    let mut removed = Vec::new();
    for sub in ["links", "maps"] {
        let d = dir.join(sub);
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        let mut paths: Vec<PathBuf> = entries.flatten().map(|e| e.path()).collect();
        paths.sort();
        for p in paths {
            std::fs::remove_file(&p).map_err(|source| KernelError::Io {
                what: "remove pin",
                path: p.clone(),
                source,
            })?;
            removed.push(p);
        }
        let _ = std::fs::remove_dir(&d);
    }
    let _ = std::fs::remove_dir(&dir);
    Ok(removed)
}
