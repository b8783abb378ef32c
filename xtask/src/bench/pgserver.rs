//! The bench's PostgreSQL 15 server: initdb as the `postgres` OS user into the scratch
//! directory, SCRAM-SHA-256 required over TCP on a loopback address, a `bench` role with a
//! password (also written to a file the daemon's policy references), a `bench` database
//! initialised by `pgbench -i`. Stopped (fast shutdown) on drop.

use std::fs;
use std::net::{SocketAddr, TcpListener};
use std::os::unix::fs::{PermissionsExt as _, chown};
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::util;

const BIN: &str = "/usr/lib/postgresql/15/bin";
/// The loopback address the server listens on (not the echo servers' 127.0.0.2).
pub(crate) const ADDRESS: &str = "127.0.0.5";
/// The role and database every PostgreSQL scenario uses.
pub(crate) const ROLE: &str = "bench";
pub(crate) const DATABASE: &str = "bench";
const PASSWORD: &str = "bench-pw-7f3a";
/// `pgbench -i` scale: 100 000 accounts, a few MB, initialised in about a second.
const SCALE: &str = "1";
/// Enough backends for the idle-connection scenario and the daemon's own catalog
/// connections.
pub(crate) const MAX_CONNECTIONS: u32 = 1_100;

/// A running server.
pub(crate) struct PgServer {
    addr: SocketAddr,
    dir: PathBuf,
    password_file: PathBuf,
    child: Option<Child>,
}

