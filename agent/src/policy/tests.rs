//! Rule evaluation tables: scopes, conflict resolution, every condition
//! kind, defaults; and rule validation errors with their positions.

use std::path::Path;

use super::Request;
use super::*;
use crate::identity::ExeTrust;

/// A policy with two targets and `rules` (one YAML flow mapping each).
fn policy_of(rules: &[&str]) -> Policy {
    policy(
        &rules
            .iter()
            .map(|r| format!("  - {r}\n"))
            .collect::<String>(),
    )
}

fn policy(rules: &str) -> Policy {
    let text = format!(
        "version: 1\nidentity:\n  runners: ['**/gitlab-runner']\n  issuers:\n    - {{name: gl, issuer: 'https://gitlab.example', audience: interlock, jwks_file: /nonexistent}}\ntargets:\n  - {{name: pg, protocol: tcp, match: [{{port: 5432}}]}}\n  - {{name: other, protocol: tcp, default: block, match: [{{port: 1}}]}}\nrules:\n{rules}"
    );
    parse(Path::new("t.yaml"), &text).unwrap_or_else(|e| panic!("{e}\n{text}"))
}

fn ci_subject() -> Subject {
    Subject {
        uid: 1001,
        user: Some("ci".into()),
        exe: Some("/usr/bin/psql".into()),
        exe_trust: ExeTrust::Trusted,
        argv: vec!["psql".into(), "-h".into(), "db".into()],
        ancestor_exes: vec!["/bin/bash".into(), "/usr/bin/gitlab-runner".into()],
        ancestor_trust: vec![ExeTrust::Trusted, ExeTrust::Trusted],
        cgroup: Some("/system.slice/gitlab-runner.service".into()),
        ci: [("CI_PROJECT_PATH".to_string(), "infra/deploy".to_string())].into(),
        ci_unavailable: None,
        unknown: Default::default(),
        job: None,
        ssh_login: None,
    }
}

fn stmt(classes: &[StatementClass], text: &str) -> Request {
    Request::Statement {
        text: text.into(),
        classes: classes.to_vec(),
        opaque: None,
    }
}

fn decide(p: &Policy, target: &str, s: &Subject, r: &Request) -> (String, Option<String>) {
    let d = p.decide(p.target_named(target).unwrap(), s, r);
    let a = match d.action {
        Action::Allow => "allow",
        Action::Block { .. } => "block",
        Action::RequireApproval(_) => "hold",
    };
    (a.to_string(), d.rule)
}

const APPROVE: &str = "approval: {approvers: {users: [alice]}}";

#[test]
fn most_restrictive_wins_and_ties_go_to_the_first() {
    let p = policy_of(&[
        "{name: allow-all, action: allow, match: {statement: [read, write, drop_table]}}",
        &format!(
            "{{name: hold-writes, action: require_approval, {APPROVE}, match: {{statement: [write]}}}}"
        ),
        &format!(
            "{{name: hold-writes-2, action: require_approval, {APPROVE}, match: {{statement: [write]}}}}"
        ),
        "{name: no-drops, action: block, match: {statement: [drop_table]}}",
    ]);
    let s = ci_subject();
    let cases = [
        (&[StatementClass::Read][..], "allow", Some("allow-all")),
        (&[StatementClass::Write][..], "hold", Some("hold-writes")),
        (
            &[StatementClass::Write, StatementClass::DropTable][..],
            "block",
            Some("no-drops"),
        ),
        (&[StatementClass::Ddl][..], "allow", None),
    ];
    for (classes, action, rule) in cases {
        let got = decide(&p, "pg", &s, &stmt(classes, "x"));
        assert_eq!(
            got,
            (action.to_string(), rule.map(String::from)),
            "{classes:?}"
        );
    }
}

