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
    fn missing_file_is_an_error() {
        let res = user_name(Path::new("/nonexistent/interlock/passwd"), 0);
        assert!(matches!(res, Err(IdentityError::Read { .. })));
    }
}
