use std::path::Path;

use super::*;
use crate::{
    approval::{Channel, RequestView, Requester, SignedIn},
    oidc::{JobTokenView, TokenSource},
    policy::{ApprovalSpec, Approvers, default_four_eyes},
};

/// Records what the registry asks to record, by kind, in order.
struct Kinds(tokio::sync::mpsc::UnboundedSender<&'static str>);

impl ApprovalRecorder for Kinds {
    fn requested(&self, _: Pending) -> super::super::Recording<'_> {
        let _ = self.0.send("approval_requested");
        Box::pin(async {})
    }
    fn decided(&self, _: Decided) -> super::super::Recording<'_> {
        let _ = self.0.send("approval_decided");
        Box::pin(async {})
    }
}

fn registry() -> (
    Approvals,
    tokio::sync::mpsc::UnboundedReceiver<&'static str>,
) {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    (
        Approvals::new(Kinds(tx), Notifier::default(), Path::new("/run/x.sock")),
        rx,
    )
}

fn spec(grant: Grant, timeout: Duration) -> HoldSpec {
    HoldSpec {
        session_id: "s1".into(),
        target: "pg".into(),
        rule: "hold-writes".into(),
        request: RequestView::Statement {
            text: "DELETE FROM t".into(),
            classes: vec![],
            opaque: None,
        },
        requester: Requester {
            uid: 1001,
            user: Some("ci".into()),
            tgid: 42,
            exe: Some("/usr/bin/psql".into()),
            cgroup: Some("/ci/job1".into()),
            ci: [("CI_JOB_ID".to_string(), "101".to_string())].into(),
            job: None,
        },
        approval: ApprovalSpec {
            approvers: Approvers {
                users: vec!["alice".into()],
                groups: vec!["sre".into()],
                oidc_groups: vec!["db-owners".into()],
                oidc_emails: vec!["carol@corp.example".into()],
                oidc_subjects: vec![],
            },
            timeout,
            grant,
        },
    }
}

fn peer(uid: u32, user: &str, groups: &[&str], cgroup: &str) -> Approver {
    Approver::Local(local(uid, user, groups, cgroup))
}

fn local(uid: u32, user: &str, groups: &[&str], cgroup: &str) -> LocalPeer {
    LocalPeer {
        uid,
        gid: uid,
        pid: 7,
        user: Some(user.into()),
        groups: groups.iter().map(|g| g.to_string()).collect(),
        cgroup: Some(cgroup.into()),
    }
}

#[tokio::test]
async fn who_may_decide() {
    let (reg, _rx) = registry();
    let held = reg.hold(spec(Grant::Once, Duration::from_secs(60))).await;
    let id = held.approval_id.clone();
    let refusals = [
        (
            peer(1001, "ci", &["sre"], "/other"),
            "cannot decide its own",
        ),
        (peer(2000, "alice", &[], "/ci/job1"), "requester's cgroup"),
        (peer(2001, "mallory", &["dev"], "/user"), "not an approver"),
    ];
    for (p, needle) in refusals {
        let e = reg.decide(&id, &p, true, None).await.unwrap_err();
        assert!(e.to_string().contains(needle), "{e}");
        assert_eq!(e.http_status(), 403);
    }
    // By group membership.
    let bob = peer(2002, "bob", &["sre"], "/user");
    reg.decide(&id, &bob, false, Some("not today".into()))
        .await
        .unwrap();
    assert_eq!(
        held.outcome().await,
        HoldOutcome::Denied {
            by: "bob".into(),
            reason: Some("not today".into())
        }
    );
    let again = reg.decide(&id, &bob, true, None).await.unwrap_err();
    assert_eq!(again.http_status(), 409);
    let unknown = reg.decide("nope", &bob, true, None).await.unwrap_err();
    assert_eq!(unknown.http_status(), 404);
}

#[tokio::test(start_paused = true)]
async fn deadline_denies_and_drop_withdraws() {
    let (reg, mut rx) = registry();
    let held = reg.hold(spec(Grant::Once, Duration::from_secs(5))).await;
    assert_eq!(reg.pending_count(), 1);
    assert_eq!(held.outcome().await, HoldOutcome::Expired);
    assert_eq!(reg.pending_count(), 0);
    let held = reg.hold(spec(Grant::Once, Duration::from_secs(5))).await;
    let id = held.approval_id.clone();
    drop(held);
    tokio::task::yield_now().await;
    tokio::task::yield_now().await;
    assert_eq!(reg.pending_count(), 0);
    match reg.show(&id) {
        Some(Err(d)) => assert_eq!(d.decision, super::super::Decision::Withdrawn),
        other => panic!("{other:?}"),
    }
    let mut kinds = Vec::new();
    while let Ok(e) = rx.try_recv() {
        kinds.push(e);
    }
    assert_eq!(
        kinds,
        [
            "approval_requested",
            "approval_decided",
            "approval_requested",
            "approval_decided"
        ]
    );
}

