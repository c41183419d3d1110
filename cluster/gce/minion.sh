#!/bin/sh
# kctl minion @MINION_INDEX@ of cluster @CLUSTER@ on GCE (Debian 12); its pods
# get @POD_CIDR@. Written by kctl @KCTL_VERSION@. Each step is safe to repeat:
# this runs on every boot.
set -u
@BOOT_LIB@

boot_steps() {
  # GCE's --can-ip-forward only lets the VM send and receive pod traffic;
  # the kernel must forward it too. Not persisted: this runs every boot.
  sysctl -w net.ipv4.ip_forward=1
  # Docker and the packet filters kctl's converge loop drives. Docker's
  # default seccomp/AppArmor profile needs apparmor_parser where the kernel
  # has AppArmor on (Debian's does; docker.io only recommends it).
  install_packages docker.io nftables iptables apparmor
  systemctl enable --now docker
  # Ready means Docker answers, not merely installed.
  tries=0
  until docker version >/dev/null 2>&1; do
    tries=$((tries + 1))
    [ "$tries" -ge 30 ] && { echo "kctl-boot: dockerd does not answer" >&2; return 1; }
    sleep 1
  done
}

kctl_boot
