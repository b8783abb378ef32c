//! Every event kind maps to an OCSF 1.3.0 event with the attributes its
//! class requires (the schema's `required` attributes and constraints);
//! the compact `ocsf` object of the audit record agrees with it.

use std::{collections::BTreeMap, time::SystemTime};

use serde_json::Value;

use super::*;
use crate::{
    approval::{Decided, Pending, Requester},
    audit::{DecisionView, Event, ReloadTrigger},
    gate::Side,
    identity::FlowIdentity,
    identity::{Ancestor, LocalPeer, ProcessIdentity},
    policy::{Approvers, CommandKind, Grant, Protocol, StatementClass},
};

const SID: &str = "0190f0a0-0000-7000-8000-000000000001";

fn identity() -> FlowIdentity {
    FlowIdentity {
        original_destination: "10.0.0.5:5432".parse().unwrap(),
        target: "db".into(),
        protocol: Protocol::Postgres,
        client: "127.0.0.1:51234".parse().unwrap(),
        cgroup_id: 9,
        comm: "psql".into(),
        process: ProcessIdentity {
            pid: 5121,
            tgid: 5120,
            ppid: 5101,
            uid: 1001,
            user: Some("runner".into()),
            gid: 1001,
            comm: "psql".into(),
            exe: Some("/usr/bin/psql".into()),
            exe_file: None,
            exe_trust: Default::default(),
            argv: vec!["psql".into(), "-h".into(), "10.0.0.5".into()],
            ancestry: vec![Ancestor {
                tgid: 5101,
                exe: Some("/usr/bin/bash".into()),
                argv: vec!["bash".into(), "deploy.sh".into()],
                exe_file: None,
                exe_trust: Default::default(),
            }],
            cgroup: Some("/ci/job-42".into()),
            ci: BTreeMap::from([("GITHUB_RUN_ID".to_string(), "9191".to_string())]),
            ci_source: Default::default(),
        },
        job_token: None,
    }
}

fn decision(action: Disposition) -> DecisionView {
    DecisionView {
        action,
        rule: Some("r1".into()),
    }
}

fn pending() -> Pending {
    Pending {
        id: "0123456789ab".into(),
        session_id: SID.into(),
        target: "db".into(),
        rule: "writes-need-a-human".into(),
        request: RequestView::Statement {
            text: "DELETE FROM t".into(),
            classes: vec![StatementClass::Write],
            opaque: None,
        },
        requester: Requester {
            uid: 1001,
            user: Some("runner".into()),
            tgid: 5120,
            exe: Some("/usr/bin/psql".into()),
            cgroup: Some("/ci/job-42".into()),
            ci: BTreeMap::new(),
            job: None,
        },
        approvers: Approvers {
            users: vec!["alice".into()],
            ..Approvers::default()
        },
        grant: Grant::Session,
        requested_at: SystemTime::UNIX_EPOCH,
        deadline: SystemTime::UNIX_EPOCH,
    }
}

fn decided(decision: Decision) -> Decided {
    Decided {
        pending: pending(),
        decision,
        by: (decision == Decision::Approved).then(|| {
            crate::approval::DecidedBy::Local(LocalPeer {
                uid: 2000,
                gid: 2000,
                pid: 77,
                user: Some("alice".into()),
                groups: vec!["sre".into()],
                cgroup: Some("/user".into()),
            })
        }),
        channel: (decision == Decision::Approved).then_some(crate::approval::Channel::Cli),
        reason: Some("ticket 42".into()),
        decided_at: SystemTime::UNIX_EPOCH,
        granted_until: None,
    }
}

