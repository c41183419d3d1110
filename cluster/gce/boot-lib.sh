# --- shared by kctl's GCE startup scripts (cluster/gce/boot-lib.sh) ---
# GCE runs the startup script as root on every boot. Its output goes to the
# serial console and to $KCTL_BOOT_LOG. `kctl up` waits, over SSH, for
# $KCTL_BOOT/done ("FORMAT VERSION": the marker format and kctl's version);
# $KCTL_BOOT/failed (the log's tail) makes it stop at once and show why.
# The markers live in /run, which every boot empties: a marker of an
# earlier boot never counts while this boot's script is still running.
KCTL_BOOT=${KCTL_BOOT:-/run/kctl-boot}
KCTL_BOOT_LOG=${KCTL_BOOT_LOG:-/var/lib/kctl-boot/log}
KCTL_BOOT_FORMAT='@BOOT_FORMAT@'
KCTL_VERSION='@KCTL_VERSION@'
# Seconds before apt retry k is k times this (tests shorten it).
KCTL_BOOT_RETRY_PAUSE=${KCTL_BOOT_RETRY_PAUSE:-5}
KCTL_BOOT_SWAPFILE=${KCTL_BOOT_SWAPFILE:-/var/swapfile}
KCTL_BOOT_MEMINFO=${KCTL_BOOT_MEMINFO:-/proc/meminfo}
mkdir -p "$KCTL_BOOT" "$(dirname "$KCTL_BOOT_LOG")"
rm -f "$KCTL_BOOT/done" "$KCTL_BOOT/failed" "$KCTL_BOOT/status"

# apt on a fresh VM: the guest agent or unattended-upgrades may hold the
# dpkg lock on first boot, and a mirror may fail once. Wait for the lock,
# retry with growing pauses, never ask a question.
apt_get() {
  attempt=1
  while :; do
    if DEBIAN_FRONTEND=noninteractive apt-get -q -y \
      -o DPkg::Lock::Timeout=300 -o Acquire::Retries=3 \
      -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold "$@"; then
      return 0
    fi
    if [ "$attempt" -ge 4 ]; then
      echo "kctl-boot: apt-get $* failed $attempt times" >&2
      return 1
    fi
    pause=$((attempt * KCTL_BOOT_RETRY_PAUSE))
    echo "kctl-boot: apt-get $* failed (attempt $attempt); retrying in $pause s" >&2
    sleep "$pause"
    # A boot that died mid-install leaves dpkg half-configured.
    DEBIAN_FRONTEND=noninteractive dpkg --configure -a || true
    attempt=$((attempt + 1))
  done
}

# Installs the Debian packages named, those missing only.
install_packages() {
  missing=""
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
  done
  [ -z "$missing" ] && return 0
  echo "kctl-boot: installing$missing"
  apt_get update
  # shellcheck disable=SC2086 # the list is meant to split into words
  apt_get install --no-install-recommends $missing
}

# f1-micro has 614 MB and no swap: dpkg unpacking docker.io can run out of
# memory. A swap file where memory is under 1 GiB; not fatal if the kernel
# or filesystem refuses it.
ensure_swap() {
  mem_kb=$(awk '/^MemTotal:/ {print $2}' "$KCTL_BOOT_MEMINFO")
  [ "$mem_kb" -ge 1048576 ] && return 0
  swapon --show=NAME --noheadings | grep -q . && return 0
  if [ ! -f "$KCTL_BOOT_SWAPFILE" ]; then
    fallocate -l 1G "$KCTL_BOOT_SWAPFILE" 2>/dev/null ||
      dd if=/dev/zero of="$KCTL_BOOT_SWAPFILE" bs=1M count=1024
    chmod 600 "$KCTL_BOOT_SWAPFILE"
    mkswap "$KCTL_BOOT_SWAPFILE" >/dev/null
  fi
  swapon "$KCTL_BOOT_SWAPFILE" || echo "kctl-boot: no swap (swapon refused); continuing" >&2
}

# Runs the role's steps (boot_steps, defined by the script) under set -e,
# output to the console and the log, then leaves the marker `up` reads.
kctl_boot() {
  (
    set -e
    ensure_swap
    boot_steps
    echo ok >"$KCTL_BOOT/status"
  ) 2>&1 | tee "$KCTL_BOOT_LOG"
  if [ "$(cat "$KCTL_BOOT/status" 2>/dev/null)" = ok ]; then
    echo "$KCTL_BOOT_FORMAT $KCTL_VERSION" >"$KCTL_BOOT/done.tmp"
    mv "$KCTL_BOOT/done.tmp" "$KCTL_BOOT/done"
    echo "kctl-boot: done (kctl $KCTL_VERSION)"
  else
    tail -n 40 "$KCTL_BOOT_LOG" >"$KCTL_BOOT/failed.tmp"
    mv "$KCTL_BOOT/failed.tmp" "$KCTL_BOOT/failed"
    echo "kctl-boot: FAILED; see $KCTL_BOOT_LOG" >&2
    exit 1
  fi
}
# --- end of boot-lib.sh ---
