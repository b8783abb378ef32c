//! The few bpf(2) commands aya 0.14 does not expose and the integrity
//! checks need: what a pin refers to, a link's attachment (its cgroup and
//! program), pinning an object by id, detaching a link. Raw syscalls, each
//! with the smallest `bpf_attr` prefix the command reads (the kernel
//! zero-fills the rest).

#![allow(unsafe_code)]

use std::{
    ffi::CString,
    io,
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
    path::Path,
};

const BPF_PROG_GET_FD_BY_ID: libc::c_long = 13;
const BPF_MAP_GET_FD_BY_ID: libc::c_long = 14;
const BPF_OBJ_PIN: libc::c_long = 6;
const BPF_OBJ_GET: libc::c_long = 7;
const BPF_OBJ_GET_INFO_BY_FD: libc::c_long = 15;
const BPF_LINK_GET_FD_BY_ID: libc::c_long = 30;
const BPF_LINK_DETACH: libc::c_long = 34;

/// What kind of BPF object a file descriptor is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ObjKind {
    Map,
    Link,
    Program,
    Other,
}

/// A pinned or open object: its kind and id (ids are per kind).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Obj {
    pub kind: ObjKind,
    pub id: u32,
}

/// A link's attachment: its program, and the cgroup it is attached to
/// (0 once the link was detached).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct LinkState {
    pub prog_id: u32,
    pub cgroup_id: u64,
}

fn bpf<T>(cmd: libc::c_long, attr: &mut T) -> io::Result<libc::c_long> {
    // SAFETY: attr is a live, writable bpf_attr prefix of the size passed;
    // the kernel reads (and for some commands writes) at most that many bytes.
    let r = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            std::ptr::from_mut(attr),
            std::mem::size_of::<T>(),
        )
    };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

fn owned(fd: libc::c_long) -> io::Result<OwnedFd> {
    let fd = i32::try_from(fd).map_err(io::Error::other)?;
    // SAFETY: the kernel just returned this new descriptor; we are its only owner.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn c_path(path: &Path) -> io::Result<CString> {
    use std::os::unix::ffi::OsStrExt as _;
    CString::new(path.as_os_str().as_bytes()).map_err(io::Error::other)
}

#[repr(C)]
struct ObjAttr {
    pathname: u64,
    bpf_fd: u32,
    file_flags: u32,
}

/// Opens what is pinned at `path` (ENOENT: nothing is).
pub(crate) fn obj_get(path: &Path) -> io::Result<OwnedFd> {
    let p = c_path(path)?;
    let mut attr = ObjAttr {
        pathname: p.as_ptr() as u64,
        bpf_fd: 0,
        file_flags: 0,
    };
    owned(bpf(BPF_OBJ_GET, &mut attr)?)
}

/// Pins the object `fd` at `path` (EEXIST if something is there).
pub(crate) fn obj_pin(fd: &OwnedFd, path: &Path) -> io::Result<()> {
    let p = c_path(path)?;
    let mut attr = ObjAttr {
        pathname: p.as_ptr() as u64,
        bpf_fd: u32::try_from(fd.as_raw_fd()).map_err(io::Error::other)?,
        file_flags: 0,
    };
    bpf(BPF_OBJ_PIN, &mut attr).map(drop)
}

#[repr(C)]
struct GetByIdAttr {
    id: u32,
    next_id: u32,
    open_flags: u32,
}

/// A new descriptor for the link with `id`.
pub(crate) fn link_fd(id: u32) -> io::Result<OwnedFd> {
    let mut attr = GetByIdAttr {
        id,
        next_id: 0,
        open_flags: 0,
    };
    owned(bpf(BPF_LINK_GET_FD_BY_ID, &mut attr)?)
}

/// A new descriptor for the map with `id`.
pub(crate) fn map_fd(id: u32) -> io::Result<OwnedFd> {
    let mut attr = GetByIdAttr {
        id,
        next_id: 0,
        open_flags: 0,
    };
    owned(bpf(BPF_MAP_GET_FD_BY_ID, &mut attr)?)
}

