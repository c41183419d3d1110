//! Checking a machine before kctl changes anything on it: facts are
//! gathered over SSH (read-only commands), then judged by a pure function,
//! so every problem of every host is reported at once.

use crate::argv;
use crate::bootstrap::etcd::ETCD_PROGRAM;
use crate::cluster::{ETCD_CLIENT_PORT, ETCD_PEER_PORT};
use crate::converge::docker::POD_BRIDGE;
use crate::exec::{Exec, ExecError};
use ipnet::Ipv4Net;

/// Clocks further apart than this confuse heartbeats and "last seen".
pub const MAX_CLOCK_SKEW_SECS: i64 = 5;

/// What a host is, as far as kctl cares.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct HostFacts {
    /// Why no command could run at all (e.g. sudo wants a password).
    pub run_error: Option<String>,
    /// `uname -s` and `uname -m`.
    pub kernel: String,
    pub arch: String,
    /// PRETTY_NAME and ID (+ ID_LIKE) from /etc/os-release.
    pub os: String,
    pub os_family: Vec<String>,
    /// Commands run as root (directly or through `sudo -n`).
    pub root: bool,
    /// The server's version: Docker installed and running.
    pub docker: Option<String>,
    /// The client exists (so a missing server is a stopped daemon).
    pub docker_installed: bool,
    pub iptables: bool,
    pub iptables_restore: bool,
    pub nft: bool,
    pub ip: bool,
    /// systemd runs, or start-stop-daemon exists to supervise daemons.
    pub supervisor: bool,
    pub etcd: bool,
    pub listening_ports: Vec<u16>,
    /// Host clock minus this machine's, in seconds.
    pub clock_skew: i64,
    /// Routes on the host: (destination, whole line).
    pub routes: Vec<(Ipv4Net, String)>,
    /// An existing `kctl` Docker network: (cluster label, subnet).
    pub kctl_network: Option<(String, String)>,
    /// This cluster's etcd already runs here (an earlier `up`).
    pub own_etcd_running: bool,
    /// The host's IPv4 addresses.
    pub addresses: Vec<std::net::Ipv4Addr>,
}

/// What kctl will put on the host.
#[derive(Debug, Clone)]
pub struct HostRole<'a> {
    pub cluster: &'a str,
    /// `--install`: missing packages are installed rather than reported
    /// (on apt hosts where commands run as root).
    pub install: bool,
    /// The address kctl resolved for the host: etcd listens there, routes
    /// point there, so it must be the host's own.
    pub host_ip: std::net::Ipv4Addr,
    pub runs_etcd: bool,
    pub pod_cidr: &'a str,
    /// Every minion's pod range and address: routes to them are kctl's.
    pub pod_routes: &'a [(String, std::net::Ipv4Addr)],
    pub pod_net: Ipv4Net,
    pub portal_net: Ipv4Net,
}

/// The packages `--install` adds on apt-based hosts, per missing part.
pub fn missing_packages(facts: &HostFacts, runs_etcd: bool) -> Vec<&'static str> {
    let mut packages = vec![];
    if !facts.docker_installed {
        // Docker's default container profile needs apparmor_parser where
        // the kernel has AppArmor on (Debian's does); docker.io only
        // recommends it, and recommends are not installed.
        packages.extend(["docker.io", "apparmor"]);
    }
    if !facts.iptables || !facts.iptables_restore {
        packages.push("iptables");
    }
    if !facts.nft {
        packages.push("nftables");
    }
    if !facts.ip {
        packages.push("iproute2");
    }
    if runs_etcd && !facts.etcd {
        packages.push("etcd-server");
    }
    packages
}

/// The packages `--install` will add to this host: none unless asked for,
/// apt is there, and commands run as root.
pub fn installable(facts: &HostFacts, role: &HostRole) -> Vec<&'static str> {
    if role.install && facts.root && uses_apt(facts) {
        missing_packages(facts, role.runs_etcd)
    } else {
        vec![]
    }
}

pub fn uses_apt(facts: &HostFacts) -> bool {
    facts
        .os_family
        .iter()
        .any(|f| f == "debian" || f == "ubuntu")
}

fn overlaps(a: &Ipv4Net, b: &Ipv4Net) -> bool {
    a.contains(&b.network()) || b.contains(&a.network())
}

