//! Paths as policy sees them: absolute and lexically normal (`.`, `..` and
//! repeated slashes resolved), relative paths joined to the session's
//! working directory, which interlock asks the server for itself
//! (`REALPATH "."` right after INIT, with a request id of its own whose
//! reply the client never sees). Symbolic links on the server are not
//! followed: a link is decided where it is created (both of its paths).

use bytes::{BufMut, Bytes, BytesMut};

use super::wire;

/// The request id of interlock's own `REALPATH "."`. A client request
/// with this id while that probe is out is refused (its reply could not be
/// told apart).
pub(super) const CWD_PROBE_ID: u32 = u32::MAX;

/// What is known about the server-side working directory.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(super) enum Cwd {
    /// INIT has not been seen yet.
    #[default]
    NotAsked,
    /// The probe is out.
    Pending,
    Known(String),
    /// The server refused the probe: relative paths cannot be decided.
    Failed,
}

/// A path from a request, before it is resolved.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Raw {
    /// As the client sent it.
    Client(String),
    /// Already absolute and normal (from an open handle), or a placeholder.
    Resolved(String),
}

/// Why a request's paths cannot be resolved now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Unresolved {
    /// Wait for the probe's reply, then try again.
    Pending,
    /// Refuse the request: relative, and the working directory is unknown.
    NoCwd,
    /// Refuse the request: it uses [`CWD_PROBE_ID`] while the probe is out.
    ReservedId,
}

/// `path` made absolute against `cwd` and lexically normal. `..` never
/// climbs above `/`; an empty path is the working directory (as for the
/// server).
pub(super) fn normalize(cwd: &str, path: &str) -> String {
    let joined;
    let full = if path.starts_with('/') {
        path
    } else {
        joined = format!("{cwd}/{path}");
        &joined
    };
    let mut parts: Vec<&str> = Vec::new();
    for seg in full.split('/') {
        match seg {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            s => parts.push(s),
        }
    }
    format!("/{}", parts.join("/"))
}

impl Cwd {
    /// Resolves one raw path.
    pub(super) fn resolve(&self, raw: &Raw) -> Result<String, Unresolved> {
        match raw {
            Raw::Resolved(p) => Ok(p.clone()),
            Raw::Client(p) if p.starts_with('/') => Ok(normalize("/", p)),
            Raw::Client(p) => match self {
                Cwd::Known(cwd) => Ok(normalize(cwd, p)),
                Cwd::Pending => Err(Unresolved::Pending),
                Cwd::NotAsked | Cwd::Failed => Err(Unresolved::NoCwd),
            },
        }
    }
}

/// interlock's `REALPATH "."` request.
pub(super) fn probe() -> Bytes {
    let mut body = BytesMut::new();
    body.put_u8(wire::REALPATH);
    body.put_u32(CWD_PROBE_ID);
    wire::put_string(&mut body, b".");
    let mut out = BytesMut::with_capacity(4 + body.len());
    out.put_u32(u32::try_from(body.len()).unwrap_or(u32::MAX));
    out.extend_from_slice(&body);
    out.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_made_absolute_and_normal() {
        let cases = [
            ("/root", "/etc/x", "/etc/x"),
            ("/root", "/tmp/../etc/x", "/etc/x"),
            ("/root", "../../etc/x", "/etc/x"),
            ("/root", "../../../../../etc/x", "/etc/x"),
            ("/root", "a//b/./c/", "/root/a/b/c"),
            ("/root", "", "/root"),
            ("/root", ".", "/root"),
            ("/", "..", "/"),
            ("/home/ci", "up.txt", "/home/ci/up.txt"),
            ("/x", "//etc///passwd", "/etc/passwd"),
        ];
        for (cwd, path, want) in cases {
            assert_eq!(normalize(cwd, path), want, "{cwd} + {path}");
        }
    }

    #[test]
    fn relative_paths_need_the_working_directory() {
        let rel = Raw::Client("../etc/x".into());
        let abs = Raw::Client("/tmp/../etc/x".into());
        assert_eq!(Cwd::Pending.resolve(&rel), Err(Unresolved::Pending));
        assert_eq!(Cwd::Failed.resolve(&rel), Err(Unresolved::NoCwd));
        assert_eq!(Cwd::NotAsked.resolve(&rel), Err(Unresolved::NoCwd));
        assert_eq!(Cwd::Pending.resolve(&abs).as_deref(), Ok("/etc/x"));
        let known = Cwd::Known("/root".into());
        assert_eq!(known.resolve(&rel).as_deref(), Ok("/etc/x"));
        let placeholder = Raw::Resolved("<unknown handle>".into());
        assert_eq!(
            Cwd::Failed.resolve(&placeholder).as_deref(),
            Ok("<unknown handle>")
        );
    }

    #[test]
    fn the_probe_is_a_realpath_of_dot() {
        let p = probe();
        let (kind, mut r) = wire::Reader::new(&p).unwrap();
        assert_eq!(kind, wire::REALPATH);
        assert_eq!(r.u32(), Some(CWD_PROBE_ID));
        assert_eq!(r.string().as_deref(), Some("."));
    }
}
