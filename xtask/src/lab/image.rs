//! `cargo xtask lab image`: the cached guest image. Built from Debian's
//! packages only (mmdebstrap, then `customize.sh`), written into a raw disk
//! without loop devices (sfdisk, `mkfs.ext4 -E offset= -d`, GRUB put in by
//! hand) and compressed to qcow2. Each image lives in
//! `<lab dir>/images/<recipe hash>/` with its kernels, the lab's ssh key and
//! a manifest; it is built under a temporary name and renamed when complete.

use std::fs;
use std::io::{Seek as _, SeekFrom, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::Instant;

use anyhow::{Context as _, Result, bail};
use serde::{Deserialize, Serialize};

use super::{Kernel, host, lab_dir, recipe, say};
use crate::util;

/// A complete cached image.
pub(crate) struct Image {
    dir: PathBuf,
    pub(crate) manifest: Manifest,
}

/// What was built, written last (its presence marks a complete image).
#[derive(Serialize, Deserialize)]
pub(crate) struct Manifest {
    pub(crate) recipe: String,
    pub(crate) built: String,
    pub(crate) build_secs: f64,
    /// Kernel series -> release (`uname -r`).
    pub(crate) kernels: Vec<(String, String)>,
    /// Versions of the packages the smoke suite relies on.
    pub(crate) packages: Vec<(String, String)>,
}

const MANIFEST: &str = "manifest.json";
const DISK: &str = "disk.qcow2";

impl Image {
    pub(crate) fn disk(&self) -> PathBuf {
        self.dir.join(DISK)
    }
    pub(crate) fn vmlinuz(&self, k: Kernel) -> PathBuf {
        self.dir.join(format!("vmlinuz-{}", k.series()))
    }
    pub(crate) fn initrd(&self, k: Kernel) -> PathBuf {
        self.dir.join(format!("initrd-{}", k.series()))
    }
    /// The private key root and vagrant accept.
    pub(crate) fn ssh_key(&self) -> PathBuf {
        self.dir.join("id_ed25519")
    }
    /// The kernel release of a series in this image.
    pub(crate) fn release(&self, k: Kernel) -> Option<&str> {
        self.manifest
            .kernels
            .iter()
            .find(|(s, _)| s == k.series())
            .map(|(_, r)| r.as_str())
    }
}

fn images_dir() -> PathBuf {
    lab_dir().join("images")
}

fn current_dir() -> PathBuf {
    images_dir().join(recipe::hash())
}

/// The cached image of the current recipe, if complete.
pub(crate) fn cached() -> Result<Option<Image>> {
    let dir = current_dir();
    let Ok(text) = fs::read_to_string(dir.join(MANIFEST)) else {
        return Ok(None);
    };
    let manifest: Manifest = serde_json::from_str(&text)
        .with_context(|| format!("{} is not a lab manifest", dir.join(MANIFEST).display()))?;
    Ok(Some(Image { dir, manifest }))
}

pub(crate) fn cmd(check: bool) -> Result<ExitCode> {
    if check {
        return Ok(match cached()? {
            Some(image) => {
                describe(&image);
                ExitCode::SUCCESS
            }
            None => {
                say(&format!(
                    "no image for recipe {} in {}: `cargo xtask lab image` builds it",
                    recipe::hash(),
                    images_dir().display()
                ));
                ExitCode::FAILURE
            }
        });
    }
    let image = ensure()?;
    describe(&image);
    Ok(ExitCode::SUCCESS)
}

fn describe(image: &Image) {
    let m = &image.manifest;
    let kernels: Vec<String> = m.kernels.iter().map(|(s, r)| format!("{s}: {r}")).collect();
    say(&format!(
        "image {} is current (recipe {}, built {} in {:.0} s; kernels {})",
        image.disk().display(),
        m.recipe,
        m.built,
        m.build_secs,
        kernels.join(", ")
    ));
}

/// The current image, built first if the cache has none.
pub(crate) fn ensure() -> Result<Image> {
    if let Some(image) = cached()? {
        return Ok(image);
    }
    if !util::is_root() {
        bail!("building the lab image needs root (mmdebstrap, chroot): run as root");
    }
    say(&format!(
        "no image for recipe {} yet: building it in {}",
        recipe::hash(),
        current_dir().display()
    ));
    build()?;
    cached()?.context("the image build finished without a manifest")
}

fn build() -> Result<()> {
    let started = Instant::now();
    host::ensure_image_tools()?;
    let fin = current_dir();
    let tmp = images_dir().join(format!("{}.partial", recipe::hash()));
    if tmp.exists() {
        say(&format!("removing an unfinished build {}", tmp.display()));
        fs::remove_dir_all(&tmp)?;
    }
    fs::create_dir_all(&tmp)?;
    check_space(&tmp)?;

    say("ssh key for root and vagrant in the guest (ssh-keygen)");
    let key = tmp.join("id_ed25519");
    util::run(
        Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-C", "interlock-lab", "-f"])
            .arg(&key),
    )?;

    let rootfs = tmp.join("rootfs");
    let script = tmp.join("customize.sh");
    fs::write(&script, recipe::CUSTOMIZE)?;
    say("root file system from Debian packages (mmdebstrap, then customize.sh)");
    let mut mm = Command::new("mmdebstrap");
    mm.args([
        "--mode=root",
        "--variant=minbase",
        "--aptopt=APT::Install-Recommends \"false\"",
    ])
    .arg(format!("--include={}", recipe::PACKAGES.join(",")))
    .arg(format!("--essential-hook={}", recipe::INITRAMFS_HOOK))
    .arg(format!(
        "--customize-hook=sh {} \"$1\" {}",
        script.display(),
        key.with_extension("pub").display()
    ))
    .arg(recipe::SUITE)
    .arg(&rootfs)
    .args(recipe::SOURCES);
    util::run(&mut mm)?;

    let kernels = copy_kernels(&rootfs, &tmp)?;
    let packages = package_versions(&rootfs)?;
    make_disk(&rootfs, &tmp)?;
    say(&format!("removing the build tree {}", rootfs.display()));
    fs::remove_dir_all(&rootfs)?;

    let manifest = Manifest {
        recipe: recipe::hash(),
        built: now_utc(),
        build_secs: started.elapsed().as_secs_f64(),
        kernels,
        packages,
    };
    fs::write(tmp.join("recipe.txt"), recipe::text())?;
    fs::write(tmp.join(MANIFEST), serde_json::to_string_pretty(&manifest)?)?;
    if fin.exists() {
        fs::remove_dir_all(&fin)?;
    }
    fs::rename(&tmp, &fin)?;
    say(&format!(
        "built {} in {:.0} s",
        fin.join(DISK).display(),
        manifest.build_secs
    ));
    prune(&fin)
}

/// The build holds the tree (1.2 GiB), the raw disk's used blocks (about
/// as much) and the qcow2 at once: refuse early rather than fail in dpkg.
const BUILD_SPACE_GIB: u64 = 4;

fn check_space(dir: &Path) -> Result<()> {
    let out = Command::new("df")
        .args(["--output=avail", "-B1"])
        .arg(dir)
        .output()?;
    let avail = String::from_utf8_lossy(&out.stdout)
        .lines()
        .nth(1)
        .and_then(|l| l.trim().parse::<u64>().ok());
    match avail {
        Some(bytes) if bytes < BUILD_SPACE_GIB << 30 => bail!(
            "{} has {:.1} GiB free; building the lab image needs about {BUILD_SPACE_GIB} GiB \
             (INTERLOCK_LAB_DIR puts the cache elsewhere)",
            dir.display(),
            bytes as f64 / f64::from(1u32 << 30)
        ),
        _ => Ok(()),
    }
}

/// Copies each series' kernel and initramfs out of the tree (for direct
/// kernel boots) and returns series -> release.
fn copy_kernels(rootfs: &Path, to: &Path) -> Result<Vec<(String, String)>> {
    let mut found = Vec::new();
    let boot = rootfs.join("boot");
    for entry in fs::read_dir(&boot)? {
        let name = entry?.file_name().to_string_lossy().into_owned();
        let Some(release) = name.strip_prefix("vmlinuz-") else {
            continue;
        };
        for k in Kernel::ALL {
            if k.matches_release(release) {
                say(&format!("kernel {}: {release}", k.series()));
                fs::copy(boot.join(&name), to.join(format!("vmlinuz-{}", k.series())))?;
                fs::copy(
                    boot.join(format!("initrd.img-{release}")),
                    to.join(format!("initrd-{}", k.series())),
                )?;
                found.push((k.series().to_string(), release.to_string()));
            }
        }
    }
    for k in Kernel::ALL {
        if !found.iter().any(|(s, _)| s == k.series()) {
            bail!(
                "the image has no {} kernel in {}: Debian's kernel packages changed; update the recipe",
                k.series(),
                boot.display()
            );
        }
    }
    found.sort();
    Ok(found)
}

fn package_versions(rootfs: &Path) -> Result<Vec<(String, String)>> {
    let mut out = Vec::new();
    for p in ["systemd", "postgresql-15", "openssh-server", "bpftool"] {
        let o = Command::new("chroot")
            .arg(rootfs)
            .args(["dpkg-query", "-W", "-f=${Version}", p])
            .output()?;
        out.push((
            p.to_string(),
            String::from_utf8_lossy(&o.stdout).trim().to_string(),
        ));
    }
    Ok(out)
}

/// A raw disk: MBR with one bootable partition from 1 MiB, ext4 made
/// straight from the tree into it, GRUB's boot sector and core image in
/// front; then compressed qcow2.
fn make_disk(rootfs: &Path, dir: &Path) -> Result<()> {
    let raw = dir.join("disk.raw");
    say(&format!(
        "disk: {} MiB raw, partition table (sfdisk), ext4 from the tree (mkfs.ext4 -d), GRUB",
        recipe::DISK_MIB
    ));
    let f = fs::File::create(&raw)?;
    f.set_len(recipe::DISK_MIB * 1024 * 1024)?;
    drop(f);
    let mut sfdisk = Command::new("sfdisk");
    sfdisk
        .arg("--quiet")
        .arg(&raw)
        .stdin(std::process::Stdio::piped());
    eprintln!(
        "$ {} <<< 'label: dos / start=2048, type=83, bootable'",
        util::render(&sfdisk)
    );
    let mut child = sfdisk.spawn().context("sfdisk (package fdisk)")?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(b"label: dos\nstart=2048, type=83, bootable\n")?;
    }
    if !child.wait()?.success() {
        bail!("sfdisk failed on {}", raw.display());
    }
    util::run(
        Command::new("mkfs.ext4")
            .args([
                "-q",
                "-F",
                "-L",
                recipe::ROOT_LABEL,
                "-E",
                "offset=1048576",
                "-d",
            ])
            .arg(rootfs)
            .arg(&raw)
            .arg(format!("{}M", recipe::DISK_MIB - 1)),
    )?;
    embed_grub(rootfs, &raw)?;
    util::run(
        Command::new("qemu-img")
            .args(["convert", "-c", "-O", "qcow2"])
            .arg(&raw)
            .arg(dir.join(DISK)),
    )?;
    fs::remove_file(&raw)?;
    Ok(())
}

