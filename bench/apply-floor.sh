#!/usr/bin/env bash
# kctl apply against its floors, measured in one run on the same 3 local
# minions (run as root):
#
#   bench/apply-floor.sh [ROUNDS]        (default 3)
#
# Environment: SIZES="30 150" (the N measured), BIG=30 (minions for `up`).
# For each N replicas of the demo image:
#   floor:      N plain `docker run -d` over already-open SSH masters, 10 at
#               a time on each minion (what any tool pushing containers
#               over SSH must at least pay; the issue's yardstick);
#   pod floor:  the same N as pods by hand, the containers kctl needs:
#               a pause container on the pod network, then the app joined
#               to it (`--network container:`), one SSH command per pod,
#               10 at a time on each minion;
#   kctl apply: a controller of N replicas, timed from the command's start
#               until it returns with every pod Running;
# then the no-op re-apply, the start latency of the 150 pods (from the
# moment `kctl apply` began to each app container's StartedAt, p50 and
# p99), SSH sessions opened per minion during each apply (from the
# minions' sshd logs), and `kctl up` of 3 and of BIG minions.
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
rounds=${1:-3}
bench_start floor
dir=$KCTL_HOME/clusters/floor

sessions() { # total "Starting session" lines per minion, space-separated
  for m in 1 2 3; do grep -c "Starting session" "$dir/minions/minion-$m/sshd.log" 2>/dev/null || echo 0; done | tr '\n' ' '
}
minus() { paste -d' ' <(echo "$1" | tr ' ' '\n') <(echo "$2" | tr ' ' '\n') | awk 'NF==2 {printf "%d ", $1-$2}'; }

"$kctl" down >/dev/null 2>&1 || true
t0=$(now); "$kctl" up --minions 3 >/dev/null; up=$(since "$t0")
printf '%-40s %7.2f s   sessions per minion: %s\n' "kctl up (3 minions)" "$up" "$(sessions)"
"$kctl" image load -i "$image" >/dev/null
open_masters
# n pods per minion, 10 at a time: pause on the pod network, app joined.
pod_floor_run() {
  local per=$1
  for ip in $ips; do
    (for i in $(seq "$per"); do
       on "$ip" "docker run -d --name floorpod-$i-POD --network kctl kctl/pause:0.1 >/dev/null && docker run -d --name floorpod-$i-web --network container:floorpod-$i-POD tutum/tomcat:latest >/dev/null" &
       (( i % 10 == 0 )) && wait
     done; wait) &
  done
  wait
}
# StartedAt of every app container of the cluster, as epoch seconds.
app_starts() {
  for ip in $ips; do
    on "$ip" 'docker inspect -f "{{index .Config.Labels \"io.kctl.container\"}} {{.State.StartedAt}}" $(docker ps -q --filter label=io.kctl.cluster=floor)'
  done | awk '$1 != "POD" {print $2}' | python3 -c '
import sys, datetime
for line in sys.stdin:
    t = line.strip().rstrip("Z")
    base, _, frac = t.partition(".")
    s = datetime.datetime.strptime(base, "%Y-%m-%dT%H:%M:%S").replace(tzinfo=datetime.timezone.utc).timestamp()
    print("%.6f" % (s + float("0." + (frac or "0"))))'
}
percentiles() { # t0 < starts -> "p50 p99 max" of start - t0
  python3 -c '
import sys
t0 = float(sys.argv[1])
d = sorted(float(x) - t0 for x in sys.stdin if x.strip())
pick = lambda q: d[min(len(d) - 1, int(q * len(d)))]
print(f"{pick(0.50):.2f} {pick(0.99):.2f} {d[-1]:.2f} {len(d)}")' "$1"
}

for n in ${SIZES:-30 150}; do
  per=$((n / 3))
  file=$(rc_file "$n")
  floor_s="" pod_s="" apply_s="" noop_s="" p50_s="" p99_s=""
  for round in $(seq "$rounds"); do
    t0=$(now); floor_run "$per"; floor=$(since "$t0")
    started=0; for ip in $ips; do started=$((started + $(running_on "$ip" floor-))); done
    clear_on floor-
    t0=$(now); pod_floor_run "$per"; pods=$(since "$t0")
    podded=0; for ip in $ips; do podded=$((podded + $(running_on "$ip" floorpod-) / 2)); done
    clear_on floorpod-

    before=$(sessions)
    t0=$(now); "$kctl" apply -f "$file" >/dev/null 2>&1; apply=$(since "$t0")
    used=$(minus "$(sessions)" "$before")
    read -r p50 p99 worst counted <<<"$(app_starts | percentiles "$t0")"
    running=$("$kctl" get pods | grep -c Running || true)
    t1=$(now); "$kctl" apply -f "$file" >/dev/null 2>&1; noop=$(since "$t1")
    printf 'N=%-3d round %d: floor %6.2f s (%d running)  pod floor %6.2f s (%d pods)  kctl apply %6.2f s (%s Running; start p50 %s s p99 %s s; sessions per minion: %s)  no-op %5.3f s\n' \
      "$n" "$round" "$floor" "$started" "$pods" "$podded" "$apply" "$running" "$p50" "$p99" "$used" "$noop"
    "$kctl" delete rc tomcatController >/dev/null 2>&1
    # The helpers remove the containers; wait until they are gone.
    for _ in $(seq 100); do
      left=0; for ip in $ips; do left=$((left + $(on "$ip" docker ps -aq --filter label=io.kctl.cluster=floor | wc -l))); done
      [ "$left" = 0 ] && break; sleep 0.2
    done
    floor_s+="$floor " pod_s+="$pods " apply_s+="$apply " noop_s+="$noop " p50_s+="$p50 " p99_s+="$p99 "
  done
  f=$(echo "$floor_s" | median) p=$(echo "$pod_s" | median) a=$(echo "$apply_s" | median)
  echo "--- N=$n replicas on 3 minions, medians over $rounds rounds"
  printf '%-40s %7.2f s\n' "floor: $n docker run over SSH" "$f"
  printf '%-40s %7.2f s   (%s x the floor)\n' "pod floor: $n pods by hand over SSH" "$p" "$(ratio "$p" "$f")"
  printf '%-40s %7.2f s   (%s x the floor, %s x the pod floor)\n' "kctl apply, $n replicas" "$a" "$(ratio "$a" "$f")" "$(ratio "$a" "$p")"
  printf '%-40s %7.2f s p50, %.2f s p99\n' "start latency, apply begun to Running" "$(echo "$p50_s" | median)" "$(echo "$p99_s" | median)"
  printf '%-40s %7.3f s\n' "kctl apply, no-op" "$(echo "$noop_s" | median)"
done

# Under all that load no minion may have looked dead: the leader logs
# every pod it moves off a minion that is not ready.
slot=$(grep -o '"slot": *[0-9]*' "$dir/cluster.json" | grep -o '[0-9]*$')
false_alarms=$(cat /run/kctl/"$slot"/m*/helper/kctl-node.log | grep -c "not ready" || true)
printf '%-40s %7d\n' "helper log lines about minions not ready" "$false_alarms"

# A big cluster: up of BIG minions (default 30), once.
big=${BIG:-30}
"$kctl" down >/dev/null 2>&1
t0=$(now); "$kctl" up --minions "$big" >/dev/null; up=$(since "$t0")
per=$(grep -c "Starting session" "$dir"/minions/minion-*/sshd.log | awk -F: '{print $2}' | sort -n | uniq -c | awk '{printf "%s minions: %s  ", $1, $2}')
printf '%-40s %7.2f s   sessions per minion: %s\n' "kctl up ($big minions)" "$up" "$per"
