//! uid -> user name from a passwd file (parsed here: no NSS, no crate).

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::Path;

use super::error::IdentityError;

/// Looks `uid` up in a passwd-format file (`name:x:uid:gid:gecos:home:shell`). Returns the
/// first matching name, or `Ok(None)` when no line has that uid. Comment, blank, NIS (`+`/`-`)
/// and malformed lines are skipped. Fails only when the file cannot be opened or read.
pub(crate) fn user_name(passwd: &Path, uid: u32) -> Result<Option<String>, IdentityError> {
    let file = File::open(passwd).map_err(|e| IdentityError::read(passwd, e))?;
    for line in BufReader::new(file).split(b'\n') {
        let line = line.map_err(|e| IdentityError::read(passwd, e))?;
        if let Some(name) = match_line(&line, uid) {
            return Ok(Some(name));
        }
    }
    Ok(None)
}

/// Names of the groups `user` belongs to: the group of its primary `gid`
/// and every group whose member list names it, from a group-format file
/// (`name:x:gid:member,member`). An unreadable file gives no groups.
pub(crate) fn group_names(group: &Path, user: Option<&str>, gid: u32) -> Vec<String> {
    let Ok(text) = std::fs::read_to_string(group) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for line in text.lines() {
        if line.starts_with(['#', '+', '-']) {
            continue;
        }
        let mut f = line.split(':');
        let (Some(name), _, Some(line_gid), members) = (f.next(), f.next(), f.next(), f.next())
        else {
            continue;
        };
        let primary = line_gid.trim().parse::<u32>().ok() == Some(gid);
        let member = user.is_some_and(|u| {
            members
                .unwrap_or_default()
                .split(',')
                .any(|m| m.trim() == u)
        });
        if (primary || member) && !name.is_empty() && !out.iter().any(|n| n == name) {
            out.push(name.to_owned());
        }
    }
    out
}

fn match_line(line: &[u8], uid: u32) -> Option<String> {
    let line = std::str::from_utf8(line).ok()?;
    if line.starts_with(['#', '+', '-']) {
        return None;
    }
    let mut fields = line.split(':');
    let name = fields.next().filter(|name| !name.is_empty())?;
    let line_uid: u32 = fields.nth(1)?.trim().parse().ok()?;
    (line_uid == uid).then(|| name.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::tests::fake::FakeProc;

    type TestResult = Result<(), Box<dyn std::error::Error>>;

    #[test]
    fn finds_names_and_skips_junk() -> TestResult {
        let fake = FakeProc::new()?;
        let passwd = fake.file(
            "passwd",
            b"# comment\n\n+nis::0:0:::\nroot:x:0:0:root:/root:/bin/bash\nbroken\n\
              :x:5:5:::\nbad:x:notanumber:1:::\n\xff\xfe:x:7:7:::\nci:x:1001:1001::/home/ci:/bin/sh\n\
              dup:x:1001:1001:::\nlast:x:2000:2000:::",
        )?;
        assert_eq!(user_name(&passwd, 0)?.as_deref(), Some("root"));
        assert_eq!(user_name(&passwd, 1001)?.as_deref(), Some("ci"));
        assert_eq!(user_name(&passwd, 2000)?.as_deref(), Some("last"));
        assert_eq!(user_name(&passwd, 5)?, None);
        assert_eq!(user_name(&passwd, 7)?, None);
        assert_eq!(user_name(&passwd, 4242)?, None);
        Ok(())
    }

    #[test]
    fn groups_by_primary_gid_and_membership() -> TestResult {
        let fake = FakeProc::new()?;
        let group = fake.file(
            "group",
            b"root:x:0:\nsre:x:50:alice,bob\n# c\nbroken\nops:x:51:carol\nalice:x:1000:\n",
        )?;
        assert_eq!(
            group_names(&group, Some("alice"), 1000),
            vec!["sre", "alice"]
        );
        assert_eq!(group_names(&group, Some("carol"), 4242), vec!["ops"]);
        assert_eq!(group_names(&group, None, 0), vec!["root"]);
        assert!(group_names(Path::new("/nonexistent/group"), Some("x"), 0).is_empty());
        Ok(())
    }

    #[test]
    fn missing_file_is_an_error() {
        let res = user_name(Path::new("/nonexistent/interlock/passwd"), 0);
        assert!(matches!(res, Err(IdentityError::Read { .. })));
    }
}
