//! The local provider: each minion is a network namespace on this machine,
//! on a per-cluster bridge, with its own sshd and dockerd. From the rest of
//! kctl a minion is an ordinary SSH host with Docker and iptables.
//!
//! Addresses: cluster slot `s` owns `10.<100+s>.0.0/16`. The bridge is
//! `10.<100+s>.0.1` (etcd listens there), minion `i` is `10.<100+s>.0.<10+i>`
//! with pods in `10.<100+s>.<i>.0/24`. The host gets a blackhole route for
//! the whole /16 — claimed atomically by `ip route add`, so two clusters can
//! never take one slot — and one route per minion's pod range; minion
//! namespaces have no default route. No packet for a cluster address leaves
//! the machine.

use super::host::{self, host_error, HostError};
use crate::cluster::{ClusterDir, MinionConfig};
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

pub const MAX_MINIONS: usize = 32;
/// The most etcd members a local cluster runs: their addresses sit
/// between the bridge's and the first minion's.
pub const MAX_MASTERS: usize = 5;

const FIRST_SLOT: u8 = 1;
const LAST_SLOT: u8 = 99;

/// Where a cluster's pieces live on this machine, derived from its slot.
#[derive(Debug, Clone)]
pub struct Layout {
    pub cluster: String,
    pub slot: u8,
}

impl Layout {
    fn octet(&self) -> u8 {
        100 + self.slot
    }
    pub fn cluster_cidr(&self) -> String {
        format!("10.{}.0.0/16", self.octet())
    }
    pub fn bridge(&self) -> String {
        format!("kctl{}", self.slot)
    }
    pub fn bridge_ip(&self) -> Ipv4Addr {
        Ipv4Addr::new(10, self.octet(), 0, 1)
    }
    pub fn node_ip(&self, index: usize) -> Ipv4Addr {
        Ipv4Addr::new(10, self.octet(), 0, 10 + index as u8)
    }
    pub fn pod_cidr(&self, index: usize) -> String {
        format!("10.{}.{index}.0/24", self.octet())
    }
    pub fn veth(&self, index: usize) -> String {
        format!("kctl{}m{index}", self.slot)
    }
    /// The minion's MAC address, fixed like its IP: a minion made again
    /// (repaired, or booted after a power cut) keeps it, so no neighbour
    /// cache on the host or the other minions points at a vanished link.
    pub fn mac(&self, index: usize) -> String {
        let ip = self.node_ip(index).octets();
        format!(
            "02:6b:{:02x}:{:02x}:{:02x}:{:02x}",
            ip[0], ip[1], ip[2], ip[3]
        )
    }
    pub fn netns(&self, index: usize) -> String {
        format!("kctl-{}-minion-{index}", self.cluster)
    }
    pub fn minion_id(index: usize) -> String {
        format!("minion-{index}")
    }
    /// Sockets and pid files; short, because unix socket paths are.
    pub fn runtime_dir(&self, index: usize) -> PathBuf {
        PathBuf::from(format!("/run/kctl/{}/m{index}", self.slot))
    }
    pub fn runtime_root(&self) -> PathBuf {
        PathBuf::from(format!("/run/kctl/{}", self.slot))
    }
    pub fn docker_socket(&self, index: usize) -> PathBuf {
        self.runtime_dir(index).join("docker.sock")
    }
    /// Containers' cgroups go under this, so a dead minion's containers can
    /// be found and killed even when its dockerd is gone.
    pub fn cgroup_parent(&self, index: usize) -> String {
        format!("kctl-{}-m{index}", self.slot)
    }
    /// The default portal range: the upper half of the cluster's own /16,
    /// which the cluster's blackhole route already keeps on this machine,
    /// so clusters side by side never share (or fight over) a range.
    pub fn default_portal_net(&self) -> ipnet::Ipv4Net {
        ipnet::Ipv4Net::new(Ipv4Addr::new(10, self.octet(), 128, 0), 17).unwrap_or_default()
    }
    pub fn etcd_endpoint(&self) -> String {
        self.etcd_member_endpoint(1)
    }
    /// etcd member `member` (from 1): the first on the bridge's own
    /// address, where a single etcd always was; the others on addresses
    /// of their own beside it (`.2` to `.5`, below the minions' `.11`).
    pub fn etcd_member_ip(&self, member: usize) -> Ipv4Addr {
        Ipv4Addr::new(10, self.octet(), 0, member as u8)
    }
    pub fn etcd_member_endpoint(&self, member: usize) -> String {
        format!("https://{}:2379", self.etcd_member_ip(member))
    }
    pub fn etcd_member_name(&self, member: usize) -> String {
        match member {
            1 => format!("kctl-{}", self.cluster),
            n => format!("kctl-{}-{n}", self.cluster),
        }
    }
    /// Every member's client endpoint, for `masters` members.
    pub fn etcd_endpoints(&self, masters: usize) -> Vec<String> {
        (1..=masters)
            .map(|m| self.etcd_member_endpoint(m))
            .collect()
    }
    pub fn minion(&self, index: usize) -> MinionConfig {
        MinionConfig {
            id: Self::minion_id(index),
            host_ip: self.node_ip(index),
            ssh_port: 22,
            ssh_user: "root".into(),
            pod_cidr: self.pod_cidr(index),
            // Minions here share this machine's disk: each gets its own.
            helper_dir: self.runtime_dir(index).join("helper").display().to_string(),
            docker_socket: self.docker_socket(index).display().to_string(),
            ssh_host: None,
        }
    }
    pub fn index_of(minion: &str) -> Option<usize> {
        minion.strip_prefix("minion-")?.parse().ok()
    }
}

