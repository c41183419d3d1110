# Shared by the benchmark scripts (sourced, not run): timing, medians, and
# SSH masters opened by hand to a local cluster's minions, the floor's way
# in. Needs $KCTL_HOME and $KCTL_CLUSTER set.

now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN {printf "%.3f", b - a}'; }
median() { tr ' ' '\n' | grep . | sort -n | awk '{a[NR]=$1} END {m=(NR%2)?a[(NR+1)/2]:(a[NR/2]+a[NR/2+1])/2; printf "%.3f", m}'; }
ratio() { awk -v a="$1" -v f="$2" 'BEGIN {printf "%.2f", a / f}'; }

# Builds the release binaries and sets up a benchmark of cluster $1:
# $kctl, $KCTL_HOME, $image (the demo image's archive), $masters (for
# open_masters), and a trap that closes the masters and takes the cluster
# down however the script ends.
bench_start() {
  cargo build --release --locked --bins -q
  kctl=$PWD/target/release/kctl
  export KCTL_HOME=$PWD/target/bench-home KCTL_CLUSTER=$1
  mkdir -p "$KCTL_HOME"
  chmod 700 "$KCTL_HOME"
  image=$KCTL_HOME/demo.tar
  cluster/demo-image/build.sh "$image" tutum/tomcat:latest >/dev/null
  masters=$(mktemp -d)
  trap bench_cleanup EXIT
}
bench_cleanup() {
  close_masters
  rm -rf "$masters"
  "$kctl" down >/dev/null 2>&1 || true
}

cluster_dir() { echo "$KCTL_HOME/clusters/$KCTL_CLUSTER"; }
minion_ips() { grep -o '"hostIp": *"[^"]*"' "$(cluster_dir)/cluster.json" | grep -o '[0-9][0-9.]*'; }

# One SSH master per minion, in $masters (made by the caller, removed by
# close_masters), as any tool pushing containers over SSH would hold.
open_masters() {
  local dir ip
  dir=$(cluster_dir)
  ips=$(minion_ips)
  for ip in $ips; do
    ssh -F "$dir/ssh_config" -i "$dir/id_ed25519" -o UserKnownHostsFile="$dir/known_hosts" \
      -o ControlMaster=yes -o ControlPath="$masters/$ip" -o ControlPersist=600 -fN "root@$ip"
  done
}
close_masters() {
  local sock
  for sock in "$masters"/*; do [ -S "$sock" ] && ssh -o ControlPath="$sock" -O exit x 2>/dev/null; done
  true
}
on() { local ip=$1; shift; ssh -o ControlPath="$masters/$ip" x -- "$@"; }
running_on() { # ip name-prefix -> running containers
  on "$1" docker ps -q --filter "name=$2" | wc -l
}
clear_on() { # One string: ssh hands it to the minion's shell as it is.
  for ip in $ips; do on "$ip" "docker rm -f \$(docker ps -aq --filter name=$1) >/dev/null 2>&1 || true"; done
}
# n per minion, 10 at a time on each, all minions at once: plain containers.
floor_run() {
  local per=$1 ip i
  for ip in $ips; do
    (for i in $(seq "$per"); do
       on "$ip" docker run -d --name "floor-$i" --network none tutum/tomcat:latest >/dev/null &
       (( i % 10 == 0 )) && wait
     done; wait) &
  done
  wait
}
# A controller file of N demo replicas without host ports.
rc_file() {
  sed "s/\"replicas\": 2/\"replicas\": $1/; s/, \"hostPort\": 80//" manifests/tomcat-controller.json >"$KCTL_HOME/rc$1.json"
  echo "$KCTL_HOME/rc$1.json"
}
