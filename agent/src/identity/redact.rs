//! Secrets on command lines, redacted before an argv is stored: identities
//! go into events, approval requests and logs, and a job's command line may
//! carry a password (`psql postgresql://u:pw@db`, `--password=pw`,
//! `DB_TOKEN=x`, `-c "ALTER ROLE r PASSWORD 'pw'"`). Only the secret is
//! replaced; the rest of the argument stays, so attribution keeps its value.
//! Policy `argv` patterns see the redacted form.

use std::sync::LazyLock;

use regex::Regex;

/// What a secret becomes.
const REDACTED: &str = "<redacted>";

/// Option names whose value is a secret (`--NAME=V` or `--NAME V`).
const SECRET_OPTIONS: &[&str] = &[
    "password",
    "passwd",
    "pass",
    "token",
    "secret",
    "api-key",
    "apikey",
    "access-key",
    "secret-key",
    "auth-token",
];

/// The patterns, compiled once; `None` only if one fails to compile, in
/// which case [`redact_argv`] redacts every argument that might hold a
/// secret whole (fail closed).
struct Patterns {
    /// `scheme://user:password@`.
    uri: Regex,
    /// `NAME=value` where NAME mentions a password, secret, token or key
    /// (environment assignments, libpq `password=`).
    assignment: Regex,
    /// SQL `PASSWORD 'x'` / `PASSWORD x`.
    sql: Regex,
}

static PATTERNS: LazyLock<Option<Patterns>> = LazyLock::new(|| {
    Some(Patterns {
        uri: Regex::new(r"(?i)([a-z][a-z0-9+.-]*://[^:/@\s]*:)([^@\s]+)@").ok()?,
        assignment: Regex::new(
            r"(?i)\b([a-z0-9_.-]*(?:password|passwd|secret|token|api_?key|access_?key)[a-z0-9_.-]*\s*=\s*)('[^']*'|[^\s']+)",
        )
        .ok()?,
        sql: Regex::new(r"(?i)\b(password\s+)('(?:[^']|'')*'|[^\s;']+)").ok()?,
    })
});

/// Whether `arg` might hold a secret (the common case skips the regexes).
fn suspicious(arg: &str) -> bool {
    let lower = arg.to_ascii_lowercase();
    ["pass", "secret", "token", "key", "://"]
        .iter()
        .any(|n| lower.contains(n))
}

/// `--NAME` or `--NAME=...` for a secret option: the option's name.
fn secret_option(arg: &str) -> Option<&str> {
    let name = arg.strip_prefix("--")?;
    let name = name.split('=').next().unwrap_or(name);
    SECRET_OPTIONS
        .iter()
        .any(|o| name.eq_ignore_ascii_case(o))
        .then_some(name)
}

fn redact_one(arg: &str, p: &Patterns) -> String {
    if let Some(name) = secret_option(arg)
        && arg.contains('=')
    {
        return format!("--{name}={REDACTED}");
    }
    if !suspicious(arg) {
        return arg.to_string();
    }
    let out = p.uri.replace_all(arg, format!("${{1}}{REDACTED}@"));
    let out = p.assignment.replace_all(&out, format!("${{1}}{REDACTED}"));
    p.sql
        .replace_all(&out, format!("${{1}}'{REDACTED}'"))
        .into_owned()
}

/// `argv` with secrets replaced by `<redacted>`.
pub(crate) fn redact_argv(argv: Vec<String>) -> Vec<String> {
    let mut out = Vec::with_capacity(argv.len());
    let mut next_is_secret = false;
    for arg in argv {
        if next_is_secret {
            next_is_secret = false;
            out.push(REDACTED.to_string());
            continue;
        }
        next_is_secret = secret_option(&arg).is_some() && !arg.contains('=');
        out.push(match PATTERNS.as_ref() {
            Some(p) => redact_one(&arg, p),
            None if suspicious(&arg) => REDACTED.to_string(),
            None => arg,
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(args: &[&str]) -> Vec<String> {
        redact_argv(args.iter().map(|s| s.to_string()).collect())
    }

    #[test]
    fn secrets_are_replaced_and_the_rest_kept() {
        assert_eq!(
            r(&[
                "psql",
                "postgresql://ci:hunter2@db.internal:5432/app",
                "-c",
                "select 1"
            ]),
            [
                "psql",
                "postgresql://ci:<redacted>@db.internal:5432/app",
                "-c",
                "select 1"
            ]
        );
        assert_eq!(
            r(&["psql", "host=db user=ci password=hunter2 dbname=app"]),
            ["psql", "host=db user=ci password=<redacted> dbname=app"]
        );
        assert_eq!(
            r(&[
                "deploy",
                "--password=hunter2",
                "--token",
                "abc123",
                "--user",
                "ci"
            ]),
            [
                "deploy",
                "--password=<redacted>",
                "--token",
                "<redacted>",
                "--user",
                "ci"
            ]
        );
        assert_eq!(
            r(&[
                "env",
                "DB_PASSWORD=hunter2",
                "GITHUB_TOKEN=ghp_x",
                "HOME=/root",
                "make"
            ]),
            [
                "env",
                "DB_PASSWORD=<redacted>",
                "GITHUB_TOKEN=<redacted>",
                "HOME=/root",
                "make"
            ]
        );
        assert_eq!(
            r(&["psql", "-c", "ALTER ROLE app WITH PASSWORD 'hunter2'"]),
            ["psql", "-c", "ALTER ROLE app WITH PASSWORD '<redacted>'"]
        );
        assert_eq!(
            r(&["psql", "-c", "create user x password 'it''s'; select 1"]),
            [
                "psql",
                "-c",
                "create user x password '<redacted>'; select 1"
            ]
        );
        // Nothing secret: untouched.
        let plain = [
            "pgbench",
            "-S",
            "-c",
            "8",
            "--keyfile=/etc/ssl/k.pem",
            "bench",
        ];
        assert_eq!(r(&plain), plain);
        assert!(r(&["x", "--password"]).ends_with(&["--password".to_string()]));
    }

    #[test]
    fn no_secret_survives_anywhere_in_the_output() {
        let argv = [
            "sh",
            "-c",
            "PGPASSWORD=s3cr3t psql 'postgres://u:s3cr3t@h/d' -c \"alter user u password 's3cr3t'\"",
        ];
        let out = r(&argv).join(" ");
        assert!(!out.contains("s3cr3t"), "{out}");
    }
}
