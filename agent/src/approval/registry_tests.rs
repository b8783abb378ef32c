use std::path::Path;

use super::*;
use crate::{
    approval::{RequestView, Requester},
    policy::{ApprovalSpec, Approvers},
};

fn registry() -> (Approvals, tokio::sync::mpsc::Receiver<crate::audit::Queued>) {
    let (events, rx) = EventSink::for_test();
    (
        Approvals::new(events, Notifier::default(), Path::new("/run/x.sock")),
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
            ci: Default::default(),
        },
        approval: ApprovalSpec {
            approvers: Approvers {
                users: vec!["alice".into()],
                groups: vec!["sre".into()],
            },
            timeout,
            grant,
        },
    }
}

fn peer(uid: u32, user: &str, groups: &[&str], cgroup: &str) -> LocalPeer {
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
        kinds.push(
            serde_json::to_value(&e.event).unwrap()["type"]
                .as_str()
                .unwrap()
                .to_string(),
        );
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
async fn timed_grants_cover_the_same_requester_only() {
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
    assert!(reg.granted("hold-writes", "pg", 1001, Some("/ci/job1")));
    assert!(!reg.granted("hold-writes", "pg", 1001, Some("/ci/job2")));
    assert!(!reg.granted("hold-writes", "other", 1001, Some("/ci/job1")));
    assert!(!reg.granted("other-rule", "pg", 1001, Some("/ci/job1")));
}

#[tokio::test]
async fn an_unreadable_caller_cgroup_is_refused_when_the_requester_has_one() {
    let (reg, _rx) = registry();
    let held = reg.hold(spec(Grant::Once, Duration::from_secs(60))).await;
    let mut alice = peer(2000, "alice", &[], "/user");
    alice.cgroup = None;
    let e = reg
        .decide(&held.approval_id, &alice, true, None)
        .await
        .unwrap_err();
    assert!(e.to_string().contains("cannot be read"), "{e}");
    assert_eq!(e.http_status(), 403);
    // Neither cgroup known: uid and approver list decide.
    let mut s = spec(Grant::Once, Duration::from_secs(60));
    s.requester.cgroup = None;
    let held = reg.hold(s).await;
    reg.decide(&held.approval_id, &alice, true, None)
        .await
        .unwrap();
    assert!(matches!(held.outcome().await, HoldOutcome::Approved { .. }));
}

#[tokio::test]
async fn held_requests_are_shown_to_the_approvers_captured_with_them() {
    let (reg, _rx) = registry();
    let held = reg.hold(spec(Grant::Once, Duration::from_secs(60))).await;
    let id = held.approval_id.clone();
    let alice = peer(2000, "alice", &[], "/user");
    let bob = peer(2002, "bob", &["sre"], "/user");
    let mallory = peer(2001, "mallory", &["dev"], "/user");
    let root = peer(0, "root", &[], "/user");
    // Whatever the policy in force says now (a reload may have dropped the rule).
    for p in [&alice, &bob, &root] {
        let list = reg.list_for(p, false).unwrap();
        assert_eq!(list.len(), 1, "{p:?}");
        assert!(matches!(reg.show_for(&id, p), Ok(Ok(_))), "{p:?}");
    }
    assert!(reg.list_for(&mallory, false).is_none());
    let e = reg.show_for(&id, &mallory).unwrap_err();
    assert!(matches!(e, ApprovalError::NotApprover { .. }), "{e}");
    // An approver of another rule in force sees an empty list, not this hold.
    assert_eq!(reg.list_for(&mallory, true).unwrap().len(), 0);
    assert!(matches!(
        reg.show_for("0123456789ab", &alice),
        Err(ApprovalError::NotFound(_))
    ));
    // Decided requests stay visible to their approvers for `show`.
    reg.decide(&id, &alice, false, None).await.unwrap();
    assert!(matches!(reg.show_for(&id, &bob), Ok(Err(_))));
    assert!(reg.list_for(&bob, false).unwrap().is_empty());
}