#[repr(C)]
struct InfoAttr {
    bpf_fd: u32,
    info_len: u32,
    info: u64,
}

/// The head of `bpf_{map,prog,link}_info`: every kind starts with type
/// and id; for a cgroup link, prog_id and the cgroup follow.
#[repr(C)]
#[derive(Default)]
struct InfoHead {
    ty: u32,
    id: u32,
    prog_id: u32,
    _pad: u32,
    cgroup_id: u64,
    attach_type: u32,
    _pad2: u32,
}

/// The head of `bpf_prog_info`: type, id, then the 8-byte tag.
#[repr(C)]
#[derive(Default)]
struct ProgHead {
    ty: u32,
    id: u32,
    tag: [u8; 8],
}

fn info<T: Default>(fd: &OwnedFd) -> io::Result<T> {
    let mut head = T::default();
    let mut attr = InfoAttr {
        bpf_fd: u32::try_from(fd.as_raw_fd()).map_err(io::Error::other)?,
        info_len: std::mem::size_of::<T>() as u32,
        info: std::ptr::from_mut(&mut head) as u64,
    };
    bpf(BPF_OBJ_GET_INFO_BY_FD, &mut attr)?;
    Ok(head)
}

/// The tag (digest of the instructions, stable across loads of the same
/// program) of the program with `id`.
pub(crate) fn prog_tag(id: u32) -> io::Result<[u8; 8]> {
    let mut attr = GetByIdAttr {
        id,
        next_id: 0,
        open_flags: 0,
    };
    let fd = owned(bpf(BPF_PROG_GET_FD_BY_ID, &mut attr)?)?;
    Ok(info::<ProgHead>(&fd)?.tag)
}

/// The kind and id of the object behind `fd`.
pub(crate) fn obj(fd: &OwnedFd) -> io::Result<Obj> {
    let link = std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd()))?;
    // The kernel names links "bpf-link" or "bpf_link" depending on how
    // the descriptor was made.
    let kind = match link.to_string_lossy().as_ref() {
        "anon_inode:bpf-map" => ObjKind::Map,
        "anon_inode:bpf-link" | "anon_inode:bpf_link" => ObjKind::Link,
        "anon_inode:bpf-prog" => ObjKind::Program,
        _ => ObjKind::Other,
    };
    let id = match kind {
        ObjKind::Other => 0,
        _ => info::<InfoHead>(fd)?.id,
    };
    Ok(Obj { kind, id })
}

/// What is pinned at `path`; `None` if nothing is.
pub(crate) fn pinned(path: &Path) -> io::Result<Option<Obj>> {
    match obj_get(path) {
        Ok(fd) => obj(&fd).map(Some),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// The attachment of the link with `id`.
pub(crate) fn link_state(id: u32) -> io::Result<LinkState> {
    let head = info::<InfoHead>(&link_fd(id)?)?;
    Ok(LinkState {
        prog_id: head.prog_id,
        cgroup_id: head.cgroup_id,
    })
}

/// Detaches the link with `id` from its cgroup (the link object stays
/// until its last descriptor and pin are gone).
pub(crate) fn link_detach(id: u32) -> io::Result<()> {
    let fd = link_fd(id)?;
    let mut attr = u32::try_from(fd.as_raw_fd()).map_err(io::Error::other)?;
    bpf(BPF_LINK_DETACH, &mut attr).map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attr_prefixes_have_the_kernels_layout() {
        assert_eq!(std::mem::size_of::<ObjAttr>(), 16);
        assert_eq!(std::mem::size_of::<InfoAttr>(), 16);
        assert_eq!(std::mem::size_of::<GetByIdAttr>(), 12);
        // bpf_link_info: type, id, prog_id, then the union at offset 16.
        assert_eq!(std::mem::offset_of!(InfoHead, cgroup_id), 16);
    }
}