#[test]
fn scopes_keep_session_rules_off_statements_and_back() {
    let p = policy_of(&[
        "{name: block-bob, action: block, match: {user: [bob]}}",
        "{name: no-truncate, action: block, match: {statement: [truncate]}}",
        "{name: no-rm, action: block, match: {command: '^rm '}}",
    ]);
    let mut bob = ci_subject();
    bob.user = Some("bob".into());
    assert_eq!(decide(&p, "pg", &bob, &Request::Session).0, "block");
    // A session rule does not judge statements; its session never got that far.
    assert_eq!(
        decide(&p, "pg", &bob, &stmt(&[StatementClass::Read], "x")).0,
        "allow"
    );
    let s = ci_subject();
    assert_eq!(decide(&p, "pg", &s, &Request::Session).0, "allow");
    assert_eq!(
        decide(&p, "pg", &s, &stmt(&[StatementClass::Truncate], "x")).0,
        "block"
    );
    let rm = Request::Command {
        kind: CommandKind::Exec,
        text: "rm -rf /".into(),
    };
    assert_eq!(decide(&p, "pg", &s, &rm).0, "block");
    let ls = Request::Command {
        kind: CommandKind::Exec,
        text: "ls".into(),
    };
    assert_eq!(decide(&p, "pg", &s, &ls).0, "allow");
}

#[test]
fn target_default_decides_sessions_no_rule_matched() {
    let p = policy("  - {name: allow-ci, action: allow, match: {target: [other], user: [ci]}}\n");
    let s = ci_subject();
    assert_eq!(
        decide(&p, "other", &s, &Request::Session),
        ("allow".into(), Some("allow-ci".into()))
    );
    let mut eve = s.clone();
    eve.user = Some("eve".into());
    eve.uid = 666;
    assert_eq!(
        decide(&p, "other", &eve, &Request::Session),
        ("block".into(), None)
    );
    assert_eq!(
        decide(&p, "pg", &eve, &Request::Session),
        ("allow".into(), None)
    );
}

#[test]
fn forwarding_is_blocked_unless_a_rule_allows_it() {
    let cmd = |kind, text: &str| Request::Command {
        kind,
        text: text.into(),
    };
    let forwarding = [
        CommandKind::PortForward,
        CommandKind::RemoteForward,
        CommandKind::StreamlocalForward,
        CommandKind::AgentForward,
        CommandKind::X11,
    ];
    // No rule: every forwarding kind is refused, naming the kind; other
    // commands keep the allow of their session.
    let p = policy_of(&["{name: no-rm, action: block, match: {command: '^rm'}}"]);
    let s = ci_subject();
    for kind in forwarding {
        let d = p.decide(p.target_named("pg").unwrap(), &s, &cmd(kind, "10.0.0.1:80"));
        assert_eq!(d.rule, None, "{kind:?}");
        match d.action {
            Action::Block { message } => assert!(
                message.starts_with(&format!("no rule allows {}:", kind.name())),
                "{message}"
            ),
            other => panic!("{kind:?}: {other:?}"),
        }
    }
    for kind in [
        CommandKind::Exec,
        CommandKind::Shell,
        CommandKind::FileWrite,
    ] {
        assert_eq!(
            decide(&p, "pg", &s, &cmd(kind, "ls")),
            ("allow".into(), None)
        );
    }
    // An allow rule opens exactly what it matches.
    let p = policy_of(&[
        "{name: tunnel-to-db, action: allow, match: {kind: [port_forward], command: '^10\\.0\\.0\\.1:5432$'}}",
    ]);
    assert_eq!(
        decide(
            &p,
            "pg",
            &s,
            &cmd(CommandKind::PortForward, "10.0.0.1:5432")
        ),
        ("allow".into(), Some("tunnel-to-db".into()))
    );
    assert_eq!(
        decide(&p, "pg", &s, &cmd(CommandKind::PortForward, "10.0.0.1:22")),
        ("block".into(), None)
    );
    assert_eq!(
        decide(
            &p,
            "pg",
            &s,
            &cmd(CommandKind::RemoteForward, "remote 10.0.0.1:5432")
        ),
        ("block".into(), None)
    );
}

#[test]
fn the_guardrails_example_opens_one_tunnel() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies/production-guardrails.yaml");
    let p = load(&path).unwrap();
    let s = ci_subject();
    let cmd = |kind, text: &str| Request::Command {
        kind,
        text: text.into(),
    };
    let cases = [
        (
            CommandKind::PortForward,
            "prod-db.internal:5432",
            "allow",
            Some("db-tunnel"),
        ),
        (CommandKind::PortForward, "10.30.0.7:22", "block", None),
        (
            CommandKind::AgentForward,
            "agent",
            "block",
            Some("no-reverse-forwarding"),
        ),
        (
            CommandKind::RemoteForward,
            "remote 0.0.0.0:8080",
            "block",
            Some("no-reverse-forwarding"),
        ),
        (CommandKind::Exec, "systemctl restart app", "allow", None),
    ];
    for (kind, text, action, rule) in cases {
        assert_eq!(
            decide(&p, "prod-hosts", &s, &cmd(kind, text)),
            (action.to_string(), rule.map(str::to_string)),
            "{kind:?} {text}"
        );
    }
}

