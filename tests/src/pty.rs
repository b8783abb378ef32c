//! Runs a program (the real `ssh`) on a pseudo-terminal, so tests can type
//! into it, read what it shows and resize its window like a user would.

use std::{
    fs::File,
    io::{Read as _, Write as _},
    os::{
        fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
        unix::process::CommandExt as _,
    },
    process::{Child, Command, ExitStatus},
};

use anyhow::{Context as _, Result, bail};

/// A child process whose controlling terminal is a pty we hold the master of.
pub struct PtyChild {
    master: File,
    child: Child,
    seen: String,
}

fn winsize(cols: u16, rows: u16) -> libc::winsize {
    libc::winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    }
}

impl PtyChild {
    /// Starts `program args` on a new `cols`x`rows` pty.
    pub fn spawn(program: &str, args: &[String], cols: u16, rows: u16) -> Result<PtyChild> {
        let (mut master, mut slave) = (0, 0);
        let ws = winsize(cols, rows);
        // SAFETY: openpty writes two fds; the name and termios pointers may be null.
        let rc = unsafe {
            libc::openpty(
                &mut master,
                &mut slave,
                std::ptr::null_mut(),
                std::ptr::null(),
                &ws,
            )
        };
        if rc != 0 {
            bail!("openpty: {}", std::io::Error::last_os_error());
        }
        // SAFETY: openpty returned two fresh fds we now own.
        let (master, slave) = unsafe { (File::from_raw_fd(master), OwnedFd::from_raw_fd(slave)) };
        let mut cmd = Command::new(program);
        cmd.args(args)
            .stdin(slave.try_clone()?)
            .stdout(slave.try_clone()?)
            .stderr(slave);
        // SAFETY: only async-signal-safe calls between fork and exec.
        unsafe {
            cmd.pre_exec(|| {
                if libc::setsid() < 0 || libc::ioctl(0, libc::TIOCSCTTY, 0) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd.spawn().with_context(|| format!("spawn {program}"))?;
        Ok(PtyChild {
            master,
            child,
            seen: String::new(),
        })
    }

    /// Types `text`.
    pub fn write(&mut self, text: &str) -> Result<()> {
        self.master.write_all(text.as_bytes())?;
        Ok(())
    }

    /// Reads until the screen output so far contains `needle` (after what
    /// earlier calls consumed); fails at EOF.
    pub fn read_until(&mut self, needle: &str) -> Result<String> {
        let mut buf = [0u8; 4096];
        loop {
            if let Some(i) = self.seen.find(needle) {
                let upto = i + needle.len();
                let out = self.seen[..upto].to_string();
                self.seen.drain(..upto);
                return Ok(out);
            }
            match self.master.read(&mut buf) {
                Ok(0) | Err(_) => bail!("pty closed before {needle:?}; saw {:?}", self.seen),
                Ok(n) => self.seen.push_str(&String::from_utf8_lossy(&buf[..n])),
            }
        }
    }

    /// Resizes the terminal; the kernel sends SIGWINCH to the child.
    pub fn resize(&self, cols: u16, rows: u16) -> Result<()> {
        let ws = winsize(cols, rows);
        // SAFETY: TIOCSWINSZ reads one winsize from the pointer.
        if unsafe { libc::ioctl(self.master.as_raw_fd(), libc::TIOCSWINSZ, &ws) } < 0 {
            bail!("TIOCSWINSZ: {}", std::io::Error::last_os_error());
        }
        Ok(())
    }

    /// Waits for the child to exit.
    pub fn wait(mut self) -> Result<ExitStatus> {
        // Drain so the child never blocks on a full pty.
        let mut sink = Vec::new();
        let _ = self.master.read_to_end(&mut sink);
        Ok(self.child.wait()?)
    }
}
