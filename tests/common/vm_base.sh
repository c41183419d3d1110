#!/bin/sh
# Builds the base root filesystem of the test VMs (tests/common/vms.rs):
#   vm_base.sh DEST PACKAGES MIRROR
# DEST appears only when complete (built in DEST.tmp, then renamed). The
# caller holds a lock (flock) on DEST.lock, so parallel tests wait for one
# build. What it makes stands in for a GCE Debian 12 image: systemd, sshd,
# sudo, curl and friends, but no Docker, etcd, iptables or nftables (kctl
# installs those over apt).
set -eu
dest=$1
packages=$2
mirror=$3
[ -d "$dest" ] && exit 0
tmp=$dest.tmp
rm -rf "$tmp"
mkdir -p "$tmp"
debootstrap --variant=minbase --include="$packages" bookworm "$tmp" "$mirror"
r=$tmp

# apt: Debian's archive and security updates, as on GCE images; no package
# lists (kctl runs apt-get update). The proxy is set per VM.
cat >"$r/etc/apt/sources.list" <<EOF
deb http://deb.debian.org/debian bookworm main
deb http://deb.debian.org/debian bookworm-updates main
deb http://deb.debian.org/debian-security bookworm-security main
EOF
rm -rf "$r/var/lib/apt/lists/"* "$r/var/cache/apt/"*.bin
mkdir -p "$r/var/lib/apt/lists/partial"
chroot "$r" apt-get clean

# Host keys are made per VM by the harness (GCE's guest agent makes them at
# first boot); only the ed25519 one is configured.
rm -f "$r"/etc/ssh/ssh_host_*
cat >"$r/etc/ssh/sshd_config.d/kctl-test-vm.conf" <<EOF
HostKey /etc/ssh/ssh_host_ed25519_key
EOF

# Identity and names are per VM.
: >"$r/etc/machine-id"
rm -f "$r/var/lib/dbus/machine-id"
printf '# No resolver: the VMs reach nothing outside their bridge.\n' >"$r/etc/resolv.conf"

# There is no console tty: /dev/console and /dev/ttyS0 are the VM's serial
# log file. The kernel is this machine's: no debugfs, tracefs, configfs or
# fusectl of it in the VMs.
chroot "$r" systemctl mask console-getty.service systemd-networkd-wait-online.service \
  sys-kernel-debug.mount sys-kernel-tracing.mount sys-kernel-config.mount \
  sys-fs-fuse-connections.mount
# apt's timers would run apt-get at random times during tests.
chroot "$r" systemctl mask apt-daily.timer apt-daily-upgrade.timer

# Docker's and containerd's data live on a plain per-VM directory (bound
# over these at boot): overlay2 refuses an overlayfs backing filesystem.
mkdir -p "$r/var/lib/docker" "$r/var/lib/containerd"

# GCE's guest environment, as far as the tests need it: passwordless sudo
# for the google-sudoers group, and google-startup-scripts.service running
# the startup script from "metadata" (/var/lib/google/startup-script here)
# after the network is up, its output to the journal and the serial port.
chroot "$r" groupadd --system google-sudoers
printf '%%google-sudoers ALL=(ALL:ALL) NOPASSWD:ALL\n' >"$r/etc/sudoers.d/google_sudoers"
chmod 0440 "$r/etc/sudoers.d/google_sudoers"
mkdir -p "$r/var/lib/google"
cat >"$r/usr/bin/google_metadata_script_runner" <<'EOF'
#!/bin/bash
# Stand-in for GCE's google_metadata_script_runner: runs the startup script
# of the instance's metadata (here /var/lib/google/startup-script) as root,
# each line of its output to the journal and to the serial port.
script=/var/lib/google/${1:-startup}-script
log() {
  printf '%s %s google_metadata_script_runner[%d]: %s\n' \
    "$(date '+%b %d %H:%M:%S')" "$(hostname)" "$$" "$1" >>/dev/ttyS0
  printf '%s\n' "$1"
}
log "Starting startup scripts (version kctl-test)."
if [ ! -s "$script" ]; then
  log "No startup scripts to run."
  exit 0
fi
log "Found startup-script in metadata."
dir=$(mktemp -d /tmp/metadata-scripts.XXXXXX)
cp "$script" "$dir/startup-script"
chmod 0700 "$dir/startup-script"
/bin/bash -c "$dir/startup-script" </dev/null 2>&1 | while IFS= read -r line; do
  log "startup-script: $line"
done
status=${PIPESTATUS[0]}
log "startup-script exit status $status"
log "Finished running startup scripts."
rm -rf "$dir"
EOF
chmod 0755 "$r/usr/bin/google_metadata_script_runner"
cat >"$r/etc/systemd/system/google-startup-scripts.service" <<'EOF'
[Unit]
Description=Google Compute Engine Startup Scripts
Wants=network-online.target
After=network-online.target

[Service]
Type=oneshot
ExecStart=/usr/bin/google_metadata_script_runner startup
KillMode=process
StandardOutput=journal

[Install]
WantedBy=multi-user.target
EOF
chroot "$r" systemctl enable google-startup-scripts.service

echo "kctl test VM base, Debian 12, built $(date -u +%FT%TZ)" >"$r/etc/kctl-test-vm"
mv "$tmp" "$dest"