#[test]
fn every_identity_condition_matches_and_mismatches() {
    let s = ci_subject();
    for (cond, hit) in [
        ("user: [ci]", true),
        ("user: [1001]", true),
        ("user: ['1001']", true),
        ("user: [root, 0]", false),
        ("exe: ['/usr/bin/*']", true),
        ("exe: ['/usr/*']", false), // `*` does not cross `/`
        ("exe: ['/usr/**']", true),
        ("argv: '-h\\s+db'", true),
        ("argv: '^pg_dump'", false),
        ("ancestor_exe: ['**/gitlab-runner']", true),
        ("ancestor_exe: ['*/github-runner']", false),
        ("cgroup: ['/system.slice/gitlab-runner*']", true),
        ("cgroup: ['/user.slice/**']", false),
        ("ci: {CI_PROJECT_PATH: 'infra/*'}", true),
        ("ci: {CI_PROJECT_PATH: 'apps/*'}", false),
        ("ci: {GITHUB_REPOSITORY: '*'}", false),
        ("target: [pg]", true),
        ("target: [other]", false),
    ] {
        let p = policy_of(&[&format!("{{name: r, action: block, match: {{{cond}}}}}")]);
        let ex = p.explain(p.target_named("pg").unwrap(), &s, &Request::Session);
        assert_eq!(ex.steps[0].applies, hit, "{cond}: {:?}", ex.steps[0]);
        if !hit {
            assert!(!ex.steps[0].why.is_empty());
        }
    }
}

#[test]
fn statement_and_command_conditions() {
    let s = ci_subject();
    for (cond, req, hit) in [
        (
            "statement: [delete_without_where]",
            stmt(
                &[StatementClass::Write, StatementClass::DeleteWithoutWhere],
                "DELETE FROM t",
            ),
            true,
        ),
        (
            "statement: [delete_without_where]",
            stmt(&[StatementClass::Write], "DELETE FROM t WHERE id=1"),
            false,
        ),
        (
            "sql: '(?i)pg_sleep'",
            stmt(&[StatementClass::Read], "select PG_SLEEP(1)"),
            true,
        ),
        (
            "sql: '(?i)pg_sleep'",
            stmt(&[StatementClass::Read], "select 1"),
            false,
        ),
        (
            "kind: [shell]",
            Request::Command {
                kind: CommandKind::Shell,
                text: String::new(),
            },
            true,
        ),
        (
            "kind: [shell]",
            Request::Command {
                kind: CommandKind::Exec,
                text: "ls".into(),
            },
            false,
        ),
        (
            "{kind: [file_write], command: '^/etc/'}",
            Request::Command {
                kind: CommandKind::FileWrite,
                text: "/etc/passwd".into(),
            },
            true,
        ),
    ] {
        let cond = cond.trim_start_matches('{').trim_end_matches('}');
        let p = policy_of(&[&format!("{{name: r, action: block, match: {{{cond}}}}}")]);
        assert_eq!(
            decide(&p, "pg", &s, &req).0 == "block",
            hit,
            "{cond} {req:?}"
        );
    }
}

#[test]
fn mask_rules_add_up_and_record_levels_apply() {
    let p = policy_of(&[
        "{name: m1, action: mask, mask: {columns: ['public.users.email'], strategy: hash}}",
        "{name: m2, action: mask, mask: {detectors: [card, 'regex:\\d{3}-\\d{2}'], strategy: partial, keep_last: 4}, match: {user: [ci]}}",
        "{name: m3, action: mask, mask: {detectors: [email]}, match: {user: [bob]}}",
        "{name: quiet, action: record, record: metadata, match: {user: [ci]}}",
    ]);
    let s = ci_subject();
    let t = p.target_named("pg").unwrap();
    let d = p.decide(t, &s, &stmt(&[StatementClass::Read], "select"));
    let rules: Vec<&str> = d.mask.iter().map(|m| m.rule.as_str()).collect();
    assert_eq!(rules, ["m1", "m2"]);
    assert_eq!(d.mask[0].spec.strategy(), Strategy::Hash);
    assert_eq!(
        d.mask[1].spec.strategy(),
        Strategy::Partial { keep_last: 4 }
    );
    assert_eq!(d.mask[1].spec.detectors()[1].name(), "regex:\\d{3}-\\d{2}");
    assert_eq!(
        p.rules()[2].mask.as_ref().unwrap().strategy(),
        Strategy::Redact
    );
    // mask rules with statement conditions still count for unknown statements
    let p2 = policy_of(&[
        "{name: m1, action: mask, mask: {detectors: [email]}, match: {statement: [read]}}",
        "{name: m2, action: mask, mask: {detectors: [card]}, match: {user: [nobody]}}",
        "{name: m3, action: mask, mask: {detectors: [jwt]}, match: {sql: 'users'}}",
    ]);
    let possible: Vec<String> = p2
        .possible_masks(p2.target_named("pg").unwrap(), &s)
        .into_iter()
        .map(|m| m.rule)
        .collect();
    assert_eq!(possible, ["m1", "m3"]);
    assert_eq!(d.action, Action::Allow);
    assert_eq!(
        p.decide(t, &s, &Request::Session).record,
        Some(RecordLevel::Metadata)
    );
}

