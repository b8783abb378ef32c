//! One lab VM: QEMU with a copy-on-write overlay over the cached image,
//! the kernel booted directly, the bundle shared read-only over 9p, user
//! networking with `restrict=on` (the guest reaches nothing outside) and
//! the guest's sshd forwarded from a free 127.0.0.1 port. The serial
//! console goes to a log file. Dropping a VM kills QEMU.

use std::fs;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};

use super::image::Image;
use super::{Kernel, bundle, recipe};
use crate::util;

/// Longest wait for the guest's sshd after QEMU starts. Emulated boots take
/// 30-50 s on an idle 2-core host; a loaded one takes several times that.
const BOOT_LIMIT: Duration = Duration::from_secs(600);
/// Longest wait for the guest to power off after being told to.
const POWEROFF_LIMIT: Duration = Duration::from_secs(120);

/// KVM is only used where it is the real thing: the paravirtual `kvm_pvm`
/// of some cloud VMs cannot run stock kernels (lab.md), so it counts as none.
fn accelerator() -> &'static str {
    let kvm = Path::new("/dev/kvm").exists();
    let pvm = Path::new("/sys/module/kvm_pvm").exists();
    let cpu = fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let virt = cpu.contains(" vmx") || cpu.contains(" svm");
    if kvm && virt && !pvm { "kvm" } else { "tcg" }
}

/// A booted (or booting) VM.
pub(crate) struct Vm {
    qemu: Child,
    port: u16,
    key: PathBuf,
    serial: PathBuf,
    started: Instant,
}

impl Vm {
    /// Starts QEMU for `kernel` with its overlay and serial log in `dir`.
    pub(crate) fn boot(image: &Image, kernel: Kernel, share: &Path, dir: &Path) -> Result<Vm> {
        if dir.exists() {
            fs::remove_dir_all(dir)?;
        }
        fs::create_dir_all(dir)?;
        let overlay = dir.join("overlay.qcow2");
        util::run(
            Command::new("qemu-img")
                .args(["create", "-q", "-f", "qcow2", "-F", "qcow2", "-b"])
                .arg(image.disk())
                .arg(&overlay),
        )?;
        let serial = dir.join("serial.log");
        let port = free_port()?;
        let accel = accelerator();
        let cpu = if accel == "kvm" { "host" } else { "max" };
        let mut qemu = Command::new("qemu-system-x86_64");
        qemu.args(["-machine", &format!("q35,accel={accel}")])
            .args(["-cpu", cpu, "-smp", "1", "-m", "1536"])
            // No default devices (VGA, CD-ROM, parallel port...): fewer
            // drivers to probe in an emulated boot.
            .args([
                "-nodefaults",
                "-display",
                "none",
                "-monitor",
                "none",
                "-no-reboot",
            ])
            .arg("-serial")
            .arg(format!("file:{}", serial.display()))
            .arg("-kernel")
            .arg(image.vmlinuz(kernel))
            .arg("-initrd")
            .arg(image.initrd(kernel))
            .args(["-append", &recipe::kernel_cmdline()])
            .arg("-drive")
            .arg(format!(
                "file={},if=virtio,format=qcow2,cache=unsafe",
                overlay.display()
            ))
            .args([
                "-netdev",
                &format!("user,id=net0,restrict=on,hostfwd=tcp:127.0.0.1:{port}-:22"),
                "-device",
                "virtio-net-pci,netdev=net0",
            ])
            .arg("-virtfs")
            .arg(format!(
                "local,path={},mount_tag=lab,security_model=none,readonly=on",
                share.display()
            ))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit());
        eprintln!("$ {}", util::render(&qemu));
        let child = qemu.spawn().context("qemu-system-x86_64")?;
        Ok(Vm {
            qemu: child,
            port,
            key: image.ssh_key(),
            serial,
            started: Instant::now(),
        })
    }

    /// The serial console's log.
    pub(crate) fn serial(&self) -> &Path {
        &self.serial
    }

    /// `ssh root@guest` with the lab key, no host key checks (each VM is
    /// new) and no other keys or agents.
    pub(crate) fn ssh(&self) -> Command {
        let mut ssh = Command::new("ssh");
        ssh.arg("-i")
            .arg(&self.key)
            .args(["-p", &self.port.to_string()])
            .args([
                "-o",
                "IdentitiesOnly=yes",
                "-o",
                "IdentityAgent=none",
                "-o",
                "BatchMode=yes",
                "-o",
                "StrictHostKeyChecking=no",
                "-o",
                "UserKnownHostsFile=/dev/null",
                "-o",
                "LogLevel=ERROR",
                "-o",
                "ConnectTimeout=10",
                "-o",
                "ServerAliveInterval=15",
                "-o",
                "ServerAliveCountMax=8",
                "root@127.0.0.1",
            ]);
        ssh
    }

    /// Waits until the guest's sshd runs a command; returns the time from
    /// QEMU's start (the boot time).
    pub(crate) fn wait_for_ssh(&mut self) -> Result<Duration> {
        loop {
            if let Some(status) = self.qemu.try_wait()? {
                bail!(
                    "QEMU exited ({status}) before the guest answered; serial log: {}",
                    self.serial.display()
                );
            }
            let ok = self
                .ssh()
                .arg("true")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            if ok {
                return Ok(self.started.elapsed());
            }
            if self.started.elapsed() > BOOT_LIMIT {
                bail!(
                    "the guest did not answer ssh within {} s; serial log: {}",
                    BOOT_LIMIT.as_secs(),
                    self.serial.display()
                );
            }
            sleep(Duration::from_secs(2));
        }
    }

    /// Runs a shell command line as root in the guest with the bundle
    /// mounted at /lab; output goes to this terminal.
    pub(crate) fn run(&self, line: &str) -> Result<ExitStatus> {
        let g = bundle::GUEST_DIR;
        let script = format!(
            "set -e; mkdir -p {g}; mountpoint -q {g} || \
             mount -t 9p -o trans=virtio,version=9p2000.L,ro,msize=262144 lab {g}; \
             cd {g}; export XTASK_WORKSPACE={g}; set +e; {line}"
        );
        let mut ssh = self.ssh();
        ssh.arg(script).stdin(Stdio::null());
        eprintln!("$ ssh root@guest '{line}'");
        ssh.status().context("ssh")
    }

    /// Tells the guest to power off and waits for QEMU to exit (killing it
    /// if the guest does not stop in time).
    pub(crate) fn poweroff(mut self) -> Result<()> {
        // The connection may drop before ssh sees a status: that is fine.
        let _ = self
            .ssh()
            .args(["systemctl", "poweroff", "--no-block"])
            .stdin(Stdio::null())
            .status();
        let asked = Instant::now();
        while asked.elapsed() < POWEROFF_LIMIT {
            if self.qemu.try_wait()?.is_some() {
                return Ok(());
            }
            sleep(Duration::from_millis(500));
        }
        eprintln!(
            "lab: the guest did not power off within {} s: killing QEMU",
            POWEROFF_LIMIT.as_secs()
        );
        let _ = self.qemu.kill();
        let _ = self.qemu.wait();
        Ok(())
    }
}

impl Drop for Vm {
    fn drop(&mut self) {
        if let Ok(None) = self.qemu.try_wait() {
            let _ = self.qemu.kill();
            let _ = self.qemu.wait();
        }
    }
}

/// A free port on 127.0.0.1 for the ssh forward (QEMU binds it moments
/// later; a clash makes QEMU exit, which `wait_for_ssh` reports).
fn free_port() -> Result<u16> {
    let l = TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?.port())
}