/// One sample of every kind (several for kinds whose class or status
/// depends on their fields), a session's start first.
fn samples() -> Vec<EventKind> {
    use EventKind as K;
    let s = || SID.to_string();
    let t = || "db".to_string();
    vec![
        K::SessionStarted {
            session_id: s(),
            identity: Box::new(identity()),
            decision: decision(Disposition::Held),
            client_leg: Some(crate::gate::ClientLeg::Tls),
            client_tls_unavailable: None,
            ssh_login: None,
        },
        K::Statement {
            session_id: s(),
            target: t(),
            text: Some("SELECT * FROM items".into()),
            params: None,
            classes: vec![StatementClass::Read],
            opaque: None,
            decision: decision(Disposition::Allowed),
            rows: Some(2),
            error: None,
            duration_ms: 3,
        },
        K::Statement {
            session_id: s(),
            target: t(),
            text: None,
            params: None,
            classes: vec![StatementClass::Write],
            opaque: None,
            decision: decision(Disposition::Approved),
            rows: None,
            error: Some("23505".into()),
            duration_ms: 3,
        },
        K::Command {
            session_id: s(),
            target: t(),
            command_kind: CommandKind::Exec,
            text: Some("uptime".into()),
            decision: decision(Disposition::Allowed),
            exit_status: Some(1),
            exit_signal: None,
            duration_ms: 5,
            reconstructed: false,
            recording: None,
        },
        K::Command {
            session_id: s(),
            target: t(),
            command_kind: CommandKind::FileWrite,
            text: Some("/srv/app/config.yml".into()),
            decision: decision(Disposition::Allowed),
            exit_status: None,
            exit_signal: None,
            duration_ms: 5,
            reconstructed: true,
            recording: None,
        },
        K::RequestBlocked {
            session_id: s(),
            target: t(),
            request: RequestView::Statement {
                text: "TRUNCATE t".into(),
                classes: vec![StatementClass::Truncate],
                opaque: None,
            },
            rule: "no-truncate".into(),
            message: "use a migration".into(),
        },
        K::RequestBlocked {
            session_id: s(),
            target: t(),
            request: RequestView::Command {
                command_kind: CommandKind::Exec,
                text: "rm -rf /".into(),
            },
            rule: "no-rm".into(),
            message: "no".into(),
        },
        K::RequestBlocked {
            session_id: s(),
            target: t(),
            request: RequestView::Session {
                destination: "10.0.0.5:5432".into(),
            },
            rule: "default".into(),
            message: "no".into(),
        },
        K::ApprovalRequested {
            session_id: s(),
            approval: Box::new(pending()),
        },
        K::ApprovalDecided {
            session_id: s(),
            approval: Box::new(decided(Decision::Approved)),
        },
        K::ApprovalDecided {
            session_id: s(),
            approval: Box::new(decided(Decision::Expired)),
        },
        K::Masked {
            session_id: s(),
            target: t(),
            rule: "mask-pii".into(),
            counts: vec![("public.users.email".into(), 3)],
        },
        K::ProtocolError {
            session_id: s(),
            target: t(),
            side: Side::Client,
            message: "message too long".into(),
        },
        K::SessionEnded {
            session_id: s(),
            target: t(),
            outcome: SessionOutcome::Closed,
            bytes_client_to_server: 812,
            bytes_server_to_client: 20480,
            duration_ms: 2515,
            error: None,
            ssh_login: None,
            ssh_env: Vec::new(),
        },
        // After its end the session is forgotten: only its id is known.
        K::SessionEnded {
            session_id: s(),
            target: t(),
            outcome: SessionOutcome::NotApproved,
            bytes_client_to_server: 0,
            bytes_server_to_client: 0,
            duration_ms: 1,
            error: Some("denied".into()),
            ssh_login: None,
            ssh_env: Vec::new(),
        },
        K::Statement {
            session_id: s(),
            target: t(),
            text: Some("SELECT 1".into()),
            params: None,
            classes: vec![StatementClass::Read],
            opaque: None,
            decision: decision(Disposition::Allowed),
            rows: None,
            error: None,
            duration_ms: 1,
        },
        K::ConnectionRefused {
            listener: "127.0.0.1:15432".parse().unwrap(),
            peer: "127.0.0.1:40022".parse().unwrap(),
            reason: "no redirect recorded".into(),
        },
        K::ConnectsRefused {
            reason: crate::audit::RefusalReason::FlowTableFull,
            count: 3,
            total: 5,
            by: None,
        },
        K::KernelIntegrity {
            finding: crate::audit::KernelFinding::LinkDetached,
            path: "/sys/fs/bpf/interlock/default/links/connect4@1".into(),
            detail: "connect4 was detached".into(),
            repaired: true,
        },
        K::PolicyReloaded {
            path: "/etc/interlock/policy.yaml".into(),
            trigger: ReloadTrigger::Sighup,
            targets: 1,
            rules: 2,
        },
        K::PolicyReloadFailed {
            path: "/etc/interlock/policy.yaml".into(),
            trigger: ReloadTrigger::FileChange,
            error: "p.yaml:3:5: bad".into(),
        },
        K::DaemonStarted {
            instance: "default".into(),
            pid: 4711,
            version: "0.1.0".into(),
            adopted_pins: false,
            ppid: 1,
            uid: 0,
            exe: Some("/usr/bin/interlock".into()),
            argv: vec!["interlock".into(), "run".into()],
        },
        K::DaemonStopped {
            instance: "default".into(),
            reason: "shutdown".into(),
            pid: 4711,
        },
        K::ProcessRecordsLost { lost: 1, total: 2 },
        K::AuditTailSealed {
            from_seq: 1,
            to_seq: 2,
        },
        K::AuditPartialRecordDropped {
            segment: "segment-000001.jsonl".into(),
            bytes: 1,
        },
        K::AuditTruncationDetected {
            checkpoint_seq: 2,
            last_seq: 1,
        },
        K::AuditWriteFailed {
            since: "2026-01-01T00:00:00.000Z".into(),
            error: "audit log /s/audit/segment-000001.jsonl: No space left on device (os error 28)"
                .into(),
            records_held: 3,
            refused_sessions: 1,
            refused_requests: 2,
        },
        K::WebhookDisabled {
            endpoint: "https://siem.example/ingest".into(),
            status: 410,
        },
        K::WebhookSpoolOverflow {
            endpoint: "https://siem.example/ingest".into(),
            dropped: 10,
            total: 12,
        },
        K::WebhookTest {
            endpoint: "https://siem.example/ingest".into(),
        },
    ]
}