/// Claims a free slot by adding its blackhole route: `ip route add` fails
/// when the route exists, so concurrent `kctl up`s cannot share a slot.
/// Slots whose /16 overlaps any route already on the machine are skipped.
pub async fn claim_slot(cluster: &str) -> Result<Layout, HostError> {
    let routes = host::run(&["ip", "-4", "route", "show", "table", "all"]).await?;
    for slot in FIRST_SLOT..=LAST_SLOT {
        let layout = Layout {
            cluster: cluster.to_string(),
            slot,
        };
        let prefix = format!("10.{}.", layout.octet());
        if routes
            .lines()
            .any(|r| r.split_whitespace().any(|w| w.starts_with(&prefix)))
        {
            continue;
        }
        if host::run(&["ip", "route", "add", "blackhole", &layout.cluster_cidr()])
            .await
            .is_ok()
        {
            return Ok(layout);
        }
    }
    Err(host_error(
        "allocate a cluster network",
        "all 99 local cluster slots (10.101.0.0/16 to 10.199.0.0/16) are in use",
    ))
}

/// Route destinations on this machine, as networks.
async fn routed_networks() -> Result<Vec<ipnet::Ipv4Net>, HostError> {
    let routes = host::run(&["ip", "-4", "route", "show", "table", "all"]).await?;
    Ok(routes
        .lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            let first = words.next()?;
            let dest = match first {
                "blackhole" | "unreachable" | "prohibit" | "local" | "broadcast" | "unicast" => {
                    words.next()?
                }
                other => other,
            };
            dest.parse::<ipnet::Ipv4Net>()
                .ok()
                .or_else(|| dest.parse::<Ipv4Addr>().ok().map(ipnet::Ipv4Net::from))
        })
        .collect())
}

fn overlaps(a: &ipnet::Ipv4Net, b: &ipnet::Ipv4Net) -> bool {
    a.contains(&b.network()) || b.contains(&a.network())
}

/// Makes sure a portal range outside the cluster's /16 is kept on this
/// machine by a blackhole route of its own. A range that overlaps anything
/// else routed here (another cluster, the machine's own networks, the
/// resolver's 10.255.0.0/16) is refused.
pub async fn ensure_portal_route(
    layout: &Layout,
    portal_net: ipnet::Ipv4Net,
) -> Result<bool, HostError> {
    let cluster: ipnet::Ipv4Net = layout
        .cluster_cidr()
        .parse()
        .map_err(|e| host_error("cluster range", e))?;
    if cluster.contains(&portal_net) {
        return Ok(false);
    }
    let cidr = portal_net.to_string();
    let ours = host::run(&["ip", "route", "show", "type", "blackhole", &cidr]).await?;
    if !ours.trim().is_empty() {
        return Ok(false);
    }
    let resolver: ipnet::Ipv4Net = "10.255.0.0/16"
        .parse()
        .map_err(|e| host_error("range", e))?;
    let routed = routed_networks().await?;
    if overlaps(&portal_net, &resolver)
        || routed
            .iter()
            .any(|r| r.prefix_len() > 0 && overlaps(r, &portal_net))
    {
        return Err(host_error(
            format!("portal range {cidr}"),
            "overlaps a network already routed on this machine; pick another --portal-net",
        ));
    }
    host::run(&["ip", "route", "add", "blackhole", &cidr]).await?;
    Ok(true)
}

pub async fn remove_portal_route(layout: &Layout, portal_net: ipnet::Ipv4Net) {
    let inside = layout
        .cluster_cidr()
        .parse::<ipnet::Ipv4Net>()
        .is_ok_and(|c| c.contains(&portal_net));
    if !inside {
        host::run_quiet(&[
            "ip",
            "route",
            "delete",
            "blackhole",
            &portal_net.to_string(),
        ])
        .await;
    }
}

