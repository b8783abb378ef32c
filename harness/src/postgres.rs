//! A real PostgreSQL 15 server for the protocol tests and the bench: initdb into a temp
//! dir as the `postgres` OS user, SCRAM required on TCP, a password role
//! and a database, stopped (fast shutdown) and removed on drop.

use std::{
    net::{SocketAddr, TcpListener},
    os::unix::{fs::chown, process::CommandExt},
    path::PathBuf,
    process::{Child, Command, Output, Stdio},
    time::Duration,
};

use anyhow::{Context as _, Result, bail};

const BIN: &str = "/usr/lib/postgresql/15/bin";
/// The role tests log in as, and its password.
pub const ROLE: &str = "app";
pub const PASSWORD: &str = "s3cret-app";
/// The database owned by [`ROLE`].
pub const DATABASE: &str = "appdb";
/// A role the server authenticates with md5 (its password stored as md5).
pub const MD5_ROLE: &str = "md5app";
/// A role the server asks for its password in cleartext (`password`).
pub const CLEARTEXT_ROLE: &str = "pwapp";
/// The password of [`MD5_ROLE`] and [`CLEARTEXT_ROLE`].
pub const OTHER_PASSWORD: &str = "0ther-s3cret";

/// A running server on `addr` (TCP) and a Unix socket in `dir`.
pub struct PgServer {
    pub addr: SocketAddr,
    pub dir: PathBuf,
    child: Child,
}

fn postgres_ids() -> Result<(u32, u32)> {
    let passwd = std::fs::read_to_string("/etc/passwd")?;
    let line = passwd
        .lines()
        .find(|l| l.starts_with("postgres:"))
        .context("no postgres user (apt-get install postgresql)")?;
    let f: Vec<&str> = line.split(':').collect();
    Ok((f[2].parse()?, f[3].parse()?))
}

