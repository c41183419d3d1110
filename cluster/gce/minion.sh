#!/bin/sh
# kctl minion @MINION_INDEX@ of cluster @CLUSTER@ on GCE (Debian 12); its pods
# get @POD_CIDR@. GCE runs this as root on every boot (startup-script
# metadata); each step is safe to repeat.
set -eu

# GCE's --can-ip-forward only lets the VM send and receive pod traffic; the
# kernel must forward it too. Not persisted: this script runs on every boot.
sysctl -w net.ipv4.ip_forward=1

# Docker and the packet filters kctl's converge loop drives.
missing=""
for p in docker.io nftables iptables; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
if [ -n "$missing" ]; then
  apt-get update
  # shellcheck disable=SC2086 # word splitting of the package list is meant
  DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends $missing
fi
