#!/usr/bin/env bash
# kctl apply against its floor, in one run on the same local minions:
#   floor: 30 plain `docker run -d` over already-open SSH masters, 10 at a
#          time on each of 3 minions (what any tool pushing containers over
#          SSH must at least pay);
#   kctl:  `kctl apply` of a 30-replica controller (2 containers a pod:
#          infra + app), then a no-op re-apply;
# and `kctl up` of 3 and of BIG (30) minions. Prints each round, medians, the ratio
# apply/floor, and SSH sessions opened per minion (from the minions' sshd
# logs). Run as root:  bench/apply-floor.sh [ROUNDS]   (default 3)
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-3}
cargo build --release --locked --bins -q
kctl=$PWD/target/release/kctl
export KCTL_HOME=$PWD/target/bench-home KCTL_CLUSTER=floor
mkdir -p "$KCTL_HOME"
dir=$KCTL_HOME/clusters/floor
image=$KCTL_HOME/demo.tar
rc=$KCTL_HOME/rc30.json
cluster/demo-image/build.sh "$image" tutum/tomcat:latest >/dev/null
sed 's/"replicas": 2/"replicas": 30/; s/, "hostPort": 80//' manifests/tomcat-controller.json >"$rc"
masters=$(mktemp -d)
cleanup() {
  for sock in "$masters"/*; do [ -S "$sock" ] && ssh -o ControlPath="$sock" -O exit x 2>/dev/null; done
  rm -rf "$masters"
  "$kctl" down >/dev/null 2>&1 || true
}
trap cleanup EXIT

now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN {printf "%.3f", b - a}'; }
median() { tr ' ' '\n' | grep . | sort -n | awk '{a[NR]=$1} END {m=(NR%2)?a[(NR+1)/2]:(a[NR/2]+a[NR/2+1])/2; printf "%.3f", m}'; }
sessions() { # total "Starting session" lines per minion, space-separated
  for m in 1 2 3; do grep -c "Starting session" "$dir/minions/minion-$m/sshd.log" 2>/dev/null || echo 0; done | tr '\n' ' '
}
minus() { paste -d' ' <(echo "$1" | tr ' ' '\n') <(echo "$2" | tr ' ' '\n') | awk 'NF==2 {printf "%d ", $1-$2}'; }

"$kctl" down >/dev/null 2>&1 || true
t0=$(now); "$kctl" up --minions 3 >/dev/null; up=$(since "$t0")
printf '%-34s %7.2f s   sessions per minion: %s\n' "kctl up (3 minions)" "$up" "$(sessions)"
"$kctl" image load -i "$image" >/dev/null
ips=$(grep -o '"hostIp": *"[^"]*"' "$dir/cluster.json" | grep -o '[0-9][0-9.]*')
for ip in $ips; do
  ssh -F "$dir/ssh_config" -i "$dir/id_ed25519" -o UserKnownHostsFile="$dir/known_hosts" \
    -o ControlMaster=yes -o ControlPath="$masters/$ip" -o ControlPersist=600 -fN "root@$ip"
done
on() { local ip=$1; shift; ssh -o ControlPath="$masters/$ip" x -- "$@"; }

floor_s="" apply_s="" noop_s=""
for round in $(seq "$rounds"); do
  t0=$(now)
  for ip in $ips; do
    (for i in $(seq 10); do on "$ip" docker run -d --name "floor-$i" --network none tutum/tomcat:latest >/dev/null & done; wait) &
  done
  wait
  floor=$(since "$t0")
  started=0
  for ip in $ips; do started=$((started + $(on "$ip" docker ps -q --filter name=floor- | wc -l))); done
  # One string: ssh hands it to the minion's shell as it is.
  for ip in $ips; do on "$ip" 'docker rm -f $(docker ps -aq --filter name=floor-) >/dev/null'; done

  before=$(sessions)
  t0=$(now); "$kctl" apply -f "$rc" >/dev/null 2>&1; apply=$(since "$t0")
  used=$(minus "$(sessions)" "$before")
  running=$("$kctl" get pods | grep -c Running || true)
  spread=$("$kctl" get pods | awk '/Running/ {split($3, h, "/"); n[h[1]]++} END {for (m in n) printf "%s:%d ", m, n[m]}')
  t0=$(now); "$kctl" apply -f "$rc" >/dev/null 2>&1; noop=$(since "$t0")
  printf 'round %d: floor %6.2f s (%d running)   kctl apply %6.2f s (%s pods running, %s; sessions per minion: %s)   no-op %5.3f s\n' \
    "$round" "$floor" "$started" "$apply" "$running" "$spread" "$used" "$noop"
  "$kctl" delete rc tomcatController >/dev/null 2>&1
  floor_s+="$floor " apply_s+="$apply " noop_s+="$noop "
done
f=$(echo "$floor_s" | median) a=$(echo "$apply_s" | median) n=$(echo "$noop_s" | median)
echo "--- medians over $rounds rounds"
printf '%-34s %7.2f s\n' "floor: 30 docker run over SSH" "$f"
printf '%-34s %7.2f s   (%.2f x the floor)\n' "kctl apply, 30 replicas" "$a" "$(awk -v a="$a" -v f="$f" 'BEGIN {print a / f}')"
printf '%-34s %7.3f s\n' "kctl apply, no-op" "$n"

# A big cluster: up of BIG minions (default 30), once.
big=${BIG:-30}
"$kctl" down >/dev/null 2>&1
t0=$(now); "$kctl" up --minions "$big" >/dev/null; up=$(since "$t0")
per=$(grep -c "Starting session" "$dir"/minions/minion-*/sshd.log | awk -F: '{print $2}' | sort -n | uniq -c | awk '{printf "%s minions: %s  ", $1, $2}')
printf '%-34s %7.2f s   sessions per minion: %s\n' "kctl up ($big minions)" "$up" "$per"
