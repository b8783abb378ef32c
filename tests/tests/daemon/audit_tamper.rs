//! The tamper-evident audit log with the real daemon: a cleanly stopped log
//! verifies; each kind of tampering is named by `interlock audit verify`;
//! a SIGKILL under load leaves an intact chain whose tail the restart seals.

use std::{
    collections::HashMap,
    io::Write as _,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
};

use anyhow::{Context as _, Result, bail};
use interlock_tests::*;
use serde_json::Value;

/// `interlock audit verify DIR [args]`: exit code and stdout.
fn verify(dir: &Path, args: &[&str]) -> Result<(i32, String)> {
    let out = Command::new(interlock_bin()?)
        .args(["audit", "verify"])
        .arg(dir)
        .args(args)
        .output()?;
    Ok((
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    ))
}

fn segment(state: &Path) -> PathBuf {
    state.join("audit/segment-000001.jsonl")
}

/// Every audit record, all segments in order.
fn records(state: &Path) -> Result<Vec<Value>> {
    let mut names: Vec<PathBuf> = std::fs::read_dir(state.join("audit"))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.to_string_lossy().ends_with(".jsonl"))
        .collect();
    names.sort();
    let mut out = Vec::new();
    for p in names {
        for l in std::fs::read_to_string(p)?.lines() {
            if let Ok(v) = serde_json::from_str(l) {
                out.push(v);
            }
        }
    }
    Ok(out)
}

fn sha256_hex(bytes: &[u8]) -> Result<String> {
    let mut child = Command::new("sha256sum")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .context("sha256sum")?;
    child.stdin.take().context("stdin")?.write_all(bytes)?;
    let out = child.wait_with_output()?;
    Ok(String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_string())
}

/// Recomputes a changed line's hash, as a forger who knows the format would.
fn rehash(line: &str) -> Result<String> {
    let cut = line.rfind(",\"hash\":\"").context("no hash field")?;
    let body = &line[..cut];
    Ok(format!(
        "{body},\"hash\":\"{}\"}}",
        sha256_hex(format!("{body}}}").as_bytes())?
    ))
}

/// Copies the state dir, applies `edit` to the first segment's lines,
/// verifies the copy and checks the verdict names `expect`.
fn tamper(
    state: &Path,
    name: &str,
    expect: &str,
    edit: impl FnOnce(&mut Vec<String>) -> Result<()>,
) -> Result<()> {
    let copy = state.with_file_name(format!("tampered-{name}"));
    let _ = std::fs::remove_dir_all(&copy);
    let st = Command::new("cp")
        .arg("-a")
        .arg(state)
        .arg(&copy)
        .status()?;
    assert!(st.success());
    let seg = segment(&copy);
    let mut lines: Vec<String> = std::fs::read_to_string(&seg)?
        .lines()
        .map(String::from)
        .collect();
    edit(&mut lines)?;
    std::fs::write(&seg, lines.join("\n") + "\n")?;
    let (code, out) = verify(&copy, &[])?;
    assert_eq!(code, 1, "{name}: {out}");
    assert!(
        out.contains(expect),
        "{name}: expected `{expect}` in:\n{out}"
    );
    Ok(())
}

#[test]
fn every_kind_of_tampering_is_named() -> Result<()> {
    if !privileged() {
        return Ok(());
    }
    let server = EchoServer::start("127.0.0.2:0")?;
    let dst = server.addr.to_string();
    let cg = TestCgroup::new("audit")?;
    let mut d = Daemon::start(DaemonSpec::tcp(&cg, &[server.addr.port()], &[]))?;
    for i in 0..5 {
        assert!(
            client_in(&cg, &["echo", &dst, &format!("s{i}")], &[])?.ends_with(&format!("s{i}"))
        );
    }
    d.wait_events("five sessions", |e| of_type(e, "session_ended").len() == 5)?;
    d.signal_and_wait(libc::SIGTERM)?;

    let key = Command::new(interlock_bin()?)
        .args(["audit", "pubkey", "--state-dir"])
        .arg(&d.state_dir)
        .output()?;
    let key = String::from_utf8_lossy(&key.stdout).trim().to_string();
    assert_eq!(key.len(), 64, "{key}");
    let (code, out) = verify(&d.state_dir, &["--pubkey", &key])?;
    assert_eq!(code, 0, "{out}");
    assert!(
        out.starts_with("ok: ") && out.contains(&format!("signed by {key}")),
        "{out}"
    );
    assert!(
        !out.contains("unsealed"),
        "a clean stop seals everything: {out}"
    );

    let lines: Vec<String> = std::fs::read_to_string(segment(&d.state_dir))?
        .lines()
        .map(String::from)
        .collect();
    let n = lines.len();
    assert!(n >= 12, "{n} records");
    let last: Value = serde_json::from_str(&lines[n - 1])?;
    assert_eq!(
        last["type"], "checkpoint",
        "the final record is the shutdown checkpoint"
    );
    assert_eq!(last["seq"], n, "one segment, seq = line number");
    // A session_started record in the middle: line m, seq m.
    let m = 1
        + lines
            .iter()
            .position(|l| l.contains("\"type\":\"session_started\""))
            .context("no session_started")?
        + 2;
    let at = |kind: &str, line: usize, seq: usize| {
        format!("{kind} at segment-000001.jsonl line {line} (seq {seq})")
    };
    let st = &d.state_dir;
    tamper(st, "edit", &at("edited", m, m), |l| {
        l[m - 1] = l[m - 1].replacen("\"host\":\"", "\"host\":\"x", 1);
        Ok(())
    })?;
    tamper(st, "delete", &at("deleted", m, m + 1), |l| {
        l.remove(m - 1);
        Ok(())
    })?;
    tamper(st, "swap", &at("reordered", m, m + 1), |l| {
        l.swap(m - 1, m);
        Ok(())
    })?;
    tamper(st, "insert", &at("inserted", m, m), |l| {
        let forged = rehash(&l[m - 1].replacen("\"host\":\"", "\"host\":\"forged", 1))?;
        l.insert(m - 1, forged);
        Ok(())
    })?;
    tamper(st, "truncate", &at("truncated", n - 2, n - 2), |l| {
        l.truncate(n - 3);
        Ok(())
    })?;
    tamper(st, "signature", &at("bad signature", n, n), |l| {
        let cp = &l[n - 1];
        let i = cp.find("\"signature\":\"").context("no signature")? + 13;
        let flipped = if &cp[i..=i] == "0" { "1" } else { "0" };
        l[n - 1] = rehash(&format!("{}{flipped}{}", &cp[..i], &cp[i + 1..]))?;
        Ok(())
    })?;
    // A key other than the host's: every checkpoint is a bad signature.
    let (code, out) = verify(st, &["--pubkey", &"ab".repeat(32)])?;
    assert!(code == 1 || out.contains("is not 64 hex digits"), "{out}");
    Ok(())
}

