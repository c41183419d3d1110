//! Installing kctl's parts on a machine over SSH. Whatever made the machine
//! (a local namespace, a GCE instance, a user's own host), this is the one
//! path that prepares it to run pods: the pod network in Docker, routes to
//! other minions' pods, forwarding rules, the pause image, the node helper,
//! and etcd on the machine that hosts it. `teardown` undoes exactly that.

pub mod etcd;
pub mod helper;
pub mod preflight;
pub mod service;
pub mod setup;
pub mod teardown;

pub use helper::Helper;
pub use setup::{setup_minion, SetupRequest};

use crate::argv;
use crate::cluster::{ClusterConfig, MinionConfig};
use crate::converge::docker::{LABEL_CLUSTER, PAUSE_IMAGE, POD_BRIDGE, POD_NETWORK};
use crate::exec::{Exec, ExecError};
use crate::image;
use serde::Deserialize;
use std::net::Ipv4Addr;

/// The file on a minion that lists the images `kctl image load` put there,
/// so teardown removes those and nothing the host had before.
pub fn loaded_images_file(minion: &MinionConfig) -> String {
    format!("{}/loaded-images", minion.helper_dir.trim_end_matches('/'))
}

/// The filter-table chain kctl owns on every minion.
pub const FORWARD_CHAIN: &str = "KCTL-FORWARD";

/// The routes a minion keeps: every other minion's pod range through that
/// minion (pods reach each other by pod IP, across minions, without NAT),
/// where the machines route pod ranges themselves; and the portal range,
/// where the minion has no default route to carry it.
/// The pod ranges are parsed, not copied: they go into `ip`'s command
/// language, and a record's text must not add commands to it.
pub fn minion_routes(
    cluster: &ClusterConfig,
    minion: &MinionConfig,
) -> Result<Vec<(ipnet::Ipv4Net, std::net::Ipv4Addr)>, String> {
    let mut routes = vec![];
    if cluster.pod_network.host_routes {
        for other in cluster.minions.iter().filter(|o| o.id != minion.id) {
            let range: ipnet::Ipv4Net = other.pod_cidr.parse().map_err(|_| {
                format!(
                    "the cluster record gives {} the pod range {:?}, which is not an IPv4 CIDR",
                    other.id, other.pod_cidr
                )
            })?;
            routes.push((range, other.host_ip));
        }
    }
    if let Some(via) = cluster.pod_network.portal_via {
        routes.push((cluster.portal_net, via));
    }
    Ok(routes)
}

/// `ip -batch` input with a `route replace` for each of `routes`: one
/// command for all of them (a session per route made `up` of 30 minions
/// open 29 sessions on each for routes alone).
pub fn route_batch(routes: &[(ipnet::Ipv4Net, std::net::Ipv4Addr)]) -> String {
    routes
        .iter()
        .map(|(range, via)| format!("route replace {range} via {via}\n"))
        .collect()
}

/// The routes of `routes` that `ip -4 route show` output `listed` lacks.
pub fn missing_routes(
    routes: &[(ipnet::Ipv4Net, std::net::Ipv4Addr)],
    listed: &str,
) -> Vec<(ipnet::Ipv4Net, std::net::Ipv4Addr)> {
    routes
        .iter()
        .filter(|(range, via)| {
            !listed.lines().any(|line| {
                let words: Vec<&str> = line.split_whitespace().collect();
                words.len() >= 3
                    && words[0] == range.to_string()
                    && words[1] == "via"
                    && words[2] == via.to_string()
            })
        })
        .copied()
        .collect()
}

/// Whether the kernel forwards IPv4 (`/proc/sys/net/ipv4/ip_forward`):
/// without it no pod reaches another minion, nor a portal's backend there.
pub async fn forwarding_on<E: Exec>(exec: &E) -> Result<bool, ExecError> {
    let value = exec
        .run(&argv!["cat", "/proc/sys/net/ipv4/ip_forward"], None)
        .await?;
    Ok(value.stdout_text().trim() == "1")
}

/// The `iptables-restore --noflush` input that accepts forwarded pod
/// traffic (Docker's own FORWARD rules would drop connections from other
/// minions' pods): from pods anywhere; to pods from the cluster's pods and
/// minions, as replies, or through a portal or host port (DNAT) — and no
/// more, so a pod's ports are not open to whatever can route to a minion.
/// Declaring the chain flushes it, so the rules are replaced whole,
/// atomically.
pub fn forward_rules(all: &[MinionConfig]) -> String {
    let c = FORWARD_CHAIN;
    // The guard first: wherever this chain is jumped to from (re-inserted
    // at the top of FORWARD after a reboot, say), pods still do not get
    // to the control plane through its ACCEPTs.
    let mut rules = format!("*filter\n:{c} - [0:0]\n-A {c} -j {GUARD_CHAIN}\n");
    let sources: Vec<String> = all
        .iter()
        .map(|m| m.pod_cidr.clone())
        .chain(all.iter().map(|m| format!("{}/32", m.host_ip)))
        .collect();
    for m in all {
        let pods = &m.pod_cidr;
        rules.push_str(&format!("-A {c} -s {pods} -j ACCEPT\n"));
        rules.push_str(&format!(
            "-A {c} -d {pods} -m conntrack --ctstate RELATED,ESTABLISHED,DNAT -j ACCEPT\n"
        ));
        for source in &sources {
            rules.push_str(&format!("-A {c} -s {source} -d {pods} -j ACCEPT\n"));
        }
    }
    rules.push_str("COMMIT\n");
    rules
}