/// A number per kind; a new kind breaks this match until it has a sample.
fn index(k: &EventKind) -> usize {
    use EventKind as K;
    match k {
        K::DaemonStarted { .. } => 0,
        K::DaemonStopped { .. } => 1,
        K::SessionStarted { .. } => 2,
        K::SessionEnded { .. } => 3,
        K::RequestBlocked { .. } => 4,
        K::ApprovalRequested { .. } => 5,
        K::ApprovalDecided { .. } => 6,
        K::Statement { .. } => 7,
        K::Command { .. } => 8,
        K::Masked { .. } => 9,
        K::ProtocolError { .. } => 10,
        K::PolicyReloaded { .. } => 11,
        K::PolicyReloadFailed { .. } => 12,
        K::ProcessRecordsLost { .. } => 13,
        K::ConnectionRefused { .. } => 14,
        K::AuditTailSealed { .. } => 15,
        K::AuditPartialRecordDropped { .. } => 16,
        K::AuditTruncationDetected { .. } => 17,
        K::WebhookDisabled { .. } => 18,
        K::WebhookSpoolOverflow { .. } => 19,
        K::WebhookTest { .. } => 20,
        K::ConnectsRefused { .. } => 21,
        K::AuditWriteFailed { .. } => 22,
        K::KernelIntegrity { .. } => 23,
    }
}
const KINDS: usize = 24;

/// Each sample as (native event JSON, OCSF body), mapped in order.
fn bodies() -> Vec<(Value, Value)> {
    let mut m = Mapper::default();
    samples()
        .into_iter()
        .enumerate()
        .map(|(i, kind)| {
            let mut ev = Event::now("ci-runner-7", kind);
            ev.time = "2026-01-02T03:04:05.678Z".into();
            let native = serde_json::to_vec(&ev).unwrap();
            let body = m.body(Some(i as u64 + 1), &ev, &native).unwrap();
            (
                serde_json::from_slice(&native).unwrap(),
                serde_json::from_slice(&body).unwrap(),
            )
        })
        .collect()
}

fn has(v: &Value, key: &str) -> bool {
    v.get(key).is_some_and(|x| !x.is_null())
}

/// At least one of `keys` is present in `v`.
fn any_of(v: &Value, keys: &[&str]) -> bool {
    keys.iter().any(|k| has(v, k))
}

/// The activity ids each class defines (OCSF 1.3.0), plus Other (99).
fn activities(class_uid: u64) -> &'static [u64] {
    match class_uid {
        1007 => &[1, 2, 3, 4, 5, 99],
        1008 => &[1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 99],
        3003 => &[1, 2, 99],
        4001 | 4007 => &[1, 2, 3, 4, 5, 6, 7, 99],
        6002 => &[1, 2, 3, 4, 5, 6, 7, 8, 99],
        6005 => &[1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 99],
        _ => &[],
    }
}

