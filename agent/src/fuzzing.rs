//! Entry points for the `fuzz/` crate (built only with the `fuzzing`
//! feature): each feeds untrusted bytes through one decoder the way a
//! session does, and checks what a decoder promises beyond not panicking
//! (whatever decodes re-encodes to the same message). Also the seed
//! corpus, built with the same encoders and messages the unit tests use.

use bytes::{Bytes, BytesMut};

use crate::postgres::{
    classify,
    frame::{Frame, Payload, split_frame},
    message::{
        BackendMessage, BindParams, FrontendMessage, RowField, StartupPacket, parameter_types,
    },
};

/// Frames bigger than this are refused by the fuzz targets' reader (the
/// daemon's is 64 MiB; a smaller bound keeps executions fast while every
/// length check is still exercised).
const MAX_FRAME: usize = 64 * 1024;

/// A connection's client bytes: one startup packet, then tagged frames,
/// each decoded as the daemon would (frontend), and as server bytes too.
pub fn pg_frames(data: &[u8]) {
    let mut buf = BytesMut::from(data);
    let mut tagged = false;
    while let Ok(Some(frame)) = split_frame(&mut buf, tagged, MAX_FRAME) {
        if tagged {
            frontend(&frame);
            backend(&frame);
        } else {
            startup(&frame);
            tagged = true;
        }
    }
}

/// One startup-phase packet (the length prefix is written here, so every
/// input reaches the decoder).
pub fn pg_startup(data: &[u8]) {
    let len = u32::try_from(data.len().saturating_add(4)).unwrap_or(u32::MAX);
    let mut raw = BytesMut::with_capacity(data.len() + 4);
    raw.extend_from_slice(&len.to_be_bytes());
    raw.extend_from_slice(data);
    startup(&Frame::from_raw(0, raw.freeze()));
}

/// One tagged message (first byte: the type), as client and as server message.
pub fn pg_message(data: &[u8]) {
    let Some((&tag, body)) = data.split_first() else {
        return;
    };
    let frame = Payload::new(tag).bytes(body).finish();
    frontend(&frame);
    backend(&frame);
}

fn startup(frame: &Frame) {
    if let Ok(m) = StartupPacket::decode(frame) {
        let again = StartupPacket::decode(&m.encode());
        assert_eq!(again.as_ref().ok(), Some(&m), "startup re-encoding");
    }
}

fn frontend(frame: &Frame) {
    let Ok(m) = FrontendMessage::decode(frame) else {
        return;
    };
    if let FrontendMessage::Bind { rest, .. } = &m {
        let _ = BindParams::parse(rest.clone());
    }
    if let FrontendMessage::FunctionCall { rest, .. } = &m {
        let _ = BindParams::parse_call(rest.clone());
    }
    let again = FrontendMessage::decode(&m.encode());
    assert_eq!(again.as_ref().ok(), Some(&m), "frontend re-encoding");
}

fn backend(frame: &Frame) {
    let Ok(m) = BackendMessage::decode(frame) else {
        return;
    };
    match &m {
        BackendMessage::RowDescription(body) => {
            let _ = RowField::parse_all(body.clone());
        }
        BackendMessage::ParameterDescription(body) => {
            let _ = parameter_types(body.clone());
        }
        BackendMessage::ErrorResponse(f) | BackendMessage::NoticeResponse(f) => {
            let _ = (f.code(), f.error_frame(), f.notice_frame());
        }
        _ => {}
    }
    let again = BackendMessage::decode(&m.encode());
    assert_eq!(again.as_ref().ok(), Some(&m), "backend re-encoding");
}

/// SQL text (valid UTF-8, as the session hands it over after decoding the
/// client's encoding): classified and redacted.
pub fn sql(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = classify::classify(text);
    let _ = classify::redact(text);
}

/// An SFTP session: `data` is a script of chunks, each `[side][len][bytes]`
/// (side even: client to server, odd: server to client), fed to the
/// tracker as the channel relay does.
pub fn sftp(data: &[u8]) {
    crate::ssh::fuzz_sftp(data);
}

