//! Recordings and replay with the real daemon: `interlock sessions list`
//! (with its filters), `sessions show`, `replay` and their errors over the
//! audit log a daemon left behind, and the OCSF fields of session events.

use std::{path::Path, process::Command};

use anyhow::{Context as _, Result};
use interlock_tests::*;
use serde_json::Value;

/// `interlock ARGS...`: exit code, stdout, stderr.
fn interlock(args: &[&str]) -> Result<(i32, String, String)> {
    let out = Command::new(interlock_bin()?).args(args).output()?;
    Ok((
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    ))
}

/// `sessions list` lines (without the header), asserting success.
fn list(state: &str, extra: &[&str]) -> Result<Vec<String>> {
    let mut args = vec!["sessions", "list", "--state-dir", state];
    args.extend_from_slice(extra);
    let (code, out, err) = interlock(&args)?;
    assert_eq!(code, 0, "{args:?}: {err}");
    let mut lines = out.lines();
    if !extra.contains(&"--json") {
        assert!(
            lines.next().context("header")?.starts_with("SESSION"),
            "{out}"
        );
    }
    Ok(lines.map(str::to_string).collect())
}

/// The shortest prefix (at least 8 characters) of `id` no other id shares.
fn unique_prefix<'a>(id: &'a str, all: &[&str]) -> &'a str {
    (8..id.len())
        .filter_map(|n| id.get(..n))
        .find(|p| all.iter().filter(|o| o.starts_with(p)).count() == 1)
        .unwrap_or(id)
}