/// The OCSF 1.3.0 requirements of `o`'s class; `Err` names what is missing.
fn check(o: &Value) -> Result<(), String> {
    let n = |k: &str| o[k].as_u64().ok_or(format!("no `{k}`"));
    let (class, category, activity) = (n("class_uid")?, n("category_uid")?, n("activity_id")?);
    if category != class / 1000 {
        return Err(format!("category {category} of class {class}"));
    }
    if n("type_uid")? != class * 100 + activity {
        return Err("type_uid".into());
    }
    if !activities(class).contains(&activity) {
        return Err(format!("activity {activity} is not one of class {class}'s"));
    }
    if n("time")? == 0 || ![0, 1, 2, 3, 4, 5, 6, 99].contains(&n("severity_id")?) {
        return Err("time or severity".into());
    }
    if ![0, 1, 2, 99].contains(&n("status_id")?) {
        return Err("status_id".into());
    }
    let md = &o["metadata"];
    if md["version"] != OCSF_VERSION || !has(&md["product"], "vendor_name") {
        return Err("metadata.version / metadata.product.vendor_name".into());
    }
    if !has(&o["device"], "type_id") || !any_of(&o["device"], &["hostname", "ip", "name"]) {
        return Err("device".into());
    }
    if has(o, "disposition_id") && (!has(o, "action_id") || !has(o, "disposition")) {
        return Err("disposition without action".into());
    }
    let actor_ok = |a: &Value| any_of(a, &["process", "user", "invoked_by", "session", "app_name"]);
    let endpoint_ok = |e: &Value| any_of(e, &["ip", "uid", "name", "hostname"]);
    match class {
        4001 | 4007 => {
            if !endpoint_ok(&o["dst_endpoint"]) {
                return Err("network classes require dst_endpoint".into());
            }
            if has(o, "connection_info") && !has(&o["connection_info"], "direction_id") {
                return Err("connection_info.direction_id".into());
            }
        }
        6005 => {
            if !actor_ok(&o["actor"]) || !endpoint_ok(&o["src_endpoint"]) {
                return Err("datastore requires actor and src_endpoint".into());
            }
            if !any_of(o, &["database", "databucket", "table"]) || !has(&o["database"], "type_id") {
                return Err("datastore requires a database (with type_id)".into());
            }
            if has(o, "query_info") && !has(&o["query_info"], "query_string") {
                return Err("query_info.query_string".into());
            }
        }
        1007 => {
            if !actor_ok(&o["actor"]) || !any_of(&o["process"], &["pid", "uid"]) {
                return Err("process activity requires actor and process".into());
            }
        }
        1008 => {
            if !actor_ok(&o["actor"]) || !any_of(o, &["log_name", "log_provider", "log_type"]) {
                return Err("event log activity requires actor and a log".into());
            }
        }
        3003 => {
            if !any_of(&o["user"], &["uid", "name"]) {
                return Err("authorize session requires user".into());
            }
            if has(o, "privileges") == has(o, "group") {
                return Err("authorize session takes just one of privileges, group".into());
            }
        }
        6002 => {
            if !has(&o["app"], "vendor_name") {
                return Err("application lifecycle requires app".into());
            }
        }
        other => return Err(format!("unexpected class {other}")),
    }
    for (key, obj) in o.as_object().into_iter().flatten() {
        if let Some(f) = obj.get("file")
            && !(has(f, "name") && has(f, "type_id"))
        {
            return Err(format!("{key}.file needs name and type_id"));
        }
    }
    if has(&o["file"], "path") && !has(&o["file"], "type_id") {
        return Err("file.type_id".into());
    }
    Ok(())
}

#[test]
fn every_kind_has_a_sample() {
    let mut seen = [false; KINDS];
    for k in samples() {
        seen[index(&k)] = true;
    }
    let missing: Vec<usize> = (0..KINDS).filter(|i| !seen[*i]).collect();
    assert!(missing.is_empty(), "kinds without a sample: {missing:?}");
}