impl PgServer {
    /// initdb into `<dir>/pg`, start the server on [`ADDRESS`] and a free port, create the role
    /// and database, and `pgbench -i` it.
    pub(crate) fn start(dir: &Path) -> Result<PgServer> {
        let (uid, gid) = postgres_ids()?;
        let pg = dir.join("pg");
        fs::create_dir_all(&pg).with_context(|| format!("cannot create {}", pg.display()))?;
        chown(&pg, Some(uid), Some(gid))?;
        let data = pg.join("data");
        let mut initdb = Command::new(format!("{BIN}/initdb"));
        initdb
            .arg("-D")
            .arg(&data)
            .args(["-U", "postgres", "--no-sync"])
            .args(["--auth-local=trust", "--auth-host=scram-sha-256"])
            .uid(uid)
            .gid(gid)
            .current_dir(&pg);
        let out = initdb.output().context("cannot run initdb")?;
        if !out.status.success() {
            bail!("initdb failed: {}", String::from_utf8_lossy(&out.stderr));
        }
        fs::write(
            data.join("pg_hba.conf"),
            "local all all trust\nhost all all 127.0.0.0/8 scram-sha-256\n",
        )?;
        let port = TcpListener::bind((ADDRESS, 0))
            .with_context(|| format!("cannot bind {ADDRESS}"))?
            .local_addr()?
            .port();
        let log = pg.join("server.log");
        let log_file = fs::File::create(&log)?;
        chown(&log, Some(uid), Some(gid))?;
        let max_connections = format!("max_connections={MAX_CONNECTIONS}");
        let child = Command::new(format!("{BIN}/postgres"))
            .arg("-D")
            .arg(&data)
            .arg("-k")
            .arg(&pg)
            .args(["-h", ADDRESS, "-p", &port.to_string()])
            .args(["-c", "password_encryption=scram-sha-256"])
            .args(["-c", "fsync=off", "-c", "synchronous_commit=off"])
            .args(["-c", &max_connections, "-c", "shared_buffers=64MB"])
            .uid(uid)
            .gid(gid)
            .current_dir(&pg)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log_file)
            // Its own process group: a Ctrl-C aimed at the bench reaches it only through drop.
            .process_group(0)
            .spawn()
            .context("cannot start postgres")?;
        let password_file = dir.join("pg.password");
        fs::write(&password_file, format!("{PASSWORD}\n"))?;
        fs::set_permissions(&password_file, fs::Permissions::from_mode(0o600))?;
        let server = PgServer {
            addr: SocketAddr::new(ADDRESS.parse()?, port),
            dir: pg,
            password_file,
            child: Some(child),
        };
        server.wait_ready()?;
        server.admin(&format!("create role {ROLE} login password '{PASSWORD}'"))?;
        server.admin(&format!("create database {DATABASE} owner {ROLE}"))?;
        let mut init = Command::new("pgbench");
        init.args(["-i", "-q", "-s", SCALE, "-U", ROLE])
            .arg("-h")
            .arg(&server.dir)
            .args(["-p", &port.to_string(), DATABASE]);
        run_quiet(&mut init).context("pgbench -i failed")?;
        Ok(server)
    }

    fn wait_ready(&self) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            let ok = Command::new(format!("{BIN}/pg_isready"))
                .arg("-q")
                .arg("-h")
                .arg(&self.dir)
                .args(["-p", &self.addr.port().to_string()])
                .status()?
                .success();
            if ok {
                return Ok(());
            }
            thread::sleep(Duration::from_millis(100));
        }
        bail!(
            "postgres did not start in 30 s: {}",
            fs::read_to_string(self.dir.join("server.log")).unwrap_or_default()
        )
    }

    /// Runs `sql` as the superuser over the Unix socket; fails on any error.
    fn admin(&self, sql: &str) -> Result<()> {
        let mut psql = Command::new("psql");
        psql.args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-U", "postgres"])
            .arg("-h")
            .arg(&self.dir)
            .args(["-p", &self.addr.port().to_string(), "-d", "postgres"])
            .args(["-c", sql]);
        run_quiet(&mut psql).with_context(|| format!("psql: {sql}"))
    }

    /// The server's TCP address.
    pub(crate) fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The file holding the role's password (the policy's `upstream.password`).
    pub(crate) fn password_file(&self) -> &Path {
        &self.password_file
    }

    /// The role's password, for direct (baseline) clients.
    pub(crate) fn password(&self) -> &'static str {
        PASSWORD
    }

    /// The environment a libpq client (pgbench, psql) in a scenario gets: the password (the
    /// daemon ignores it and injects its own), and no TLS or GSS negotiation on either side.
    pub(crate) fn client_env(&self, cmd: &mut Command) {
        cmd.env("PGPASSWORD", PASSWORD)
            .env("PGSSLMODE", "disable")
            .env("PGGSSENCMODE", "disable")
            .env("PGHOST", ADDRESS)
            .env("PGPORT", self.addr.port().to_string())
            .env("PGUSER", ROLE)
            .env("PGDATABASE", DATABASE)
            .env_remove("PGSERVICE");
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        if let Ok(pid) = libc::pid_t::try_from(child.id()) {
            // SAFETY: kill with the pid of our own unreaped child; SIGINT is a fast shutdown.
            unsafe { libc::kill(pid, libc::SIGINT) };
        }
        let deadline = Instant::now() + Duration::from_secs(20);
        while matches!(child.try_wait(), Ok(None)) {
            if Instant::now() > deadline {
                let _ = child.kill();
                break;
            }
            thread::sleep(Duration::from_millis(20));
        }
        let _ = child.wait();
    }
}

/// Runs `cmd` with its output captured; fails with its stderr when it fails.
pub(crate) fn run_quiet(cmd: &mut Command) -> Result<()> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("cannot start `{}`", util::render(cmd)))?;
    if !out.status.success() {
        bail!(
            "`{}` failed ({}): {}",
            util::render(cmd),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// uid and gid of the `postgres` OS user.
fn postgres_ids() -> Result<(u32, u32)> {
    let passwd = fs::read_to_string("/etc/passwd").context("cannot read /etc/passwd")?;
    passwd_ids(&passwd, "postgres")
        .context("no `postgres` OS user: install postgresql (`cargo xtask setup`)")
}

fn passwd_ids(passwd: &str, user: &str) -> Option<(u32, u32)> {
    passwd.lines().find_map(|line| {
        let mut f = line.split(':');
        if f.next()? != user {
            return None;
        }
        let (_, uid, gid) = (f.next()?, f.next()?, f.next()?);
        Some((uid.parse().ok()?, gid.parse().ok()?))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_a_users_ids() {
        let passwd =
            "root:x:0:0:root:/root:/bin/bash\npostgres:x:104:110::/var/lib/postgresql:/bin/bash\n";
        assert_eq!(passwd_ids(passwd, "postgres"), Some((104, 110)));
        assert_eq!(passwd_ids(passwd, "nobody"), None);
    }
}