/// Every reason this host cannot join the cluster, as sentences.
pub fn problems(facts: &HostFacts, role: &HostRole, local_arch: &str) -> Vec<String> {
    let mut out = vec![];
    if let Some(e) = &facts.run_error {
        out.push(format!("cannot run commands there: {e}"));
        return out;
    }
    if facts.kernel != "Linux" {
        out.push(format!("runs {:?}, not Linux", facts.kernel));
        return out;
    }
    if facts.arch != local_arch {
        out.push(format!(
            "is {}, but kctl-node is built for {local_arch}",
            facts.arch
        ));
    }
    if !facts.root {
        out.push(
            "commands cannot run as root (log in as root, or allow `sudo -n` for the user)".into(),
        );
        return out;
    }
    let missing = missing_packages(facts, role.runs_etcd);
    if !missing.is_empty() && installable(facts, role).is_empty() {
        let what = [
            (!facts.docker_installed, "Docker"),
            (!facts.iptables || !facts.iptables_restore, "iptables"),
            (!facts.nft, "nft"),
            (!facts.ip, "ip (iproute2)"),
            (role.runs_etcd && !facts.etcd, ETCD_PROGRAM),
        ]
        .iter()
        .filter(|(m, _)| *m)
        .map(|(_, w)| *w)
        .collect::<Vec<_>>()
        .join(", ");
        let how = if uses_apt(facts) {
            format!(
                "--install adds them (apt-get install {})",
                missing.join(" ")
            )
        } else {
            format!(
                "install {} with the host's package manager",
                missing.join(" ")
            )
        };
        out.push(format!("lacks {what}: {how}"));
    }
    if facts.docker_installed && facts.docker.is_none() {
        out.push("has Docker installed but its daemon does not answer: start it (`systemctl start docker`)".into());
    }
    if !facts.addresses.is_empty() && !facts.addresses.contains(&role.host_ip) {
        out.push(format!(
            "does not have the address {} that its name resolves to here (NAT or a port forward?): give --host its own address",
            role.host_ip
        ));
    }
    if !facts.supervisor {
        out.push("has neither systemd nor start-stop-daemon to run kctl-node".into());
    }
    if facts.clock_skew.abs() > MAX_CLOCK_SKEW_SECS {
        out.push(format!(
            "clock is {}s {} this machine's (more than {MAX_CLOCK_SKEW_SECS}s): enable NTP",
            facts.clock_skew.abs(),
            if facts.clock_skew > 0 {
                "ahead of"
            } else {
                "behind"
            }
        ));
    }
    if role.runs_etcd {
        for port in [ETCD_CLIENT_PORT, ETCD_PEER_PORT] {
            if facts.listening_ports.contains(&port) && !facts.own_etcd_running {
                out.push(format!("port {port} (etcd) is already in use"));
            }
        }
    }
    match &facts.kctl_network {
        Some((owner, subnet)) if owner != role.cluster || subnet != role.pod_cidr => {
            out.push(format!(
                "already has a Docker network named kctl ({}, range {subnet})",
                if owner.is_empty() {
                    "not kctl's".to_string()
                } else {
                    format!("of cluster {owner}")
                }
            ));
        }
        _ => {}
    }
    for (dest, line) in &facts.routes {
        let ours = line.contains(&format!("dev {POD_BRIDGE}"))
            || role.pod_routes.iter().any(|(cidr, via)| {
                dest.to_string() == *cidr && line.contains(&format!("via {via}"))
            });
        if ours || dest.prefix_len() == 0 {
            continue;
        }
        for (what, net) in [("pod", role.pod_net), ("portal", role.portal_net)] {
            if overlaps(dest, &net) {
                out.push(format!(
                    "already routes {dest}, which overlaps the cluster's {what} range {net} (`{}`)",
                    line.trim()
                ));
            }
        }
    }
    out
}

/// Ports from `ss -Hltnu` lines (local address is the fifth column).
pub fn parse_listening(ss: &str) -> Vec<u16> {
    let mut ports: Vec<u16> = ss
        .lines()
        .filter_map(|l| l.split_whitespace().nth(4))
        .filter_map(|addr| addr.rsplit(':').next()?.parse().ok())
        .collect();
    ports.sort_unstable();
    ports.dedup();
    ports
}