#[tokio::test]
async fn timed_grants_cover_the_same_job_only() {
    let (reg, _rx) = registry();
    let held = reg
        .hold(spec(
            Grant::For(Duration::from_secs(3600)),
            Duration::from_secs(60),
        ))
        .await;
    let alice = peer(2000, "alice", &[], "/user");
    reg.decide(&held.approval_id, &alice, true, None)
        .await
        .unwrap();
    assert!(matches!(held.outcome().await, HoldOutcome::Approved { .. }));
    let job1 = spec(Grant::Once, Duration::from_secs(1)).requester;
    assert!(reg.granted("hold-writes", "pg", &job1));
    // The next job on the same runner: same uid, same cgroup, another job id.
    let mut job2 = job1.clone();
    job2.ci.insert("CI_JOB_ID".into(), "102".into());
    assert!(!reg.granted("hold-writes", "pg", &job2));
    assert!(!reg.granted("hold-writes", "other", &job1));
    assert!(!reg.granted("other-rule", "pg", &job1));
    // A job that cannot be identified is never covered, nor granted anything.
    let mut nobody = job1.clone();
    nobody.ci.clear();
    assert!(!reg.granted("hold-writes", "pg", &nobody));
    let mut s = spec(
        Grant::For(Duration::from_secs(3600)),
        Duration::from_secs(60),
    );
    s.requester = nobody.clone();
    let held = reg.hold(s).await;
    reg.decide(&held.approval_id, &alice, true, None)
        .await
        .unwrap();
    match reg.show(&held.approval_id) {
        Some(Err(d)) => assert_eq!(d.granted_until, None),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn an_unreadable_caller_cgroup_is_refused_when_the_requester_has_one() {
    let (reg, _rx) = registry();
    let held = reg.hold(spec(Grant::Once, Duration::from_secs(60))).await;
    let mut alice = local(2000, "alice", &[], "/user");
    alice.cgroup = None;
    let alice = Approver::Local(alice);
    let e = reg
        .decide(&held.approval_id, &alice, true, None)
        .await
        .unwrap_err();
    assert!(e.to_string().contains("cannot be read"), "{e}");
    assert_eq!(e.http_status(), 403);
}

#[tokio::test]
async fn a_requester_whose_cgroup_is_unknown_cannot_be_decided_locally() {
    // The requesting process exited before the daemon looked it up (a forked
    // child connecting on its parent's socket): any caller may be its job.
    let (reg, _rx) = registry();
    let mut s = spec(Grant::Once, Duration::from_secs(60));
    s.requester.cgroup = None;
    let held = reg.hold(s).await;
    let alice = peer(2000, "alice", &[], "/user");
    let e = reg
        .decide(&held.approval_id, &alice, true, None)
        .await
        .unwrap_err();
    assert!(
        e.to_string().contains("requester's cgroup is unknown"),
        "{e}"
    );
    assert_eq!(e.http_status(), 403);
    let mut blind = local(2000, "alice", &[], "/user");
    blind.cgroup = None;
    let e = reg
        .decide(&held.approval_id, &Approver::Local(blind), false, None)
        .await
        .unwrap_err();
    assert!(e.to_string().contains("cannot be read"), "{e}");
    // Still held: nobody decided it.
    assert!(reg.show(&held.approval_id).is_some_and(|r| r.is_ok()));
}

#[tokio::test]
async fn held_requests_are_shown_to_the_approvers_captured_with_them() {
    let (reg, _rx) = registry();
    let held = reg.hold(spec(Grant::Once, Duration::from_secs(60))).await;
    let id = held.approval_id.clone();
    let alice = local(2000, "alice", &[], "/user");
    let bob = local(2002, "bob", &["sre"], "/user");
    let mallory = local(2001, "mallory", &["dev"], "/user");
    let root = local(0, "root", &[], "/user");
    // Whatever the policy in force says now (a reload may have dropped the rule).
    for p in [&alice, &bob, &root] {
        let list = reg.list_for(p, false).unwrap();
        assert_eq!(list.len(), 1, "{p:?}");
        assert!(
            matches!(reg.show_for(&id, &Approver::Local(p.clone())), Ok(Ok(_))),
            "{p:?}"
        );
    }
    assert!(reg.list_for(&mallory, false).is_none());
    let e = reg
        .show_for(&id, &Approver::Local(mallory.clone()))
        .unwrap_err();
    assert!(matches!(e, ApprovalError::NotApprover { .. }), "{e}");
    // An approver of another rule in force sees an empty list, not this hold.
    assert_eq!(reg.list_for(&mallory, true).unwrap().len(), 0);
    assert!(matches!(
        reg.show_for("0123456789ab", &Approver::Local(alice.clone())),
        Err(ApprovalError::NotFound(_))
    ));
    // Decided requests stay visible to their approvers for `show`.
    reg.decide(&id, &Approver::Local(alice.clone()), false, None)
        .await
        .unwrap();
    assert!(matches!(
        reg.show_for(&id, &Approver::Local(bob.clone())),
        Ok(Err(_))
    ));
    assert!(reg.list_for(&bob, false).unwrap().is_empty());
}

fn signed_in(sub: &str, email: Option<&str>, user: Option<&str>, groups: &[&str]) -> Approver {
    let mut claims = std::collections::BTreeMap::new();
    if let Some(e) = email {
        claims.insert("email".to_string(), vec![e.to_string()]);
    }
    if let Some(u) = user {
        claims.insert("preferred_username".to_string(), vec![u.to_string()]);
    }
    Approver::SignedIn(
        SignedIn {
            issuer: "https://idp.example".into(),
            subject: sub.into(),
            email: email.map(str::to_string),
            name: None,
            username: user.map(str::to_string),
            groups: groups.iter().map(|g| g.to_string()).collect(),
            claims,
        },
        Channel::Web,
    )
}

fn web_registry() -> Approvals {
    let (tx, _rx) = tokio::sync::mpsc::unbounded_channel();
    Approvals::with_page(
        Kinds(tx),
        Notifier::default(),
        Path::new("/run/x.sock"),
        Some("https://approvals.example/".into()),
        default_four_eyes(),
    )
}

#[tokio::test]
async fn signed_in_approvers_by_group_and_email_and_never_the_job_starter() {
    let reg = web_registry();
    let mut s = spec(Grant::Once, Duration::from_secs(60));
    s.requester.job = Some(JobTokenView {
        source: TokenSource::PostgresPassword,
        issuer: Some("gitlab".into()),
        iss: Some("https://gitlab.example".into()),
        sub: Some("project_path:g/p:ref_type:branch:ref:main".into()),
        groups: vec![],
        claims: [
            ("user_login".to_string(), serde_json::json!("dave")),
            (
                "user_email".to_string(),
                serde_json::json!("Dave@Corp.example"),
            ),
            ("job_id".to_string(), serde_json::json!("77")),
        ]
        .into(),
        expires: None,
        error: None,
    });
    let held = reg.hold(s).await;
    let id = held.approval_id.clone();
    assert!(
        held.how_to_approve
            .contains(&format!("https://approvals.example/holds/{id}")),
        "{}",
        held.how_to_approve
    );
    assert_eq!(
        reg.hold_url(&id).unwrap(),
        format!("https://approvals.example/holds/{id}")
    );
    // Outside every list: sees nothing, may not decide.
    let outsider = signed_in("u-eve", Some("eve@corp.example"), Some("eve"), &["dev"]);
    assert!(reg.visible(&outsider).0.is_empty());
    assert!(reg.show_for(&id, &outsider).is_err());
    let e = reg.decide(&id, &outsider, true, None).await.unwrap_err();
    assert!(matches!(e, ApprovalError::NotApprover { .. }), "{e}");
    // Local approvers' names do not admit people signed in with the same name.
    let alice_web = signed_in("u-alice", None, Some("alice"), &["sre"]);
    assert!(reg.visible(&alice_web).0.is_empty());
    // The job's own starter, in the approver group: sees it, may not decide (four eyes).
    let dave = signed_in(
        "u-dave",
        Some("dave@corp.example"),
        Some("dave"),
        &["db-owners"],
    );
    assert_eq!(reg.visible(&dave).0.len(), 1);
    let e = reg.decide(&id, &dave, true, None).await.unwrap_err();
    assert!(e.to_string().contains("four eyes"), "{e}");
    assert!(e.to_string().contains("user_login=dave"), "{e}");
    // In the group but carrying none of the claims four eyes compares: cannot be told apart.
    let anon = signed_in("u-x", None, None, &["db-owners"]);
    let e = reg.may_decide(&id, &anon).unwrap_err();
    assert!(e.to_string().contains("none of"), "{e}");
    // By e-mail (case does not matter), someone else: decides.
    let carol = signed_in("u-carol", Some("Carol@corp.example"), Some("carol"), &[]);
    reg.may_decide(&id, &carol).unwrap();
    reg.decide(&id, &carol, true, Some("checked".into()))
        .await
        .unwrap();
    assert_eq!(
        held.outcome().await,
        HoldOutcome::Approved {
            by: "Carol@corp.example (web)".into(),
            reason: Some("checked".into())
        }
    );
    let Some(Err(d)) = reg.show(&id) else {
        panic!("not decided")
    };
    assert_eq!(d.channel, Some(Channel::Web));
    let v = serde_json::to_value(&d).unwrap();
    assert_eq!(v["by"]["subject"], "u-carol");
    assert_eq!(v["by"]["issuer"], "https://idp.example");
    assert_eq!(v["by"]["email"], "Carol@corp.example");
    assert_eq!(v["channel"], "web");
    assert_eq!(v["reason"], "checked");
    // Recently decided requests stay visible to their approvers.
    assert_eq!(reg.visible(&carol).1.len(), 1);
    assert!(reg.visible(&outsider).1.is_empty());
}