/// Seeds for every target, by target name: messages the unit and
/// integration tests exchange, encoded with the daemon's own encoders.
pub fn seeds() -> Vec<(&'static str, Vec<u8>)> {
    let mut out = Vec::new();
    let startup = StartupPacket::Startup {
        minor: 0,
        params: vec![
            ("user".into(), "alice".into()),
            ("database".into(), "app".into()),
            ("application_name".into(), "psql".into()),
            ("client_encoding".into(), "UTF8".into()),
        ],
    };
    let cancel = StartupPacket::Cancel {
        pid: 4711,
        secret: Bytes::from_static(&[1, 2, 3, 4]),
    };
    for p in [
        startup.clone(),
        StartupPacket::Ssl,
        StartupPacket::GssEnc,
        cancel,
    ] {
        let raw = p.encode().raw().clone();
        out.push(("pg_startup", raw.get(4..).unwrap_or_default().to_vec()));
    }
    let client: Vec<Frame> = [
        "SELECT 1",
        "SELECT email FROM users WHERE id = 1",
        "BEGIN; UPDATE accounts SET balance = balance - 1; COMMIT",
    ]
    .iter()
    .map(|q| Payload::new(b'Q').cstr(q).finish())
    .chain([
        Payload::new(b'P')
            .cstr("s1")
            .cstr("SELECT $1::int")
            .i16(1)
            .i32(23)
            .finish(),
        Payload::new(b'B')
            .cstr("")
            .cstr("s1")
            .i16(0)
            .i16(1)
            .i32(1)
            .bytes(b"7")
            .i16(0)
            .finish(),
        Payload::new(b'D').u8(b'P').cstr("").finish(),
        Payload::new(b'E').cstr("").i32(0).finish(),
        Payload::new(b'S').finish(),
        Payload::new(b'd').bytes(b"1\tone\n").finish(),
        Payload::new(b'c').finish(),
        Payload::new(b'X').finish(),
    ])
    .collect();
    let server: Vec<Frame> = vec![
        Payload::new(b'R').i32(0).finish(),
        Payload::new(b'R')
            .i32(10)
            .cstr("SCRAM-SHA-256")
            .u8(0)
            .finish(),
        Payload::new(b'S')
            .cstr("client_encoding")
            .cstr("UTF8")
            .finish(),
        Payload::new(b'K').i32(4711).i32(42).finish(),
        Payload::new(b'T')
            .i16(1)
            .cstr("email")
            .i32(16384)
            .i16(2)
            .i32(25)
            .i16(-1)
            .i32(-1)
            .i16(0)
            .finish(),
        Payload::new(b'D')
            .i16(2)
            .i32(3)
            .bytes(b"a@b")
            .i32(-1)
            .finish(),
        Payload::new(b'C').cstr("SELECT 1").finish(),
        Payload::new(b'E')
            .u8(b'S')
            .cstr("ERROR")
            .u8(b'C')
            .cstr("42P01")
            .u8(b'M')
            .cstr("relation \"t\" does not exist")
            .u8(0)
            .finish(),
        Payload::new(b'Z').u8(b'I').finish(),
    ];
    for f in client.iter().chain(&server) {
        // pg_message takes the tag, then the body.
        let mut m = vec![f.tag()];
        m.extend_from_slice(&f.body());
        out.push(("pg_message", m));
    }
    let mut conversation = startup.encode().raw().to_vec();
    for f in &client {
        conversation.extend_from_slice(f.raw());
    }
    out.push(("pg_frames", conversation));
    for sql in SQL_SEEDS {
        out.push(("sql", sql.as_bytes().to_vec()));
    }
    out.extend(crate::ssh::sftp_seeds().into_iter().map(|s| ("sftp", s)));
    out
}

/// Statements from the classifier's and the proxy's tests.
const SQL_SEEDS: &[&str] = &[
    "SELECT 1",
    "select * from users where email = 'a@b.c'",
    "INSERT INTO t(a) VALUES (1) RETURNING id",
    "UPDATE accounts SET balance = 0 WHERE id = $1",
    "DELETE FROM sessions",
    "TRUNCATE audit_log",
    "DROP TABLE IF EXISTS t CASCADE",
    "CREATE TABLE t (id serial primary key, body text)",
    "ALTER TABLE t ADD COLUMN x int",
    "GRANT ALL ON t TO public",
    "COPY t FROM STDIN WITH (FORMAT csv)",
    "COPY (SELECT * FROM t) TO PROGRAM 'cat'",
    "SELECT pg_read_file('/etc/passwd')",
    "DO $$ BEGIN PERFORM 1; END $$",
    "WITH d AS (DELETE FROM t RETURNING *) SELECT * FROM d",
    "PREPARE p AS SELECT $1; EXECUTE p(1)",
    "SET ROLE admin",
    "SET SESSION AUTHORIZATION postgres",
    "BEGIN; SELECT 1; COMMIT;",
    "SELECT 'a\\''; DROP TABLE t; --'",
    "SELECT E'\\x41', U&'\\0041', $tag$ x $tag$",
    "/* payments. */ SELECT card FROM payments",
    "SELECT 1 IN (1,1,1,1,1,1,1,1)",
    "CALL proc(1, 'two')",
    "LISTEN channel; NOTIFY channel, 'x'",
    "VACUUM ANALYZE t",
];

#[cfg(test)]
mod tests {
    use super::*;

    /// The seed files in `fuzz/seeds/` are what [`seeds`] makes;
    /// `INTERLOCK_WRITE_SEEDS=1` writes them anew.
    #[test]
    fn seed_files_match_the_seeds() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/seeds");
        let write = std::env::var_os("INTERLOCK_WRITE_SEEDS").is_some();
        let mut counts = std::collections::HashMap::<&str, usize>::new();
        for (target, bytes) in seeds() {
            let n = counts.entry(target).or_default();
            let path = root.join(target).join(format!("seed-{n:03}"));
            *n += 1;
            if write {
                std::fs::create_dir_all(path.parent().unwrap()).unwrap();
                std::fs::write(&path, &bytes).unwrap();
            } else {
                assert_eq!(std::fs::read(&path).ok(), Some(bytes), "{}", path.display());
            }
        }
        for target in ["pg_frames", "pg_startup", "pg_message", "sql", "sftp"] {
            assert!(counts.get(target).is_some_and(|n| *n > 0), "{target}");
        }
    }

    #[test]
    fn every_seed_runs_through_its_target() {
        for (target, bytes) in seeds() {
            match target {
                "pg_frames" => pg_frames(&bytes),
                "pg_startup" => pg_startup(&bytes),
                "pg_message" => pg_message(&bytes),
                "sql" => sql(&bytes),
                "sftp" => sftp(&bytes),
                other => panic!("seed for unknown target {other}"),
            }
        }
    }
}
