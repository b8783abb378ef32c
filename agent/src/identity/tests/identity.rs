//! Ancestry and whole identities over a fake proc tree.

use super::fake::FakeProc;
use crate::identity::{CiSource, JobRootSpec, ProcessEvent, ProcessTable};

/// The fake tree's executables are links to files that do not exist, so the file check
/// (`exefile.rs`, tested there and through the daemon) is off here.
fn runner_spec() -> JobRootSpec {
    JobRootSpec::new(&["/usr/bin/p10".into()], vec!["ID_TOKEN".into()])
        .unwrap()
        .any_file(true)
}

type TestResult = Result<(), Box<dyn std::error::Error>>;

/// init(1) -> runner(10) -> bash(20) -> psql(30)
fn tree(fake: &FakeProc) -> std::io::Result<()> {
    fake.process(1, 0)?;
    fake.process(10, 1)?
        .environ(b"GITHUB_REPOSITORY=org/repo\0GITHUB_RUN_ID=runner\0RUNNER_TOKEN=hush\0")?;
    fake.process(20, 10)?.environ(b"GITHUB_RUN_ID=7\0")?;
    fake.process(30, 20)?
        .ids(0, 0)?
        .cmdline(&["psql", "-h", "db"])?
        .cgroup("12:memory:/x\n0::/system.slice/runner.service\n")?;
    Ok(())
}

#[test]
fn ancestry_is_parent_first_up_to_init() -> TestResult {
    let fake = FakeProc::new()?;
    tree(&fake)?;
    let mut t = ProcessTable::new(fake.root().to_path_buf(), 16);
    let chain: Vec<u32> = t.ancestry(30, 10).iter().map(|a| a.tgid).collect();
    assert_eq!(chain, vec![20, 10, 1]);
    let bounded: Vec<u32> = t.ancestry(30, 2).iter().map(|a| a.tgid).collect();
    assert_eq!(bounded, vec![20, 10]);
    assert!(t.ancestry(30, 0).is_empty());
    assert!(t.ancestry(999, 10).is_empty(), "unknown process");
    let first = t.ancestry(30, 1);
    assert_eq!(
        first.first().and_then(|a| a.exe.as_deref()),
        Some("/usr/bin/p20")
    );
    Ok(())
}

#[test]
fn missing_ancestor_ends_the_chain_with_its_tgid() -> TestResult {
    let fake = FakeProc::new()?;
    fake.process(40, 33)?;
    let mut t = ProcessTable::new(fake.root().to_path_buf(), 16);
    let chain = t.ancestry(40, 10);
    assert_eq!(chain.len(), 1);
    assert_eq!(
        chain.first().map(|a| (a.tgid, a.exe.is_none())),
        Some((33, true))
    );
    Ok(())
}

#[test]
fn ppid_cycles_terminate() -> TestResult {
    let fake = FakeProc::new()?;
    fake.process(50, 51)?;
    fake.process(51, 50)?;
    let mut t = ProcessTable::new(fake.root().to_path_buf(), 16);
    let chain: Vec<u32> = t.ancestry(50, 100).iter().map(|a| a.tgid).collect();
    assert_eq!(chain, vec![51]);
    Ok(())
}

#[test]
fn identity_gathers_everything() -> TestResult {
    let fake = FakeProc::new()?;
    tree(&fake)?;
    let passwd = fake.file("passwd", b"root:x:0:0:root:/root:/bin/bash\n")?;
    let mut t = ProcessTable::new(fake.root().to_path_buf(), 16).with_passwd_path(passwd);
    // The runner (10) starts the job root (20): fork, one exec.
    t.apply(ProcessEvent::Fork {
        child_tgid: 20,
        parent_tgid: 10,
        uid: 1000,
        gid: 1000,
        comm: "p20".into(),
    });
    t.apply(ProcessEvent::Exec {
        tgid: 20,
        uid: 1000,
        gid: 1000,
        comm: "p20".into(),
        filename: "/usr/bin/p20".into(),
        argv: vec!["p20".into()],
    });
    let id = t.identity(30, 31, 10, &runner_spec());
    assert_eq!(
        (id.tgid, id.pid, id.ppid, id.uid, id.gid),
        (30, 31, 20, 0, 0)
    );
    assert_eq!(id.user.as_deref(), Some("root"));
    assert_eq!(id.comm, "p30");
    assert_eq!(id.exe.as_deref(), Some("/usr/bin/p30"));
    assert_eq!(id.argv, vec!["psql", "-h", "db"]);
    assert_eq!(id.cgroup.as_deref(), Some("/system.slice/runner.service"));
    assert_eq!(id.ancestry.len(), 3);
    let ci: Vec<(&str, &str)> = id
        .ci
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    assert_eq!(
        ci,
        vec![("GITHUB_RUN_ID", "7")],
        "only the job root's (20) variables, not the runner's"
    );
    assert!(matches!(
        id.ci_source,
        CiSource::JobRoot {
            runner_tgid: 10,
            job_root_tgid: 20,
            ..
        }
    ));
    let json = serde_json::to_string(&id)?;
    assert!(!json.contains("hush") && !format!("{id:?}").contains("hush"));
    Ok(())
}