#[test]
fn sessions_list_show_and_replay_read_the_audit_log() -> Result<()> {
    if !privileged() {
        return Ok(());
    }
    let a = EchoServer::start("127.0.0.2:0")?;
    let b = EchoServer::start("127.0.0.2:0")?;
    let cg = TestCgroup::new("sessions")?;
    let policy = format!(
        "version: 1\nidentity:\n  runners: ['**/Runner.Worker']\ntargets:\n  - name: svc\n    protocol: tcp\n    match:\n      - {{ address: \"127.0.0.2\", port: {} }}\n  - name: other\n    protocol: tcp\n    match:\n      - {{ address: \"127.0.0.2\", port: {} }}\n",
        a.addr.port(),
        b.addr.port()
    );
    let spec = DaemonSpec {
        policy,
        scopes: vec![cg.scope().into()],
        extra_args: Vec::new(),
    };
    let mut d = Daemon::start(spec)?;
    // Invocation 1: one session to `svc`; invocation 2: two sessions to `other`.
    let marker = "marker-alpha";
    // Started by a (fake) trusted runner that gives the job its CI variables.
    let runner_dir = runner_dir("interlock-runner")?;
    let runner = fake_runner(runner_dir.path(), "Runner.Worker")?;
    let script = format!(
        "GITHUB_RUN_ID=9191 {} echo {} {marker}; true",
        testclient().display(),
        a.addr
    );
    let out = cg.command(&runner, &["-c", &script]).output()?;
    let out = String::from_utf8_lossy(&out.stdout);
    assert!(out.contains(marker), "{out}");
    let out = client_in(&cg, &["loop", &b.addr.to_string(), "2"], &[])?;
    assert_eq!(out, "done 2 0");
    let ev = d.wait_events("3 sessions", |e| of_type(e, "session_ended").len() == 3)?;
    d.signal_and_wait(libc::SIGTERM)?;

    // OCSF on the session events, and the chain with them still verifies.
    let started = of_type(&ev, "session_started");
    let ended = of_type(&ev, "session_ended");
    for (e, activity) in started
        .iter()
        .map(|e| (e, 1))
        .chain(ended.iter().map(|e| (e, 2)))
    {
        let o = &e["ocsf"];
        assert_eq!(o["class_uid"], 4001, "{e:#}");
        assert_eq!(o["category_uid"], 4);
        assert_eq!(o["activity_id"], activity);
        assert_eq!(o["type_uid"], 400100 + activity);
        assert_eq!(o["severity_id"], 1);
        assert!(
            o["time"].as_u64().context("ocsf.time")? > 1_700_000_000_000,
            "{o}"
        );
        assert!(
            e["session_id"].is_string() && e["type"].is_string(),
            "top level kept"
        );
    }
    let state = d.state_dir.display().to_string();
    let (code, out, err) = interlock(&["audit", "verify", &state])?;
    assert_eq!(code, 0, "{out}{err}");

    let id_of = |target: &str| -> Vec<String> {
        started
            .iter()
            .filter(|e| e["identity"]["target"] == target)
            .filter_map(|e| e["session_id"].as_str().map(str::to_string))
            .collect()
    };
    let (svc, other) = (id_of("svc"), id_of("other"));
    assert_eq!((svc.len(), other.len()), (1, 2));

    // list: three lines, each with its id, target, outcome and bytes.
    let lines = list(&state, &[])?;
    assert_eq!(lines.len(), 3, "{lines:#?}");
    let line_of = |id: &str| lines.iter().find(|l| l.starts_with(id)).cloned();
    let bytes = |id: &str| -> Result<(u64, u64)> {
        let e = ended
            .iter()
            .find(|e| e["session_id"] == id)
            .context("session_ended")?;
        Ok((
            e["bytes_client_to_server"].as_u64().context("up")?,
            e["bytes_server_to_client"].as_u64().context("down")?,
        ))
    };
    let (up, down) = bytes(&svc[0])?;
    assert_eq!(up, marker.len() as u64);
    let l = line_of(&svc[0]).context("svc line")?;
    let updown = format!("{up} B/{down} B");
    for want in [
        " svc ",
        "closed",
        &updown,
        "pid ",
        "/testclient",
        "GITHUB_RUN_ID=9191",
    ] {
        assert!(l.contains(want), "{want} in {l}");
    }
    for id in &other {
        let l = line_of(id).context("other line")?;
        let (u, d) = bytes(id)?;
        let updown = format!("{u} B/{d} B");
        assert!(
            l.contains(" other ") && l.contains("closed") && l.contains(&updown),
            "{l}"
        );
    }

    // Filters.
    let only = list(&state, &["--identity", marker])?;
    assert_eq!(only.len(), 1, "{only:#?}");
    assert!(only[0].starts_with(&svc[0]));
    let looped = list(&state, &["--identity", "loop"])?;
    assert_eq!(looped.len(), 2, "{looped:#?}");
    assert!(looped.iter().all(|l| l.contains(" other ")));
    assert_eq!(list(&state, &["--target", "other"])?.len(), 2);
    assert_eq!(list(&state, &["--since", "1h"])?.len(), 3);
    assert!(list(&state, &["--since", "2999-01-01T00:00:00Z"])?.is_empty());
    let json = list(&state, &["--json", "--target", "svc"])?;
    let j: Value = serde_json::from_str(json.first().context("json line")?)?;
    assert_eq!(j["session_id"], svc[0].as_str());
    assert_eq!(j["bytes_server_to_client"], down);

    // show by unique prefix.
    let all: Vec<&str> = svc.iter().chain(&other).map(String::as_str).collect();
    let prefix = unique_prefix(&svc[0], &all);
    let (code, out, err) = interlock(&["sessions", "show", prefix, "--state-dir", &state])?;
    assert_eq!(code, 0, "{err}");
    for want in [
        svc[0].as_str(),
        marker,
        "GITHUB_RUN_ID=9191",
        "/testclient",
        cg.scope(),
        "closed",
    ] {
        assert!(out.contains(want), "{want} in\n{out}");
    }

    // replay: start and end, timed, with byte counts.
    let (code, out, err) = interlock(&["replay", &svc[0], "--state-dir", &state])?;
    assert_eq!(code, 0, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 2, "{out}");
    assert!(
        lines[0].contains("+0.000s  session started by root pid"),
        "{out}"
    );
    assert!(
        lines[1].contains(&format!("session ended closed, {up} B up / {down} B down")),
        "{out}"
    );

    // Errors: one clear line, exit 1.
    for (args, want) in [
        (
            vec!["replay", "no-such-session"],
            "no session `no-such-session`",
        ),
        (
            vec!["sessions", "show", svc[0].get(..4).context("id")?],
            "ambiguous",
        ),
        (
            vec!["sessions", "list", "--since", "yesterday"],
            "--since `yesterday`",
        ),
    ] {
        let mut args = args.clone();
        args.extend(["--state-dir", &state]);
        let (code, _, err) = interlock(&args)?;
        assert_eq!(code, 1, "{args:?}");
        assert!(
            err.contains(want) && err.trim().lines().count() == 1,
            "{args:?}: {err}"
        );
    }
    let scratch = interlock_tests::scratch("no-log")?;
    let empty = scratch.path().join("state");
    let (code, _, err) = interlock(&[
        "sessions",
        "list",
        "--state-dir",
        &empty.display().to_string(),
    ])?;
    assert_eq!(code, 1);
    assert!(err.contains("no audit log"), "{err}");

    // A damaged record is refused, pointing at `audit verify`.
    let copy_dir = interlock_tests::scratch("sessions-corrupt")?;
    let copy = copy_dir.path().to_path_buf();
    std::fs::create_dir_all(copy.join("audit"))?;
    let seg = Path::new(&state).join("audit/segment-000001.jsonl");
    let text = std::fs::read_to_string(&seg)?.replacen(
        "\"outcome\":\"closed\"",
        "\"outcome\":\"error\"",
        1,
    );
    std::fs::write(copy.join("audit/segment-000001.jsonl"), text)?;
    let (code, _, err) = interlock(&[
        "sessions",
        "list",
        "--state-dir",
        &copy.display().to_string(),
    ])?;
    assert_eq!(code, 1);
    assert!(
        err.contains("interlock audit verify") && err.contains("line"),
        "{err}"
    );
    std::fs::remove_dir_all(&copy)?;
    Ok(())
}

