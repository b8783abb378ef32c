//! What the lab needs on the host, installed on first use (each step says
//! what it runs): the image tools from bookworm, QEMU 10 from
//! bookworm-backports through a private apt configuration (the host's own
//! apt sources stay as they are), and for `lab box` Vagrant with libvirt.

use std::fs;
use std::path::PathBuf;
use std::process::Command;

use anyhow::{Context as _, Result};

use super::{lab_dir, recipe, say};
use crate::util;

/// Building and booting the image.
const IMAGE_TOOLS: &[&str] = &[
    "mmdebstrap",
    "fdisk",
    "e2fsprogs",
    "qemu-utils",
    "openssh-client",
    "binutils",
];

/// QEMU from bookworm-backports: bookworm's 7.2 would also downgrade a
/// preinstalled backports qemu-utils.
const QEMU: &[&str] = &["qemu-system-x86"];

/// `lab box` and `vagrant up` with vagrant-libvirt, without
/// libvirt-daemon-system (its default network would come up on the host).
const VAGRANT_TOOLS: &[&str] = &[
    "vagrant",
    "vagrant-libvirt",
    "libvirt-daemon",
    "libvirt-daemon-driver-qemu",
    "libvirt-clients",
    "dnsmasq-base",
    "iptables",
];

/// Installs the image tools and QEMU where missing.
pub(crate) fn ensure_image_tools() -> Result<()> {
    install_missing(IMAGE_TOOLS, false)?;
    install_missing(QEMU, true)
}

/// Installs Vagrant, vagrant-libvirt and libvirtd where missing.
pub(crate) fn ensure_vagrant_tools() -> Result<()> {
    ensure_image_tools()?;
    install_missing(VAGRANT_TOOLS, false)
}

fn is_installed(package: &str) -> Result<bool> {
    let out = util::probe(Command::new("dpkg-query").args(["-W", "-f=${Status}", package]))?;
    Ok(out.is_some_and(|o| {
        o.status.success() && String::from_utf8_lossy(&o.stdout).trim() == "install ok installed"
    }))
}

fn install_missing(packages: &[&str], backports: bool) -> Result<()> {
    let mut missing = Vec::new();
    for p in packages {
        if !is_installed(p)? {
            missing.push(*p);
        }
    }
    if missing.is_empty() {
        return Ok(());
    }
    let mut update = Command::new("apt-get");
    update.arg("update");
    let mut install = Command::new("apt-get");
    install.env("DEBIAN_FRONTEND", "noninteractive").args([
        "install",
        "-y",
        "--no-install-recommends",
    ]);
    if backports {
        let config = private_apt()?;
        say(&format!(
            "installing {} from bookworm-backports with a private apt configuration ({})",
            missing.join(" "),
            config.display()
        ));
        update.env("APT_CONFIG", &config);
        install
            .env("APT_CONFIG", &config)
            .args(["-t", "bookworm-backports"]);
    } else {
        say(&format!(
            "installing {} (Debian packages)",
            missing.join(" ")
        ));
    }
    util::run(&mut update)?;
    util::run(install.args(&missing))
}

/// An apt configuration of the lab's own (sources with bookworm-backports,
/// lists and caches under the lab directory) over the host's dpkg database.
fn private_apt() -> Result<PathBuf> {
    let dir = lab_dir().join("apt");
    for sub in ["lists/partial", "cache/archives/partial", "sources.list.d"] {
        fs::create_dir_all(dir.join(sub)).with_context(|| format!("mkdir {}", dir.display()))?;
    }
    let mut sources = recipe::SOURCES.join("\n");
    sources.push('\n');
    fs::write(dir.join("sources.list"), sources)?;
    let d = dir.display();
    let config = format!(
        "Dir::Etc::SourceList \"{d}/sources.list\";\n\
         Dir::Etc::SourceParts \"{d}/sources.list.d\";\n\
         Dir::State::Lists \"{d}/lists\";\n\
         Dir::Cache \"{d}/cache\";\n"
    );
    let path = dir.join("apt.conf");
    fs::write(&path, config)?;
    Ok(path)
}