#[test]
fn a_statement_can_raise_its_recording_level_but_never_lower_it() {
    let p = policy_of(&[
        "{name: quiet-ci, action: record, record: metadata, match: {user: [ci]}}",
        "{name: loud-ddl, action: record, record: full, match: {statement: [ddl]}}",
        "{name: loud-sql, action: record, record: full, match: {sql: 'pg_sleep'}}",
        "{name: hashed, action: mask, mask: {detectors: [email]}, record: metadata, match: {target: [other]}}",
    ]);
    let s = ci_subject();
    let pg = p.target_named("pg").unwrap();
    // The session's level comes from identity; statements keep it...
    assert_eq!(
        p.decide(pg, &s, &Request::Session).record,
        Some(RecordLevel::Metadata)
    );
    assert_eq!(
        p.decide(pg, &s, &stmt(&[StatementClass::Read], "select 1"))
            .record,
        None
    );
    // ...unless a rule on the statement raises it.
    for (classes, text) in [
        (&[StatementClass::Ddl][..], "create table t()"),
        (&[StatementClass::Read][..], "select pg_sleep(1)"),
    ] {
        let ex = p.explain(pg, &s, &stmt(classes, text));
        assert_eq!(ex.decision.record, Some(RecordLevel::Full), "{text}");
    }
    // A rule on target alone is not the job's to choose: it may lower the level.
    let other = p.target_named("other").unwrap();
    assert_eq!(
        p.decide(other, &s, &stmt(&[StatementClass::Read], "select 1"))
            .record,
        Some(RecordLevel::Metadata)
    );
    // The example policy's quiet rule is keyed on the job's token, not on
    // the statement, so a comment cannot trigger it.
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies/production-guardrails.yaml");
    let g = load(&path).unwrap();
    let prod = g.target_named("prod-db").unwrap();
    let comment = stmt(&[StatementClass::Read], "SELECT 1 /* payments. */");
    assert_eq!(g.decide(prod, &s, &comment).record, None);
    assert_eq!(g.decide(prod, &s, &Request::Session).record, None);
}

