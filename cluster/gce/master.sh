#!/bin/sh
# kctl master of cluster @CLUSTER@ on GCE (Debian 12), written by kctl
# @KCTL_VERSION@. Each step is safe to repeat: this runs on every boot.
set -u
@BOOT_LIB@

boot_steps() {
  # etcd's binaries (kctl starts its own etcd on port 4001 later, over
  # SSH), and iptables for the chain that keeps etcd to the cluster.
  install_packages etcd-server iptables
  # Debian's packaged etcd service would hold the data dir and ports: off.
  systemctl disable --now etcd 2>/dev/null || true
  etcd --version >/dev/null
}

kctl_boot