/// Makes sure the host side exists: blackhole route, bridge with address.
/// Returns true if anything had to be made.
pub async fn ensure_host_network(layout: &Layout) -> Result<bool, HostError> {
    let mut changed = false;
    let cidr = layout.cluster_cidr();
    let blackhole = host::run(&["ip", "route", "show", "type", "blackhole", &cidr]).await?;
    if blackhole.trim().is_empty() {
        host::run(&["ip", "route", "add", "blackhole", &cidr]).await?;
        changed = true;
    }
    let bridge = layout.bridge();
    if !host::run_quiet(&["ip", "link", "show", "dev", &bridge]).await {
        host::run(&["ip", "link", "add", &bridge, "type", "bridge"]).await?;
        changed = true;
    }
    let addr = format!("{}/24", layout.bridge_ip());
    let addrs = host::run(&["ip", "-4", "addr", "show", "dev", &bridge]).await?;
    if !addrs.contains(&addr) {
        host::run(&["ip", "addr", "add", &addr, "dev", &bridge]).await?;
        changed = true;
    }
    host::run(&["ip", "link", "set", &bridge, "up"]).await?;
    Ok(changed)
}

/// Makes sure minion `index` exists as a machine: namespace, link,
/// addresses, routes, host key, sshd and dockerd. True if anything changed.
pub async fn ensure_minion(
    dir: &ClusterDir,
    layout: &Layout,
    index: usize,
    portal_net: ipnet::Ipv4Net,
) -> Result<bool, HostError> {
    let mut changed = false;
    let ns = layout.netns(index);
    let veth = layout.veth(index);
    let node_ip = layout.node_ip(index);
    if host::netns_of_name(&ns).is_none() {
        // Whatever ran in a namespace of this name before (its name was
        // deleted under it) is stopped: the minion is made again from
        // scratch.
        kill_minion(layout, index).await;
        host::run(&["ip", "netns", "add", &ns]).await?;
        changed = true;
    }
    // The namespace side decides: a host-side link whose peer went away
    // with an old namespace may linger for a moment, and is replaced.
    if !host::run_quiet(&["ip", "-n", &ns, "link", "show", "dev", "eth0"]).await {
        host::run_quiet(&["ip", "link", "delete", &veth]).await;
        host::wait_for(Duration::from_secs(5), || {
            !std::path::Path::new(&format!("/sys/class/net/{veth}")).exists()
        })
        .await;
        host::run(&[
            "ip",
            "link",
            "add",
            &veth,
            "type",
            "veth",
            "peer",
            "name",
            "eth0",
            "address",
            &layout.mac(index),
            "netns",
            &ns,
        ])
        .await?;
        host::run(&["ip", "link", "set", &veth, "master", &layout.bridge(), "up"]).await?;
        host::run(&[
            "ip",
            "-n",
            &ns,
            "addr",
            "add",
            &format!("{node_ip}/24"),
            "dev",
            "eth0",
        ])
        .await?;
        host::run(&["ip", "-n", &ns, "link", "set", "eth0", "up"]).await?;
        host::run(&["ip", "-n", &ns, "link", "set", "lo", "up"]).await?;
        // A minion forwards for its pods, like a VM made with
        // --can-ip-forward. Set before dockerd starts, so Docker leaves the
        // FORWARD policy alone.
        host::run(&[
            "ip",
            "netns",
            "exec",
            &ns,
            "sysctl",
            "-qw",
            "net.ipv4.ip_forward=1",
        ])
        .await?;
        changed = true;
    }
    // Like a VM's default route, for the one range a minion sends to
    // without knowing where it goes: traffic from the minion itself to a
    // portal is routed first and DNATed after, so the portal range needs a
    // route. Portals no rule matches end at the host's blackhole.
    let bridge_ip = layout.bridge_ip().to_string();
    host::run(&[
        "ip",
        "-n",
        &ns,
        "route",
        "replace",
        &portal_net.to_string(),
        "via",
        &bridge_ip,
    ])
    .await?;
    let pod_cidr = layout.pod_cidr(index);
    let route = host::run(&["ip", "route", "show", &pod_cidr]).await?;
    if route.trim().is_empty() {
        host::run(&["ip", "route", "add", &pod_cidr, "via", &node_ip.to_string()]).await?;
        changed = true;
    }

    let minion_dir = dir.minion_dir(&Layout::minion_id(index));
    let run_dir = layout.runtime_dir(index);
    for d in [&minion_dir, &run_dir] {
        std::fs::create_dir_all(d).map_err(|e| host_error(d.display().to_string(), e))?;
    }
    let host_key = minion_dir.join("ssh_host_ed25519_key");
    changed |= host::ensure_ssh_key(&host_key, &ns).await?;
    changed |= ensure_sshd(dir, layout, index, &minion_dir, &run_dir).await?;
    changed |= ensure_dockerd(layout, index, &minion_dir, &run_dir).await?;
    Ok(changed)
}

