#!/usr/bin/env bash
# kctl at scale on this machine, each figure beside its floor measured in
# the same run (run as root):
#
#   bench/scale.sh [SIZES...]        (default 3 10 30)
#
# 1. `kctl up --masters 3 --minions N` for each N, from nothing (`down`
#    between), and the largest against the smallest: the goal is at most
#    3x for 30 minions against 3.
# 2. On the largest cluster, PODS (default 10) pods per minion:
#    floor:       that many plain `docker run -d` over already-open SSH
#                 masters, 10 at a time on each minion, all minions at once;
#    kctl apply:  a controller of that many replicas, from the command's
#                 start until it returns with every pod Running;
#    then the no-op re-apply and `kctl get pods` (medians of 5).
# 3. Failover with 3 etcd members: the minion whose helper leads the others
#    is cut (`kctl minion stop`: every process of it killed at once); the
#    time until the cluster sees it NotReady (its heartbeat lease expired,
#    the floor: nothing may move before), and until every replica runs
#    again, none on it. Polled every 0.2 s.
# Also, without floors: a service over all the pods (until `apply` returns
# with the rules on every minion) and `kctl down`.
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
sizes=("$@")
[ $# -eq 0 ] && sizes=(3 10 30)
per_minion=${PODS:-10}
bench_start bench-scale
"$kctl" down >/dev/null 2>&1 || true

# 1. up
declare -A up_s
for n in "${sizes[@]}"; do
  t0=$(now); "$kctl" up --masters 3 --minions "$n" >/dev/null; up_s[$n]=$(since "$t0")
  printf '%-44s %8.2f s\n' "kctl up --masters 3 --minions $n" "${up_s[$n]}"
  [ "$n" = "${sizes[-1]}" ] || "$kctl" down >/dev/null
done
small=${sizes[0]} big=${sizes[-1]}
printf '%-44s %8s x   (goal: at most 3x)\n' "up of $big against up of $small" "$(ratio "${up_s[$big]}" "${up_s[$small]}")"

# 2. apply, get, no-op on the largest
pods=$((big * per_minion))
"$kctl" image load -i "$image" >/dev/null
open_masters
t0=$(now); floor_run "$per_minion"; floor=$(since "$t0")
started=0; for ip in $ips; do started=$((started + $(running_on "$ip" floor-))); done
clear_on floor-
file=$(rc_file "$pods")
t0=$(now); "$kctl" apply -f "$file" >/dev/null; apply=$(since "$t0")
running=$("$kctl" get pods | grep -c Running || true)
noop_s="" get_s=""
for _ in 1 2 3 4 5; do
  t0=$(now); "$kctl" apply -f "$file" >/dev/null; noop_s+="$(since "$t0") "
  t0=$(now); "$kctl" get pods >/dev/null; get_s+="$(since "$t0") "
done
printf '%-44s %8.2f s   (%d running)\n' "floor: $pods docker run over SSH" "$floor" "$started"
printf '%-44s %8.2f s   (%s x the floor; %d Running)\n' "kctl apply, $pods replicas on $big minions" "$apply" "$(ratio "$apply" "$floor")" "$running"
printf '%-44s %8.3f s\n' "kctl apply, no-op" "$(echo "$noop_s" | median)"
printf '%-44s %8.3f s\n' "kctl get pods ($pods pods)" "$(echo "$get_s" | median)"

# A service over all of them: its portal's rules on every minion.
t0=$(now); "$kctl" apply -f manifests/tomcat-service.json >/dev/null; svc=$(since "$t0")
printf '%-44s %8.2f s   (no floor measured)\n' "service over $pods pods, rules on $big minions" "$svc"

# 3. failover of the leader's minion
slot=$(grep -o '"slot": *[0-9]*' "$(cluster_dir)/cluster.json" | grep -o '[0-9]*$')
# The helper that took the lead last says so last (lines begin with the time).
leader=$(cat /run/kctl/"$slot"/m*/helper/kctl-node.log | grep "leads the cluster now" \
  | sort | tail -1 | sed -E 's/.* (minion-[0-9]+) leads.*/\1/')
[ -n "$leader" ] || { echo "no helper says it leads" >&2; exit 1; }
on_it=$("$kctl" get pods -o json | python3 -c 'import json,sys; print(sum(1 for p in json.load(sys.stdin)["items"] if p["currentState"]["host"]==sys.argv[1]))' "$leader")
t0=$(now); "$kctl" minion stop "$leader" >/dev/null
not_ready="" moved=""
while [ -z "$moved" ]; do
  if [ -z "$not_ready" ] && "$kctl" get minions | grep -E "^$leader +" | grep -q NotReady; then
    not_ready=$(since "$t0")
  fi
  if "$kctl" get pods -o json | python3 -c '
import json, sys
items = json.load(sys.stdin)["items"]
ok = len(items) == int(sys.argv[2]) and all(p["currentState"]["status"] == "Running" and p["currentState"]["host"] != sys.argv[1] for p in items)
sys.exit(0 if ok else 1)' "$leader" "$pods"; then
    moved=$(since "$t0")
  fi
  awk -v t="$(since "$t0")" 'BEGIN {exit !(t > 180)}' && { echo "failover: not done after 180 s" >&2; exit 1; }
  sleep 0.2
done
printf '%-44s %8.2f s   (floor: its heartbeat lease expired)\n' "leader's minion ($leader) cut: NotReady" "${not_ready:-$moved}"
printf '%-44s %8.2f s   (%d pods moved; %s x the floor)\n' "every replica running again, none on it" "$moved" "$on_it" "$(ratio "$moved" "${not_ready:-$moved}")"

close_masters
t0=$(now); "$kctl" down >/dev/null; down=$(since "$t0")
printf '%-44s %8.2f s   (no floor measured)\n' "kctl down ($big minions)" "$down"