/// GRUB without grub-install (which wants a block device): boot.img's code
/// into the MBR (the partition table stays), core.img from sector 1.
fn embed_grub(rootfs: &Path, raw: &Path) -> Result<()> {
    let boot = fs::read(rootfs.join("usr/lib/grub/i386-pc/boot.img"))?;
    let core = fs::read(rootfs.join("boot/grub/i386-pc/core.img"))?;
    let code = boot
        .get(..440)
        .context("boot.img is shorter than 440 bytes")?;
    if core.len() > 2047 * 512 {
        bail!(
            "GRUB's core.img ({} bytes) does not fit before the partition",
            core.len()
        );
    }
    let mut disk = fs::OpenOptions::new().write(true).open(raw)?;
    disk.write_all(code)?;
    disk.seek(SeekFrom::Start(512))?;
    disk.write_all(&core)?;
    Ok(())
}

/// Removes images of other recipes (and unfinished builds).
fn prune(keep: &Path) -> Result<()> {
    for entry in fs::read_dir(images_dir())? {
        let path = entry?.path();
        if path != keep && path.is_dir() {
            say(&format!("removing the outdated image {}", path.display()));
            fs::remove_dir_all(&path)?;
        }
    }
    Ok(())
}

fn now_utc() -> String {
    Command::new("date")
        .args(["-u", "+%Y-%m-%dT%H:%M:%SZ"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}