#[test]
fn every_kind_carries_its_class_s_required_attributes() {
    for (native, o) in bodies() {
        if let Err(why) = check(&o) {
            panic!("{}: {why}\n{o:#}", native["type"]);
        }
        // The compact object of the record agrees with the full event.
        let c = &native["ocsf"];
        for k in [
            "class_uid",
            "activity_id",
            "type_uid",
            "severity_id",
            "status_id",
            "time",
        ] {
            assert_eq!(c[k], o[k], "{} {k}", native["type"]);
        }
        assert_eq!(o["metadata"]["uid"], native["id"]);
        assert_eq!(o["unmapped"], native, "interlock's event rides along whole");
        if let Some(sid) = native.get("session_id") {
            assert_eq!(&o["metadata"]["correlation_uid"], sid);
        }
    }
}

#[test]
fn session_events_carry_the_session_s_actor_and_endpoints() {
    let b = bodies();
    let find = |ty: &str| {
        b.iter()
            .find(|(n, _)| n["type"] == ty)
            .map(|(_, o)| o.clone())
            .unwrap()
    };
    let st = find("statement");
    assert_eq!(
        (st["class_uid"].as_u64(), st["activity_id"].as_u64()),
        (Some(6005), Some(4))
    );
    let p = &st["actor"]["process"];
    assert_eq!(
        (p["pid"].as_u64(), p["tid"].as_u64()),
        (Some(5120), Some(5121))
    );
    assert_eq!(p["cmd_line"], "psql -h 10.0.0.5");
    assert_eq!(p["file"]["path"], "/usr/bin/psql");
    assert_eq!(p["user"]["uid"], "1001");
    assert_eq!(p["parent_process"]["file"]["path"], "/usr/bin/bash");
    assert_eq!(p["lineage"][0], "/usr/bin/bash");
    assert_eq!(st["actor"]["user"]["name"], "runner");
    assert_eq!(st["src_endpoint"]["port"], 51234);
    assert_eq!(
        (&st["dst_endpoint"]["ip"], &st["dst_endpoint"]["port"]),
        (&"10.0.0.5".into(), &5432.into())
    );
    assert_eq!(st["query_info"]["query_string"], "SELECT * FROM items");
    assert_eq!(st["firewall_rule"]["name"], "r1");
    assert_eq!(
        (st["disposition_id"].as_u64(), st["action_id"].as_u64()),
        (Some(1), Some(1))
    );
    let end = find("session_ended");
    assert_eq!(end["traffic"]["bytes_out"], 812);
    assert_eq!(end["traffic"]["bytes_in"], 20480);
    assert_eq!(end["duration"], 2515);
    assert_eq!(end["connection_info"]["uid"], SID);
    // Metadata level: no statement text, so no query_info.
    let quiet = b
        .iter()
        .find(|(n, _)| n["type"] == "statement" && n.get("text").is_none())
        .map(|(_, o)| o)
        .unwrap();
    assert!(quiet.get("query_info").is_none(), "{quiet}");
    assert_eq!(quiet["status_id"], 2);
    let started = find("daemon_started");
    assert_eq!(
        (
            started["class_uid"].as_u64(),
            started["activity_id"].as_u64()
        ),
        (Some(1007), Some(1))
    );
    assert_eq!(started["process"]["pid"], 4711);
    assert_eq!(started["process"]["file"]["path"], "/usr/bin/interlock");
    let granted = b
        .iter()
        .find(|(n, _)| n["type"] == "approval_decided")
        .map(|(_, o)| o)
        .unwrap();
    assert_eq!(granted["actor"]["user"]["name"], "alice");
    assert_eq!(granted["user"]["name"], "runner");
    assert_eq!(granted["status_id"], 1);
    // The last statement came after the session's end: known by id only.
    let (_, late) = b.iter().rfind(|(n, _)| n["type"] == "statement").unwrap();
    assert_eq!(late["actor"]["session"]["uid"], SID);
    assert_eq!(late["src_endpoint"]["uid"], SID);
}

#[test]
fn unparsable_time_leaves_time_out() {
    assert_eq!(epoch_ms("yesterday"), None);
    assert_eq!(epoch_ms("1970-01-01T00:00:01.5Z"), Some(1500));
}