#[test]
fn unknown_identity_facts_apply_restrictions_and_grant_nothing() {
    let p = policy_of(&[
        "{name: ci-may, action: allow, match: {cgroup: ['/system.slice/**']}}",
        "{name: forks-held, action: require_approval, match: {ci: {CI_PROJECT_PATH: 'forks/*'}}, approval: {approvers: {users: [alice]}}}",
        "{name: jobs-blocked, action: block, match: {target: [pg], cgroup: ['/ci/untrusted/*']}}",
        "{name: other-only, action: block, match: {target: [other], cgroup: ['/nothing']}}",
        "{name: masked, action: mask, mask: {detectors: [email]}, match: {cgroup: ['/ci/untrusted/*']}}",
        "{name: quiet, action: record, record: metadata, match: {exe: ['/usr/bin/psql']}}",
    ]);
    let pg = p.target_named("pg").unwrap();
    // Everything known: the allow decides, nothing restricts.
    let s = ci_subject();
    assert_eq!(
        decide(&p, "pg", &s, &Request::Session),
        ("allow".into(), Some("ci-may".into()))
    );
    // The process exited before the daemon looked it up: no cgroup.
    let mut gone = ci_subject();
    gone.cgroup = None;
    gone.unknown.insert(Fact::Cgroup, "pid 40 exited".into());
    let ex = p.explain(pg, &gone, &Request::Session);
    assert_eq!(ex.decision.rule.as_deref(), Some("jobs-blocked"), "{ex:#?}");
    let why = |rule: &str| {
        let st = ex.steps.iter().find(|s| s.rule == rule).unwrap();
        (st.applies, st.why.clone())
    };
    let (applies, text) = why("ci-may");
    assert!(
        !applies && text.contains("cgroup unknown: pid 40 exited"),
        "{text}"
    );
    let (applies, text) = why("jobs-blocked");
    assert!(applies && text.contains("fail closed"), "{text}");
    // A condition known to fail still decides: the rule is about another target.
    assert!(!why("other-only").0);
    assert_eq!(
        p.decide(pg, &gone, &stmt(&[StatementClass::Read], "select 1"))
            .mask
            .len(),
        1
    );
    assert_eq!(
        p.possible_masks(pg, &gone).len(),
        1,
        "masking fails closed too"
    );
    // No CI context: the approval rule on a CI variable holds the session.
    let mut no_ctx = ci_subject();
    no_ctx.ci = Default::default();
    no_ctx.ci_unavailable = Some("the job root has exited".into());
    assert_eq!(
        decide(&p, "pg", &no_ctx, &Request::Session),
        ("hold".into(), Some("forks-held".into()))
    );
    // An unknown executable cannot lower the recording level.
    let mut unseen = ci_subject();
    unseen.exe = None;
    unseen.unknown.insert(Fact::Exe, "never seen".into());
    assert_eq!(
        p.decide(pg, &s, &Request::Session).record,
        Some(RecordLevel::Metadata)
    );
    assert_eq!(p.decide(pg, &unseen, &Request::Session).record, None);
    // Any known ancestor matching is enough, even with a gap further up.
    let anc = policy_of(&[
        "{name: runner-jobs, action: allow, match: {ancestor_exe: ['**/gitlab-runner']}}",
        "{name: from-cron, action: block, match: {ancestor_exe: ['**/cron']}}",
    ]);
    let mut gap = ci_subject();
    gap.unknown
        .insert(Fact::Ancestry, "ancestor pid 7 is unknown".into());
    assert_eq!(
        decide(&anc, "pg", &gap, &Request::Session),
        ("block".into(), Some("from-cron".into()))
    );
    assert_eq!(
        decide(&anc, "pg", &ci_subject(), &Request::Session),
        ("allow".into(), Some("runner-jobs".into()))
    );
}

/// A path that only looks like a runner's (a copy under its name, a file
/// that could not be checked) does not satisfy an allow rule; it still
/// triggers a block rule; `trusted_exe: false` goes by the path alone.
#[test]
fn allow_rules_count_only_trusted_executables() {
    let p = policy_of(&[
        "{name: runner-jobs, action: allow, match: {target: [other], ancestor_exe: ['**/gitlab-runner']}}",
        "{name: psql-ok, action: allow, match: {target: [other], exe: ['/usr/bin/psql']}}",
        "{name: by-name, action: allow, match: {target: [pg], exe: ['**/psql'], trusted_exe: false}}",
        "{name: no-fake, action: block, match: {target: [pg], ancestor_exe: ['/tmp/**']}}",
    ]);
    let copied = || ExeTrust::Untrusted {
        reason: "directory /tmp is writable by group or others".into(),
    };
    let mut fake = ci_subject();
    fake.ancestor_exes = vec!["/bin/bash".into(), "/tmp/gitlab-runner".into()];
    fake.ancestor_trust = vec![ExeTrust::Trusted, copied()];
    fake.exe_trust = copied();
    assert_eq!(
        decide(&p, "other", &fake, &Request::Session),
        ("block".into(), None)
    );
    let why = p.explain(p.target_named("other").unwrap(), &fake, &Request::Session);
    assert!(
        why.steps.iter().any(|s| s.why.contains("not trusted")),
        "{:?}",
        why.steps
    );
    assert_eq!(
        decide(&p, "other", &ci_subject(), &Request::Session),
        ("allow".into(), Some("runner-jobs".into()))
    );
    // Not checked (exited): unknown, so an allow rule does not apply.
    let mut unchecked = ci_subject();
    unchecked.ancestor_trust = vec![ExeTrust::Trusted];
    unchecked.exe_trust = ExeTrust::default();
    assert_eq!(
        decide(&p, "other", &unchecked, &Request::Session),
        ("block".into(), None)
    );
    // Block rules go by the path; an opted-out allow rule too.
    assert_eq!(
        decide(&p, "pg", &fake, &Request::Session),
        ("block".into(), Some("no-fake".into()))
    );
    let mut renamed = ci_subject();
    renamed.exe_trust = copied();
    assert_eq!(
        decide(&p, "pg", &renamed, &Request::Session),
        ("allow".into(), Some("by-name".into()))
    );
}

