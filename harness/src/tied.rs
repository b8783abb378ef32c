//! Child processes that die with the test process. A test killed by its
//! time limit (or any signal) runs no `Drop`, so the daemon and the
//! servers it started would outlive it; each is started with a
//! parent-death signal instead (PR_SET_PDEATHSIG). That signal fires when
//! the *thread* that forked the child ends, so every tied child is forked
//! by one thread that lives as long as the process.

use std::{
    io,
    os::unix::process::CommandExt as _,
    process::{Child, Command},
    sync::{OnceLock, mpsc},
};

type Job = (Command, i32, mpsc::Sender<io::Result<Child>>);

static SPAWNER: OnceLock<mpsc::Sender<Job>> = OnceLock::new();

/// Spawns `cmd` so that it gets `signal` when this test process dies.
pub fn spawn_tied(mut cmd: Command, signal: i32) -> io::Result<Child> {
    let parent = std::process::id();
    // SAFETY: only async-signal-safe calls (prctl, getppid, raise) between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, signal as libc::c_ulong) != 0 {
                return Err(io::Error::last_os_error());
            }
            // The parent may have died before the prctl took effect.
            if libc::getppid() as u32 != parent {
                libc::raise(signal);
            }
            Ok(())
        });
    }
    let spawner = SPAWNER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<Job>();
        let _ = std::thread::Builder::new()
            .name("tied-spawner".into())
            .spawn(move || {
                for (mut cmd, _, reply) in rx {
                    let _ = reply.send(cmd.spawn());
                }
            });
        tx
    });
    let (reply, answer) = mpsc::channel();
    spawner
        .send((cmd, signal, reply))
        .map_err(|_| io::Error::other("the spawner thread is gone"))?;
    answer
        .recv()
        .map_err(|_| io::Error::other("the spawner thread is gone"))?
}