async fn ensure_sshd(
    dir: &ClusterDir,
    layout: &Layout,
    index: usize,
    minion_dir: &std::path::Path,
    run_dir: &std::path::Path,
) -> Result<bool, HostError> {
    let config = minion_dir.join("sshd_config");
    let pid_file = run_dir.join("sshd.pid");
    let config_text = format!(
        "# Written by kctl for {ns}.\n\
         ListenAddress {ip}\n\
         Port 22\n\
         HostKey {key}\n\
         PidFile {pid}\n\
         AuthorizedKeysFile {auth}\n\
         PermitRootLogin prohibit-password\n\
         PasswordAuthentication no\n\
         KbdInteractiveAuthentication no\n\
         UsePAM no\n\
         MaxSessions 32\n\
         PrintMotd no\n\
         # VERBOSE logs each session: the benchmarks count them.\n\
         LogLevel VERBOSE\n\
         SetEnv DOCKER_HOST=unix://{sock}\n",
        ns = layout.netns(index),
        ip = layout.node_ip(index),
        key = minion_dir.join("ssh_host_ed25519_key").display(),
        pid = pid_file.display(),
        auth = dir.dir.join("authorized_keys").display(),
        sock = layout.docker_socket(index).display(),
    );
    std::fs::write(&config, config_text)
        .map_err(|e| host_error(config.display().to_string(), e))?;
    let config_arg = config.display().to_string();
    let addr = SocketAddr::from((layout.node_ip(index), 22));
    // Alive means answering, not just a pid: a killed process can still be
    // in /proc for a moment.
    match host::live_pid(&pid_file, &config_arg) {
        Some(_) if host::tcp_open(addr) => return Ok(false),
        Some(pid) => host::terminate(&[pid], Duration::from_secs(5)).await,
        None => {}
    }
    // sshd needs its privilege separation directory.
    std::fs::create_dir_all("/run/sshd").map_err(|e| host_error("/run/sshd", e))?;
    let log = minion_dir.join("sshd.log").display().to_string();
    let passwd = own_passwd(minion_dir)?;
    // A mount namespace of the minion's own, where /etc/passwd gives every
    // user a home of the minion's: a login there runs none of this
    // workstation's shell files (root's ~/.bashrc here runs `pyenv init`,
    // which queues on a lock under load), as on a real machine.
    host::run(&[
        "nsenter",
        &format!("--net=/run/netns/{}", layout.netns(index)),
        "unshare",
        "--mount",
        // Mounts made on this machine later (a new minion's /run/netns
        // entry) still reach the minion; its own /etc/passwd stays its own.
        "--propagation",
        "slave",
        "sh",
        "-c",
        r#"mount --bind "$1" /etc/passwd && shift && exec "$@""#,
        "sh",
        &passwd.display().to_string(),
        "/usr/sbin/sshd",
        "-f",
        &config_arg,
        "-E",
        &log,
    ])
    .await?;
    if !host::wait_for(Duration::from_secs(10), || host::tcp_open(addr)).await {
        return Err(host_error(
            format!("sshd on {}", Layout::minion_id(index)),
            format!("not listening on {addr} after 10s; see {log}"),
        ));
    }
    Ok(true)
}

/// This machine's /etc/passwd with every home moved under the minion's
/// directory (`home/<user>`, made for root). Written next to the minion's
/// other files; bound over /etc/passwd in the minion's mount namespace.
fn own_passwd(minion_dir: &std::path::Path) -> Result<std::path::PathBuf, HostError> {
    let text = std::fs::read_to_string("/etc/passwd").map_err(|e| host_error("/etc/passwd", e))?;
    let homes = minion_dir.join("home");
    let root_home = homes.join("root");
    std::fs::create_dir_all(&root_home)
        .map_err(|e| host_error(root_home.display().to_string(), e))?;
    let path = minion_dir.join("passwd");
    std::fs::write(&path, minion_passwd(&text, &homes))
        .map_err(|e| host_error(path.display().to_string(), e))?;
    Ok(path)
}

/// `passwd` with each user's home replaced by `homes/<user>` (pure).
pub fn minion_passwd(passwd: &str, homes: &std::path::Path) -> String {
    passwd
        .lines()
        .map(|line| {
            let mut fields: Vec<&str> = line.split(':').collect();
            if fields.len() != 7 {
                return line.to_string();
            }
            let home = homes.join(fields[0]).display().to_string();
            fields[5] = &home;
            fields.join(":")
        })
        .map(|l| l + "\n")
        .collect()
}