#[test]
fn rule_errors_name_position_and_fix() {
    let base =
        "version: 1\ntargets:\n  - {name: pg, protocol: tcp, match: [{port: 5432}]}\nrules:\n";
    for (rules, at, needle) in [
        (
            "  - name: a\n    action: require_approval\n",
            "6:13",
            "needs `approval",
        ),
        (
            "  - name: a\n    action: require_approval\n    approval: {approvers: {}}\n",
            "7:27",
            "nobody could approve",
        ),
        (
            "  - name: a\n    action: block\n    match: {target: [nope]}\n",
            "7:22",
            "target `nope`",
        ),
        (
            "  - {name: a, action: allow}\n  - {name: a, action: block}\n",
            "6:12",
            "defined twice",
        ),
        (
            "  - name: a\n    action: mask\n",
            "6:13",
            "action mask needs",
        ),
        (
            "  - name: a\n    action: allow\n    message: hi\n",
            "7:14",
            "only shown for action block",
        ),
        (
            "  - name: a\n    action: block\n    match: {statement: [read], kind: [exec]}\n",
            "7:12",
            "split it in two",
        ),
        (
            "  - name: a\n    action: record\n",
            "6:13",
            "record: full|metadata",
        ),
        (
            "  - name: a\n    action: record\n    match: {sql: 'payments'}\n    record: metadata\n",
            "8:13",
            "cannot be keyed on the request itself",
        ),
        (
            "  - name: a\n    action: block\n    match: {kind: [shell]}\n    record: metadata\n",
            "8:13",
            "cannot be keyed on the request itself",
        ),
        // Errors found by the YAML parser carry its own position.
        (
            "  - name: a\n    action: explode\n",
            "6:13",
            "unknown variant `explode`",
        ),
        (
            "  - name: a\n    action: block\n    match: {argv: '('}\n",
            "7:19",
            "invalid regex",
        ),
        (
            "  - name: a\n    action: block\n    match: {exe: ['a[']}\n",
            "7:19",
            "invalid glob",
        ),
        (
            "  - name: a\n    action: block\n    match: {statement: [drop_everything]}\n",
            "7:25",
            "unknown variant `drop_everything`",
        ),
        (
            "  - name: a\n    action: require_approval\n    approval: {approvers: {users: [x]}, timeout: soon}\n",
            "7:50",
            "not a duration",
        ),
        (
            "  - name: a\n    action: require_approval\n    approval: {approvers: {users: [x]}, grant: forever}\n",
            "7:48",
            "expected `once`, `session`",
        ),
        (
            "  - name: a\n    action: mask\n    mask: {detectors: [ssn]}\n",
            "7:23",
            "unknown detector `ssn`",
        ),
        (
            "  - name: a\n    action: mask\n    mask: {columns: [users.email]}\n",
            "7:21",
            "expected schema.table.column",
        ),
        (
            "  - name: a\n    action: mask\n    mask: {detectors: ['regex:(']}\n",
            "7:23",
            "invalid regex",
        ),
        (
            "  - name: a\n    action: mask\n    mask: {detectors: [email], strategy: scramble}\n",
            "7:42",
            "unknown variant `scramble`",
        ),
        (
            "  - name: a\n    action: mask\n    mask: {detectors: [email], strategy: partial}\n",
            "5:5",
            "needs `keep_last: N`",
        ),
        (
            "  - name: a\n    action: mask\n    mask: {detectors: [email], keep_last: 4}\n",
            "5:5",
            "only meaningful with `strategy: partial`",
        ),
        (
            "  - name: a\n    action: mask\n    mask: {detectors: [email], strategy: partial, keep_last: -1}\n",
            "7:62",
            "keep_last",
        ),
        (
            "  - name: a\n    action: block\n    match: {colour: red}\n",
            "7:13",
            "unknown field `colour`",
        ),
    ] {
        let text = format!("{base}{rules}");
        let err = parse(Path::new("p.yaml"), &text).unwrap_err().to_string();
        assert!(err.starts_with(&format!("p.yaml:{at}: ")), "{rules}: {err}");
        assert!(err.contains(needle), "{rules}: {err}");
    }
}