/// The filter-table chain that keeps pods away from the control plane,
/// jumped to first from INPUT and from Docker's DOCKER-USER (or FORWARD
/// where Docker keeps no iptables rules). DOCKER-USER because Docker
/// inserts its own FORWARD rules at the top whenever it makes a network or
/// restarts, and they accept a bridge's outgoing traffic; it jumps to
/// DOCKER-USER before them and never touches what is in it.
pub const GUARD_CHAIN: &str = "KCTL-GUARD";

/// Where forwarded packets meet [`GUARD_CHAIN`]: DOCKER-USER if it exists.
pub const GUARD_FORWARD_HOOKS: [&str; 2] = ["DOCKER-USER", "FORWARD"];

/// The machines and ports of the cluster's control plane: every machine's
/// sshd (at its cluster address and, for cloud VMs, its external one) and
/// etcd's client and peer ports. Pods have no business there: a pod that
/// reached etcd could rewrite what every minion runs.
pub fn control_plane(cluster: &ClusterConfig) -> std::collections::BTreeSet<(Ipv4Addr, u16)> {
    let mut out = std::collections::BTreeSet::new();
    for m in &cluster.minions {
        out.insert((m.host_ip, m.ssh_port));
        if let Some(ip) = m.ssh_host.as_deref().and_then(|h| h.parse().ok()) {
            out.insert((ip, m.ssh_port));
        }
    }
    for endpoint in &cluster.etcd_endpoints {
        // The machine serving etcd keeps its sshd on 22 (for the local
        // provider: this workstation).
        if let Some(addr) = crate::cluster::endpoint_addr(endpoint) {
            out.insert((*addr.ip(), addr.port()));
            out.insert((*addr.ip(), 22));
            // The local provider's members talk to each other there.
            if cluster.provider == crate::cluster::ProviderKind::Local {
                out.insert((*addr.ip(), crate::cluster::LOCAL_ETCD_PEER_PORT));
            }
        }
    }
    for host in &cluster.etcd_hosts {
        out.insert((host.ip, crate::cluster::ETCD_CLIENT_PORT));
        out.insert((host.ip, crate::cluster::ETCD_PEER_PORT));
        out.insert((host.ip, host.ssh_port));
        if let Ok(ip) = host.ssh_host.parse() {
            out.insert((ip, host.ssh_port));
        }
    }
    // A machine also answers at its pod bridge's gateway, where a pod of
    // another minion reaches it without crossing that machine's bridge.
    for m in &cluster.minions {
        let Some(gateway) = pod_gateway(m) else {
            continue;
        };
        let ports: Vec<u16> = out
            .iter()
            .filter(|(ip, _)| *ip == m.host_ip)
            .map(|(_, port)| *port)
            .collect();
        out.extend(ports.into_iter().map(|port| (gateway, port)));
    }
    out
}

/// The minion's address on its pod bridge: the first of its pod range.
pub fn pod_gateway(minion: &MinionConfig) -> Option<Ipv4Addr> {
    minion
        .pod_cidr
        .parse::<ipnet::Ipv4Net>()
        .ok()
        .and_then(|net| net.hosts().next())
}

/// The cluster's machines that run no pods (the workstation's etcd
/// addresses on a local cluster, GCE masters, etcd-only hosts): pods have
/// nothing to reach there at all, on any port.
pub fn control_plane_only_machines(
    cluster: &ClusterConfig,
) -> std::collections::BTreeSet<Ipv4Addr> {
    let minions: std::collections::BTreeSet<Ipv4Addr> = cluster
        .minions
        .iter()
        .flat_map(|m| {
            let external = m.ssh_host.as_deref().and_then(|h| h.parse().ok());
            std::iter::once(m.host_ip).chain(external)
        })
        .collect();
    let endpoints = cluster
        .etcd_endpoints
        .iter()
        .filter_map(|e| crate::cluster::endpoint_addr(e))
        .map(|addr| *addr.ip());
    let hosts = cluster.etcd_hosts.iter().map(|h| h.ip);
    endpoints
        .chain(hosts)
        .filter(|ip| !minions.contains(ip))
        .collect()
}

