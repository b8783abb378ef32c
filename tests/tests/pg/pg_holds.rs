//! Statements held for approval: approved, denied, expired, cancelled by
//! the client (CancelRequest with interlock's key) and withdrawn when the
//! client leaves. Servers on 127.0.0.8.

use std::{sync::Arc, time::Duration};

use interlock::gate::{HoldOutcome, StatementClass as C};
use interlock_tests::{
    pg_client::{code, connect, start},
    pg_gate::HOLD_RULE,
    pg_raw as raw,
    postgres::ROLE,
};
use tokio_postgres::{AsyncMessage, NoTls, error::SqlState};

const IP: &str = "127.0.0.8";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn held_statements_wait_for_approval_deny_or_cancel() {
    if !interlock_tests::postgres::PgServer::available() {
        return;
    }
    let (server, gate, proxy) = start(IP, &[], &[C::DeleteWithoutWhere]).await;
    server
        .query(&format!(
            "create table t (id int); alter table t owner to {ROLE}"
        ))
        .unwrap();
    let (client, mut messages) = connect(&proxy.conninfo(ROLE, "wrong")).await.unwrap();
    let client = Arc::new(client);

    // approved: runs; the client was told how to approve
    client
        .batch_execute("insert into t values (1), (2)")
        .await
        .unwrap();
    let c = client.clone();
    let run_delete = tokio::spawn(async move { c.execute("delete from t", &[]).await });
    let (id, decide) = gate.next_hold().await;
    let notice = loop {
        let m = messages.recv().await.unwrap();
        if let AsyncMessage::Notice(n) = m {
            break n;
        }
    };
    assert!(notice.message().contains(&id), "{}", notice.message());
    assert!(
        notice
            .message()
            .contains(&format!("interlock approvals approve {id}"))
    );
    assert_eq!(
        server.query("select count(*) from t").unwrap(),
        "2",
        "held statement ran early"
    );
    decide
        .send(HoldOutcome::Approved {
            by: "alice".into(),
            reason: None,
        })
        .unwrap();
    assert_eq!(run_delete.await.unwrap().unwrap(), 2);
    assert_eq!(server.query("select count(*) from t").unwrap(), "0");

    // denied (simple protocol)
    client
        .batch_execute("insert into t values (3)")
        .await
        .unwrap();
    let c = client.clone();
    let run_delete = tokio::spawn(async move { c.batch_execute("delete from t").await });
    let (_, decide) = gate.next_hold().await;
    decide
        .send(HoldOutcome::Denied {
            by: "bob".into(),
            reason: Some("not now".into()),
        })
        .unwrap();
    let err = run_delete.await.unwrap().unwrap_err();
    assert_eq!(code(&err), Some(SqlState::INSUFFICIENT_PRIVILEGE));
    assert!(
        err.as_db_error()
            .unwrap()
            .message()
            .contains("denied by bob"),
        "{err:?}"
    );
    assert!(err.as_db_error().unwrap().message().contains(HOLD_RULE));

    // expired
    let c = client.clone();
    let run_delete = tokio::spawn(async move { c.execute("delete from t", &[]).await });
    let (_, decide) = gate.next_hold().await;
    decide.send(HoldOutcome::Expired).unwrap();
    let err = run_delete.await.unwrap().unwrap_err();
    assert!(
        err.as_db_error().unwrap().message().contains("expired"),
        "{err:?}"
    );

    // cancelled by the client while held: 57014, and the hold is withdrawn
    let c = client.clone();
    let run_delete = tokio::spawn(async move { c.execute("delete from t", &[]).await });
    let (_, _decide) = gate.next_hold().await;
    client.cancel_token().cancel_query(NoTls).await.unwrap();
    let err = run_delete.await.unwrap().unwrap_err();
    assert_eq!(code(&err), Some(SqlState::QUERY_CANCELED), "{err:?}");
    assert_eq!(gate.withdrawn(), 1);
    assert_eq!(server.query("select count(*) from t").unwrap(), "1");

    // a cancel reaches the server with its real key (interlock's key is mapped)
    let c = client.clone();
    let sleeper = tokio::spawn(async move { c.batch_execute("select pg_sleep(60)").await });
    while server
        .query("select count(*) from pg_stat_activity where query = 'select pg_sleep(60)'")
        .unwrap()
        != "1"
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    client.cancel_token().cancel_query(NoTls).await.unwrap();
    let err = sleeper.await.unwrap().unwrap_err();
    assert_eq!(code(&err), Some(SqlState::QUERY_CANCELED), "{err:?}");
    assert_eq!(
        client
            .query_one("select 1::int", &[])
            .await
            .unwrap()
            .get::<_, i32>(0),
        1
    );

    // the client leaving during a hold withdraws it
    let mut raw = raw::connect(proxy.addr, 0).await;
    raw::send(&mut raw, b'Q', b"delete from t\0").await;
    let _hold = gate.next_hold().await;
    drop(raw);
    while gate.withdrawn() < 2 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(server.query("select count(*) from t").unwrap(), "1");
    let stmts = gate.statements();
    assert_eq!(
        stmts.iter().filter(|s| s.0 == "delete from t").count(),
        1,
        "{stmts:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_outcome_in_both_query_protocols() {
    if !interlock_tests::postgres::PgServer::available() {
        return;
    }
    let (server, gate, proxy) = start(IP, &[], &[C::DeleteWithoutWhere]).await;
    server
        .query(&format!(
            "create table t (id int); alter table t owner to {ROLE}"
        ))
        .unwrap();
    let (client, _messages) = connect(&proxy.conninfo(ROLE, "wrong")).await.unwrap();
    let client = Arc::new(client);
    let approve = || HoldOutcome::Approved {
        by: "alice".into(),
        reason: None,
    };
    let deny = || HoldOutcome::Denied {
        by: "bob".into(),
        reason: None,
    };
    // (extended protocol?, outcome or None for a client cancel, SQLSTATE or None for success)
    let cases: Vec<(bool, Option<HoldOutcome>, Option<SqlState>, &str)> = vec![
        (false, Some(approve()), None, ""),
        (true, Some(approve()), None, ""),
        (
            false,
            Some(deny()),
            Some(SqlState::INSUFFICIENT_PRIVILEGE),
            "denied by bob",
        ),
        (
            true,
            Some(deny()),
            Some(SqlState::INSUFFICIENT_PRIVILEGE),
            "denied by bob",
        ),
        (
            false,
            Some(HoldOutcome::Expired),
            Some(SqlState::INSUFFICIENT_PRIVILEGE),
            "expired",
        ),
        (
            true,
            Some(HoldOutcome::Expired),
            Some(SqlState::INSUFFICIENT_PRIVILEGE),
            "expired",
        ),
        (
            false,
            None,
            Some(SqlState::QUERY_CANCELED),
            "canceling statement",
        ),
        (
            true,
            None,
            Some(SqlState::QUERY_CANCELED),
            "canceling statement",
        ),
    ];
    let mut withdrawn = 0;
    for (extended, outcome, want, message) in cases {
        client
            .batch_execute("insert into t values (1)")
            .await
            .unwrap();
        let c = client.clone();
        let run = tokio::spawn(async move {
            if extended {
                c.execute("delete from t", &[]).await.map(|_| ())
            } else {
                c.batch_execute("delete from t").await
            }
        });
        let (_, decide) = gate.next_hold().await;
        let cancelled = outcome.is_none();
        match outcome {
            Some(o) => decide.send(o).unwrap(),
            None => {
                client.cancel_token().cancel_query(NoTls).await.unwrap();
                withdrawn += 1;
            }
        }
        let result = run.await.unwrap();
        let case = format!("extended={extended} want={want:?}");
        match want {
            None => {
                result.unwrap();
                assert_eq!(
                    server.query("select count(*) from t").unwrap(),
                    "0",
                    "{case}"
                );
            }
            Some(state) => {
                let err = result.unwrap_err();
                assert_eq!(code(&err), Some(state), "{case}: {err:?}");
                let db = err.as_db_error().unwrap();
                assert!(db.message().contains(message), "{case}: {}", db.message());
                if !cancelled {
                    assert!(db.message().contains(HOLD_RULE), "{case}");
                }
                assert_ne!(
                    server.query("select count(*) from t").unwrap(),
                    "0",
                    "{case}"
                );
                client.batch_execute("truncate t").await.unwrap();
            }
        }
        assert_eq!(gate.withdrawn(), withdrawn, "{case}");
        // the session is usable after every outcome
        let one: i32 = client.query_one("select 1::int", &[]).await.unwrap().get(0);
        assert_eq!(one, 1, "{case}");
    }
    let deletes = gate
        .statements()
        .iter()
        .filter(|s| s.0 == "delete from t")
        .count();
    assert_eq!(deletes, 2, "only the approved deletes ran");
}