#[test]
fn the_jsonl_sink_rotates_by_size_and_loses_no_line() -> Result<()> {
    if !privileged() {
        return Ok(());
    }
    let server = EchoServer::start("127.0.0.2:0")?;
    let cg = TestCgroup::new("rotate")?;
    // 4 KiB files, two kept: a few dozen sessions rotate several times.
    let mut d = Daemon::start(DaemonSpec::tcp(
        &cg,
        &[server.addr.port()],
        &["--events-file-kib", "4", "--events-file-keep", "2"],
    ))?;
    let reply = client_in(&cg, &["loop", &server.addr.to_string(), "12"], &[])?;
    assert_eq!(reply, "done 12 0");
    // Older lines are rotated away by design; stop so the newest are final.
    assert!(d.signal_and_wait(libc::SIGTERM)?.success());
    // The sink's contract: a file passes the limit only when it holds one
    // line (a line is never split). Lines carry the client's ancestry, so on
    // a CI runner whose parent has a long command line one line alone can be
    // larger than 4 KiB.
    for f in ["events.jsonl", "events.jsonl.1", "events.jsonl.2"] {
        let text = std::fs::read_to_string(d.state_dir.join(f))?;
        let lines = text.lines().count();
        assert!(text.ends_with('\n'), "{f} ends mid-line");
        assert!(
            lines > 0 && (text.len() <= 4096 || lines == 1),
            "{f}: {} bytes in {lines} lines",
            text.len()
        );
    }
    assert!(
        !d.state_dir.join("events.jsonl.3").exists(),
        "only two rotated files kept"
    );
    // What remains is contiguous: the seqs across the kept files have no gap.
    let seqs: Vec<u64> = d
        .events()
        .iter()
        .filter_map(|e| e["seq"].as_u64())
        .collect();
    assert!(seqs.windows(2).all(|w| w[1] == w[0] + 1), "{seqs:?}");
    Ok(())
}
