#!/usr/bin/env bash
# Wall times of the local workflow, repeated: `up` with 2 and 3 minions,
# applying the 2-replica tomcat controller, and a no-op re-apply.
# Run as root:  bench/local-cluster.sh [RUNS]      (default 3 runs)
# Prints one line per measurement and a median per step.
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-3}
cargo build --release --locked --bins -q
kctl=$PWD/target/release/kctl
export KCTL_HOME=$PWD/target/bench-home KCTL_CLUSTER=bench
mkdir -p "$KCTL_HOME"
image=$KCTL_HOME/demo.tar
cluster/demo-image/build.sh "$image" tutum/tomcat:latest >/dev/null
trap '"$kctl" down >/dev/null 2>&1 || true' EXIT

declare -A samples
now() { date +%s.%N; }
measure() { # name command...
  local name=$1; shift
  local t0 t1
  t0=$(now); "$@" >/dev/null 2>&1; t1=$(now)
  local s; s=$(awk -v a="$t0" -v b="$t1" 'BEGIN {printf "%.3f", b - a}')
  printf '%-28s %6.2f s\n' "$name" "$s"
  samples[$name]+="$s "
}
"$kctl" down >/dev/null 2>&1 || true
for run in $(seq "$runs"); do
  for n in 2 3; do
    measure "up ($n minions)" "$kctl" up --minions "$n"
    if [ "$n" = 2 ]; then
      "$kctl" image load -i "$image" >/dev/null 2>&1
      measure "apply 2-replica controller" "$kctl" apply -f manifests/tomcat-controller.json
      measure "re-apply (no-op)" "$kctl" apply -f manifests/tomcat-controller.json
    fi
    measure "down ($n minions)" "$kctl" down
  done
done
echo "--- medians over $runs runs"
for name in "up (2 minions)" "up (3 minions)" "apply 2-replica controller" "re-apply (no-op)" "down (2 minions)" "down (3 minions)"; do
  median=$(tr ' ' '\n' <<<"${samples[$name]}" | grep -v '^$' | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}')
  printf '%-28s %6.2f s\n' "$name" "$median"
done