async fn ensure_dockerd(
    layout: &Layout,
    index: usize,
    minion_dir: &std::path::Path,
    run_dir: &std::path::Path,
) -> Result<bool, HostError> {
    let pid_file = run_dir.join("docker.pid");
    let supervisor_pid = run_dir.join("dockerd-supervisor.pid");
    let socket = layout.docker_socket(index);
    let data_root = minion_dir.join("docker").display().to_string();
    let answers = || std::os::unix::net::UnixStream::connect(&socket).is_ok();
    if host::live_pid(&supervisor_pid, &data_root).is_some() {
        // Supervised: running, or being started again right now.
        if answers() || host::wait_for(Duration::from_secs(30), answers).await {
            return Ok(false);
        }
        stop_dockerd(layout, index).await;
    } else if let Some(pid) = host::live_pid(&pid_file, &data_root) {
        // A dockerd without a supervisor (made by an older kctl).
        host::terminate(&[pid], Duration::from_secs(10)).await;
    }
    // dockerd and its containerd refuse to start over a pid file whose
    // process still exists, and a killed one may linger as a zombie; a stale
    // socket would pass the readiness check below. All of them are stale,
    // also each time the supervisor starts dockerd again.
    let stale = [
        pid_file.clone(),
        run_dir.join("docker/containerd/containerd.pid"),
        socket.clone(),
    ];
    let me = std::env::current_exe().map_err(|e| host_error("kctl's own path", e))?;
    let mut argv: Vec<String> = vec![
        "nsenter".into(),
        format!("--net=/run/netns/{}", layout.netns(index)),
        // The supervisor lives in the minion's namespace, so a power cut
        // (`kill_minion`) takes it down with everything else.
        me.display().to_string(),
        "supervise".into(),
        "--pid-file".into(),
        supervisor_pid.display().to_string(),
        // Time to stop the minion's containers.
        "--stop-grace".into(),
        "12".into(),
    ];
    for path in &stale {
        argv.push("--remove-before-start".into());
        argv.push(path.display().to_string());
    }
    argv.push("--".into());
    argv.extend(
        [
            "dockerd",
            "--data-root",
            &data_root,
            "--exec-root",
            &run_dir.join("docker").display().to_string(),
            "--pidfile",
            &pid_file.display().to_string(),
            "--host",
            &format!("unix://{}", socket.display()),
            // Pods get their own network from bootstrap; a default bridge
            // would only be unused address space.
            "--bridge=none",
            // Host ports by iptables alone, and hairpin mode on the bridge's
            // ports, so a pod reaches itself through its service's portal.
            "--userland-proxy=false",
            "--cgroup-parent",
            &format!("/{}", layout.cgroup_parent(index)),
        ]
        .iter()
        .map(|s| s.to_string()),
    );
    let log = minion_dir.join("dockerd.log");
    host::spawn_daemon(&argv, &log)?;
    let ready = host::wait_for(Duration::from_secs(30), answers).await;
    if !ready {
        return Err(host_error(
            format!("dockerd on {}", Layout::minion_id(index)),
            format!(
                "no socket at {} after 30s; see {}",
                socket.display(),
                log.display()
            ),
        ));
    }
    Ok(true)
}

/// The line for the cluster's known_hosts: the minion's address and the
/// public half of the host key kctl generated for it.
pub fn known_hosts_line(
    dir: &ClusterDir,
    layout: &Layout,
    index: usize,
) -> Result<String, HostError> {
    let pub_file = dir
        .minion_dir(&Layout::minion_id(index))
        .join("ssh_host_ed25519_key.pub");
    let key = std::fs::read_to_string(&pub_file)
        .map_err(|e| host_error(pub_file.display().to_string(), e))?;
    let mut parts = key.split_whitespace();
    let (Some(kind), Some(blob)) = (parts.next(), parts.next()) else {
        return Err(host_error(
            pub_file.display().to_string(),
            "not a public key",
        ));
    };
    Ok(format!("{} {kind} {blob}", layout.node_ip(index)))
}

/// Power cut: kills every process of the minion at once — sshd, dockerd,
/// containerd, shims, and the containers themselves (found by cgroup).
/// The minion's namespace is found by name and through its daemons' pid
/// files, so processes in a namespace whose name was deleted are found too.
pub async fn kill_minion(layout: &Layout, index: usize) {
    let run_dir = layout.runtime_dir(index);
    let mut namespaces: Vec<u64> = host::netns_of_name(&layout.netns(index))
        .into_iter()
        .collect();
    for (pid_file, expect) in [
        ("sshd.pid", "sshd"),
        ("docker.pid", "dockerd"),
        ("dockerd-supervisor.pid", "dockerd"),
    ] {
        if let Some(pid) = host::live_pid(&run_dir.join(pid_file), expect) {
            namespaces.extend(host::netns_of_pid(pid));
        }
    }
    // Never the namespace kctl itself runs in.
    if let Some(own) = host::netns_of_pid(std::process::id()) {
        namespaces.retain(|&ns| ns != own);
    }
    namespaces.sort_unstable();
    namespaces.dedup();
    host::kill_all_in_netns(&namespaces).await;
    host::kill_cgroup_tree(&layout.cgroup_parent(index)).await;
}

