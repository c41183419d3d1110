//! Pieces shared by the test-made machines (`hosts::PlainHosts`,
//! `vms::DebianVms`): claiming an address range, snapshots of a machine's
//! state and their normalisation, and small process, namespace, cgroup and
//! mount helpers.

use std::net::Ipv4Addr;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Everything about a host that kctl might change, normalised so that two
/// snapshots of an untouched host compare equal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostSnapshot {
    /// `iptables-save -t filter` then `-t nat`: no comment lines, no
    /// packet counters.
    pub iptables: Vec<String>,
    /// `nft list ruleset`, with `counter packets N bytes M` as `counter`.
    pub nft: Vec<String>,
    /// `ip -4 route` in the namespace (without `linkdown`).
    pub routes: Vec<String>,
    /// `ip -4 addr` in the namespace (without carrier state).
    pub addrs: Vec<String>,
    /// `docker ps -a` names, sorted.
    pub containers: Vec<String>,
    /// `docker network ls` names, sorted.
    pub networks: Vec<String>,
    /// `docker image ls` repository:tag, sorted.
    pub images: Vec<String>,
    /// Listening TCP and UDP sockets as "tcp ADDR:PORT" / "udp ADDR:PORT",
    /// sorted.
    pub listening: Vec<String>,
    /// Command names (`/proc/PID/comm`) of the processes in the namespace,
    /// sorted, each once.
    pub processes: Vec<String>,
    /// `net.ipv4.ip_forward` in the namespace.
    pub ip_forward: String,
    /// Loaded systemd units that are active or failed, as "UNIT STATE"
    /// (STATE: active or failed), sorted. Empty for hosts without systemd
    /// (`PlainHosts`).
    pub units: Vec<String>,
}

impl HostSnapshot {
    /// A readable account of what differs from `other` (empty when equal).
    pub fn diff(&self, other: &HostSnapshot) -> String {
        let mut out = String::new();
        let fields: [(&str, &Vec<String>, &Vec<String>); 10] = [
            ("iptables", &self.iptables, &other.iptables),
            ("nft", &self.nft, &other.nft),
            ("routes", &self.routes, &other.routes),
            ("addrs", &self.addrs, &other.addrs),
            ("containers", &self.containers, &other.containers),
            ("networks", &self.networks, &other.networks),
            ("images", &self.images, &other.images),
            ("listening", &self.listening, &other.listening),
            ("processes", &self.processes, &other.processes),
            ("units", &self.units, &other.units),
        ];
        for (name, a, b) in fields {
            if a != b {
                out.push_str(&format!("--- {name}\n"));
                for l in a.iter().filter(|l| !b.contains(l)) {
                    out.push_str(&format!("- {l}\n"));
                }
                for l in b.iter().filter(|l| !a.contains(l)) {
                    out.push_str(&format!("+ {l}\n"));
                }
                if a.iter().all(|l| b.contains(l)) && b.iter().all(|l| a.contains(l)) {
                    out.push_str("  (same lines, different order or count)\n");
                }
            }
        }
        if self.ip_forward != other.ip_forward {
            out.push_str(&format!(
                "--- ip_forward\n- {}\n+ {}\n",
                self.ip_forward, other.ip_forward
            ));
        }
        out
    }
}

/// `$HOME/.kctl-test`.
pub fn test_home() -> PathBuf {
    PathBuf::from(std::env::var_os("HOME").unwrap_or_else(|| "/root".into())).join(".kctl-test")
}

/// Claims a free 10.X.0.0/16, X in `first..=last`, by adding an
/// unreachable route for it. Ranges that overlap any route on the machine
/// are skipped.
pub fn claim_range(first: u8, last: u8) -> Result<u8, String> {
    let routes = run(&["ip", "-4", "route", "show", "table", "all"])?;
    let taken: Vec<(u32, u32)> = routes.lines().filter_map(route_destination).collect();
    for x in first..=last {
        let net = u32::from(Ipv4Addr::new(10, x, 0, 0));
        if taken
            .iter()
            .any(|&(dest, len)| overlaps(net, 16, dest, len))
        {
            continue;
        }
        if quiet(&[
            "ip",
            "route",
            "add",
            "unreachable",
            &format!("10.{x}.0.0/16"),
        ]) {
            return Ok(x);
        }
    }
    Err(format!(
        "no free range among 10.{first}.0.0/16 to 10.{last}.0.0/16"
    ))
}

