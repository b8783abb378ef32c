//! Several scope cgroups, nested cgroups, and a restart with fewer scopes.

use anyhow::Result;
use interlock_tests::*;

#[test]
fn several_scopes_nested_cgroups_and_dropping_a_scope_on_restart() -> Result<()> {
    if !privileged() {
        return Ok(());
    }
    let server = EchoServer::start("127.0.0.2:0")?;
    let dst = server.addr.to_string();
    let a = TestCgroup::new("scope-a")?;
    let b = TestCgroup::new("scope-b")?;
    // A child cgroup of scope a: inside the scope too.
    let nested_path = a.path().join("job-1");
    std::fs::create_dir(&nested_path)?;
    let mut d = Daemon::start(DaemonSpec {
        policy: tcp_policy("svc", &[("127.0.0.2", server.addr.port())]),
        scopes: vec![a.scope().into(), b.scope().into()],
        extra_args: vec![],
    })?;
    assert!(client_in(&a, &["echo", &dst, "in-a"], &[])?.ends_with("in-a"));
    assert!(client_in(&b, &["echo", &dst, "in-b"], &[])?.ends_with("in-b"));
    let nested = std::process::Command::new("/bin/sh")
        .arg("-c")
        .arg("echo $$ > \"$0\" && exec \"$@\"")
        .arg(nested_path.join("cgroup.procs"))
        .arg(testclient())
        .args(["echo", &dst, "in-nested"])
        .output()?;
    assert!(String::from_utf8_lossy(&nested.stdout).contains("in-nested"));
    let ev = d.wait_events("three sessions", |e| of_type(e, "session_ended").len() == 3)?;
    let cgroups: Vec<String> = of_type(&ev, "session_started")
        .iter()
        .filter_map(|s| {
            s["identity"]["process"]["cgroup"]
                .as_str()
                .map(str::to_string)
        })
        .collect();
    assert!(
        cgroups.contains(&format!("{}/job-1", a.scope())),
        "{cgroups:?}"
    );

    // Restart with scope b only: a's links are unpinned (detached), b's adopted.
    d.signal_and_wait(libc::SIGTERM)?;
    d.set_scopes(vec![b.scope().into()]);
    d.spawn()?;
    assert!(client_in(&a, &["echo", &dst, "a-direct"], &[])?.ends_with("a-direct"));
    assert!(client_in(&b, &["echo", &dst, "b-again"], &[])?.ends_with("b-again"));
    let ev = d.wait_events("b's second session", |e| {
        of_type(e, "session_ended").len() == 4
    })?;
    let last = of_type(&ev, "session_started")
        .last()
        .map(|s| s["identity"]["process"]["cgroup"].clone());
    assert_eq!(last, Some(b.scope().into()));
    let links = std::fs::read_dir(d.pin_dir().join("links"))?.count();
    assert_eq!(
        links, 4,
        "connect4, connect6, sock_ops and sock_release for scope b only"
    );
    std::fs::remove_dir(&nested_path)?;
    Ok(())
}
