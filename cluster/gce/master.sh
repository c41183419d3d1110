#!/bin/sh
# kctl master of cluster @CLUSTER@ on GCE (Debian 12). GCE runs this as root
# on every boot (startup-script metadata); each step is safe to repeat.
set -eu

# etcd's binaries; kctl starts its own etcd on port 4001 later, over SSH.
if ! dpkg-query -W -f='${Status}' etcd-server 2>/dev/null | grep -q "install ok installed"; then
  apt-get update
  DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends etcd-server
fi

# Debian's packaged etcd service would hold the data dir and ports: off.
systemctl disable --now etcd 2>/dev/null || true
