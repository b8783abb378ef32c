//! Secrets in statement text, redacted before the text is recorded, shown
//! to an approver or matched by policy: the string after a `PASSWORD`
//! keyword or a `password`/`secret` option (`CREATE ROLE .. PASSWORD 'p'`,
//! what psql's `\password` sends, `OPTIONS (password 'p')` of user mappings
//! and servers), and `password=` or `user:pass@` inside any string constant
//! (`dblink_connect('... password=p')`, subscription connection strings).
//! Works on the scanner's tokens, so it also covers statements that do not
//! parse.

use std::{borrow::Cow, sync::LazyLock};

use pg_query::protobuf::Token;
use regex::Regex;

/// What a redacted string constant becomes.
const REDACTED: &str = "'<redacted>'";

/// Shown instead of a statement that mentions a secret but cannot be
/// scanned (an unterminated string): nothing of it is safe to show.
const UNSCANNABLE: &str = "<statement not shown: it mentions a password and could not be scanned>";

/// `password = value` in a connection string (value quoted or not).
static CONNINFO: LazyLock<Option<Regex>> = LazyLock::new(|| {
    Regex::new(r"(?i)(password\s*=\s*)(''(?:[^']|'''')*''|'(?:[^'\\]|\\.)*'|[^\s']+)").ok()
});

/// `scheme://user:password@host`.
static URI_PASSWORD: LazyLock<Option<Regex>> =
    LazyLock::new(|| Regex::new(r"(?i)([a-z][a-z0-9+.-]*://[^:/@\s']*:)([^@\s']+)@").ok());

/// Whether `sql` might carry a secret at all (the common case skips the
/// scan, and allocates nothing).
fn suspicious(sql: &str) -> bool {
    let has = |needle: &[u8]| {
        sql.as_bytes()
            .windows(needle.len())
            .any(|w| w.eq_ignore_ascii_case(needle))
    };
    has(b"pass") || has(b"secret") || has(b"://")
}

/// Whether an identifier or keyword names a secret.
fn secret_name(word: &str) -> bool {
    let w = word.trim_matches('"').to_ascii_lowercase();
    w.contains("password") || w.contains("secret") || w == "passwd"
}

fn is_string(token: i32) -> bool {
    token == Token::Sconst as i32 || token == Token::Usconst as i32
}

/// The part of a string-constant token between its quotes.
fn inner(tok: &str) -> (usize, usize) {
    let len = tok.len();
    let close = |open: usize| (open.min(len), len.saturating_sub(1).max(open.min(len)));
    if tok.starts_with('\'') {
        close(1)
    } else if tok.starts_with("E'") || tok.starts_with("e'") {
        close(2)
    } else if tok.starts_with("U&'") || tok.starts_with("u&'") {
        close(3)
    } else if let Some(rest) = tok.strip_prefix('$')
        && let Some(end) = rest.find('$')
    {
        let tag = end + 2;
        (tag.min(len), len.saturating_sub(tag).max(tag.min(len)))
    } else {
        (0, len)
    }
}

/// Passwords inside one string constant's text; `None` if there are none.
fn conninfo(text: &str) -> Option<String> {
    let mut out = Cow::Borrowed(text);
    if let Some(re) = CONNINFO.as_ref()
        && re.is_match(&out)
    {
        out = Cow::Owned(re.replace_all(&out, "${1}<redacted>").into_owned());
    }
    if let Some(re) = URI_PASSWORD.as_ref()
        && re.is_match(&out)
    {
        out = Cow::Owned(re.replace_all(&out, "${1}<redacted>@").into_owned());
    }
    match out {
        Cow::Owned(s) => Some(s),
        Cow::Borrowed(_) => None,
    }
}

