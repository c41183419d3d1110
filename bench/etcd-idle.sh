#!/usr/bin/env bash
# etcd traffic from idle helpers: local clusters of 3, 10 and 30 minions
# (no pods), left alone; etcd's own counters read 20 s apart.
# Run as root:  bench/etcd-idle.sh [MINIONS...]     (default 3 10 30)
# Prints, per size: messages etcd received per second (unary requests and
# stream messages alike), the bytes per second it sent and received, and
# the floor: one heartbeat renewal per helper per second, the least any
# design with kctl's 1 s heartbeat sends.
set -euo pipefail
cd "$(dirname "$0")/.."
sizes=("${@:-3 10 30}")
[ $# -eq 0 ] && sizes=(3 10 30)
cargo build --release --locked --bins -q
kctl=$PWD/target/release/kctl
export KCTL_HOME=$PWD/target/bench-home KCTL_CLUSTER=bench-idle
mkdir -p "$KCTL_HOME"
chmod 700 "$KCTL_HOME"
trap '"$kctl" down >/dev/null 2>&1 || true' EXIT
window=20

# Sums the samples of one metric in etcd's /metrics text.
metric() { # text name
  awk -v name="$2" '$1 ~ "^"name"({|$)" {sum += $2} END {printf "%.0f", sum}' <<<"$1"
}
scrape() {
  local pki=$KCTL_HOME/clusters/$KCTL_CLUSTER/pki
  local endpoint
  endpoint=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["etcdEndpoints"][0])' \
    "$KCTL_HOME/clusters/$KCTL_CLUSTER/cluster.json")
  curl -sS --max-time 5 --cacert "$pki/ca.crt" --cert "$pki/kctl.crt" --key "$pki/kctl.key" \
    "$endpoint/metrics"
}

"$kctl" down >/dev/null 2>&1 || true
printf '%-8s %12s %12s %12s %10s\n' minions "msgs/s" "KB/s in" "KB/s out" "floor/s"
for n in "${sizes[@]}"; do
  "$kctl" up --minions "$n" >/dev/null 2>&1
  sleep 10 # every helper past its first rounds
  before=$(scrape)
  sleep "$window"
  after=$(scrape)
  msgs=$(( $(metric "$after" grpc_server_msg_received_total) - $(metric "$before" grpc_server_msg_received_total) ))
  bytes_in=$(( $(metric "$after" etcd_network_client_grpc_received_bytes_total) - $(metric "$before" etcd_network_client_grpc_received_bytes_total) ))
  bytes_out=$(( $(metric "$after" etcd_network_client_grpc_sent_bytes_total) - $(metric "$before" etcd_network_client_grpc_sent_bytes_total) ))
  awk -v n="$n" -v m="$msgs" -v i="$bytes_in" -v o="$bytes_out" -v w="$window" \
    'BEGIN {printf "%-8d %12.1f %12.1f %12.1f %10d\n", n, m / w, i / w / 1024, o / w / 1024, n}'
  "$kctl" down >/dev/null 2>&1
done
