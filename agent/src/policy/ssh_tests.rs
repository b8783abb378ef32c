//! Policy tests for SSH logins and environment: who the injected credential
//! logs in as, rules on the login, and what `policy check` refuses.

use std::path::Path;

use super::Request;
use super::*;

const SSH: &str = "protocol: ssh, match: [{address: 10.0.0.5, port: 22}]";

fn parse_ssh(upstream: &str, rules: &str) -> Result<Policy, PolicyError> {
    let text = format!(
        "version: 1\ntargets:\n  - {{name: box, {SSH}, upstream: {{key: {{file: /k}}, host_key: x, {upstream}}}}}\nrules:\n{rules}"
    );
    parse(Path::new("t.yaml"), &text)
}

fn login(requested: &str, upstream: Option<&str>) -> Subject {
    Subject {
        uid: 1001,
        user: Some("ci".into()),
        ssh_login: Some(SshLogin {
            requested: requested.into(),
            upstream: upstream.map(str::to_string),
        }),
        ..Subject::default()
    }
}

fn action(p: &Policy, s: &Subject, r: &Request) -> (&'static str, Option<String>) {
    let d = p.decide(p.target_named("box").unwrap(), s, r);
    let a = match d.action {
        Action::Allow => "allow",
        Action::Block { .. } => "block",
        Action::RequireApproval(_) => "hold",
    };
    (a, d.rule)
}

#[test]
fn an_injected_credential_needs_a_fixed_or_listed_user() {
    // Neither: the job would choose (`ssh root@...`).
    let e = parse_ssh("env: []", "").unwrap_err().to_string();
    assert!(
        e.contains("target `box`") && e.contains("upstream.users") && e.contains("root@"),
        "{e}"
    );
    let e = parse_ssh("user: deploy, users: [ci]", "")
        .unwrap_err()
        .to_string();
    assert!(e.contains("not both"), "{e}");
    let e = parse_ssh("users: [ci], env: ['[']", "")
        .unwrap_err()
        .to_string();
    assert!(e.contains("upstream.env"), "{e}");
    // users/env are SSH settings.
    let e = parse(
        Path::new("t.yaml"),
        "version: 1\ntargets:\n  - {name: db, protocol: postgres, match: [{address: 10.0.0.5, port: 5432}], upstream: {users: [a]}}\n",
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("`upstream.users` is for protocol ssh"), "{e}");

    let p = parse_ssh("users: [deploy, ci]", "").unwrap();
    let t = p.target_named("box").unwrap();
    assert_eq!(t.ssh_login_user("ci").unwrap(), "ci");
    let e = t.ssh_login_user("root").unwrap_err();
    assert!(
        e.contains("`root` is not allowed on target `box` (upstream.users: deploy, ci)"),
        "{e}"
    );
    let p = parse_ssh("user: deploy", "").unwrap();
    assert_eq!(
        p.target_named("box")
            .unwrap()
            .ssh_login_user("root")
            .unwrap(),
        "deploy"
    );
}

#[test]
fn rules_match_the_login() {
    let p = parse_ssh(
        "users: [deploy, root]",
        "  - {name: no-root, match: {ssh_user: [root]}, action: block}\n  - {name: root-no-rm, match: {ssh_requested_user: ['r*'], command: '^rm '}, action: block}\n",
    )
    .unwrap();
    assert!(p.session_rules_name_login());
    let rm = Request::Command {
        kind: CommandKind::Exec,
        text: "rm -rf /".into(),
    };
    assert_eq!(
        action(&p, &login("root", Some("root")), &Request::Session),
        ("block", Some("no-root".into()))
    );
    assert_eq!(
        action(&p, &login("deploy", Some("deploy")), &Request::Session),
        ("allow", None)
    );
    assert_eq!(
        action(&p, &login("root", Some("root")), &rm),
        ("block", Some("root-no-rm".into()))
    );
    assert_eq!(action(&p, &login("deploy", Some("deploy")), &rm).0, "allow");
    // Not logged in yet: a rule on the login fails closed on an SSH target.
    let none = Subject::default();
    assert_eq!(
        action(&p, &none, &Request::Session),
        ("block", Some("no-root".into()))
    );
    // An allow rule on the login grants nothing before it is known.
    let p = parse_ssh(
        "users: [deploy]",
        "  - {name: deployers, match: {ssh_user: [deploy]}, action: allow}\n",
    )
    .unwrap();
    let p_default_block = parse(
        Path::new("t.yaml"),
        &format!(
            "version: 1\ntargets:\n  - {{name: box, {SSH}, default: block, upstream: {{key: {{file: /k}}, host_key: x, users: [deploy]}}}}\nrules:\n  - {{name: deployers, match: {{ssh_user: [deploy]}}, action: allow}}\n"
        ),
    )
    .unwrap();
    assert_eq!(
        action(&p_default_block, &none, &Request::Session).0,
        "block"
    );
    assert_eq!(
        action(
            &p_default_block,
            &login("deploy", Some("deploy")),
            &Request::Session
        ),
        ("allow", Some("deployers".into()))
    );
    // Command rules do not make sessions wait for the login.
    let p2 = parse_ssh(
        "user: deploy",
        "  - {name: c, match: {ssh_user: [root], kind: [exec]}, action: block}\n",
    )
    .unwrap();
    assert!(!p2.session_rules_name_login());
    assert!(p.session_rules_name_login());
}