/// The destination of an `ip route` line as (address, prefix length);
/// default routes are none.
pub fn route_destination(line: &str) -> Option<(u32, u32)> {
    let mut words = line.split_whitespace();
    let mut dest = words.next()?;
    if [
        "unicast",
        "local",
        "broadcast",
        "multicast",
        "unreachable",
        "blackhole",
        "prohibit",
        "throw",
        "nat",
        "anycast",
    ]
    .contains(&dest)
    {
        dest = words.next()?;
    }
    let (addr, len) = match dest.split_once('/') {
        Some((a, l)) => (a, l.parse().ok()?),
        None => (dest, 32),
    };
    let addr: Ipv4Addr = addr.parse().ok()?;
    (len > 0).then_some((u32::from(addr), len))
}

pub fn overlaps(a: u32, a_len: u32, b: u32, b_len: u32) -> bool {
    let len = a_len.min(b_len);
    let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
    a & mask == b & mask
}

/// `iptables-save` output without comment lines and packet counters.
pub fn normalise_iptables(text: &str) -> Vec<String> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| {
            if l.starts_with(':') {
                // ":CHAIN POLICY [packets:bytes]"
                match l.rsplit_once(" [") {
                    Some((head, _)) => head.to_string(),
                    None => l.to_string(),
                }
            } else if let Some(rest) = l.strip_prefix('[') {
                // `-c` style "[packets:bytes] -A ..."
                rest.split_once("] ")
                    .map_or(l.to_string(), |(_, r)| r.to_string())
            } else {
                l.to_string()
            }
        })
        .collect()
}

/// `ip -4 route` output without the `linkdown` flag: carrier follows
/// containers coming and going, and the kernel updates it with a delay.
pub fn normalise_routes(text: &str) -> Vec<String> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            l.split_whitespace()
                .filter(|w| *w != "linkdown")
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect()
}

/// `ip -4 addr` output without carrier state (NO-CARRIER, LOWER_UP,
/// `state UP|DOWN|...`), for the same reason as `normalise_routes`, and
/// without interface indexes (`4: docker0:`, `eth0@if1689`), which the
/// fresh network a VM boots into after a power cut numbers anew; the
/// administrative UP flag stays.
pub fn normalise_addrs(text: &str) -> Vec<String> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let words: Vec<&str> = l.split_whitespace().collect();
            let mut out: Vec<String> = Vec::new();
            let mut k = 0;
            while k < words.len() {
                let w = words[k];
                if k == 0
                    && w.ends_with(':')
                    && w[..w.len() - 1].chars().all(|c| c.is_ascii_digit())
                {
                    k += 1;
                    continue;
                }
                if w == "state" {
                    k += 2;
                    continue;
                }
                if let Some((name, peer)) = w.split_once("@if") {
                    if peer
                        .trim_end_matches(':')
                        .chars()
                        .all(|c| c.is_ascii_digit())
                    {
                        out.push(format!("{name}:"));
                        k += 1;
                        continue;
                    }
                }
                if w.starts_with('<') && w.ends_with('>') {
                    let flags: Vec<&str> = w[1..w.len() - 1]
                        .split(',')
                        .filter(|f| !["NO-CARRIER", "LOWER_UP", "M-DOWN", "DORMANT"].contains(f))
                        .collect();
                    out.push(format!("<{}>", flags.join(",")));
                } else {
                    out.push(w.to_string());
                }
                k += 1;
            }
            out.join(" ")
        })
        .collect()
}