/// Stops a minion's dockerd cleanly: its supervisor first, which stops
/// dockerd, then dockerd itself if it is left.
async fn stop_dockerd(layout: &Layout, index: usize) {
    let run_dir = layout.runtime_dir(index);
    if let Some(pid) = host::live_pid(&run_dir.join("dockerd-supervisor.pid"), "dockerd") {
        host::terminate(&[pid], Duration::from_secs(15)).await;
    }
    if let Some(pid) = host::live_pid(&run_dir.join("docker.pid"), "dockerd") {
        host::terminate(&[pid], Duration::from_secs(10)).await;
    }
}

/// Removes minion `index` entirely. Tolerates any part being missing.
pub async fn remove_minion(dir: &ClusterDir, layout: &Layout, index: usize) {
    // A power cut, then the clean-up of what it leaves (mounts, the
    // namespace, links): the whole minion goes, so nothing needs Docker to
    // stop its containers one by one first. Through Docker, each pod's
    // network namespace is torn down in turn, in series in the kernel:
    // half a minute for 30 minions of 10 pods, against a few seconds.
    kill_minion(layout, index).await;
    host::unmount_all_under(&dir.minion_dir(&Layout::minion_id(index))).await;
    host::unmount_all_under(&layout.runtime_dir(index)).await;
    let ns = layout.netns(index);
    host::run_quiet(&["ip", "netns", "delete", &ns]).await;
    host::run_quiet(&["ip", "link", "delete", &layout.veth(index)]).await;
    host::run_quiet(&["ip", "route", "delete", &layout.pod_cidr(index)]).await;
}

/// Removes the host side: bridge, routes, runtime directory.
pub async fn remove_host_network(layout: &Layout) {
    host::run_quiet(&["ip", "link", "delete", &layout.bridge()]).await;
    host::run_quiet(&["ip", "route", "delete", "blackhole", &layout.cluster_cidr()]).await;
    host::unmount_all_under(&layout.runtime_root()).await;
    let _ = std::fs::remove_dir_all(layout.runtime_root());
}

/// Where etcd member `member` keeps its data, pid and log: the first in
/// the cluster's etcd directory (where a single etcd always was), the
/// others beside it.
pub fn etcd_member_dir(dir: &ClusterDir, member: usize) -> PathBuf {
    match member {
        1 => dir.etcd_dir(),
        n => dir.etcd_dir().join(format!("member-{n}")),
    }
}

/// Whether member `member` has its data: its write-ahead log, which a
/// member that joined or started and then died half-way may lack.
pub fn etcd_member_has_data(dir: &ClusterDir, member: usize) -> bool {
    etcd_member_dir(dir, member)
        .join("data/member/wal")
        .exists()
}

/// The peer URL member `member` is known by to the others.
pub fn etcd_peer_url(layout: &Layout, member: usize) -> String {
    format!(
        "https://{}:{}",
        layout.etcd_member_ip(member),
        crate::cluster::LOCAL_ETCD_PEER_PORT
    )
}

/// The members whose directories exist: what `down` must stop.
fn etcd_member_dirs(dir: &ClusterDir) -> Vec<PathBuf> {
    (1..=MAX_MASTERS)
        .map(|m| etcd_member_dir(dir, m))
        .filter(|d| d.exists())
        .collect()
}

