//! The injected upstream credential as a password: a throwaway local user
//! with a password, an sshd that accepts passwords (without PAM), and the
//! proxy logging in with `Credential::Password` while the client only ever
//! shows its own, unrelated key.

use std::sync::Arc;

use interlock::{
    gate::{Record, Side},
    ssh::{Credential, HostIdentity},
};
use interlock_tests::{
    Sshd, TestUser,
    sshproxy::{self, TestGate, text},
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_password_credential_logs_in_upstream() {
    if !Sshd::available() {
        return;
    }
    let password = "correct horse battery staple";
    let user = TestUser::create("il-sshpw", Some(password));
    let sshd = Sshd::start_with(
        "127.0.0.3",
        "PasswordAuthentication yes\nAuthenticationMethods password",
    )
    .unwrap();

    let mut target = sshproxy::target(&sshd, HostIdentity::generate().unwrap()).unwrap();
    target.upstream_user = Some(user.name.clone());
    target.credential = Credential::Password(password.into());
    let gate = Arc::new(TestGate::default());
    let p = sshproxy::start(&sshd, target.clone(), Arc::clone(&gate), None)
        .await
        .unwrap();
    let out = p.ssh(&[], "id -un", b"").await.unwrap();
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{stderr}\n{}", sshd.log());
    assert_eq!(stdout.trim(), user.name);
    let log = sshd.log();
    assert!(
        log.contains(&format!("Accepted password for {}", user.name)),
        "{log}"
    );

    // A wrong password: the client is told, nothing runs, the error is recorded.
    target.credential = Credential::Password("wrong".into());
    let gate = Arc::new(TestGate::default());
    let p = sshproxy::start(&sshd, target, Arc::clone(&gate), None)
        .await
        .unwrap();
    let out = p.ssh(&[], "id -un", b"").await.unwrap();
    let (stdout, stderr) = text(&out);
    assert_ne!(out.status.code(), Some(0));
    assert!(stdout.is_empty(), "{stdout}");
    assert!(
        stderr.contains("rejected the injected credential"),
        "{stderr}"
    );
    assert!(
        !stderr.contains("wrong"),
        "the password is never shown: {stderr}"
    );
    let records = gate.records.lock().unwrap().clone();
    assert!(
        records.iter().any(|r| matches!(
            r,
            Record::ProtocolError { side: Side::Server, message }
                if message.contains("rejected the injected credential")
        )),
        "{records:?}"
    );
    assert!(gate.commands().is_empty());
}
