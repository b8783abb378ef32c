//! What an exec command does besides running a program, read from the
//! command as the server's shell splits it (`policy::shell`): a shell that
//! reads commands from its input (`ssh -t host bash`, `ssh host sh <
//! script`) is decided as `shell`, and files it writes or sends — output
//! redirections, `tee`, `dd of=`, legacy `scp -t` / `-f` (`scp -O`) — as
//! `file_write` / `file_read` on their paths. Paths are decided absolute
//! and normal when written absolute, as `~/...` when relative to the login
//! directory (which interlock does not know, so a relative path that
//! climbs out of it is refused), and a path only known when the command
//! runs (`> $HOME/f`) refuses the command.

use crate::{
    gate::{CommandKind, Request},
    policy::shell,
};

/// The extra requests an exec of `command` is decided as, or the line
/// refusing it.
pub(super) fn exec_requests(command: &str) -> Result<Vec<Request>, String> {
    let script = shell::split(command);
    let mut out = Vec::new();
    if shell::starts_shell(&script) {
        out.push(Request::Command {
            kind: CommandKind::Shell,
            text: "shell".into(),
        });
    }
    let files = shell::written_files(&script)
        .into_iter()
        .map(|f| (CommandKind::FileWrite, f))
        .chain(
            shell::read_files(&script)
                .into_iter()
                .map(|f| (CommandKind::FileRead, f)),
        );
    for (kind, (path, dynamic)) in files {
        if dynamic {
            return Err(format!(
                "interlock: refused: the command writes or sends `{path}`, a path only known when it runs; name the file literally"
            ));
        }
        let text = resolve(&path).ok_or_else(|| {
            format!(
                "interlock: refused: `{path}` is relative to the login directory, which interlock does not know, and climbs out of it; use an absolute path"
            )
        })?;
        out.push(Request::Command { kind, text });
    }
    Ok(out)
}

/// An absolute path made normal; a relative one (or `~/...`) as `~/...`
/// made normal, `None` when it climbs above the login directory.
fn resolve(path: &str) -> Option<String> {
    let (absolute, rest) = match path.strip_prefix('/') {
        Some(rest) => (true, rest),
        None => (false, path.strip_prefix("~/").unwrap_or(path)),
    };
    let mut parts: Vec<&str> = Vec::new();
    for seg in rest.split('/') {
        match seg {
            "" | "." => {}
            ".." => {
                // `..` never climbs above `/`; above `~` it is unknown.
                if parts.pop().is_none() && !absolute {
                    return None;
                }
            }
            s => parts.push(s),
        }
    }
    Some(if absolute {
        format!("/{}", parts.join("/"))
    } else {
        format!("~/{}", parts.join("/"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kinds(cmd: &str) -> Vec<(CommandKind, String)> {
        exec_requests(cmd)
            .unwrap()
            .into_iter()
            .filter_map(|r| match r {
                Request::Command { kind, text } => Some((kind, text)),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn shells_and_files_are_decided_by_what_the_command_does() {
        assert_eq!(kinds("bash"), vec![(CommandKind::Shell, "shell".into())]);
        assert_eq!(
            kinds("scp -t /tmp/../etc/x"),
            vec![(CommandKind::FileWrite, "/etc/x".into())]
        );
        assert_eq!(
            kinds("scp -f notes.txt"),
            vec![(CommandKind::FileRead, "~/notes.txt".into())]
        );
        assert_eq!(
            kinds("echo hi | tee -a /etc/motd > out.log"),
            vec![
                (CommandKind::FileWrite, "~/out.log".into()),
                (CommandKind::FileWrite, "/etc/motd".into())
            ]
        );
        assert_eq!(
            kinds("dd if=x of=//dev/sda"),
            vec![(CommandKind::FileWrite, "/dev/sda".into())]
        );
        assert!(kinds("ls -la; uptime").is_empty());
        assert!(exec_requests("scp -t ../../etc/x").is_err());
        assert!(exec_requests("echo x > $HOME/f").is_err());
    }
}