/// `iptables-restore --noflush` input for [`GUARD_CHAIN`]. Refused at once
/// (a TCP reset), whatever address a pod names:
/// - connections from this minion's pods (in through the pod bridge) to
///   the minion itself on any control-plane port (its gateway, Docker's
///   addresses, an external one);
/// - connections from any minion's pods (by source range: pods keep their
///   address between minions) to this machine on those ports;
/// - this minion's pods to the other machines' control-plane ports, and to
///   the machines that run no pods on every port.
///
/// Everything else — other pods, portals, host ports, the outside world —
/// passes. Declaring the chain flushes it, so the rules are replaced whole.
pub fn guard_rules(cluster: &ClusterConfig) -> String {
    let c = GUARD_CHAIN;
    let targets = control_plane(cluster);
    let reject = "-j REJECT --reject-with tcp-reset";
    let mut rules = format!("*filter\n:{c} - [0:0]\n");
    let ports: std::collections::BTreeSet<u16> = targets.iter().map(|(_, port)| *port).collect();
    let ports: Vec<String> = ports.iter().map(u16::to_string).collect();
    let pod_ranges: std::collections::BTreeSet<ipnet::Ipv4Net> = cluster
        .minions
        .iter()
        .filter_map(|m| m.pod_cidr.parse::<ipnet::Ipv4Net>().ok())
        .map(|net| net.trunc())
        .collect();
    let from = std::iter::once(format!("-i {POD_BRIDGE}"))
        // (Not over loopback: the machine talking to itself from its
        // gateway address is no pod.)
        .chain(pod_ranges.iter().map(|net| format!("! -i lo -s {net}")));
    for from in from {
        // multiport takes at most 15 ports a rule.
        for chunk in ports.chunks(15) {
            rules.push_str(&format!(
                "-A {c} {from} -m addrtype --dst-type LOCAL -p tcp -m multiport --dports {} {reject}\n",
                chunk.join(",")
            ));
        }
    }
    for (ip, port) in &targets {
        rules.push_str(&format!(
            "-A {c} -i {POD_BRIDGE} -d {ip}/32 -p tcp --dport {port} {reject}\n"
        ));
    }
    // New connections only: such a machine may open one to a pod (the
    // workstation reaching a pod's IP on a local cluster), and the pod's
    // answers come this way.
    for ip in control_plane_only_machines(cluster) {
        let new = format!("-A {c} -i {POD_BRIDGE} -d {ip}/32 -m conntrack --ctstate NEW");
        rules.push_str(&format!("{new} -p tcp {reject}\n{new} -j REJECT\n"));
    }
    // On GCE the metadata server hands out the VM's service-account token
    // and takes guest attributes (where `up` reads host keys): pods get
    // none of it, by any protocol.
    if cluster.provider == crate::cluster::ProviderKind::Gce {
        rules.push_str(&format!(
            "-A {c} -i {POD_BRIDGE} -d {GCE_METADATA_SERVER}/32 -j REJECT\n"
        ));
    }
    rules.push_str("COMMIT\n");
    rules
}

/// Where a GCE VM's metadata server answers.
pub const GCE_METADATA_SERVER: Ipv4Addr = Ipv4Addr::new(169, 254, 169, 254);

/// Pods speak IPv4 only: nothing of theirs over IPv6 reaches the machine
/// (its link-local address on the pod bridge, an sshd on `[::]`).
pub fn ipv6_guard(op: &str) -> Vec<String> {
    argv![
        "ip6tables",
        "--wait",
        op,
        "INPUT",
        "--in-interface",
        POD_BRIDGE,
        "--jump",
        "DROP"
    ]
}

/// The jump into [`GUARD_CHAIN`] from `hook` (INPUT or FORWARD).
pub fn guard_jump(hook: &str, op: &str) -> Vec<String> {
    if op == "--insert" {
        argv!["iptables", "--wait", op, hook, "1", "--jump", GUARD_CHAIN]
    } else {
        argv!["iptables", "--wait", op, hook, "--jump", GUARD_CHAIN]
    }
}

/// The nat-table chain that masquerades pods' traffic leaving the cluster.
pub const MASQ_CHAIN: &str = "KCTL-MASQ";

/// `iptables-restore --noflush` input for [`MASQ_CHAIN`]: pods keep their
/// own address towards other pods, minions and portals, and borrow the
/// minion's for everything else (the internet, a VM's metadata server),
/// which would otherwise not know the way back to a pod range — as
/// Kubernetes did on GCE in 2014. Replaced whole on every bootstrap.
pub fn masquerade_rules(all: &[MinionConfig], portal_net: ipnet::Ipv4Net) -> String {
    let c = MASQ_CHAIN;
    let mut rules = format!("*nat\n:{c} - [0:0]\n");
    for m in all {
        rules.push_str(&format!("-A {c} -d {} -j RETURN\n", m.pod_cidr));
        rules.push_str(&format!("-A {c} -d {}/32 -j RETURN\n", m.host_ip));
    }
    rules.push_str(&format!("-A {c} -d {portal_net} -j RETURN\n"));
    rules.push_str(&format!("-A {c} -j MASQUERADE\nCOMMIT\n"));
    rules
}

/// The jump from nat POSTROUTING into [`MASQ_CHAIN`] for this minion's pods.
pub fn masquerade_jump(minion: &MinionConfig, op: &str) -> Vec<String> {
    argv![
        "iptables",
        "--wait",
        "--table",
        "nat",
        op,
        "POSTROUTING",
        "--source",
        minion.pod_cidr.clone(),
        "!",
        "--out-interface",
        POD_BRIDGE,
        "--jump",
        MASQ_CHAIN
    ]
}