#[test]
fn sigkill_under_load_leaves_a_chain_the_restart_seals() -> Result<()> {
    if !privileged() {
        return Ok(());
    }
    let server = EchoServer::start("127.0.0.2:0")?;
    let dst = server.addr.to_string();
    let cg = Arc::new(TestCgroup::new("auditkill")?);
    let mut d = Daemon::start(DaemonSpec::tcp(
        &cg,
        &[server.addr.port()],
        &["--audit-segment-kib", "8"],
    ))?;
    let stop = Arc::new(AtomicBool::new(false));
    let load = {
        let (cg, stop, dst) = (cg.clone(), stop.clone(), dst.clone());
        std::thread::spawn(move || {
            let mut ok = 0;
            while !stop.load(Ordering::Relaxed) {
                match client_in(&cg, &["echo", &dst, "load"], &[]) {
                    Ok(r) if r.ends_with("load") => ok += 1,
                    _ => {}
                }
            }
            ok
        })
    };
    d.wait_events("a steady stream", |e| {
        of_type(e, "session_ended").len() >= 20
    })?;
    d.signal_and_wait(libc::SIGKILL)?;
    stop.store(true, Ordering::Relaxed);
    let ok = load
        .join()
        .map_err(|_| anyhow::anyhow!("load thread panicked"))?;
    assert!(ok >= 20, "{ok} sessions");

    let (code, out) = verify(&d.state_dir, &[])?;
    assert_eq!(code, 0, "a crash is not corruption: {out}");
    // "unsealed: N records after the last checkpoint (seq A..B)", if the
    // kill did not land right after a checkpoint.
    let unsealed = out.lines().find_map(|l| {
        let range = l.strip_prefix("unsealed: ")?.split("(seq ").nth(1)?;
        let (a, b) = range.split_once("..")?;
        let b: String = b.chars().take_while(char::is_ascii_digit).collect();
        Some((a.parse::<u64>().ok()?, b.parse::<u64>().ok()?))
    });

    d.spawn()?;
    d.wait_events("restart", |e| of_type(e, "daemon_started").len() == 2)?;
    d.signal_and_wait(libc::SIGTERM)?;
    let (code, out) = verify(&d.state_dir, &[])?;
    assert_eq!(code, 0, "{out}\n{}", d.log());
    assert!(
        !out.contains("unsealed") && !out.contains("partial"),
        "{out}"
    );

    let recs = records(&d.state_dir)?;
    let sealed = of_type(&recs, "audit_tail_sealed");
    match unsealed {
        Some((a, b)) => {
            assert_eq!(sealed.len(), 1, "{out}");
            assert_eq!(
                (sealed[0]["from_seq"].as_u64(), sealed[0]["to_seq"].as_u64()),
                (Some(a), Some(b))
            );
        }
        None => assert!(sealed.is_empty(), "{sealed:?}"),
    }
    // Every session the plain event file saw is in the chain exactly once,
    // with the same seq and id.
    let mut in_chain: HashMap<u64, Vec<&Value>> = HashMap::new();
    for r in &recs {
        in_chain
            .entry(r["seq"].as_u64().context("seq")?)
            .or_default()
            .push(r);
    }
    let seqs: Vec<u64> = recs.iter().filter_map(|r| r["seq"].as_u64()).collect();
    assert_eq!(
        seqs,
        (1..=seqs.len() as u64).collect::<Vec<_>>(),
        "continuous seqs"
    );
    let started = of_type(&d.events(), "session_started")
        .into_iter()
        .cloned()
        .collect::<Vec<_>>();
    assert!(started.len() >= 20);
    for s in &started {
        let seq = s["seq"].as_u64().context("seq in events.jsonl")?;
        let r = in_chain.get(&seq).map(Vec::as_slice).unwrap_or_default();
        assert_eq!(r.len(), 1, "seq {seq}");
        assert_eq!(r[0]["id"], s["id"]);
        assert_eq!(r[0]["type"], "session_started");
    }
    let segments = std::fs::read_dir(d.state_dir.join("audit"))?
        .filter(|e| {
            e.as_ref()
                .is_ok_and(|e| e.file_name().to_string_lossy().starts_with("segment-"))
        })
        .count();
    if segments < 2 {
        bail!("expected rotation at 8 KiB, found {segments} segment(s)");
    }
    Ok(())
}