#[test]
fn target_errors_name_position() {
    let text = "version: 1\ntargets:\n  - name: pg\n    protocol: tcp\n    match: [{port: 1}]\n    upstream: {user: x}\n";
    let err = parse(Path::new("p.yaml"), text).unwrap_err().to_string();
    assert!(err.starts_with("p.yaml:6:15: "), "{err}");
    assert!(err.contains("takes no `upstream`"), "{err}");
}

#[test]
fn reloaded_policies_keep_target_ids_by_name() {
    let old = parse(
        Path::new("a"),
        "version: 1\ntargets:\n  - {name: a, protocol: tcp, match: [{port: 1}]}\n  - {name: b, protocol: tcp, match: [{port: 2}]}\n",
    )
    .unwrap();
    let mut new = parse(
        Path::new("a"),
        "version: 1\ntargets:\n  - {name: c, protocol: tcp, match: [{port: 3}]}\n  - {name: b, protocol: tcp, match: [{port: 2}]}\n",
    )
    .unwrap();
    new.keep_ids_of(&old);
    assert_eq!(
        new.target_named("b").unwrap().id,
        old.target_named("b").unwrap().id
    );
    let c = new.target_named("c").unwrap().id;
    assert!(
        old.targets().iter().all(|t| t.id != c),
        "new targets get unused ids"
    );
    assert_eq!(new.target(c).unwrap().name, "c");
}

#[test]
fn unreadable_statements_get_every_class_rules_name_unless_one_names_them() {
    use StatementClass as C;
    let opaque = Request::Statement {
        text: "do $$ begin execute q; end $$".into(),
        classes: vec![C::DoBlock, C::Opaque],
        opaque: Some("EXECUTE of a computed string at line 1".into()),
    };
    let unparseable = stmt(&[C::Unparseable], "selec 1");
    let s = ci_subject();
    // a guard that names neither: both are judged as if they deleted everything
    let guard = policy_of(&[
        "{name: reads, action: allow, match: {statement: [read]}}",
        "{name: guard, action: block, match: {statement: [delete_without_where, drop_table]}}",
    ]);
    assert_eq!(
        decide(&guard, "pg", &s, &opaque),
        ("block".into(), Some("guard".into()))
    );
    assert_eq!(
        decide(&guard, "pg", &s, &unparseable),
        ("block".into(), Some("guard".into()))
    );
    let ex = guard.explain(guard.target_named("pg").unwrap(), &s, &opaque);
    let why = &ex.steps.iter().find(|st| st.rule == "guard").unwrap().why;
    assert!(
        why.contains("classified opaque: EXECUTE of a computed string at line 1"),
        "{why}"
    );
    // only allow rules: the strictest of them decides, as for any statement
    let allow = policy_of(&["{name: reads, action: allow, match: {statement: [read]}}"]);
    assert_eq!(
        decide(&allow, "pg", &s, &opaque),
        ("allow".into(), Some("reads".into()))
    );
    // a policy that names opaque says what it wants: judged by its own classes
    let explicit = policy_of(&[
        "{name: dynamic-sql-ok, action: allow, match: {statement: [opaque]}}",
        "{name: guard, action: block, match: {statement: [delete_without_where]}}",
    ]);
    assert_eq!(
        decide(&explicit, "pg", &s, &opaque),
        ("allow".into(), Some("dynamic-sql-ok".into()))
    );
    // ...but not for unparseable text, which it does not name
    assert_eq!(
        decide(&explicit, "pg", &s, &unparseable),
        ("block".into(), Some("guard".into()))
    );
    // a rule naming opaque for someone else does not change this requester's decision
    let other = policy_of(&[
        "{name: alice-dynamic, action: allow, match: {user: [alice], statement: [opaque]}}",
        "{name: guard, action: block, match: {statement: [delete_without_where]}}",
    ]);
    assert_eq!(
        decide(&other, "pg", &s, &opaque),
        ("block".into(), Some("guard".into()))
    );
}