/// etcd member `member` of `masters`: TLS only (clients and peers), on its
/// own address, with the cluster's certificates from the workstation's
/// cluster directory.
fn etcd_argv(dir: &ClusterDir, layout: &Layout, member: usize, masters: usize) -> Vec<String> {
    let data = etcd_member_dir(dir, member)
        .join("data")
        .display()
        .to_string();
    let client = layout.etcd_member_endpoint(member);
    let peer_url = |m: usize| etcd_peer_url(layout, m);
    let initial_cluster = (1..=masters)
        .map(|m| format!("{}={}", layout.etcd_member_name(m), peer_url(m)))
        .collect::<Vec<_>>()
        .join(",");
    let mut argv: Vec<String> = [
        "etcd",
        "--name",
        &layout.etcd_member_name(member),
        "--data-dir",
        &data,
        "--listen-client-urls",
        &client,
        "--advertise-client-urls",
        &client,
        "--listen-peer-urls",
        &peer_url(member),
        "--initial-advertise-peer-urls",
        &peer_url(member),
        "--initial-cluster",
        &initial_cluster,
        // Big plans (many pods) are one transaction.
        "--max-txn-ops",
        "10000",
        "--log-level",
        "warn",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    if masters == 1 {
        argv.extend(crate::bootstrap::etcd::single_member_flags());
    } else {
        // etcd's own defaults: peers on one loaded machine must not call
        // elections for a slow heartbeat.
        argv.extend(crate::argv![
            "--heartbeat-interval",
            "100",
            "--election-timeout",
            "1000"
        ]);
    }
    let pki = dir.pki();
    let path = |p: std::path::PathBuf| p.display().to_string();
    let this = crate::pki::EtcdMember {
        name: member.to_string(),
        ips: vec![layout.etcd_member_ip(member).into()],
    };
    let files = crate::bootstrap::etcd::MemberFiles::in_pki(&pki, &this);
    argv.extend(crate::bootstrap::etcd::tls_flags(
        &path(pki.ca_file()),
        &files,
        &path(pki.crl_file()),
    ));
    argv
}

/// Starts etcd member `member` of `masters` on its address under a
/// supervisor (`kctl supervise`, which starts it again within a second
/// if it dies), unless it runs already with the same command line.
/// `restart`: its certificates changed, so a running one is restarted.
/// `joining`: the member is new to a running cluster (its data was lost
/// and `Store::replace_member` made room for it).
pub async fn ensure_etcd(
    dir: &ClusterDir,
    layout: &Layout,
    member: usize,
    masters: usize,
    restart: bool,
    joining: bool,
) -> Result<bool, HostError> {
    let etcd_dir = etcd_member_dir(dir, member);
    std::fs::create_dir_all(&etcd_dir)
        .map_err(|e| host_error(etcd_dir.display().to_string(), e))?;
    let ip = layout.etcd_member_ip(member);
    let mut changed = false;
    if member > 1 {
        changed |= ensure_bridge_address(layout, ip).await?;
    }
    let pid_file = etcd_dir.join("etcd.pid");
    let data = etcd_dir.join("data").display().to_string();
    let argv = etcd_argv(dir, layout, member, masters);
    let args_file = etcd_dir.join("etcd.args");
    let same_args = std::fs::read_to_string(&args_file).ok() == Some(argv.join("\n"));
    let addr = SocketAddr::from((ip, 2379));
    if host::live_pid(&pid_file, &data).is_some() && same_args && !restart {
        // Supervised; give a restart in progress a moment. A supervisor
        // whose etcd never comes (stopped, wedged) is replaced below.
        if host::wait_for(Duration::from_secs(5), || host::tcp_open(addr)).await {
            return Ok(changed);
        }
    }
    stop_etcd_member(&etcd_dir).await;
    let me = std::env::current_exe().map_err(|e| host_error("kctl's own path", e))?;
    let mut supervised = vec![
        me.display().to_string(),
        "supervise".to_string(),
        "--pid-file".to_string(),
        pid_file.display().to_string(),
        "--".to_string(),
    ];
    supervised.extend(argv.iter().cloned());
    if joining {
        // Read at its first start only: the recorded command line stays
        // the steady one, so the next `up` does not restart it.
        supervised.extend(crate::argv!["--initial-cluster-state", "existing"]);
    }
    host::spawn_daemon(&supervised, &etcd_dir.join("etcd.log"))?;
    std::fs::write(&args_file, argv.join("\n"))
        .map_err(|e| host_error(args_file.display().to_string(), e))?;
    if !host::wait_for(Duration::from_secs(20), || host::tcp_open(addr)).await {
        return Err(host_error(
            "etcd",
            format!(
                "not listening on {addr} after 20s; see {}",
                etcd_dir.join("etcd.log").display()
            ),
        ));
    }
    Ok(true)
}

/// Makes sure the renewal signer (`kctl-node sign`, run by `program`)
/// runs beside the cluster's etcd, supervised, with the CA of `pki` and
/// `endpoints` to reach etcd. Restarted when its command line changed
/// (the CA was renewed: it reads it at start). True if it was started.
pub async fn ensure_signer(
    dir: &ClusterDir,
    program: &std::path::Path,
    endpoints: &[String],
    restart: bool,
) -> Result<bool, HostError> {
    let etcd_dir = dir.etcd_dir();
    let pki = dir.pki();
    let pid_file = etcd_dir.join("signer.pid");
    let mut argv = vec![
        program.display().to_string(),
        "sign".to_string(),
        "--cluster".to_string(),
        dir.name.clone(),
    ];
    for e in endpoints {
        argv.extend(["--etcd".to_string(), e.clone()]);
    }
    argv.extend([
        "--ca-cert".to_string(),
        pki.ca_file().display().to_string(),
        "--ca-key".to_string(),
        pki.key_file("ca").display().to_string(),
    ]);
    let args_file = etcd_dir.join("signer.args");
    let same_args = std::fs::read_to_string(&args_file).ok() == Some(argv.join("\n"));
    let supervisor_of = pid_file.display().to_string();
    if host::live_pid(&pid_file, &supervisor_of).is_some() && same_args && !restart {
        return Ok(false);
    }
    stop_signer(dir).await;
    let me = std::env::current_exe().map_err(|e| host_error("kctl's own path", e))?;
    let mut supervised = vec![
        me.display().to_string(),
        "supervise".to_string(),
        "--pid-file".to_string(),
        supervisor_of,
        "--".to_string(),
    ];
    supervised.extend(argv.iter().cloned());
    host::spawn_daemon(&supervised, &etcd_dir.join("signer.log"))?;
    std::fs::write(&args_file, argv.join("\n"))
        .map_err(|e| host_error(args_file.display().to_string(), e))?;
    Ok(true)
}

/// Stops the renewal signer's supervisor, which stops the signer.
pub async fn stop_signer(dir: &ClusterDir) {
    let pid_file = dir.etcd_dir().join("signer.pid").display().to_string();
    let left = host::processes_under(&pid_file);
    host::terminate(&left, Duration::from_secs(10)).await;
}

/// Gives the bridge `ip` as well (an etcd member's own address): on the
/// bridge, the minions reach it directly and it never leaves the machine
/// (the cluster's blackhole route covers it).
async fn ensure_bridge_address(layout: &Layout, ip: Ipv4Addr) -> Result<bool, HostError> {
    let listed = host::run(&["ip", "-o", "-4", "addr", "show", "dev", &layout.bridge()]).await?;
    if listed
        .split_whitespace()
        .any(|w| w.split('/').next() == Some(&ip.to_string()))
    {
        return Ok(false);
    }
    host::run(&[
        "ip",
        "addr",
        "add",
        &format!("{ip}/32"),
        "dev",
        &layout.bridge(),
    ])
    .await?;
    Ok(true)
}

/// Stops every etcd member of the cluster: their supervisors, which stop
/// etcd, and then anything still running from the cluster's etcd
/// directory (a supervisor or etcd whose pid file or directory is gone).
pub async fn stop_etcd(dir: &ClusterDir) {
    for member_dir in etcd_member_dirs(dir) {
        stop_etcd_member(&member_dir).await;
    }
    let left = host::processes_under(&dir.etcd_dir().display().to_string());
    host::terminate(&left, Duration::from_secs(10)).await;
}

/// Stops one member: its supervisor first (it would start etcd again),
/// then whatever runs from its directory.
pub async fn stop_etcd_member(etcd_dir: &std::path::Path) {
    let data = etcd_dir.join("data").display().to_string();
    if let Some(pid) = host::live_pid(&etcd_dir.join("etcd.pid"), &data) {
        host::terminate(&[pid], Duration::from_secs(10)).await;
    }
    // Supervisors name the member's pid file, etcd its data directory.
    let pid_file = etcd_dir.join("etcd.pid").display().to_string();
    let mut left = host::processes_under(&pid_file);
    left.extend(host::processes_under(&data));
    host::terminate(&left, Duration::from_secs(10)).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_addresses() {
        let l = Layout {
            cluster: "demo".into(),
            slot: 7,
        };
        assert_eq!(l.cluster_cidr(), "10.107.0.0/16");
        assert_eq!(l.bridge_ip(), Ipv4Addr::new(10, 107, 0, 1));
        assert_eq!(l.node_ip(2), Ipv4Addr::new(10, 107, 0, 12));
        assert_eq!(l.pod_cidr(2), "10.107.2.0/24");
        assert_eq!(l.netns(3), "kctl-demo-minion-3");
        assert_eq!(l.mac(2), "02:6b:0a:6b:00:0c");
        assert_eq!(Layout::index_of("minion-12"), Some(12));
        assert_eq!(Layout::index_of("node-1"), None);
        // Interface names must fit Linux's 15 characters at the extremes.
        let big = Layout {
            cluster: "x".into(),
            slot: LAST_SLOT,
        };
        assert!(big.veth(MAX_MINIONS).len() <= 15);
        assert!(big.bridge().len() <= 15);
        // Never the machine's resolver range.
        for slot in FIRST_SLOT..=LAST_SLOT {
            let l = Layout {
                cluster: "x".into(),
                slot,
            };
            assert!(!l.cluster_cidr().starts_with("10.255."));
        }
    }

    #[test]
    fn a_minions_users_have_homes_of_its_own() {
        let passwd = "root:x:0:0:root:/root:/bin/bash\n\
                      sshd:x:100:65534::/run/sshd:/usr/sbin/nologin\n\
                      broken line\n";
        let homes = std::path::Path::new("/k/minions/minion-1/home");
        assert_eq!(
            minion_passwd(passwd, homes),
            "root:x:0:0:root:/k/minions/minion-1/home/root:/bin/bash\n\
             sshd:x:100:65534::/k/minions/minion-1/home/sshd:/usr/sbin/nologin\n\
             broken line\n"
        );
    }
}