/// Records are read back at start to catch webhook spools up: every kind
/// must come back exactly as it was written.
#[test]
fn every_kind_reads_back_as_it_was_written() {
    use serde::Deserialize as _;
    for kind in samples() {
        let ev = Event::now("h", kind);
        let written = serde_json::to_value(&ev).unwrap();
        let mut record = written.clone();
        let o = record.as_object_mut().unwrap();
        o.insert("seq".into(), 7.into());
        o.insert("prev".into(), "00".into());
        let back = Event::deserialize(&record).unwrap_or_else(|e| panic!("{written}: {e}"));
        assert_eq!(serde_json::to_value(&back).unwrap(), written);
    }
}

#[test]
fn a_verified_job_token_is_the_actor_and_its_issuer_the_idp() {
    let mut id = identity();
    id.job_token = Some(crate::oidc::JobTokenView {
        source: crate::oidc::TokenSource::PostgresPassword,
        issuer: Some("gitlab".into()),
        iss: Some("https://gitlab.example".into()),
        sub: Some("project_path:infra/app:ref_type:branch:ref:main".into()),
        groups: vec!["sre".into()],
        claims: BTreeMap::from([("ref".to_string(), Value::from("main"))]),
        expires: Some(100),
        error: None,
    });
    let mut m = Mapper::default();
    let ev = Event::now(
        "ci-runner-7",
        EventKind::SessionStarted {
            session_id: SID.into(),
            identity: Box::new(id.clone()),
            decision: decision(Disposition::Allowed),
            client_leg: None,
            client_tls_unavailable: None,
            ssh_login: None,
        },
    );
    let native = serde_json::to_vec(&ev).unwrap();
    let body: Value = serde_json::from_slice(&m.body(Some(1), &ev, &native).unwrap()).unwrap();
    let actor = &body["actor"];
    assert_eq!(
        actor["user"]["uid"],
        "project_path:infra/app:ref_type:branch:ref:main"
    );
    assert_eq!(actor["user"]["groups"][0]["name"], "sre");
    assert_eq!(actor["idp"]["name"], "gitlab");
    assert_eq!(actor["idp"]["uid"], "https://gitlab.example");
    assert_eq!(
        actor["process"]["user"]["name"], "runner",
        "the local user stays"
    );
    check(&body).unwrap();
    // A refused token is no identity: the local user is the actor.
    id.job_token = Some(crate::oidc::JobTokenView::refused(
        crate::oidc::TokenSource::SshPassword,
        &crate::oidc::TokenError::Expired,
    ));
    let ev = Event::now(
        "h",
        EventKind::SessionStarted {
            session_id: SID.into(),
            identity: Box::new(id),
            decision: decision(Disposition::Blocked),
            client_leg: None,
            client_tls_unavailable: None,
            ssh_login: None,
        },
    );
    let native = serde_json::to_vec(&ev).unwrap();
    let body: Value = serde_json::from_slice(&m.body(Some(2), &ev, &native).unwrap()).unwrap();
    assert_eq!(body["actor"]["user"]["name"], "runner");
    assert!(body["actor"].get("idp").is_none());
}

#[test]
fn an_approver_signed_in_on_the_page_is_the_actor_and_the_provider_its_idp() {
    let mut d = decided(Decision::Approved);
    d.by = Some(crate::approval::DecidedBy::SignedIn(
        crate::approval::SignedIn {
            issuer: "https://login.corp.example".into(),
            subject: "00u1sam".into(),
            email: Some("sam@corp.example".into()),
            name: Some("Sam".into()),
            username: Some("sam".into()),
            groups: vec!["sre".into()],
            claims: BTreeMap::new(),
        },
    ));
    d.channel = Some(crate::approval::Channel::Web);
    let ev = Event::now(
        "h",
        EventKind::ApprovalDecided {
            session_id: SID.into(),
            approval: Box::new(d),
        },
    );
    let native = serde_json::to_vec(&ev).unwrap();
    let mut m = Mapper::default();
    let body: Value = serde_json::from_slice(&m.body(Some(1), &ev, &native).unwrap()).unwrap();
    let actor = &body["actor"];
    assert_eq!(actor["user"]["uid"], "00u1sam");
    assert_eq!(actor["user"]["name"], "sam@corp.example");
    assert_eq!(actor["user"]["groups"][0]["name"], "sre");
    assert_eq!(actor["idp"]["uid"], "https://login.corp.example");
    assert!(actor.get("process").is_none(), "not a local process");
    assert_eq!(body["unmapped"]["approval"]["channel"], "web");
    check(&body).unwrap();
}
