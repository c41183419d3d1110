//! Whether a pod is fenced off the control plane, asked the way an attacker
//! in a pod would: every address of every machine, IPv4 and IPv6, every
//! port that is listening there and belongs to the control plane (or every
//! listening port, on a machine that runs no pods).
//!
//! The targets come from the machines themselves (`ip addr`, `ss`), not
//! from kctl's record, so an address kctl does not know about counts too.
//! Each target the pod's own minion reaches is one the pod must not: that
//! positive control keeps the check from passing because nothing listens.

use std::collections::BTreeSet;

/// One machine of the cluster: how to run a shell line there (as root, in
/// its network namespace), and whether it runs pods.
pub struct Machine<'a> {
    pub name: String,
    pub shell: Box<dyn Fn(&str) -> String + 'a>,
    /// A machine without pods (the workstation's etcd, a master): pods
    /// have no business on any of its ports.
    pub runs_pods: bool,
}

/// An address and port a pod might try, as busybox nc takes them.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Target {
    pub machine: String,
    pub addr: String,
    pub port: u16,
}

impl Target {
    fn nc_args(&self) -> String {
        format!("{} {}", self.addr, self.port)
    }
    fn is_v6(&self) -> bool {
        self.addr.contains(':')
    }
}

/// Control-plane ports: sshd, etcd (client and peer, old and new ports).
pub const CONTROL_PLANE_PORTS: &[u16] = &[22, 2379, 2380, 4001, 7001];

/// What a pod could try on `machine`: its listening control-plane sockets
/// (every listening one if it runs no pods), a wildcard listener expanded
/// to each of the machine's addresses. Link-local IPv6 addresses name the
/// pod's own interface (`%eth0`): that is the link a pod shares with its
/// minion's bridge.
pub fn targets(machine: &Machine) -> Vec<Target> {
    let addrs = (machine.shell)("ip -o addr show");
    let mut v4 = Vec::new();
    let mut v6 = Vec::new();
    for line in addrs.lines() {
        let mut words = line.split_whitespace();
        let (_, _, family, cidr) = (words.next(), words.next(), words.next(), words.next());
        let Some(addr) = cidr.and_then(|c| c.split('/').next()) else {
            continue;
        };
        match family {
            Some("inet") if !addr.starts_with("127.") => v4.push(addr.to_string()),
            Some("inet6") if addr != "::1" => v6.push(addr.to_string()),
            _ => {}
        }
    }
    let listening = (machine.shell)("ss -ltnH");
    let mut out = BTreeSet::new();
    for line in listening.lines() {
        let Some(local) = line.split_whitespace().nth(3) else {
            continue;
        };
        let Some((host, port)) = local.rsplit_once(':') else {
            continue;
        };
        let Ok(port) = port.parse::<u16>() else {
            continue;
        };
        if machine.runs_pods && !CONTROL_PLANE_PORTS.contains(&port) {
            continue;
        }
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let host = host.split('%').next().unwrap_or(host);
        let addrs: Vec<&String> = match host {
            "0.0.0.0" | "*" => v4
                .iter()
                .chain(if host == "*" { &v6 } else { &[][..] })
                .collect(),
            "::" => v4.iter().chain(v6.iter()).collect(),
            specific => v4
                .iter()
                .chain(v6.iter())
                .filter(|a| *a == specific)
                .collect(),
        };
        for addr in addrs {
            let addr = if addr.starts_with("fe80:") {
                format!("{addr}%eth0")
            } else {
                addr.clone()
            };
            out.insert(Target {
                machine: machine.name.clone(),
                addr,
                port,
            });
        }
    }
    out.into_iter().collect()
}

/// Whether `/proc/net/if_inet6` text lists a link-local address that is
/// no longer tentative (duplicate address detection done).
pub fn has_usable_link_local(if_inet6: &str) -> bool {
    const TENTATIVE: u32 = 0x40;
    if_inet6.lines().any(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        fields.len() == 6
            && fields[0].starts_with("fe80")
            && u32::from_str_radix(fields[4], 16).is_ok_and(|flags| flags & TENTATIVE == 0)
    })
}

/// How a connection is tried: in a pod, busybox's nc (all the demo image
/// has); on a machine, bash's /dev/tcp (no nc on a minimal Debian).
#[derive(Clone, Copy)]
enum Prober {
    BusyboxNc,
    Bash,
}

/// Shell lines that print `open ADDR PORT` for each target that connects.
fn probe_script(targets: &[&Target], prober: Prober) -> String {
    let mut script = String::new();
    for t in targets {
        let connect = match prober {
            Prober::BusyboxNc => {
                format!("nc -w 2 {} {} </dev/null >/dev/null 2>&1", t.addr, t.port)
            }
            Prober::Bash => format!(
                "timeout 3 bash -c 'exec 3<>/dev/tcp/{}/{}' 2>/dev/null",
                t.addr, t.port
            ),
        };
        script.push_str(&format!("{connect} && echo open {}\n", t.nc_args()));
    }
    script
}

fn opened(output: &str) -> BTreeSet<String> {
    output
        .lines()
        .filter_map(|l| l.strip_prefix("open "))
        .map(str::to_string)
        .collect()
}

/// The pod's view: which of `machines`' targets its own minion reaches
/// (the positive control) and that the pod reaches none of them. Returns
/// the targets checked as `MACHINE ADDR:PORT`, for the caller to assert
/// on what they cover.
pub fn assert_pod_fenced(
    machines: &[Machine],
    from_minion: &dyn Fn(&str) -> String,
    in_pod: &dyn Fn(&str) -> String,
    pod: &str,
) -> Vec<String> {
    let all: Vec<Target> = machines.iter().flat_map(targets).collect();
    // A link-local address is reached through an interface: the minion
    // reaches its own pod bridge's as `%kctl0`, the pod as `%eth0`.
    let for_minion: Vec<Target> = all
        .iter()
        .map(|t| Target {
            addr: t.addr.replace("%eth0", "%kctl0"),
            ..t.clone()
        })
        .collect();
    let reached_by_minion = opened(&from_minion(&probe_script(
        &for_minion.iter().collect::<Vec<_>>(),
        Prober::Bash,
    )));
    let controls: Vec<&Target> = all
        .iter()
        .zip(&for_minion)
        .filter(|(_, m)| reached_by_minion.contains(&m.nc_args()))
        .map(|(t, _)| t)
        .collect();
    // A pod without IPv6 reaches nothing over it; say so rather than try.
    let pod_has_v6 = !in_pod("cat /proc/net/if_inet6 2>/dev/null")
        .trim()
        .is_empty();
    let tried: Vec<&Target> = controls
        .iter()
        .copied()
        .filter(|t| pod_has_v6 || !t.is_v6())
        .collect();
    let reached_by_pod = opened(&in_pod(&probe_script(&tried, Prober::BusyboxNc)));
    assert!(
        reached_by_pod.is_empty(),
        "pod {pod} reached the control plane at {reached_by_pod:?} (of {tried:?})"
    );
    controls
        .into_iter()
        .map(|t| format!("{} {}:{}", t.machine, t.addr, t.port))
        .collect()
}