/// `nft list ruleset` output with counters as plain `counter`.
pub fn normalise_nft(text: &str) -> Vec<String> {
    text.lines()
        .filter(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#'))
        .map(|l| {
            let words: Vec<&str> = l.split_whitespace().collect();
            let mut out: Vec<&str> = Vec::new();
            let mut k = 0;
            while k < words.len() {
                // "counter packets N bytes M" -> "counter"
                if (words[k] == "packets" || words[k] == "bytes")
                    && out
                        .last()
                        .is_some_and(|w| *w == "counter" || *w == "packets")
                    && words.get(k + 1).is_some_and(|w| w.parse::<u64>().is_ok())
                {
                    k += 2;
                    continue;
                }
                out.push(words[k]);
                k += 1;
            }
            out.join(" ")
        })
        .collect()
}

// --- small process and system helpers --------------------------------------

/// Runs a command; its stdout, or an error with its stderr.
pub fn run(argv: &[&str]) -> Result<String, String> {
    let (program, args) = argv.split_first().ok_or("empty command")?;
    let out = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("{}: {e}", argv.join(" ")))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "{}: {}",
            argv.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

pub fn quiet(argv: &[&str]) -> bool {
    run(argv).is_ok()
}

pub fn keygen(path: &Path, comment: &str) -> Result<(), String> {
    let _ = std::fs::remove_file(path);
    let _ = std::fs::remove_file(path.with_extension("pub"));
    let file = path.display().to_string();
    run(&[
        "ssh-keygen",
        "-q",
        "-t",
        "ed25519",
        "-N",
        "",
        "-C",
        comment,
        "-f",
        &file,
    ])
    .map(|_| ())
}

pub fn make_private_dir(path: &Path) -> Result<(), String> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(path)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    set_mode(path, 0o700)
}

pub fn set_mode(path: &Path, mode: u32) -> Result<(), String> {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .map_err(|e| format!("chmod {}: {e}", path.display()))
}

pub fn wait_until(timeout: Duration, mut ready: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if ready() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

pub fn cmdline(pid: u32) -> Option<String> {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .ok()
        .map(|c| String::from_utf8_lossy(&c).replace('\0', " "))
}

/// The pid in `file`, if that process is alive and its command line
/// contains `expect`.
pub fn pid_from_file(file: &Path, expect: &str) -> Option<u32> {
    let pid: u32 = std::fs::read_to_string(file).ok()?.trim().parse().ok()?;
    (pid_alive(pid) && cmdline(pid)?.contains(expect)).then_some(pid)
}

pub fn pid_alive(pid: u32) -> bool {
    // A zombie keeps /proc/PID; its state letter tells.
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| s.rsplit_once(')').map(|(_, r)| r.trim_start().to_string()))
        .is_some_and(|r| !r.starts_with('Z'))
}

