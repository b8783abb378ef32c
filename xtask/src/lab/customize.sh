#!/bin/sh
# Turns the bootstrapped Debian root file system into the lab guest.
# Run by mmdebstrap as a customize hook: $1 = the root file system,
# $2 = the public key root and vagrant accept. Part of the image recipe:
# changing this file changes the recipe hash, so the image is rebuilt.
set -eu
root=$1
pubkey=$2
in_root() { chroot "$root" "$@"; }

echo "lab image: the backports kernel (6.12) and bpftool next to bookworm's 6.1"
in_root env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
    -t bookworm-backports linux-image-amd64 bpftool

echo "lab image: host name, root file system, network (systemd-networkd, DHCP)"
echo interlock-lab > "$root/etc/hostname"
printf '127.0.0.1\tlocalhost\n127.0.1.1\tinterlock-lab\n::1\tlocalhost ip6-localhost ip6-loopback\n' > "$root/etc/hosts"
echo 'LABEL=interlock-lab / ext4 defaults,errors=remount-ro 0 1' > "$root/etc/fstab"
mkdir -p "$root/etc/systemd/network"
cat > "$root/etc/systemd/network/20-wired.network" <<'NET'
[Match]
Name=en* eth*

[Network]
DHCP=yes

[DHCPv4]
# Each VM is told apart by its MAC, not by the machine id all copies share.
ClientIdentifier=mac
NET
in_root systemctl enable systemd-networkd.service

# dbus ships a fixed machine id: every VM would get the same DHCP client id
# and address. An empty /etc/machine-id makes systemd generate one per boot.
: > "$root/etc/machine-id"
rm -f "$root/var/lib/dbus/machine-id"
ln -s /etc/machine-id "$root/var/lib/dbus/machine-id"

echo "lab image: boot faster (no timers that reach out or scrub, no KVM modules for -cpu max's svm/vmx)"
printf 'blacklist kvm_amd\nblacklist kvm_intel\nblacklist kvm\n' > "$root/etc/modprobe.d/interlock-lab.conf"
for unit in apt-daily.timer apt-daily-upgrade.timer e2scrub_all.timer fstrim.timer \
        e2scrub_reap.service; do
    in_root systemctl mask "$unit" >/dev/null 2>&1 || true
done

echo "lab image: root and vagrant log in with the lab key"
install -d -m 0700 "$root/root/.ssh"
install -m 0600 "$pubkey" "$root/root/.ssh/authorized_keys"
in_root useradd --create-home --shell /bin/bash vagrant
install -d -m 0700 -o 0 -g 0 "$root/home/vagrant/.ssh"
install -m 0600 "$pubkey" "$root/home/vagrant/.ssh/authorized_keys"
in_root chown -R vagrant:vagrant /home/vagrant/.ssh
echo 'vagrant ALL=(ALL) NOPASSWD: ALL' > "$root/etc/sudoers.d/vagrant"
chmod 0440 "$root/etc/sudoers.d/vagrant"
echo 'UseDNS no' > "$root/etc/ssh/sshd_config.d/lab.conf"

echo "lab image: GRUB for booting from the disk (the Vagrant box); kernels are also booted directly"
mkdir -p "$root/boot/grub/i386-pc"
cp "$root"/usr/lib/grub/i386-pc/*.mod "$root"/usr/lib/grub/i386-pc/*.lst "$root/boot/grub/i386-pc/"
{
    echo 'set timeout=1'
    echo 'set default=0'
    echo 'serial --unit=0 --speed=115200'
    echo 'terminal_input serial console'
    echo 'terminal_output serial console'
    # bookworm's 6.1 first (the default), then the backports kernel.
    for vmlinuz in $(cd "$root/boot" && ls vmlinuz-* | sort -V); do
        release=${vmlinuz#vmlinuz-}
        echo "menuentry 'Debian GNU/Linux, Linux $release' {"
        echo "    linux /boot/vmlinuz-$release root=LABEL=interlock-lab ro console=ttyS0,115200"
        echo "    initrd /boot/initrd.img-$release"
        echo "}"
    done
} > "$root/boot/grub/grub.cfg"
in_root grub-mkimage -O i386-pc -o /boot/grub/i386-pc/core.img -p '(hd0,msdos1)/boot/grub' \
    biosdisk part_msdos ext2 normal linux configfile search serial terminal echo test

echo "lab image: smaller (apt lists and caches removed)"
in_root apt-get clean
rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin
