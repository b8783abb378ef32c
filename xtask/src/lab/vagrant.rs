//! `cargo xtask lab box`: the lab image as a vagrant-libvirt box (added
//! as `interlock-lab`), the bundle the Vagrantfile syncs into each VM, and
//! `<lab dir>/vagrant.json`, which tells `vagrant/Vagrantfile` where the
//! key, the bundle and the kernels are.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Result, bail};
use serde_json::json;

use super::{Kernel, bundle, host, image, lab_dir, recipe, say};
use crate::build_cmd;
use crate::util::{self, Workspace};

/// The box's name in `vagrant box list`.
pub(crate) const BOX_NAME: &str = "interlock-lab";

/// Options of `cargo xtask lab box`.
#[derive(clap::Args)]
pub(crate) struct Args {
    /// Put the release build of interlock in the bundle (default: debug).
    #[arg(long)]
    release: bool,
    /// Make the box file and the bundle but do not `vagrant box add` it.
    #[arg(long)]
    no_add: bool,
}

pub(crate) fn cmd(args: &Args, ws: &Workspace) -> Result<()> {
    if !util::is_root() {
        bail!("making the lab box needs root (image build, packages): run as root");
    }
    let image = image::ensure()?;
    if !args.no_add {
        host::ensure_vagrant_tools()?;
    }
    build_cmd::build(ws, args.release)?;
    let bundle = bundle::make(ws, "vagrant-bundle", &ws.interlock_bin(args.release))?;

    let dir = lab_dir().join("box");
    fs::create_dir_all(&dir)?;
    let file = dir.join(format!("{BOX_NAME}-{}.box", image.manifest.recipe));
    if !file.is_file() {
        make_box(&image, &dir, &file)?;
    } else {
        say(&format!("box {} is current", file.display()));
    }
    write_config(&image, &bundle)?;
    if args.no_add {
        return Ok(());
    }
    let home = vagrant_home();
    say(&format!(
        "adding the box as {BOX_NAME} (VAGRANT_HOME={})",
        home.display()
    ));
    util::run(
        Command::new("vagrant")
            .env("VAGRANT_HOME", &home)
            .args(["box", "add", "--force", "--name", BOX_NAME])
            .arg(&file),
    )?;
    say("next: `cd vagrant && vagrant up` (vagrant/README.md)");
    Ok(())
}

/// Vagrant's state: `VAGRANT_HOME`, or `<lab dir>/vagrant.d` (the lab runs
/// as root; `vagrant/netns.sh` uses the same default).
fn vagrant_home() -> PathBuf {
    match std::env::var_os("VAGRANT_HOME") {
        Some(h) if !h.is_empty() => PathBuf::from(h),
        _ => lab_dir().join("vagrant.d"),
    }
}

/// A libvirt box: metadata.json, a Vagrantfile with the box's defaults,
/// and the image as box.img, in a tar.
fn make_box(image: &image::Image, dir: &Path, file: &Path) -> Result<()> {
    let stage = dir.join("stage");
    if stage.exists() {
        fs::remove_dir_all(&stage)?;
    }
    fs::create_dir_all(&stage)?;
    let virtual_gib = recipe::DISK_MIB / 1024;
    fs::write(
        stage.join("metadata.json"),
        json!({"provider": "libvirt", "format": "qcow2", "virtual_size": virtual_gib}).to_string(),
    )?;
    fs::write(stage.join("Vagrantfile"), BOX_VAGRANTFILE)?;
    say("box: the image as box.img (hard link when possible)");
    let img = stage.join("box.img");
    if fs::hard_link(image.disk(), &img).is_err() {
        fs::copy(image.disk(), &img)?;
    }
    let partial = file.with_extension("box.partial");
    util::run(
        Command::new("tar")
            .arg("-C")
            .arg(&stage)
            .arg("-cf")
            .arg(&partial)
            .args(["metadata.json", "Vagrantfile", "box.img"]),
    )?;
    fs::rename(&partial, file)?;
    fs::remove_dir_all(&stage)?;
    say(&format!("box file {}", file.display()));
    Ok(())
}

/// The box's own defaults: the lab key (the insecure Vagrant key is not
/// in the image) and no default synced folder.
const BOX_VAGRANTFILE: &str = r#"Vagrant.configure("2") do |config|
  config.ssh.username = "vagrant"
  config.ssh.insert_key = false
  config.vm.synced_folder ".", "/vagrant", disabled: true
end
"#;

/// What `vagrant/Vagrantfile` reads: `<lab dir>/vagrant.json`.
fn write_config(image: &image::Image, bundle: &Path) -> Result<PathBuf> {
    let mut kernels = serde_json::Map::new();
    for k in Kernel::ALL {
        kernels.insert(
            k.series().to_string(),
            json!({
                "release": image.release(k).unwrap_or(""),
                "kernel": image.vmlinuz(k),
                "initrd": image.initrd(k),
            }),
        );
    }
    let config = json!({
        "box": BOX_NAME,
        "recipe": image.manifest.recipe,
        "ssh_key": image.ssh_key(),
        "bundle": bundle,
        "cmdline": recipe::kernel_cmdline(),
        "kernels": kernels,
    });
    let path = lab_dir().join("vagrant.json");
    fs::write(&path, serde_json::to_string_pretty(&config)?)?;
    say(&format!("Vagrantfile settings in {}", path.display()));
    Ok(path)
}
