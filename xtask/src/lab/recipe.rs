//! The guest image's recipe: suite, mirrors, packages, the customize script
//! and the disk layout. Its SHA-256 names the cached image, so any change
//! here (or in `customize.sh`) makes `lab image` build a new one.

use sha2::{Digest as _, Sha256};

/// Bump when the build procedure changes in a way the fields below miss.
const RECIPE_VERSION: u32 = 1;

/// Debian release of the guest (the host's too: the host's binaries run there).
pub(crate) const SUITE: &str = "bookworm";

/// Apt sources of the guest build (and of the host's private apt for QEMU).
pub(crate) const SOURCES: &[&str] = &[
    "deb http://deb.debian.org/debian bookworm main",
    "deb http://deb.debian.org/debian bookworm-updates main",
    "deb http://deb.debian.org/debian-security bookworm-security main",
    "deb http://deb.debian.org/debian bookworm-backports main",
];

/// Packages of the guest from bookworm; `customize.sh` adds the backports
/// kernel and bpftool. What each group is for:
pub(crate) const PACKAGES: &[&str] = &[
    // boot: systemd as PID 1, the distribution kernel (6.1), its initramfs
    "systemd-sysv",
    "udev",
    "kmod",
    "dbus",
    "linux-image-amd64",
    "initramfs-tools",
    "e2fsprogs",
    "grub-pc-bin",
    // reaching it: sshd (and the client, for the smoke suite's ssh exec)
    "openssh-server",
    "openssh-client",
    "ca-certificates",
    "sudo",
    "netbase",
    "iproute2",
    "procps",
    "rsync",
    "less",
    "zstd",
    // the smoke suite's real peers
    "postgresql",
    "postgresql-client",
];

/// The guest file system's label (the kernels' `root=LABEL=`).
pub(crate) const ROOT_LABEL: &str = "interlock-lab";

/// Virtual disk size in MiB; the first MiB holds the partition table and GRUB.
pub(crate) const DISK_MIB: u64 = 4096;

/// Run before the kernels are installed: a small initramfs with just what
/// mounts the root file system from a virtio disk (MODULES=most made it
/// 30 MB, which took 40 s to unpack and probe under emulation).
pub(crate) const INITRAMFS_HOOK: &str = "mkdir -p \"$1/etc/initramfs-tools/conf.d\" \"$1/usr/share/initramfs-tools/modules.d\" && \
     echo MODULES=list > \"$1/etc/initramfs-tools/conf.d/interlock-lab\" && \
     printf '%s\\n' virtio_pci virtio_blk virtio_scsi sd_mod ahci ext4 crc32c_generic \
     > \"$1/usr/share/initramfs-tools/modules.d/interlock-lab\"";

/// The script that turns the bootstrapped tree into the lab guest.
pub(crate) const CUSTOMIZE: &str = include_str!("customize.sh");

/// The kernel command line for direct kernel boots.
pub(crate) fn kernel_cmdline() -> String {
    format!("root=LABEL={ROOT_LABEL} ro console=ttyS0,115200")
}

/// The recipe as text: every input of the build, one per line.
pub(crate) fn text() -> String {
    let mut t = format!("version {RECIPE_VERSION}\nsuite {SUITE}\n");
    for s in SOURCES {
        t.push_str(&format!("source {s}\n"));
    }
    for p in PACKAGES {
        t.push_str(&format!("package {p}\n"));
    }
    t.push_str(&format!(
        "label {ROOT_LABEL}\ndisk {DISK_MIB}\ncmdline {}\n",
        kernel_cmdline()
    ));
    t.push_str(&format!("essential-hook {INITRAMFS_HOOK}\n"));
    t.push_str(CUSTOMIZE);
    t
}

/// The first 16 hex digits of the recipe's SHA-256: the cached image's name.
pub(crate) fn hash() -> String {
    let digest = Sha256::digest(text().as_bytes());
    digest.iter().take(8).map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_is_stable_and_covers_the_script() {
        assert_eq!(hash(), hash());
        assert_eq!(hash().len(), 16);
        assert!(text().contains(CUSTOMIZE));
        assert!(text().contains("package postgresql\n"));
    }
}