pub fn signal(pid: u32, sig: &str) {
    let _ = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// SIGTERM, then SIGKILL for whatever is left after `grace`.
pub fn terminate(pids: &[u32], grace: Duration) {
    for &pid in pids {
        signal(pid, "TERM");
    }
    wait_until(grace, || pids.iter().all(|&p| !pid_alive(p)));
    for &pid in pids.iter().filter(|&&p| pid_alive(p)) {
        signal(pid, "KILL");
    }
}

pub fn all_pids() -> Vec<u32> {
    std::fs::read_dir("/proc")
        .map(|entries| {
            entries
                .flatten()
                .filter_map(|e| e.file_name().to_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

pub fn netns_of_pid(pid: u32) -> Option<u64> {
    let link = std::fs::read_link(format!("/proc/{pid}/ns/net")).ok()?;
    let text = link.to_string_lossy();
    text.strip_prefix("net:[")?.strip_suffix(']')?.parse().ok()
}

/// The inode of the named namespace `/run/netns/NAME`.
pub fn netns_inode(name: &str) -> Option<u64> {
    std::fs::metadata(format!("/run/netns/{name}"))
        .ok()
        .map(|m| m.ino())
}

pub fn pids_in_netns(namespaces: &[u64]) -> Vec<u32> {
    if namespaces.is_empty() {
        return Vec::new();
    }
    all_pids()
        .into_iter()
        .filter(|&p| netns_of_pid(p).is_some_and(|ns| namespaces.contains(&ns)))
        .collect()
}

pub fn pids_mentioning(markers: &[String]) -> Vec<u32> {
    all_pids()
        .into_iter()
        .filter(|&p| cmdline(p).is_some_and(|c| markers.iter().any(|m| c.contains(m.as_str()))))
        .collect()
}

/// The cgroup directories named `name` under every controller (v1 and v2).
pub fn cgroup_dirs(name: &str) -> Vec<PathBuf> {
    let root = Path::new("/sys/fs/cgroup");
    let mut tops = vec![root.join(name)];
    if let Ok(entries) = std::fs::read_dir(root) {
        tops.extend(entries.flatten().map(|e| e.path().join(name)));
    }
    let mut dirs = Vec::new();
    for top in tops.into_iter().filter(|p| p.is_dir()) {
        collect_dirs(&top, &mut dirs);
    }
    dirs
}

pub fn collect_dirs(dir: &Path, out: &mut Vec<PathBuf>) {
    out.push(dir.to_path_buf());
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                collect_dirs(&e.path(), out);
            }
        }
    }
}

pub fn cgroup_pids(name: &str) -> Vec<u32> {
    cgroup_dirs(name)
        .iter()
        .filter_map(|d| std::fs::read_to_string(d.join("cgroup.procs")).ok())
        .flat_map(|t| {
            t.lines()
                .filter_map(|l| l.trim().parse().ok())
                .collect::<Vec<u32>>()
        })
        .collect()
}

pub fn remove_cgroups(name: &str) {
    let mut dirs = cgroup_dirs(name);
    dirs.sort_by_key(|d| std::cmp::Reverse(d.components().count()));
    for d in dirs {
        let _ = std::fs::remove_dir(d);
    }
}

/// Mount points at or below `dir`, deepest first.
pub fn mounts_under(dir: &Path) -> Vec<PathBuf> {
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return Vec::new();
    };
    let mut found: Vec<PathBuf> = info
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|p| PathBuf::from(p.replace("\\040", " ")))
        .filter(|p| p.starts_with(dir))
        .collect();
    found.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    found.dedup();
    found
}

/// Reads until two reads 200ms apart agree (for up to 5s), so the tail of
/// something that just happened (a process exiting, a link losing its
/// carrier) is not caught half-way.
pub fn settled_snapshot(read: impl Fn() -> HostSnapshot) -> HostSnapshot {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    let mut last = read();
    loop {
        std::thread::sleep(std::time::Duration::from_millis(200));
        let next = read();
        if next == last || std::time::Instant::now() >= deadline {
            return next;
        }
        last = next;
    }
}

/// One read of a host's state through `run` (an argv run on the host, its
/// stdout); processes and units come from the caller, who knows where to
/// find them.
pub fn read_snapshot(
    run: impl Fn(&[&str]) -> String,
    processes: Vec<String>,
    units: Vec<String>,
) -> HostSnapshot {
    let sorted = |argv: &[&str]| -> Vec<String> {
        let mut v: Vec<String> = run(argv)
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(str::to_string)
            .collect();
        v.sort();
        v
    };
    let mut iptables = Vec::new();
    for table in ["filter", "nat"] {
        iptables.extend(normalise_iptables(&run(&["iptables-save", "-t", table])));
    }
    let mut listening: Vec<String> = run(&["ss", "-H", "-l", "-t", "-u", "-n"])
        .lines()
        .filter_map(|l| {
            let cols: Vec<&str> = l.split_whitespace().collect();
            Some(format!("{} {}", cols.first()?, cols.get(4)?))
        })
        .collect();
    listening.sort();
    listening.dedup();
    HostSnapshot {
        iptables,
        nft: normalise_nft(&run(&["nft", "list", "ruleset"])),
        routes: normalise_routes(&run(&["ip", "-4", "route"])),
        addrs: normalise_addrs(&run(&["ip", "-4", "addr"])),
        containers: sorted(&["docker", "ps", "-a", "--format", "{{.Names}}"]),
        networks: sorted(&["docker", "network", "ls", "--format", "{{.Name}}"]),
        images: sorted(&[
            "docker",
            "image",
            "ls",
            "--format",
            "{{.Repository}}:{{.Tag}}",
        ]),
        listening,
        processes,
        ip_forward: run(&["sysctl", "-n", "net.ipv4.ip_forward"])
            .trim()
            .to_string(),
        units,
    }
}
