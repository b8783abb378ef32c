#!/bin/sh
# Runs libvirtd and vagrant inside a network namespace of their own, for
# machines where the lab's libvirt network must not appear on the host
# (shared CI or build machines; see README.md). As root:
#
#   vagrant/netns.sh up                 # namespace, libvirtd in it, storage pool
#   vagrant/netns.sh vagrant up         # any vagrant command, inside it
#   vagrant/netns.sh down               # stop libvirtd, remove the namespace
#
# Vagrant's state goes to $VAGRANT_HOME (default here: <lab dir>/vagrant.d).
set -eu
ns=${INTERLOCK_LAB_NETNS:-interlock-lab}
lab_dir=${INTERLOCK_LAB_DIR:-/var/cache/interlock-lab}
export VAGRANT_HOME=${VAGRANT_HOME:-$lab_dir/vagrant.d}
pool_dir=$lab_dir/libvirt-pool
pidfile=$lab_dir/libvirtd.pid
here=$(cd "$(dirname "$0")" && pwd)

say() { echo "netns.sh: $*"; }

# libvirtd without systemd and without the libvirt-qemu user: QEMU runs as
# root, no cgroups or private /dev, no security driver.
configure_qemu() {
    conf=/etc/libvirt/qemu.conf
    marker="# interlock lab (vagrant/netns.sh)"
    grep -qF "$marker" "$conf" 2>/dev/null && return 0
    say "appending the lab's settings to $conf"
    cat >> "$conf" <<CONF
$marker
user = "root"
group = "root"
dynamic_ownership = 0
remember_owner = 0
security_driver = "none"
cgroup_controllers = [ ]
namespaces = [ ]
stdio_handler = "file"
CONF
}

# libvirtd resolves its compiled-in QEMU user and group (both libvirt-qemu)
# before it reads qemu.conf: they must exist even though QEMU runs as root.
# libvirt-daemon-system would create them; it is not installed (see README).
ensure_accounts() {
    getent group libvirt-qemu >/dev/null || { say "system group libvirt-qemu"; groupadd --system libvirt-qemu; }
    getent passwd libvirt-qemu >/dev/null || {
        say "system user libvirt-qemu (no login, no home)"
        useradd --system --gid libvirt-qemu --no-create-home --home-dir /var/lib/libvirt \
            --shell /usr/sbin/nologin libvirt-qemu
    }
}

up() {
    if ! ip netns list | grep -qw "$ns"; then
        say "network namespace $ns"
        ip netns add "$ns"
        ip -n "$ns" link set lo up
    fi
    configure_qemu
    ensure_accounts
    if [ -f "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null; then
        say "libvirtd already runs (pid $(cat "$pidfile"))"
    else
        say "libvirtd inside $ns"
        mkdir -p /var/log/libvirt /var/lib/libvirt /run/libvirt
        ip netns exec "$ns" libvirtd -d -p "$pidfile"
        i=0
        while ! virsh -c qemu:///system version >/dev/null 2>&1; do
            i=$((i + 1))
            if [ $i -gt 60 ] || ! kill -0 "$(cat "$pidfile" 2>/dev/null)" 2>/dev/null; then
                say "libvirtd did not come up; the end of /var/log/libvirt/libvirtd.log:"
                grep -v ' info : ' /var/log/libvirt/libvirtd.log | tail -5
                exit 1
            fi
            sleep 1
        done
    fi
    if ! virsh -c qemu:///system pool-info default >/dev/null 2>&1; then
        say "storage pool 'default' in $pool_dir"
        mkdir -p "$pool_dir"
        virsh -c qemu:///system pool-define-as default dir --target "$pool_dir" >/dev/null
    fi
    virsh -c qemu:///system pool-start default >/dev/null 2>&1 || true
    say "ready: $0 vagrant up   (VAGRANT_HOME=$VAGRANT_HOME)"
}

down() {
    if [ -f "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null; then
        say "stopping libvirtd (pid $(cat "$pidfile"))"
        kill "$(cat "$pidfile")"
    fi
    if ip netns list | grep -qw "$ns"; then
        say "removing network namespace $ns"
        ip netns delete "$ns"
    fi
}

case "${1:-}" in
    up) up ;;
    down) down ;;
    vagrant) shift; cd "$here"; exec ip netns exec "$ns" vagrant "$@" ;;
    *) echo "usage: $0 up | down | vagrant ARGS..." >&2; exit 2 ;;
esac