impl PgServer {
    /// Whether a real PostgreSQL server can be started here (root, the
    /// PostgreSQL 15 binaries). Tests return early with a message
    /// otherwise, except in CI, where a missing prerequisite fails them.
    pub fn available() -> bool {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            return crate::skip_or_fail("a PostgreSQL prerequisite", "not running as root");
        }
        if !std::path::Path::new(&format!("{BIN}/initdb")).exists() {
            return crate::skip_or_fail(
                "a PostgreSQL prerequisite",
                "PostgreSQL 15 is not installed (postgresql-15)",
            );
        }
        true
    }

    /// Starts a server listening on `addr_ip` (a loopback address) and a free port.
    pub fn start(addr_ip: &str) -> Result<PgServer> {
        PgServer::start_with(addr_ip, false, 40, &[])
    }

    /// Like [`PgServer::start`], accepting `max_connections` connections.
    pub fn start_for(addr_ip: &str, max_connections: u32) -> Result<PgServer> {
        PgServer::start_with(addr_ip, false, max_connections, &[])
    }

    /// Like [`PgServer::start`], with extra server settings (`name=value`,
    /// each given as `-c`), e.g. for a driver's test suite.
    pub fn start_with_settings(addr_ip: &str, settings: &[&str]) -> Result<PgServer> {
        PgServer::start_with(addr_ip, false, 40, settings)
    }

    /// Like [`PgServer::start`], with TLS on: a certificate for [`TLS_NAME`]
    /// signed by a fresh CA whose certificate is [`PgServer::ca_file`].
    /// A server for `max_connections` clients with extra `settings` (`name=value`, each
    /// passed as `-c`), as the bench runs it.
    pub fn start_configured(
        addr_ip: &str,
        max_connections: u32,
        settings: &[&str],
    ) -> Result<PgServer> {
        PgServer::start_with(addr_ip, false, max_connections, settings)
    }

    pub fn start_tls(addr_ip: &str) -> Result<PgServer> {
        PgServer::start_with(addr_ip, true, 40, &[])
    }

    /// A file holding the test role's password ([`PASSWORD`]), for a policy's
    /// `password: {file: ...}`; it lives (and goes) with the server's directory.
    pub fn password_file(&self) -> Result<PathBuf> {
        let path = self.dir.join("role-password");
        std::fs::write(&path, format!("{PASSWORD}\n"))?;
        Ok(path)
    }

    /// The CA certificate (PEM) of a TLS server.
    pub fn ca_file(&self) -> PathBuf {
        self.dir.join("data/ca.crt")
    }

    fn start_with(
        addr_ip: &str,
        tls: bool,
        max_connections: u32,
        settings: &[&str],
    ) -> Result<PgServer> {
        let (uid, gid) = postgres_ids()?;
        let dir = std::env::temp_dir().join(crate::unique("interlock-pg"));
        std::fs::create_dir_all(&dir)?;
        chown(&dir, Some(uid), Some(gid))?;
        let data = dir.join("data");
        let out = Command::new(format!("{BIN}/initdb"))
            .args([
                "-D",
                data.to_str().unwrap_or_default(),
                "-U",
                "postgres",
                "--no-sync",
            ])
            .args(["--auth-local=trust", "--auth-host=scram-sha-256"])
            .uid(uid)
            .gid(gid)
            .current_dir(&dir)
            .output()?;
        if !out.status.success() {
            bail!("initdb: {}", String::from_utf8_lossy(&out.stderr));
        }
        std::fs::write(
            data.join("pg_hba.conf"),
            format!(
                "local all all trust\nhost all {MD5_ROLE} 127.0.0.0/8 md5\n\
                 host all {CLEARTEXT_ROLE} 127.0.0.0/8 password\n\
                 host all all 127.0.0.0/8 scram-sha-256\n"
            ),
        )?;
        let mut ssl_args: Vec<String> = vec![];
        if tls {
            make_certs(&data, uid, gid)?;
            ssl_args = [
                "ssl=on",
                "ssl_cert_file=server.crt",
                "ssl_key_file=server.key",
            ]
            .iter()
            .flat_map(|a| ["-c".to_string(), a.to_string()])
            .collect();
        }
        let port = TcpListener::bind((addr_ip, 0))?.local_addr()?.port();
        let log = std::fs::File::create(dir.join("server.log"))?;
        chown(dir.join("server.log"), Some(uid), Some(gid))?;
        let mut cmd = Command::new(format!("{BIN}/postgres"));
        cmd.args(["-D", data.to_str().unwrap_or_default()])
            .args([
                "-k",
                dir.to_str().unwrap_or_default(),
                "-h",
                addr_ip,
                "-p",
                &port.to_string(),
            ])
            .args(["-c", "password_encryption=scram-sha-256", "-c", "fsync=off"])
            .args(["-c", &format!("max_connections={max_connections}")])
            .args(&ssl_args)
            .args(settings.iter().flat_map(|s| ["-c", s]))
            .uid(uid)
            .gid(gid)
            .current_dir(&dir)
            .stdout(Stdio::null())
            .stderr(log);
        // SIGQUIT: the postmaster's immediate shutdown, backends included.
        let child = crate::spawn_tied(cmd, libc::SIGQUIT)?;
        let server = PgServer {
            addr: format!("{addr_ip}:{port}").parse()?,
            dir,
            child,
        };
        server.wait_ready()?;
        server.admin(&format!("create role {ROLE} login password '{PASSWORD}'"))?;
        server.admin(&format!("create database {DATABASE} owner {ROLE}"))?;
        // md5 authentication needs the password stored as md5 (a SCRAM
        // verifier makes the server use SCRAM even on an md5 line).
        server.admin(&format!(
            "set password_encryption = 'md5'; create role {MD5_ROLE} login password '{OTHER_PASSWORD}'"
        ))?;
        server.admin(&format!(
            "create role {CLEARTEXT_ROLE} login password '{OTHER_PASSWORD}'"
        ))?;
        Ok(server)
    }

    fn wait_ready(&self) -> Result<()> {
        for _ in 0..300 {
            let ok = Command::new("pg_isready")
                .args(["-q", "-h", self.dir.to_str().unwrap_or_default()])
                .args(["-p", &self.addr.port().to_string()])
                .status()?
                .success();
            if ok {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        bail!("postgres did not start: {}", self.log())
    }

    /// The postmaster's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The server log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("server.log")).unwrap_or_default()
    }

    /// Runs `sql` as the superuser over the Unix socket (bypassing the proxy);
    /// fails on any error.
    pub fn admin(&self, sql: &str) -> Result<String> {
        self.psql_socket(DATABASE_ADMIN, sql)
    }

    /// Runs `sql` in [`DATABASE`] as the superuser over the Unix socket; returns
    /// unaligned tuples-only output.
    pub fn query(&self, sql: &str) -> Result<String> {
        self.psql_socket(DATABASE, sql)
    }

    fn psql_socket(&self, db: &str, sql: &str) -> Result<String> {
        let out: Output = Command::new("psql")
            .args(["-X", "-q", "-At", "-v", "ON_ERROR_STOP=1", "-U", "postgres"])
            .args(["-h", self.dir.to_str().unwrap_or_default()])
            .args(["-p", &self.addr.port().to_string(), "-d", db, "-c", sql])
            .output()?;
        if !out.status.success() {
            bail!("psql {sql}: {}", String::from_utf8_lossy(&out.stderr));
        }
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    }
}