#[test]
fn oidc_conditions_match_verified_claims_only() {
    let claims = serde_json::json!({
        "iss": "https://gitlab.example", "sub": "project_path:infra/app:ref_type:branch:ref:main",
        "exp": 2_000_000_000u64, "ref_protected": true, "ref": "main",
        "groups": ["sre", "deploy"], "environments": ["prod", "staging"]
    });
    let p = policy_of(&["{name: r, action: block, match: {oidc: {}}}"]);
    let job = p
        .verifier()
        .explain_identity(claims.as_object().cloned().unwrap())
        .unwrap();
    let mut s = ci_subject();
    s.job = Some(std::sync::Arc::new(job));
    for (cond, hit) in [
        ("oidc: {}", true),
        ("oidc: {issuer: gl}", true),
        (
            "oidc: {sub: 'project_path:infra/*:ref_type:branch:ref:main'}",
            true,
        ),
        ("oidc: {sub: 'project_path:apps/*'}", false),
        ("oidc: {claims: {ref_protected: 'true'}}", true),
        ("oidc: {claims: {ref_protected: 'false'}}", false),
        ("oidc: {claims: {environments: 'prod'}}", true),
        ("oidc: {claims: {missing: '*'}}", false),
        ("oidc: {groups: [sre]}", true),
        ("oidc: {groups: [dba]}", false),
    ] {
        let p = policy_of(&[&format!("{{name: r, action: block, match: {{{cond}}}}}")]);
        let ex = p.explain(p.target_named("pg").unwrap(), &s, &Request::Session);
        assert_eq!(ex.steps[0].applies, hit, "{cond}: {:?}", ex.steps[0]);
    }
    // Without a verified token no oidc: rule applies; without CI context no ci: rule does.
    let p = policy_of(&["{name: r, action: allow, match: {oidc: {}}}"]);
    let ex = p.explain(
        p.target_named("pg").unwrap(),
        &ci_subject(),
        &Request::Session,
    );
    assert!(
        ex.steps[0].why.contains("no verified job token"),
        "{:?}",
        ex.steps[0]
    );
    let mut no_ctx = ci_subject();
    no_ctx.ci_unavailable = Some("no trusted runner".into());
    let p = policy_of(&["{name: r, action: allow, match: {ci: {CI_PROJECT_PATH: 'infra/*'}}}"]);
    let ex = p.explain(p.target_named("pg").unwrap(), &no_ctx, &Request::Session);
    assert!(
        ex.steps[0].why.contains("no CI context"),
        "{:?}",
        ex.steps[0]
    );
}

#[test]
fn identity_sections_are_validated_with_positions() {
    for (text, at, needle) in [
        (
            "version: 1\nidentity:\n  issuers:\n    - {name: a, issuer: 'http://gitlab.example', audience: x}\n",
            "4:",
            "not an https URL",
        ),
        (
            "version: 1\nidentity:\n  issuers:\n    - {name: a, issuer: 'https://g', audience: x, algorithms: [HS256]}\n",
            "4:",
            "asymmetric only",
        ),
        (
            "version: 1\nidentity:\n  issuers:\n    - {name: a, issuer: 'https://g', audience: []}\n",
            "4:",
            "names no audience",
        ),
        (
            "version: 1\nidentity:\n  issuers:\n    - {name: a, issuer: 'https://g', audience: x}\n    - {name: a, issuer: 'https://h', audience: x}\n",
            "5:",
            "defined twice",
        ),
        (
            "version: 1\ntargets:\n  - {name: t, protocol: ssh, job_token: required, match: [{port: 22}], upstream: {user: u, key: {file: /k}, host_key: x}}\n",
            "3:",
            "names no issuer",
        ),
        (
            "version: 1\nidentity:\n  issuers: [{name: a, issuer: 'https://g', audience: x}]\ntargets:\n  - name: t\n    protocol: postgres\n    match: [{port: 5432}]\n    upstream: {client_auth: [job_token]}\n",
            "8:",
            "give `upstream.password`",
        ),
        (
            "version: 1\nidentity:\n  issuers: [{name: a, issuer: 'https://g', audience: x}]\nrules:\n  - {name: r, action: allow, match: {oidc: {issuer: b}}}\n",
            "5:",
            "issuer `b`",
        ),
    ] {
        let err = parse(Path::new("t.yaml"), text).unwrap_err().to_string();
        assert!(err.starts_with(&format!("t.yaml:{at}")), "{text}: {err}");
        assert!(err.contains(needle), "{text}: {err}");
    }
}