#[test]
fn exited_process_does_not_borrow_a_reused_pids_files() -> TestResult {
    let fake = FakeProc::new()?;
    tree(&fake)?;
    let passwd = fake.file("passwd", b"")?;
    let mut t = ProcessTable::new(fake.root().to_path_buf(), 16).with_passwd_path(passwd);
    t.seed_from_proc()?;
    t.apply(ProcessEvent::Exit { tgid: 30 });
    fake.remove(30)?;
    let id = t.identity(30, 30, 10, &JobRootSpec::default());
    assert_eq!(
        id.exe.as_deref(),
        Some("/usr/bin/p30"),
        "attributed from the table"
    );
    assert_eq!(id.user, None);
    assert_eq!(id.cgroup, None);
    assert!(id.ci.is_empty(), "no runner configured: no CI context");
    Ok(())
}

#[test]
fn unknown_gone_process_keeps_only_its_ids() -> TestResult {
    let fake = FakeProc::new()?;
    let mut t = ProcessTable::new(fake.root().to_path_buf(), 16);
    let id = t.identity(77, 78, 10, &runner_spec());
    assert_eq!((id.tgid, id.pid), (77, 78));
    assert_eq!((id.uid, id.gid), (u32::MAX, u32::MAX));
    assert!(id.exe.is_none() && id.argv.is_empty() && id.ancestry.is_empty());
    assert!(id.cgroup.is_none() && id.user.is_none() && id.ci.is_empty());
    assert!(t.is_empty());
    Ok(())
}

/// The attack of issue 17: a job's child sets the variable a rule keys on. Only the job
/// root's value counts, and a job root that exec'd again (possibly with a new environment)
/// gives no context at all.
#[test]
fn a_jobs_descendants_cannot_set_its_ci_context() -> TestResult {
    let fake = FakeProc::new()?;
    fake.process(1, 0)?;
    fake.process(10, 1)?.exe("/opt/runner/bin/Runner.Worker")?;
    fake.process(20, 10)?
        .environ(b"GITHUB_REF=refs/heads/feature\0ID_TOKEN=root-token\0")?;
    fake.process(30, 20)?
        .environ(b"GITHUB_REF=refs/heads/main\0ID_TOKEN=child-token\0")?;
    let spec =
        JobRootSpec::new(&["**/Runner.Worker".into()], vec!["ID_TOKEN".into()])?.any_file(true);
    let mut t = ProcessTable::new(fake.root().to_path_buf(), 16);
    t.seed_from_proc()?;
    // Seeded processes' exec history is unknown: fail closed.
    let (id, token) = t.attribute(30, 30, 10, &spec);
    assert!(id.ci.is_empty() && token.is_none(), "{:?}", id.ci_source);
    // The runner forks the job root, which execs once; the job forks its child.
    let fork = |child, parent| ProcessEvent::Fork {
        child_tgid: child,
        parent_tgid: parent,
        uid: 1000,
        gid: 1000,
        comm: "x".into(),
    };
    let exec = |tgid, file: &str| ProcessEvent::Exec {
        tgid,
        uid: 1000,
        gid: 1000,
        comm: "x".into(),
        filename: file.into(),
        argv: vec![file.into()],
    };
    t.apply(fork(20, 10));
    t.apply(exec(20, "/bin/bash"));
    t.apply(fork(30, 20));
    t.apply(exec(30, "/usr/bin/psql"));
    let (id, token) = t.attribute(30, 30, 10, &spec);
    assert_eq!(
        id.ci.get("GITHUB_REF").map(String::as_str),
        Some("refs/heads/feature")
    );
    assert_eq!(token.as_ref().map(|t| t.expose()), Some("root-token"));
    assert!(!format!("{id:?}").contains("token"));
    // The job root execs again (`exec env GITHUB_REF=... cmd`): no context.
    t.apply(exec(20, "/usr/bin/env"));
    let (id, token) = t.attribute(30, 30, 10, &spec);
    assert!(id.ci.is_empty() && token.is_none());
    match &id.ci_source {
        CiSource::None { reason } => assert!(reason.contains("exec'd 2 times"), "{reason}"),
        other => panic!("{other:?}"),
    }
    Ok(())
}
