//! The protocol-level facts rules match on: statement classes (supplied by
//! the PostgreSQL classifier) and SSH command kinds (supplied by the SSH
//! session). Their snake_case names are what policy files write.

use serde::{Deserialize, Serialize};

/// What a SQL statement does. A statement can have several classes (a
/// `WITH ... DELETE` without WHERE is both `write` and `delete_without_where`).
#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Deserialize,
    Serialize,
    clap::ValueEnum,
)]
#[serde(rename_all = "snake_case")]
#[value(rename_all = "snake_case")]
pub enum StatementClass {
    /// SELECT, SHOW, EXPLAIN without ANALYZE of a write, TABLE, VALUES.
    Read,
    /// INSERT, UPDATE, DELETE, MERGE, SELECT ... FOR UPDATE / INTO.
    Write,
    /// CREATE / ALTER / DROP / COMMENT and other schema changes.
    Ddl,
    DropDatabase,
    DropTable,
    DropSchema,
    Truncate,
    /// DELETE without WHERE, anywhere in the tree (CTEs included).
    DeleteWithoutWhere,
    /// UPDATE without WHERE, anywhere in the tree (CTEs included).
    UpdateWithoutWhere,
    /// COPY ... TO/FROM PROGRAM (runs a shell command on the server).
    CopyProgram,
    /// COPY ... TO (data leaves the database).
    CopyTo,
    /// COPY ... FROM (data enters the database).
    CopyFrom,
    /// DO blocks (anonymous code).
    DoBlock,
    /// CREATE FUNCTION / PROCEDURE (stored code).
    CreateFunction,
    /// GRANT / REVOKE.
    Grant,
    /// CREATE / ALTER / DROP ROLE or USER, ALTER ... OWNER.
    RoleChange,
    /// SET ROLE, SET SESSION AUTHORIZATION.
    SetRole,
    /// A call of a function on the dangerous list (pg_read_server_files,
    /// lo_export, dblink, pg_terminate_backend, ...).
    DangerousFunction,
    /// BEGIN, COMMIT, ROLLBACK, SAVEPOINT.
    Transaction,
    /// SET, RESET, DISCARD, LISTEN, NOTIFY, PREPARE and other session utilities.
    Session,
    /// Not valid PostgreSQL as far as the grammar can tell. Decided as if
    /// it had every class the applying rules name, unless one names
    /// `unparseable`.
    Unparseable,
    /// Runs code interlock cannot read: EXECUTE of a computed string, a
    /// function in C or another language, a query string built at run
    /// time, calls nested beyond the limit, a function the catalog does
    /// not show. Decided as if it had every class the applying rules name,
    /// unless one names `opaque`.
    Opaque,
    /// ALTER TABLE ... DROP COLUMN (and DROP TYPE/DOMAIN ... CASCADE).
    DropColumn,
    /// Can turn read-only transactions off: SET/RESET of
    /// default_transaction_read_only or transaction_read_only to anything
    /// but on, SET [SESSION CHARACTERISTICS AS] TRANSACTION READ WRITE,
    /// BEGIN READ WRITE, RESET ALL, DISCARD ALL.
    ReadOnlyOff,
    /// Creates, changes or removes a large object (lo_create, lo_from_bytea,
    /// lo_put, lowrite, lo_unlink, lo_import, ...); also `write`.
    LargeObject,
    /// Advances or sets a sequence (nextval, setval); also `write`.
    Sequence,
    /// Sends a notification (NOTIFY, pg_notify).
    Notify,
    /// Takes a lock other sessions wait for (LOCK TABLE, pg_advisory_lock, ...).
    Lock,
}

/// What an SSH request does.
#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Deserialize,
    Serialize,
    clap::ValueEnum,
)]
#[serde(rename_all = "snake_case")]
#[value(rename_all = "snake_case")]
pub enum CommandKind {
    /// An exec request (`ssh host cmd`, legacy `scp -t/-f`, rsync).
    Exec,
    /// An interactive shell.
    Shell,
    /// A subsystem (`sftp`).
    Subsystem,
    /// sftp: open for reading.
    FileRead,
    /// sftp: open for writing, create, set attributes.
    FileWrite,
    /// sftp: remove a file or directory.
    FileRemove,
    /// sftp: rename.
    FileRename,
    /// sftp: make a directory.
    FileMkdir,
    /// Local port forwarding: a direct-tcpip channel (`ssh -L`, `-W`, `-D`,
    /// `-J`), to `host:port`.
    PortForward,
    /// Remote port forwarding (`ssh -R`): the server listens and relays
    /// connections back to the client, `remote address:port`.
    RemoteForward,
    /// Unix socket forwarding either way (`ssh -L`/`-R` with a socket path):
    /// `unix:PATH` or `remote unix:PATH`.
    StreamlocalForward,
    /// Agent forwarding.
    AgentForward,
    /// X11 forwarding.
    X11,
}

impl CommandKind {
    /// Forwarding opens a way around the command controls (a tunnel into
    /// the server's network, or back into the runner's; the job's agent
    /// keys; its display), so it is refused unless a rule allows it.
    pub fn is_forwarding(self) -> bool {
        matches!(
            self,
            CommandKind::PortForward
                | CommandKind::RemoteForward
                | CommandKind::StreamlocalForward
                | CommandKind::AgentForward
                | CommandKind::X11
        )
    }

    /// The name policy files write (`port_forward`, `x11`, ...).
    pub fn name(self) -> &'static str {
        match self {
            CommandKind::Exec => "exec",
            CommandKind::Shell => "shell",
            CommandKind::Subsystem => "subsystem",
            CommandKind::FileRead => "file_read",
            CommandKind::FileWrite => "file_write",
            CommandKind::FileRemove => "file_remove",
            CommandKind::FileRename => "file_rename",
            CommandKind::FileMkdir => "file_mkdir",
            CommandKind::PortForward => "port_forward",
            CommandKind::RemoteForward => "remote_forward",
            CommandKind::StreamlocalForward => "streamlocal_forward",
            CommandKind::AgentForward => "agent_forward",
            CommandKind::X11 => "x11",
        }
    }
}