/// `docker network create` for the minion's pod range. No masquerading:
/// pods see each other's real addresses across minions.
pub fn pod_network_argv(cluster: &str, minion: &MinionConfig, mtu: Option<u32>) -> Vec<String> {
    let gateway = pod_gateway(minion)
        .map(|ip| ip.to_string())
        .unwrap_or_default();
    let mut create = argv![
        "docker",
        "network",
        "create",
        "--driver",
        "bridge",
        "--subnet",
        minion.pod_cidr.clone(),
        "--gateway",
        gateway,
        "--opt",
        format!("com.docker.network.bridge.name={POD_BRIDGE}"),
        "--opt",
        "com.docker.network.bridge.enable_ip_masquerade=false",
        "--label",
        format!("{LABEL_CLUSTER}={cluster}")
    ];
    if let Some(mtu) = mtu {
        create.push("--opt".into());
        create.push(format!("com.docker.network.driver.mtu={mtu}"));
    }
    create.push(POD_NETWORK.into());
    create
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct NetworkInspect {
    #[serde(rename = "IPAM")]
    ipam: Ipam,
    #[serde(default)]
    labels: Option<std::collections::HashMap<String, String>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Ipam {
    #[serde(default)]
    config: Option<Vec<IpamConfig>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct IpamConfig {
    #[serde(default)]
    subnet: String,
}

/// What a minion's existing `kctl` network is: (cluster label, subnet).
pub fn parse_network_inspect(json: &str) -> Option<(String, String)> {
    let n: NetworkInspect = serde_json::from_str(json.trim()).ok()?;
    let cluster = n
        .labels
        .unwrap_or_default()
        .get(LABEL_CLUSTER)
        .cloned()
        .unwrap_or_default();
    let subnet = n
        .ipam
        .config
        .unwrap_or_default()
        .into_iter()
        .next()
        .map(|c| c.subnet)
        .unwrap_or_default();
    Some((cluster, subnet))
}

pub fn network_inspect_argv() -> Vec<String> {
    argv![
        "docker",
        "network",
        "inspect",
        "--format",
        "{{json .}}",
        POD_NETWORK
    ]
}

/// Makes the minion's pod network unless it is there with the right range.
/// A `kctl` network of another cluster, or of another range, is an error:
/// it may carry pods kctl must not disturb.
async fn ensure_pod_network<E: Exec>(
    exec: &E,
    cluster: &ClusterConfig,
    minion: &MinionConfig,
) -> Result<bool, ExecError> {
    let inspect = exec.run(&network_inspect_argv(), None).await?;
    if inspect.success() {
        return match parse_network_inspect(&inspect.stdout_text()) {
            Some((owner, subnet)) if owner == cluster.name && subnet == minion.pod_cidr => {
                Ok(false)
            }
            found => Err(ExecError::Transport {
                target: exec.target().to_string(),
                message: format!(
                    "Docker already has a network named {POD_NETWORK} ({}); kctl needs it for cluster {} with range {}. \
                     Remove it (`docker network rm {POD_NETWORK}`) or `kctl down` the cluster that made it",
                    match found {
                        Some((owner, subnet)) if !owner.is_empty() =>
                            format!("cluster {owner}, range {subnet}"),
                        Some((_, subnet)) => format!("not kctl's, range {subnet}"),
                        None => "unreadable".into(),
                    },
                    cluster.name,
                    minion.pod_cidr
                ),
            }),
        };
    }
    exec.run_ok(&pod_network_argv(
        &cluster.name,
        minion,
        cluster.pod_network.mtu,
    ))
    .await?;
    Ok(true)
}

/// Puts a login other than root in the `docker` group: `kctl apply`
/// reaches Docker's socket through that login's SSH connection, with its
/// rights. The group is as powerful as the `sudo` rule kctl already needs.
/// It counts from the login's next connection on.
async fn ensure_docker_group<E: Exec>(exec: &E, user: &str) -> Result<bool, ExecError> {
    if user == "root" {
        return Ok(false);
    }
    let groups = exec.run_ok(&argv!["id", "-nG", "--", user]).await?;
    if groups.split_whitespace().any(|g| g == "docker") {
        return Ok(false);
    }
    exec.run_ok(&argv![
        "usermod", "--append", "--groups", "docker", "--", user
    ])
    .await?;
    Ok(true)
}

/// Prepares one minion. Idempotent: running it again changes nothing.
/// Returns true if anything changed.
pub async fn bootstrap_minion<E: Exec>(
    exec: &E,
    cluster: &ClusterConfig,
    minion: &MinionConfig,
) -> Result<bool, ExecError> {
    let all = &cluster.minions;
    // Three independent lines of work at once (each SSH command costs a
    // round trip): Docker (network, pause image), routes, forwarding rules.
    let docker = async {
        exec.run_ok(&argv![
            "docker",
            "version",
            "--format",
            "{{.Server.Version}}"
        ])
        .await?;
        let mut changed = ensure_docker_group(exec, &minion.ssh_user).await?;
        changed |= ensure_pod_network(exec, cluster, minion).await?;
        let has_pause = exec
            .run(
                &argv![
                    "docker",
                    "image",
                    "inspect",
                    "--format",
                    "{{.Id}}",
                    PAUSE_IMAGE
                ],
                None,
            )
            .await?;
        if !has_pause.success() {
            let import = argv![
                "docker",
                "import",
                "--change",
                r#"ENTRYPOINT ["/pause"]"#,
                "-",
                PAUSE_IMAGE
            ];
            exec.run(&import, Some(&image::pause_rootfs_tar()))
                .await?
                .check(exec.target(), &import)?;
            changed = true;
        }
        Ok::<bool, ExecError>(changed)
    };
    let routes = async {
        let routes = minion_routes(cluster, minion).map_err(|message| ExecError::Transport {
            target: exec.target().to_string(),
            message,
        })?;
        if !routes.is_empty() {
            let batch = route_batch(&routes);
            let ip = argv!["ip", "-batch", "-"];
            exec.run(&ip, Some(batch.as_bytes()))
                .await?
                .check(exec.target(), &ip)?;
        }
        let mut changed = false;
        if !forwarding_on(exec).await? {
            exec.run_ok(&argv!["sysctl", "-qw", "net.ipv4.ip_forward=1"])
                .await?;
            changed = true;
        }
        Ok::<bool, ExecError>(changed)
    };
    let rules = async {
        // Service rules are written with nft (see services::rules).
        exec.run_ok(&argv!["nft", "--version"]).await?;
        // The guard before the chain that jumps to it.
        let restore = argv!["iptables-restore", "--wait", "--noflush"];
        exec.run(&restore, Some(guard_rules(cluster).as_bytes()))
            .await?
            .check(exec.target(), &restore)?;
        let restore = argv!["iptables-restore", "--wait", "--noflush"];
        exec.run(&restore, Some(forward_rules(all).as_bytes()))
            .await?
            .check(exec.target(), &restore)?;
        let restore = argv!["iptables-restore", "--wait", "--noflush"];
        let masq = masquerade_rules(all, cluster.portal_net);
        exec.run(&restore, Some(masq.as_bytes()))
            .await?
            .check(exec.target(), &restore)?;
        let mut changed = false;
        let docker_user = exec
            .run(
                &argv!["iptables", "--wait", "--numeric", "--list", "DOCKER-USER"],
                None,
            )
            .await?
            .success();
        let forward_hook = GUARD_FORWARD_HOOKS[usize::from(!docker_user)];
        for hook in ["INPUT", forward_hook] {
            if !exec
                .run(&guard_jump(hook, "--check"), None)
                .await?
                .success()
            {
                exec.run_ok(&guard_jump(hook, "--insert")).await?;
                changed = true;
            }
        }
        let jump = |op: &str| argv!["iptables", "--wait", op, "FORWARD", "--jump", FORWARD_CHAIN];
        if !exec.run(&jump("--check"), None).await?.success() {
            exec.run_ok(&jump("--insert")).await?;
            changed = true;
        }
        // A kernel without IPv6 has nothing to guard there.
        let has_ipv6 = exec
            .run(&argv!["test", "-d", "/proc/sys/net/ipv6"], None)
            .await?
            .success();
        if has_ipv6 && !exec.run(&ipv6_guard("--check"), None).await?.success() {
            exec.run_ok(&ipv6_guard("--insert")).await?;
            changed = true;
        }
        if !exec
            .run(&masquerade_jump(minion, "--check"), None)
            .await?
            .success()
        {
            exec.run_ok(&masquerade_jump(minion, "--append")).await?;
            changed = true;
        }
        Ok::<bool, ExecError>(changed)
    };
    let (docker, routes, rules) = futures::join!(docker, routes, rules);
    let changed = docker? | routes? | rules?;
    Ok(changed)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::cluster::{PodNetwork, ProviderKind};
    use crate::exec::{Output, RecordingExec};

    pub(crate) fn minions() -> Vec<MinionConfig> {
        (1..=3)
            .map(|i| MinionConfig {
                id: format!("minion-{i}"),
                host_ip: format!("10.101.0.{}", 10 + i).parse().unwrap(),
                ssh_port: 22,
                ssh_user: "root".into(),
                pod_cidr: format!("10.101.{i}.0/24"),
                helper_dir: "/var/lib/kctl/".into(),
                docker_socket: "/var/run/docker.sock".into(),
                ssh_host: None,
            })
            .collect()
    }

    pub(crate) fn cluster() -> ClusterConfig {
        ClusterConfig {
            name: "c1".into(),
            provider: ProviderKind::Ssh,
            etcd_endpoints: vec!["http://10.101.0.11:4001".into()],
            minions: minions(),
            portal_net: "10.0.0.0/16".parse().unwrap(),
            local: None,
            gce: None,
            etcd_hosts: vec![],
            pod_network: PodNetwork::default(),
            ssh_identity: None,
            offline_images: false,
            allow_host_dir: false,
            allow_privileged: false,
        }
    }

    fn missing() -> Output {
        Output {
            code: Some(1),
            stdout: vec![],
            stderr: b"No such object".to_vec(),
        }
    }

    #[test]
    fn routes_go_to_the_other_minions_and_the_portals() {
        let mut cluster = cluster();
        let first = cluster.minions[0].clone();
        let routes = minion_routes(&cluster, &first).unwrap();
        assert_eq!(
            route_batch(&routes),
            "route replace 10.101.2.0/24 via 10.101.0.12\n\
             route replace 10.101.3.0/24 via 10.101.0.13\n"
        );
        // A local minion, with no default route, sends portals to the bridge.
        cluster.pod_network.portal_via = Some("10.101.0.1".parse().unwrap());
        let routes = minion_routes(&cluster, &first).unwrap();
        assert!(route_batch(&routes).ends_with("route replace 10.0.0.0/16 via 10.101.0.1\n"));
        // What `ip route` lists: one gone, one going elsewhere.
        let listed = "10.101.2.0/24 via 10.101.0.12 dev eth0\n\
                      10.101.3.0/24 via 10.101.0.99 dev eth0\n\
                      10.101.0.0/24 dev eth0 proto kernel scope link src 10.101.0.11\n";
        let missing: Vec<String> = missing_routes(&routes, listed)
            .iter()
            .map(|(r, v)| format!("{r} via {v}"))
            .collect();
        assert_eq!(
            missing,
            [
                "10.101.3.0/24 via 10.101.0.13",
                "10.0.0.0/16 via 10.101.0.1"
            ]
        );
        // Clouds route pod ranges themselves.
        cluster.pod_network.host_routes = false;
        assert_eq!(minion_routes(&cluster, &first).unwrap().len(), 1);
        // A record's text cannot add a command to the batch.
        cluster.pod_network.host_routes = true;
        cluster.minions[1].pod_cidr = "10.0.0.0/24 via 10.0.0.1\nlink del eth0".into();
        let err = minion_routes(&cluster, &first).unwrap_err();
        assert!(
            err.contains("minion-2") && err.contains("not an IPv4 CIDR"),
            "{err}"
        );
    }

    #[test]
    fn pods_are_refused_the_control_plane_and_nothing_else() {
        let mut cluster = cluster();
        cluster.minions[2].ssh_port = 2222;
        cluster.minions[2].ssh_host = Some("34.1.2.3".into());
        let targets = control_plane(&cluster);
        for target in [
            ("10.101.0.11", 22),
            ("10.101.0.12", 22),
            ("10.101.0.13", 2222),
            ("34.1.2.3", 2222),
            // etcd (cluster() puts it on minion-1, port 4001).
            ("10.101.0.11", 4001),
            // The same machines at their pod bridges' gateways.
            ("10.101.1.1", 22),
            ("10.101.1.1", 4001),
            ("10.101.2.1", 22),
            ("10.101.3.1", 2222),
        ] {
            let want = (target.0.parse().unwrap(), target.1);
            assert!(targets.contains(&want), "{target:?} in {targets:?}");
        }
        assert_eq!(targets.len(), 9, "{targets:?}");
        // Only on GCE is the metadata server refused (every protocol).
        assert!(!guard_rules(&cluster).contains("169.254.169.254"));
        let gce = ClusterConfig {
            provider: crate::cluster::ProviderKind::Gce,
            ..cluster.clone()
        };
        assert!(
            guard_rules(&gce).contains("-A KCTL-GUARD -i kctl0 -d 169.254.169.254/32 -j REJECT\n")
        );
        // The local provider's members also speak to each other at 2380.
        let local = ClusterConfig {
            provider: crate::cluster::ProviderKind::Local,
            ..cluster.clone()
        };
        assert!(control_plane(&local).contains(&("10.101.0.11".parse().unwrap(), 2380)));
        let rules = guard_rules(&cluster);
        assert!(rules.starts_with("*filter\n:KCTL-GUARD - [0:0]\n"));
        assert!(rules.ends_with("COMMIT\n"));
        // The minion itself, whatever address a pod names.
        assert!(rules.contains(
            "-A KCTL-GUARD -i kctl0 -m addrtype --dst-type LOCAL -p tcp -m multiport --dports 22,2222,4001 -j REJECT --reject-with tcp-reset\n"
        ));
        assert!(rules.contains(
            "-A KCTL-GUARD -i kctl0 -d 34.1.2.3/32 -p tcp --dport 2222 -j REJECT --reject-with tcp-reset\n"
        ));
        // Pods of any minion, by their source, at any address of this one
        // (but not the machine itself over loopback).
        for range in ["10.101.1.0/24", "10.101.2.0/24", "10.101.3.0/24"] {
            assert!(rules.contains(&format!(
                "-A KCTL-GUARD ! -i lo -s {range} -m addrtype --dst-type LOCAL -p tcp -m multiport --dports 22,2222,4001 -j REJECT --reject-with tcp-reset\n"
            )), "{rules}");
        }
        // Only connections from pods (in by the pod bridge or from a pod
        // range) and only to those ports: every rule names both.
        for line in rules.lines().filter(|l| l.starts_with("-A")) {
            assert!(
                (line.contains("-i kctl0") || line.contains("-s 10.101."))
                    && line.contains("-p tcp"),
                "{line}"
            );
            assert!(line.contains("--dport"), "{line}");
        }
        // etcd on a machine of its own: pods reach none of its ports.
        let mut apart = cluster.clone();
        apart.etcd_endpoints = vec!["https://10.101.0.2:4001".into()];
        assert_eq!(
            control_plane_only_machines(&apart)
                .into_iter()
                .collect::<Vec<_>>(),
            vec!["10.101.0.2".parse::<Ipv4Addr>().unwrap()]
        );
        assert!(control_plane_only_machines(&cluster).is_empty());
        let rules = guard_rules(&apart);
        assert!(rules.contains(
            "-A KCTL-GUARD -i kctl0 -d 10.101.0.2/32 -m conntrack --ctstate NEW -p tcp -j REJECT --reject-with tcp-reset\n-A KCTL-GUARD -i kctl0 -d 10.101.0.2/32 -m conntrack --ctstate NEW -j REJECT\n"
        ), "{rules}");
        // Jumped to first, from both hooks.
        assert_eq!(
            guard_jump("INPUT", "--insert"),
            argv![
                "iptables",
                "--wait",
                "--insert",
                "INPUT",
                "1",
                "--jump",
                "KCTL-GUARD"
            ]
        );
    }

    #[test]
    fn many_control_plane_ports_are_split_for_multiport() {
        let mut cluster = cluster();
        for (i, m) in cluster.minions.iter_mut().enumerate() {
            m.ssh_port = 3000 + i as u16;
        }
        let extra: Vec<MinionConfig> = (0..20)
            .map(|i| MinionConfig {
                id: format!("m{i}"),
                ssh_port: 4100 + i,
                ..cluster.minions[0].clone()
            })
            .collect();
        cluster.minions.extend(extra);
        let rules = guard_rules(&cluster);
        let multiport: Vec<&str> = rules.lines().filter(|l| l.contains("multiport")).collect();
        // Two rules for the pod bridge and two for each of the 3 pod ranges.
        assert_eq!(multiport.len(), 8, "{rules}");
        assert!(multiport.iter().all(|l| l
            .split("--dports ")
            .nth(1)
            .unwrap()
            .split(' ')
            .next()
            .unwrap()
            .split(',')
            .count()
            <= 15));
    }

    #[test]
    fn forward_rules_cover_every_pod_range() {
        let rules = forward_rules(&minions());
        assert!(rules.starts_with("*filter\n:KCTL-FORWARD - [0:0]\n"));
        // Per pod range: from it, replies/DNAT to it, and from each of the
        // 3 pod ranges and 3 minions to it.
        assert_eq!(rules.matches("-j ACCEPT").count(), 3 * (2 + 6));
        assert!(rules.contains("-A KCTL-FORWARD -s 10.101.0.12/32 -d 10.101.1.0/24 -j ACCEPT\n"));
        assert!(rules.contains(
            "-A KCTL-FORWARD -d 10.101.3.0/24 -m conntrack --ctstate RELATED,ESTABLISHED,DNAT -j ACCEPT\n"
        ));
        assert!(
            !rules
                .lines()
                .any(|l| l.starts_with("-A KCTL-FORWARD -d ") && !l.contains("conntrack")),
            "no rule lets any source reach pods"
        );
        assert!(rules.ends_with("COMMIT\n"));
    }

    #[test]
    fn only_traffic_leaving_the_cluster_is_masqueraded() {
        let all = minions();
        let rules = masquerade_rules(&all, "10.0.0.0/16".parse().unwrap());
        let lines: Vec<&str> = rules.lines().collect();
        assert_eq!(lines[0], "*nat");
        assert_eq!(lines[1], ":KCTL-MASQ - [0:0]");
        assert!(lines.contains(&"-A KCTL-MASQ -d 10.101.2.0/24 -j RETURN"));
        assert!(lines.contains(&"-A KCTL-MASQ -d 10.101.0.13/32 -j RETURN"));
        assert!(lines.contains(&"-A KCTL-MASQ -d 10.0.0.0/16 -j RETURN"));
        assert_eq!(lines[lines.len() - 2], "-A KCTL-MASQ -j MASQUERADE", "last");
        assert_eq!(lines.iter().filter(|l| l.ends_with("RETURN")).count(), 7);
        let jump = masquerade_jump(&all[0], "--check");
        assert_eq!(
            jump[4..].join(" "),
            "--check POSTROUTING --source 10.101.1.0/24 ! --out-interface kctl0 --jump KCTL-MASQ"
        );
    }

    #[test]
    fn pod_network_is_the_minions_range_without_masquerade() {
        let m = &minions()[1];
        let plain = pod_network_argv("c1", m, None);
        assert_eq!(plain.last().unwrap(), "kctl");
        let pos = plain.iter().position(|a| a == "--subnet").unwrap();
        assert_eq!(plain[pos + 1], "10.101.2.0/24");
        let pos = plain.iter().position(|a| a == "--gateway").unwrap();
        assert_eq!(plain[pos + 1], "10.101.2.1");
        assert!(plain.contains(&"com.docker.network.bridge.enable_ip_masquerade=false".into()));
        assert!(plain.contains(&"io.kctl.cluster=c1".into()));
        assert!(!plain.iter().any(|a| a.contains("mtu")));
        let gce = pod_network_argv("c1", m, Some(1460));
        assert!(gce.contains(&"com.docker.network.driver.mtu=1460".into()));
    }

    #[test]
    fn network_inspect_is_read() {
        let json = r#"{"Name":"kctl","IPAM":{"Driver":"default","Config":[{"Subnet":"10.101.2.0/24","Gateway":"10.101.2.1"}]},"Labels":{"io.kctl.cluster":"c1"}}"#;
        assert_eq!(
            parse_network_inspect(json),
            Some(("c1".into(), "10.101.2.0/24".into()))
        );
        let foreign =
            r#"{"Name":"kctl","IPAM":{"Config":[{"Subnet":"172.20.0.0/16"}]},"Labels":{}}"#;
        assert_eq!(
            parse_network_inspect(foreign),
            Some((String::new(), "172.20.0.0/16".into()))
        );
        assert_eq!(parse_network_inspect("nonsense"), None);
    }

    #[tokio::test]
    async fn bootstrap_creates_only_what_is_missing() {
        let cluster = cluster();
        let exec = RecordingExec {
            answers: [
                ("docker image".to_string(), missing()),
                ("docker network inspect".to_string(), missing()),
                ("iptables --wait --check".to_string(), missing()),
            ]
            .into(),
            ..Default::default()
        };
        assert!(bootstrap_minion(&exec, &cluster, &cluster.minions[0])
            .await
            .unwrap());
        let calls = exec.calls();
        assert!(calls
            .iter()
            .any(|c| c.starts_with(&argv!["docker", "import"])));
        assert!(calls
            .iter()
            .any(|c| c.starts_with(&argv!["docker", "network", "create"])));
        assert!(calls.iter().any(|c| c.contains(&"--insert".to_string())));
        // Both routes in one command, fed the batch.
        assert_eq!(
            calls
                .iter()
                .filter(|c| c.starts_with(&argv!["ip", "-batch", "-"]))
                .count(),
            1
        );
        assert_eq!(
            exec.input_of(&argv!["ip", "-batch", "-"]).as_deref(),
            Some(route_batch(&minion_routes(&cluster, &cluster.minions[0]).unwrap()).as_str())
        );
        assert!(exec
            .input_of(&argv!["ip", "-batch", "-"])
            .unwrap()
            .contains("route replace 10.101.2.0/24 via "));

        let inspect = Output {
            code: Some(0),
            stdout: br#"{"IPAM":{"Config":[{"Subnet":"10.101.1.0/24"}]},"Labels":{"io.kctl.cluster":"c1"}}"#.to_vec(),
            stderr: vec![],
        };
        let present = RecordingExec {
            answers: [
                ("docker network inspect".to_string(), inspect),
                (
                    "cat /proc/sys/net/ipv4/ip_forward".to_string(),
                    Output {
                        code: Some(0),
                        stdout: b"1\n".to_vec(),
                        stderr: vec![],
                    },
                ),
            ]
            .into(),
            ..Default::default()
        };
        assert!(!bootstrap_minion(&present, &cluster, &cluster.minions[0])
            .await
            .unwrap());
        let calls = present.calls();
        assert!(!calls
            .iter()
            .any(|c| c.starts_with(&argv!["docker", "import"])));
        assert!(!calls
            .iter()
            .any(|c| c.starts_with(&argv!["docker", "network", "create"])));
        assert!(!calls.iter().any(|c| c.contains(&"--insert".to_string())));
    }

    #[tokio::test]
    async fn cloud_routed_clusters_add_no_host_routes() {
        let mut cluster = cluster();
        cluster.pod_network.host_routes = false;
        let exec = RecordingExec::default();
        let _ = bootstrap_minion(&exec, &cluster, &cluster.minions[0]).await;
        assert!(!exec
            .calls()
            .iter()
            .any(|c| c.starts_with(&argv!["ip", "-batch"])));
    }

    #[tokio::test]
    async fn a_foreign_kctl_network_stops_bootstrap() {
        let cluster = cluster();
        let inspect = Output {
            code: Some(0),
            stdout: br#"{"IPAM":{"Config":[{"Subnet":"10.9.1.0/24"}]},"Labels":{"io.kctl.cluster":"other"}}"#.to_vec(),
            stderr: vec![],
        };
        let exec = RecordingExec {
            answers: [("docker network inspect".to_string(), inspect)].into(),
            ..Default::default()
        };
        let err = bootstrap_minion(&exec, &cluster, &cluster.minions[0])
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("cluster other, range 10.9.1.0/24"), "{err}");
        assert!(!exec
            .calls()
            .iter()
            .any(|c| c.starts_with(&argv!["docker", "network", "create"])));
    }

    #[tokio::test]
    async fn a_login_other_than_root_joins_the_docker_group_once() {
        let mut cluster = cluster();
        cluster.minions[0].ssh_user = "kctl".into();
        let usermod = argv!["usermod", "--append", "--groups", "docker", "--", "kctl"];
        let outside = RecordingExec {
            answers: [(
                "id -nG".to_string(),
                Output {
                    code: Some(0),
                    stdout: b"kctl adm\n".to_vec(),
                    stderr: vec![],
                },
            )]
            .into(),
            ..Default::default()
        };
        let _ = bootstrap_minion(&outside, &cluster, &cluster.minions[0]).await;
        assert!(outside.calls().contains(&usermod));
        let inside = RecordingExec {
            answers: [(
                "id -nG".to_string(),
                Output {
                    code: Some(0),
                    stdout: b"kctl docker\n".to_vec(),
                    stderr: vec![],
                },
            )]
            .into(),
            ..Default::default()
        };
        let _ = bootstrap_minion(&inside, &cluster, &cluster.minions[0]).await;
        assert!(!inside.calls().contains(&usermod));
        // root needs no group.
        let root = RecordingExec::default();
        let _ = bootstrap_minion(&root, &cluster, &cluster.minions[1]).await;
        assert!(!root
            .calls()
            .iter()
            .any(|c| c[0] == "id" || c[0] == "usermod"));
    }
}
