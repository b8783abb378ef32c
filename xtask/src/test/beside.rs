//! A phase run beside the others: the lab's VMs spend most of their time
//! waiting on one emulated CPU, so running them while the integration
//! tests run keeps a cold `cargo xtask test` well inside CI's limit
//! instead of adding their time to it. Its output goes to a log file,
//! printed whole when it ends, so it does not interleave with the tests'.

use std::fs::File;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

/// A phase running in the background; killed if dropped unfinished (an
/// earlier phase failed).
pub(super) struct Beside {
    name: &'static str,
    child: Option<Child>,
    log: PathBuf,
    started: Instant,
}

impl Beside {
    /// Starts `cmd` with its output in `log`.
    pub(super) fn start(name: &'static str, mut cmd: Command, log: PathBuf) -> Result<Beside> {
        if let Some(dir) = log.parent() {
            std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
        }
        let out = File::create(&log).with_context(|| format!("create {}", log.display()))?;
        let err = out.try_clone().context("duplicate the log file")?;
        eprintln!(
            "==> {name} (beside the phases that follow; output in {})",
            log.display()
        );
        let child = cmd
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .with_context(|| format!("start the {name} phase"))?;
        Ok(Beside {
            name,
            child: Some(child),
            log,
            started: Instant::now(),
        })
    }

    pub(super) fn name(&self) -> &'static str {
        self.name
    }

    /// Waits for it to end, prints its log and returns how long it ran.
    pub(super) fn finish(mut self) -> (Duration, Result<()>) {
        eprintln!("==> {} (waiting for it to end)", self.name);
        let status = match self.child.take() {
            Some(mut child) => child.wait(),
            None => return (self.started.elapsed(), Ok(())),
        };
        let took = self.started.elapsed();
        match std::fs::read_to_string(&self.log) {
            Ok(text) => eprint!("{text}"),
            Err(e) => eprintln!("cannot read {}: {e}", self.log.display()),
        }
        let result = match status {
            Ok(s) if s.success() => Ok(()),
            Ok(s) => Err(anyhow::anyhow!(
                "`{}` failed ({s}); its output is above and in {}",
                self.name,
                self.log.display()
            )),
            Err(e) => Err(anyhow::anyhow!("cannot wait for `{}`: {e}", self.name)),
        };
        (took, result)
    }
}

impl Drop for Beside {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            eprintln!("==> {}: stopped (an earlier phase failed)", self.name);
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
