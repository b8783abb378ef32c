//! Running commands with an echo first, and finding the workspace's directories.

use std::env;
use std::ffi::OsStr;
use std::io;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Output};

use anyhow::{Context, Result, bail};

/// The workspace root and the cargo target directory used by every subcommand.
pub(crate) struct Workspace {
    root: PathBuf,
    target_dir: PathBuf,
}

impl Workspace {
    /// The root is the parent of xtask's manifest directory, or `XTASK_WORKSPACE`
    /// (a lab guest's copy of the files `install` needs); the target directory is
    /// `CARGO_TARGET_DIR` (relative to the root, where cargo runs) or `<root>/target`.
    pub(crate) fn locate() -> Result<Self> {
        let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
        let root = match env::var_os("XTASK_WORKSPACE") {
            Some(dir) if !dir.is_empty() => PathBuf::from(dir),
            _ => manifest
                .parent()
                .with_context(|| {
                    format!("xtask's manifest dir {} has no parent", manifest.display())
                })?
                .to_path_buf(),
        };
        let target_dir = match env::var_os("CARGO_TARGET_DIR") {
            Some(dir) if !dir.is_empty() => root.join(dir),
            _ => root.join("target"),
        };
        Ok(Self { root, target_dir })
    }

    pub(crate) fn root(&self) -> &Path {
        &self.root
    }

    /// The cargo target directory.
    pub(crate) fn target_dir(&self) -> &Path {
        &self.target_dir
    }

    /// `<target-dir>/{debug|release}/interlock`.
    pub(crate) fn interlock_bin(&self, release: bool) -> PathBuf {
        let profile = if release { "release" } else { "debug" };
        self.target_dir.join(profile).join("interlock")
    }

    /// `cargo` (the rustup proxy, so rust-toolchain.toml applies) running in the root.
    pub(crate) fn cargo(&self) -> Command {
        let mut cmd = Command::new("cargo");
        cmd.current_dir(&self.root);
        // pg_query (the PostgreSQL grammar) generates bindings with libclang;
        // point it at the LLVM 22 that set-up installs unless told otherwise.
        if std::env::var_os("LIBCLANG_PATH").is_none() {
            cmd.env("LIBCLANG_PATH", "/usr/lib/llvm-22/lib");
        }
        cmd
    }
}

/// Prints `$ <command line>` on stderr, then runs the command and fails unless it exits 0.
pub(crate) fn run(cmd: &mut Command) -> Result<()> {
    let status = status(cmd)?;
    if !status.success() {
        bail!("`{}` failed ({status})", render(cmd));
    }
    Ok(())
}

/// Prints `$ <command line>` on stderr, then runs the command and returns how it exited.
pub(crate) fn status(cmd: &mut Command) -> Result<ExitStatus> {
    eprintln!("$ {}", render(cmd));
    cmd.status().map_err(|err| spawn_error(cmd, &err))
}

/// Runs a read-only query without echoing it and captures its output.
/// `Ok(None)` when the program is not installed.
pub(crate) fn probe(cmd: &mut Command) -> Result<Option<Output>> {
    match cmd.output() {
        Ok(out) => Ok(Some(out)),
        Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(err) => Err(spawn_error(cmd, &err)),
    }
}

fn spawn_error(cmd: &Command, err: &io::Error) -> anyhow::Error {
    let program = cmd.get_program().to_string_lossy();
    if err.kind() == io::ErrorKind::NotFound {
        anyhow::anyhow!("`{program}` is not installed or not on PATH")
    } else {
        anyhow::anyhow!("could not start `{program}`: {err}")
    }
}

/// The command as a shell line: explicit env assignments, program, quoted args.
/// A `PATH` that extends the current one is shown as `...:$PATH`.
pub(crate) fn render(cmd: &Command) -> String {
    let current_path = env::var("PATH").unwrap_or_default();
    let mut words = Vec::new();
    for (key, value) in cmd.get_envs() {
        let key = key.to_string_lossy();
        match value {
            Some(value) => {
                let value = value.to_string_lossy();
                let shown = match value.strip_suffix(current_path.as_str()) {
                    Some(prefix) if key == "PATH" && !current_path.is_empty() => {
                        format!("{}$PATH", quote(prefix))
                    }
                    _ => quote(&value),
                };
                words.push(format!("{key}={shown}"));
            }
            None => words.push(format!("-u {key}")),
        }
    }
    if words.iter().any(|w| w.starts_with("-u ")) {
        words.insert(0, "env".to_owned());
    }
    words.push(quote_os(cmd.get_program()));
    words.extend(cmd.get_args().map(quote_os));
    words.join(" ")
}

fn quote_os(word: &OsStr) -> String {
    quote(&word.to_string_lossy())
}

/// Single-quotes a word unless it is made only of shell-safe characters.
fn quote(word: &str) -> String {
    let safe = |c: char| c.is_ascii_alphanumeric() || "-_./=:,+@%".contains(c);
    if !word.is_empty() && word.chars().all(safe) {
        word.to_owned()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

/// Whether the process runs with effective uid 0.
pub(crate) fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_plain_and_quoted_words() {
        let mut cmd = Command::new("cargo");
        cmd.args(["build", "-p", "interlock", "${Status}", "it's"]);
        assert_eq!(
            render(&cmd),
            r"cargo build -p interlock '${Status}' 'it'\''s'"
        );
    }

    #[test]
    fn renders_env_assignments_and_removals() {
        let mut cmd = Command::new("apt-get");
        cmd.env("DEBIAN_FRONTEND", "noninteractive").arg("update");
        assert_eq!(
            render(&cmd),
            "DEBIAN_FRONTEND=noninteractive apt-get update"
        );
        let mut cmd = Command::new("cargo");
        cmd.env_remove("RUSTUP_TOOLCHAIN").arg("install");
        assert_eq!(render(&cmd), "env -u RUSTUP_TOOLCHAIN cargo install");
    }

    #[test]
    fn renders_extended_path_as_dollar_path() {
        let current = env::var("PATH").unwrap_or_default();
        if current.is_empty() {
            return;
        }
        let mut cmd = Command::new("cargo");
        cmd.env("PATH", format!("/usr/lib/llvm-22/bin:{current}"));
        assert_eq!(render(&cmd), "PATH=/usr/lib/llvm-22/bin:$PATH cargo");
    }
}