/// `sql` with its secrets replaced by `<redacted>`.
pub fn redact(sql: &str) -> Cow<'_, str> {
    if !suspicious(sql) {
        return Cow::Borrowed(sql);
    }
    let Ok(tokens) = pg_query::scan_tokens(sql) else {
        return Cow::Owned(UNSCANNABLE.to_string());
    };
    let text = |t: &pg_query::protobuf::ScanToken| {
        let (s, e) = (usize::try_from(t.start).ok()?, usize::try_from(t.end).ok()?);
        Some((s, e, sql.get(s..e)?))
    };
    let mut edits: Vec<(usize, usize, String)> = Vec::new();
    for (i, t) in tokens.iter().enumerate() {
        if !is_string(t.token) {
            continue;
        }
        let Some((s, e, tok)) = text(t) else { continue };
        // What names this constant: the token before it, skipping `=` or TO.
        let mut k = i;
        let mut named = false;
        while k > 0 && i - k < 2 {
            k -= 1;
            let Some(prev) = tokens.get(k).and_then(&text) else {
                break;
            };
            if secret_name(prev.2) {
                named = true;
                break;
            }
            if !(prev.2 == "=" || prev.2.eq_ignore_ascii_case("to")) {
                break;
            }
        }
        if named {
            edits.push((s, e, REDACTED.to_string()));
            continue;
        }
        let (a, b) = inner(tok);
        if let Some(body) = tok.get(a..b)
            && let Some(clean) = conninfo(body)
        {
            let head = tok.get(..a).unwrap_or_default();
            let tail = tok.get(b..).unwrap_or_default();
            edits.push((s, e, format!("{head}{clean}{tail}")));
        }
    }
    if edits.is_empty() {
        return Cow::Borrowed(sql);
    }
    let mut out = String::with_capacity(sql.len());
    let mut last = 0;
    for (s, e, with) in edits {
        out.push_str(sql.get(last..s).unwrap_or_default());
        out.push_str(&with);
        last = e;
    }
    out.push_str(sql.get(last..).unwrap_or_default());
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn password_literals_are_redacted() {
        let cases = [
            (
                "CREATE ROLE x LOGIN PASSWORD 'hunter2' VALID UNTIL '2030-01-01'",
                "CREATE ROLE x LOGIN PASSWORD '<redacted>' VALID UNTIL '2030-01-01'",
            ),
            (
                "alter user x with encrypted password 'SCRAM-SHA-256$4096:c2FsdA==$a:b'",
                "alter user x with encrypted password '<redacted>'",
            ),
            (
                "ALTER ROLE x PASSWORD 'md5f1c1a2b3'",
                "ALTER ROLE x PASSWORD '<redacted>'",
            ),
            (
                "CREATE USER MAPPING FOR app SERVER s OPTIONS (user 'u', password 'p w')",
                "CREATE USER MAPPING FOR app SERVER s OPTIONS (user 'u', password '<redacted>')",
            ),
            (
                "ALTER SERVER s OPTIONS (SET password 'x', ADD \"sslpassword\" 'y')",
                "ALTER SERVER s OPTIONS (SET password '<redacted>', ADD \"sslpassword\" '<redacted>')",
            ),
            (
                "select dblink_connect('c', 'host=db user=u password=s3cr3t dbname=d')",
                "select dblink_connect('c', 'host=db user=u password=<redacted> dbname=d')",
            ),
            (
                "select dblink_connect('host=db password = ''a b'' port=1')",
                "select dblink_connect('host=db password = <redacted> port=1')",
            ),
            (
                "CREATE SUBSCRIPTION s CONNECTION 'postgresql://u:pw@db/x' PUBLICATION p",
                "CREATE SUBSCRIPTION s CONNECTION 'postgresql://u:<redacted>@db/x' PUBLICATION p",
            ),
            (
                "select set_config('app.secret', $$v$$, false), E'PGPASSWORD=zz psql'",
                "select set_config('app.secret', $$v$$, false), E'PGPASSWORD=<redacted> psql'",
            ),
            (
                "ALTER ROLE x SET app.password TO 'p'",
                "ALTER ROLE x SET app.password TO '<redacted>'",
            ),
            // unparseable, still scanned
            (
                "CREATE ROLE x PASSWORD 'p' garbage garbage",
                "CREATE ROLE x PASSWORD '<redacted>' garbage garbage",
            ),
        ];
        for (sql, want) in cases {
            assert_eq!(redact(sql), want, "{sql}");
        }
        // nothing to hide: borrowed as is
        assert!(matches!(redact("select 1"), Cow::Borrowed(_)));
        assert!(matches!(
            redact("select password_hash from t"),
            Cow::Borrowed(_)
        ));
        assert!(matches!(
            redact("ALTER ROLE x PASSWORD NULL"),
            Cow::Borrowed(_)
        ));
        // an unterminated string after PASSWORD shows nothing
        assert_eq!(redact("CREATE ROLE x PASSWORD 'p"), UNSCANNABLE);
    }
}