/// Destinations from `ip -4 route show table all` (the first word, or
/// the second after a route type such as `blackhole`).
pub fn parse_routes(text: &str) -> Vec<(Ipv4Net, String)> {
    text.lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            let first = words.next()?;
            let dest = match first {
                "unicast" | "blackhole" | "unreachable" | "prohibit" | "local" | "broadcast"
                | "throw" | "nat" | "anycast" | "multicast" => words.next()?,
                other => other,
            };
            let net = if dest == "default" {
                Ipv4Net::default()
            } else if dest.contains('/') {
                dest.parse().ok()?
            } else {
                Ipv4Net::new(dest.parse().ok()?, 32).ok()?
            };
            Some((net, line.to_string()))
        })
        .collect()
}

/// Addresses from `ip -4 -o addr show` ("2: eth0    inet 10.0.0.5/24 ...").
pub fn parse_addresses(text: &str) -> Vec<std::net::Ipv4Addr> {
    text.lines()
        .filter_map(|l| {
            let mut words = l.split_whitespace().skip_while(|w| *w != "inet");
            words.next()?;
            words.next()?.split('/').next()?.parse().ok()
        })
        .collect()
}

pub fn parse_os_release(text: &str) -> (String, Vec<String>) {
    let value = |key: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
            .map(|v| v.trim().trim_matches('"').to_string())
    };
    let pretty = value("PRETTY_NAME").unwrap_or_else(|| "unknown Linux".into());
    let mut family: Vec<String> = value("ID").into_iter().collect();
    if let Some(like) = value("ID_LIKE") {
        family.extend(like.split_whitespace().map(str::to_string));
    }
    (pretty, family)
}

/// Reads the facts with read-only commands. `etcd` is this cluster's etcd
/// service, on the host that runs it.
pub async fn gather<E: Exec>(
    exec: &E,
    etcd: Option<&crate::bootstrap::service::Service>,
) -> Result<HostFacts, ExecError> {
    let text = |out: crate::exec::Output| out.success().then(|| out.stdout_text());
    let kernel = exec.run(&argv!["uname", "-s"], None).await?;
    let mut facts = HostFacts {
        kernel: kernel.stdout_text().trim().to_string(),
        ..Default::default()
    };
    if !kernel.success() {
        // Usually sudo: "a password is required", or no sudo at all.
        let why = kernel.stderr_text().trim().to_string();
        facts.run_error = Some(if why.is_empty() {
            format!("`uname -s` failed ({:?})", kernel.code)
        } else {
            why
        });
        return Ok(facts);
    }
    if facts.kernel != "Linux" {
        return Ok(facts);
    }
    // Independent reads, all at once: one SSH round trip of latency
    // instead of twenty (the session semaphore bounds them).
    let mut probes: Vec<Vec<String>> = vec![
        argv!["uname", "-m"],
        argv!["id", "-u"],
        argv!["cat", "/etc/os-release"],
        argv!["docker", "version", "--format", "{{.Server.Version}}"],
        argv!["docker", "--version"],
        argv!["iptables", "--version"],
        argv!["iptables-restore", "--version"],
        argv!["nft", "--version"],
        argv!["ip", "-V"],
        argv!["test", "-d", "/run/systemd/system"],
        argv!["start-stop-daemon", "--version"],
        argv![ETCD_PROGRAM, "--version"],
        argv!["ss", "-Hltnu"],
        argv!["ip", "-4", "route", "show", "table", "all"],
        argv!["ip", "-4", "-o", "addr", "show"],
        super::network_inspect_argv(),
    ];
    if let Some(etcd) = etcd {
        probes.push(argv![
            "start-stop-daemon",
            "--status",
            "--pidfile",
            etcd.pid_file.clone()
        ]);
        probes.push(argv![
            "systemctl",
            "is-active",
            "--quiet",
            format!("{}.service", etcd.unit)
        ]);
    }
    let date = argv!["date", "+%s"];
    let before = now_secs();
    let (outs, clock) = futures::join!(
        futures::future::join_all(probes.iter().map(|argv| exec.run(argv, None))),
        exec.run(&date, None)
    );
    let after = now_secs();
    let outs = outs.into_iter().collect::<Result<Vec<_>, _>>()?;
    let ok = |i: usize| outs[i].success();
    let out = |i: usize| text(outs[i].clone()).unwrap_or_default();
    facts.arch = out(0).trim().to_string();
    facts.root = out(1).trim() == "0";
    if ok(2) {
        (facts.os, facts.os_family) = parse_os_release(&out(2));
    }
    facts.docker = ok(3).then(|| out(3).trim().to_string());
    facts.docker_installed = ok(4);
    facts.iptables = ok(5);
    facts.iptables_restore = ok(6);
    facts.nft = ok(7);
    facts.ip = ok(8);
    facts.supervisor = ok(9) || ok(10);
    facts.etcd = ok(11);
    facts.listening_ports = parse_listening(&out(12));
    facts.routes = parse_routes(&out(13));
    facts.addresses = parse_addresses(&out(14));
    if ok(15) {
        facts.kctl_network = super::parse_network_inspect(&out(15));
    }
    facts.own_etcd_running = etcd.is_some() && (ok(16) || ok(17));
    if let Ok(remote) = clock?.stdout_text().trim().parse::<i64>() {
        facts.clock_skew = remote - (before + after) / 2;
    }
    Ok(facts)
}

fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or_default()
}

/// `apt-get` argv that installs `packages` without questions.
pub fn install_argvs(packages: &[&str]) -> Vec<Vec<String>> {
    // A freshly booted machine may hold the dpkg lock (unattended
    // upgrades, a cloud agent): wait for it rather than fail.
    let apt = |words: &[&str]| {
        let mut argv = argv![
            "env",
            "DEBIAN_FRONTEND=noninteractive",
            "apt-get",
            "-o",
            "DPkg::Lock::Timeout=300",
            "-o",
            "Acquire::Retries=3"
        ];
        argv.extend(words.iter().map(|w| w.to_string()));
        argv
    };
    let mut install = apt(&["install", "--yes", "--no-install-recommends"]);
    install.extend(packages.iter().map(|p| p.to_string()));
    vec![apt(&["update"]), install]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn healthy() -> HostFacts {
        HostFacts {
            run_error: None,
            kernel: "Linux".into(),
            arch: "x86_64".into(),
            os: "Debian GNU/Linux 12 (bookworm)".into(),
            os_family: vec!["debian".into()],
            root: true,
            docker: Some("20.10.24".into()),
            docker_installed: true,
            iptables: true,
            iptables_restore: true,
            nft: true,
            ip: true,
            supervisor: true,
            etcd: true,
            listening_ports: vec![22],
            clock_skew: 1,
            routes: parse_routes("default via 192.168.1.1 dev eth0\n192.168.1.0/24 dev eth0 proto kernel scope link src 192.168.1.5\n"),
            kctl_network: None,
            own_etcd_running: false,
            addresses: vec!["192.168.1.5".parse().unwrap()],
        }
    }

    fn role<'a>(pod_routes: &'a [(String, std::net::Ipv4Addr)]) -> HostRole<'a> {
        HostRole {
            cluster: "c1",
            install: false,
            host_ip: "192.168.1.5".parse().unwrap(),
            runs_etcd: true,
            pod_cidr: "10.244.1.0/24",
            pod_routes,
            pod_net: "10.244.0.0/16".parse().unwrap(),
            portal_net: "10.0.0.0/16".parse().unwrap(),
        }
    }

    #[test]
    fn a_healthy_host_has_no_problems() {
        assert_eq!(
            problems(&healthy(), &role(&[]), "x86_64"),
            Vec::<String>::new()
        );
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let mut f = healthy();
        f.docker = None;
        f.docker_installed = false;
        f.nft = false;
        f.etcd = false;
        f.clock_skew = -42;
        f.listening_ports = vec![22, 4001];
        f.routes
            .extend(parse_routes("10.0.0.0/8 via 192.168.1.254 dev eth0\n"));
        f.kctl_network = Some(("other".into(), "10.9.0.0/24".into()));
        let p = problems(&f, &role(&[]), "x86_64");
        assert_eq!(p.len(), 6, "{p:#?}");
        assert!(p[0].contains("Docker") && p[0].contains("nft") && p[0].contains("etcd"));
        assert!(p[0].contains("apt-get install docker.io apparmor nftables etcd-server"));
        assert!(p[1].contains("42s behind"));
        assert!(p[2].contains("port 4001"));
        assert!(p[3].contains("of cluster other"));
        assert!(p[4].contains("10.0.0.0/8") && p[4].contains("pod range"));
        assert!(p[5].contains("10.0.0.0/8") && p[5].contains("portal range"));

        // With --install, the missing packages are installed, not reported.
        let routes = [];
        let mut installing = role(&routes);
        installing.install = true;
        let p = problems(&f, &installing, "x86_64");
        assert_eq!(p.len(), 5, "{p:#?}");
        assert!(!p.iter().any(|l| l.starts_with("lacks ")));
        assert_eq!(
            installable(&f, &installing),
            ["docker.io", "apparmor", "nftables", "etcd-server"]
        );
    }

    #[test]
    fn kctls_own_routes_and_network_are_not_problems() {
        let mut f = healthy();
        f.routes.extend(parse_routes(
            "10.244.2.0/24 via 10.0.5.2 dev eth0\n10.244.1.0/24 dev kctl0 proto kernel scope link src 10.244.1.1\n",
        ));
        f.kctl_network = Some(("c1".into(), "10.244.1.0/24".into()));
        f.listening_ports = vec![22, 4001, 7001];
        f.own_etcd_running = true;
        let routes = [("10.244.2.0/24".to_string(), "10.0.5.2".parse().unwrap())];
        assert_eq!(problems(&f, &role(&routes), "x86_64"), Vec::<String>::new());
    }

    #[test]
    fn sudo_failures_stopped_docker_and_foreign_addresses_are_named() {
        let f = HostFacts {
            run_error: Some("sudo: a password is required".into()),
            ..HostFacts::default()
        };
        let p = problems(&f, &role(&[]), "x86_64");
        assert_eq!(
            p,
            ["cannot run commands there: sudo: a password is required"]
        );

        let mut f = healthy();
        f.docker = None;
        f.addresses = vec!["172.16.0.9".parse().unwrap()];
        let p = problems(&f, &role(&[]), "x86_64");
        assert_eq!(p.len(), 2, "{p:?}");
        assert!(p[0].contains("daemon does not answer") && !p[0].contains("--install"));
        assert!(p[1].contains("192.168.1.5"));
        assert_eq!(
            parse_addresses("1: lo    inet 127.0.0.1/8 scope host lo\n2: eth0    inet 10.150.0.11/24 brd 10.150.0.255 scope global eth0\n"),
            ["127.0.0.1".parse::<std::net::Ipv4Addr>().unwrap(), "10.150.0.11".parse().unwrap()]
        );
    }

    #[test]
    fn wrong_platform_or_no_root_stop_early() {
        let mut f = healthy();
        f.kernel = "Darwin".into();
        assert_eq!(problems(&f, &role(&[]), "x86_64").len(), 1);
        let mut f = healthy();
        f.root = false;
        f.arch = "aarch64".into();
        let p = problems(&f, &role(&[]), "x86_64");
        assert!(p[0].contains("aarch64") && p[1].contains("sudo"), "{p:?}");
    }

    #[test]
    fn outputs_are_parsed() {
        let ss = "tcp LISTEN 0 128 0.0.0.0:22 0.0.0.0:*\ntcp LISTEN 0 4096 [::]:2379 [::]:*\nudp UNCONN 0 0 127.0.0.53%lo:53 0.0.0.0:*\n";
        assert_eq!(parse_listening(ss), vec![22, 53, 2379]);
        let routes = parse_routes("blackhole 10.101.0.0/16 proto static\n10.1.2.3 dev eth0\n");
        assert_eq!(routes[0].0.to_string(), "10.101.0.0/16");
        assert_eq!(routes[1].0.to_string(), "10.1.2.3/32");
        let (pretty, family) =
            parse_os_release("PRETTY_NAME=\"Ubuntu 24.04 LTS\"\nID=ubuntu\nID_LIKE=debian\n");
        assert_eq!(pretty, "Ubuntu 24.04 LTS");
        assert_eq!(family, ["ubuntu", "debian"]);
    }

    #[test]
    fn install_is_noninteractive_apt() {
        let argvs = install_argvs(&["docker.io", "etcd-server"]);
        assert_eq!(argvs[0].last().unwrap(), "update");
        assert!(argvs
            .iter()
            .all(|a| a.contains(&"DPkg::Lock::Timeout=300".to_string())));
        assert_eq!(
            argvs[1][argvs[1].len() - 2..],
            ["docker.io".to_string(), "etcd-server".to_string()]
        );
    }
}