const DATABASE_ADMIN: &str = "postgres";

/// psql in `cg` to `pg` as [`ROLE`] with a wrong password (the daemon
/// injects the real one), unaligned tuples only, stopping at the first error.
pub fn psql_in(cg: &crate::TestCgroup, pg: &PgServer, sql: &str) -> Command {
    let mut c = cg.command(
        std::path::Path::new("/usr/bin/psql"),
        &[
            "-X",
            "-At",
            "-v",
            "ON_ERROR_STOP=1",
            "-h",
            &pg.addr.ip().to_string(),
            "-p",
            &pg.addr.port().to_string(),
            "-U",
            ROLE,
            "-d",
            DATABASE,
            "-c",
            sql,
        ],
    );
    c.env("PGPASSWORD", "not-the-password")
        .env("PGSSLMODE", "disable");
    c
}

/// The host name in a TLS server's certificate.
pub const TLS_NAME: &str = "pg.interlock.test";

fn openssl(dir: &std::path::Path, args: &[&str]) -> Result<()> {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()?;
    if !out.status.success() {
        bail!("openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(())
}

/// A CA and a server certificate for [`TLS_NAME`] in `data`.
fn make_certs(data: &std::path::Path, uid: u32, gid: u32) -> Result<()> {
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    let mut ca = vec![
        "req",
        "-x509",
        "-days",
        "2",
        "-subj",
        "/CN=interlock test CA",
    ];
    ca.extend(ec);
    ca.extend(["-keyout", "ca.key", "-out", "ca.crt"]);
    openssl(data, &ca)?;
    let mut csr = vec!["req", "-subj", "/CN=pg"];
    csr.extend(ec);
    csr.extend(["-keyout", "server.key", "-out", "server.csr"]);
    openssl(data, &csr)?;
    std::fs::write(
        data.join("server.ext"),
        format!(
            "subjectAltName=DNS:{TLS_NAME}\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=serverAuth\n"
        ),
    )?;
    openssl(
        data,
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            "server.ext",
            "-out",
            "server.crt",
        ],
    )?;
    for f in ["server.key", "server.crt", "ca.crt"] {
        chown(data.join(f), Some(uid), Some(gid))?;
    }
    std::fs::set_permissions(
        data.join("server.key"),
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )?;
    Ok(())
}

impl Drop for PgServer {
    fn drop(&mut self) {
        // SIGINT: fast shutdown (backends end, no checkpoint wait).
        if let Ok(pid) = i32::try_from(self.child.id()) {
            // SAFETY: signalling our own child process.
            unsafe { libc::kill(pid, libc::SIGINT) };
        }
        let _ = self.child.wait();
        if std::env::var_os("INTERLOCK_TEST_KEEP").is_none() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}
