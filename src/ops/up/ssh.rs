//! `kctl up --provider ssh`: a cluster from machines the user already has.
//! Nothing is made; the hosts are checked (all problems of all hosts at
//! once, before anything changes), then bootstrapped like any minion.

use super::UpOptions;
use crate::bootstrap::preflight::{self, HostRole};
use crate::cluster::{ClusterConfig, ClusterDir, EtcdHost, MinionConfig, PodNetwork, ProviderKind};
use crate::exec::Exec;
use crate::ops::install::install;
use crate::ops::{report, Cluster};
use crate::provider::host;
use crate::ssh::{SshAuth, SshExec};
use crate::ui::Ui;
use futures::future::join_all;
use ipnet::Ipv4Net;
use miette::miette;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

pub const DEFAULT_POD_NET: &str = "10.244.0.0/16";
pub const DEFAULT_PORTAL_NET: &str = "10.0.0.0/16";

#[derive(Debug, Clone, Default)]
pub struct SshOptions {
    pub hosts: Vec<String>,
    pub identity: Option<PathBuf>,
    /// The hosts that run etcd's members: none (the first `--masters`
    /// hosts), or 1, 3 or 5 of the hosts.
    pub etcd_hosts: Vec<String>,
    pub accept_new_host_keys: bool,
    pub install: bool,
    pub pod_net: Option<Ipv4Net>,
}

/// `[user@]HOST[:PORT]` as given on the command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostSpec {
    pub user: String,
    pub host: String,
    pub port: u16,
}

impl HostSpec {
    pub fn parse(text: &str) -> Result<HostSpec, String> {
        let (user, rest) = match text.split_once('@') {
            Some((user, rest)) => (user, rest),
            None => ("root", text),
        };
        let (host, port) = match rest.rsplit_once(':') {
            Some((host, port)) => (
                host,
                port.parse::<u16>().ok().filter(|p| *p > 0).ok_or_else(|| {
                    format!("{text:?}: port {port:?} is not a number from 1 to 65535")
                })?,
            ),
            None => (rest, 22),
        };
        let name_ok = |s: &str, extra: &[char]| {
            !s.is_empty()
                && !s.starts_with('-')
                && s.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-._".contains(c) || extra.contains(&c))
        };
        if !name_ok(user, &[]) {
            return Err(format!("{text:?}: {user:?} is not a user name"));
        }
        if !name_ok(host, &[]) {
            return Err(format!(
                "{text:?}: {host:?} is not a host name or IPv4 address"
            ));
        }
        Ok(HostSpec {
            user: user.to_string(),
            host: host.to_string(),
            port,
        })
    }

    /// How known_hosts names this host.
    pub fn known_hosts_name(&self) -> String {
        if self.port == 22 {
            self.host.clone()
        } else {
            format!("[{}]:{}", self.host, self.port)
        }
    }

    pub fn display(&self) -> String {
        if self.port == 22 {
            format!("{}@{}", self.user, self.host)
        } else {
            format!("{}@{}:{}", self.user, self.host, self.port)
        }
    }
}

/// The i-th /24 of the pod range (from 1), as each minion's pod range.
pub fn pod_cidr(pod_net: Ipv4Net, index: usize) -> Option<Ipv4Net> {
    if pod_net.prefix_len() > 23 {
        return None;
    }
    pod_net.subnets(24).ok()?.nth(index)
}

/// Rewrites known_hosts lines (possibly hashed, possibly of another name
/// of the host) to name the host as kctl connects to it.
pub fn known_hosts_lines(name: &str, found: &str) -> Vec<String> {
    found
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .filter_map(|l| {
            let mut words = l.split_whitespace();
            let first = words.next()?;
            // A marker (@cert-authority, @revoked) changes the line's meaning.
            if first.starts_with('@') {
                return None;
            }
            let kind = words.next()?;
            let key = words.next()?;
            Some(format!("{name} {kind} {key}"))
        })
        .collect()
}

fn user_known_hosts() -> PathBuf {
    let home = std::env::var_os("HOME").unwrap_or_else(|| "/root".into());
    PathBuf::from(home).join(".ssh").join("known_hosts")
}

/// The host's keys: from the cluster's own known_hosts (an earlier `up`),
/// else the user's, else — only when told — as the host presents them.
async fn host_keys(
    dir: &ClusterDir,
    host: &HostSpec,
    accept_new: bool,
) -> miette::Result<Vec<String>> {
    let name = host.known_hosts_name();
    for file in [dir.known_hosts(), user_known_hosts()] {
        if !file.exists() {
            continue;
        }
        let file = file.display().to_string();
        if let Ok(found) = host::run(&["ssh-keygen", "-F", &name, "-f", &file]).await {
            let lines = known_hosts_lines(&name, &found);
            if !lines.is_empty() {
                return Ok(lines);
            }
        }
    }
    if !accept_new {
        return Err(miette!(
            help = format!(
                "check the key and add it to {} (e.g. `ssh {}` once), or pass --accept-new-host-keys",
                user_known_hosts().display(),
                host.display()
            ),
            "the host key of {} is not known",
            name
        ));
    }
    let port = host.port.to_string();
    let scanned = host::run(&["ssh-keyscan", "-T", "5", "-p", &port, &host.host])
        .await
        .map_err(report)?;
    let lines = known_hosts_lines(&name, &scanned);
    if lines.is_empty() {
        return Err(miette!("{} presented no host key", host.display()));
    }
    Ok(lines)
}

async fn resolve(host: &HostSpec) -> miette::Result<Ipv4Addr> {
    if let Ok(ip) = host.host.parse() {
        return Ok(ip);
    }
    let addrs = tokio::net::lookup_host((host.host.as_str(), host.port))
        .await
        .map_err(|e| miette!("{}: cannot resolve: {e}", host.host))?;
    addrs
        .filter_map(|a| match a.ip() {
            std::net::IpAddr::V4(ip) => Some(ip),
            std::net::IpAddr::V6(_) => None,
        })
        .next()
        .ok_or_else(|| miette!("{} has no IPv4 address", host.host))
}

/// Makes the cluster record for these hosts (pure, apart from the names).
/// `etcd_indices`: the hosts that run etcd's members.
pub fn cluster_config(
    name: &str,
    hosts: &[(HostSpec, Ipv4Addr)],
    etcd_indices: &[usize],
    pod_net: Ipv4Net,
    portal_net: Ipv4Net,
    identity: Option<PathBuf>,
) -> miette::Result<ClusterConfig> {
    let state = format!("/var/lib/kctl/{name}");
    let minions = hosts
        .iter()
        .enumerate()
        .map(|(i, (spec, ip))| {
            let id = format!("minion-{}", i + 1);
            let pods = pod_cidr(pod_net, i + 1).ok_or_else(|| {
                miette!(
                    "--pod-net {pod_net} has no room for {} minions of a /24 each",
                    hosts.len()
                )
            })?;
            Ok(MinionConfig {
                helper_dir: format!("{state}/{id}"),
                docker_socket: crate::docker_api::DEFAULT_SOCKET.into(),
                id,
                host_ip: *ip,
                ssh_port: spec.port,
                ssh_user: spec.user.clone(),
                pod_cidr: pods.to_string(),
                ssh_host: Some(spec.host.clone()),
            })
        })
        .collect::<miette::Result<Vec<_>>>()?;
    let etcd_hosts: Vec<EtcdHost> = etcd_indices
        .iter()
        .map(|&i| {
            let minion = &minions[i];
            EtcdHost {
                name: minion.id.clone(),
                ssh_host: hosts[i].0.host.clone(),
                ssh_port: minion.ssh_port,
                ssh_user: minion.ssh_user.clone(),
                ip: minion.host_ip,
                dir: format!("{state}/etcd"),
                joined: false,
            }
        })
        .collect();
    Ok(ClusterConfig {
        name: name.to_string(),
        provider: ProviderKind::Ssh,
        etcd_endpoints: etcd_hosts.iter().map(EtcdHost::endpoint).collect(),
        minions,
        portal_net,
        local: None,
        gce: None,
        etcd_hosts,
        pod_network: PodNetwork {
            range: Some(pod_net),
            ..PodNetwork::default()
        },
        ssh_identity: identity,
        offline_images: false,
        // Granted by ops::up from the flag and the record before.
        allow_host_dir: false,
        allow_privileged: false,
    })
}

pub async fn up(ui: &Ui, name: &str, options: &UpOptions) -> miette::Result<()> {
    let opts = &options.ssh;
    let dir = ClusterDir::new(name)?;
    let existing = super::existing_record(&dir, ProviderKind::Ssh)?;
    if options.minions.is_some() {
        return Err(miette!(
            help = "the hosts given with --host are the minions",
            "--minions is for the local and gce providers"
        ));
    }
    let specs: Vec<HostSpec> = if opts.hosts.is_empty() {
        match &existing {
            // `kctl up` again on an existing cluster: the same hosts.
            Some(c) => c
                .minions
                .iter()
                .map(|m| HostSpec {
                    user: m.ssh_user.clone(),
                    host: m.ssh_host.clone().unwrap_or_else(|| m.host_ip.to_string()),
                    port: m.ssh_port,
                })
                .collect(),
            None => {
                return Err(miette!(
                help =
                    "e.g. kctl up --provider ssh --host root@192.168.1.10 --host admin@192.168.1.11:2222",
                "--provider ssh needs at least one --host"
            ))
            }
        }
    } else {
        opts.hosts
            .iter()
            .map(|h| {
                HostSpec::parse(h)
                    .map_err(|e| miette!(help = "use [user@]HOST[:PORT]", "--host {e}"))
            })
            .collect::<miette::Result<_>>()?
    };
    let mut seen = std::collections::BTreeSet::new();
    for s in &specs {
        if !seen.insert((s.host.clone(), s.port)) {
            return Err(miette!("--host {} is given twice", s.host));
        }
    }
    let etcd_indices = etcd_indices(&specs, &opts.etcd_hosts, options.masters, existing.as_ref())?;
    let pod_net = match (opts.pod_net, &existing) {
        (Some(p), _) => p,
        (None, Some(c)) => c
            .pod_network
            .range
            .unwrap_or_else(|| DEFAULT_POD_NET.parse().unwrap_or_default()),
        (None, None) => DEFAULT_POD_NET.parse().unwrap_or_default(),
    };
    let portal_net = match (options.portal_net, &existing) {
        (Some(p), _) => p,
        (None, Some(c)) => c.portal_net,
        (None, None) => DEFAULT_PORTAL_NET.parse().unwrap_or_default(),
    };
    if pod_net.contains(&portal_net.network()) || portal_net.contains(&pod_net.network()) {
        return Err(miette!(
            "--pod-net {pod_net} and --portal-net {portal_net} overlap"
        ));
    }
    let identity = match &opts.identity {
        Some(path) => Some(
            std::fs::canonicalize(path)
                .map_err(|e| miette!("--identity {}: {e}", path.display()))?,
        ),
        None => existing.as_ref().and_then(|c| c.ssh_identity.clone()),
    };

    let ips = join_all(specs.iter().map(resolve)).await;
    let hosts: Vec<(HostSpec, Ipv4Addr)> = specs
        .iter()
        .cloned()
        .zip(ips)
        .map(|(s, ip)| ip.map(|ip| (s, ip)))
        .collect::<miette::Result<_>>()?;
    let mut addresses = std::collections::BTreeSet::new();
    for (spec, ip) in &hosts {
        if !addresses.insert(*ip) {
            return Err(miette!(
                "--host {} is {ip}, which another --host already names",
                spec.host
            ));
        }
    }
    if let Some(i) = etcd_indices.iter().find(|i| **i >= hosts.len()) {
        return Err(miette!(
            help = "name the etcd hosts with --etcd-host, or give the cluster's hosts as before",
            "cluster {name} runs etcd on its host {}, which is not among these {} hosts",
            i + 1,
            hosts.len()
        ));
    }
    let mut config = cluster_config(name, &hosts, &etcd_indices, pod_net, portal_net, identity)?;
    options.allowances.grant(&mut config);
    if let Some(c) = &existing {
        let same = c.minions.len() == config.minions.len()
            && c.minions
                .iter()
                .zip(&config.minions)
                .all(|(a, b)| a.host_ip == b.host_ip && a.pod_cidr == b.pod_cidr)
            && c.portal_net == config.portal_net
            && member_names(c) == member_names(&config);
        if !same {
            return Err(miette!(
                help = "`kctl down` and `kctl up` with the new hosts to rebuild it",
                "cluster {name} has other hosts or ranges; changing them on a running cluster is not supported yet"
            ));
        }
    }

    // Host keys first: nothing is sent to a host whose key is not known.
    let task = ui.task(format!("host keys of {} hosts", hosts.len()));
    let new_record = existing.is_none();
    let cleanup = |e: miette::Report| {
        if new_record {
            let _ = std::fs::remove_dir_all(&dir.dir);
        }
        e
    };
    let mut known = vec![];
    for (spec, _) in &hosts {
        known.extend(
            host_keys(&dir, spec, opts.accept_new_host_keys)
                .await
                .map_err(cleanup)?,
        );
    }
    std::fs::create_dir_all(&dir.dir).map_err(report)?;
    set_private(&dir.dir)?;
    crate::files::write_private(&dir.known_hosts(), (known.join("\n") + "\n").as_bytes())
        .map_err(report)?;
    task.done(format!(
        "{} host keys pinned in {}",
        known.len(),
        dir.known_hosts().display()
    ));

    let task = ui.task(format!("checking {} hosts", hosts.len()));
    let auth = dir.auth(&config);
    let (problems, installs) = check_hosts(
        &config,
        &auth,
        opts.install,
        options.dry_run,
        &dir.known_hosts(),
    )
    .await;
    if !problems.is_empty() {
        task.fail("hosts are not ready");
        return Err(cleanup(miette!(
            help = "nothing was changed on any host",
            "hosts are not ready for kctl:\n{}",
            problems.join("\n")
        )));
    }
    if !installs.is_empty() {
        ui.note(format!(
            "{} packages: {}",
            if options.dry_run {
                "would install"
            } else {
                "installed"
            },
            installs.join("; ")
        ));
    }
    task.done(format!("{} hosts ready", hosts.len()));
    if options.dry_run {
        if new_record {
            let _ = std::fs::remove_dir_all(&dir.dir);
        }
        ui.out(format!("Checks passed; --dry-run changed nothing. `kctl up` without it would make cluster {name} on: {}", specs.iter().map(HostSpec::display).collect::<Vec<_>>().join(", ")));
        return Ok(());
    }

    // A member that replaced a lost one stays marked as having joined.
    if let Some(c) = &existing {
        for host in &mut config.etcd_hosts {
            host.joined = c.etcd_hosts.iter().any(|h| h.name == host.name && h.joined);
        }
    }
    // Record first: whatever fails later, `down` knows what to remove.
    dir.save(&config)?;
    let count = config.minions.len();
    let members = config.etcd_hosts.len();
    let etcd = match config.etcd_hosts.as_slice() {
        [one] => format!("etcd at {}", one.endpoint()),
        all => format!(
            "etcd of {members} members on {}",
            all.iter()
                .map(|h| h.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    let mut cluster = Cluster::new(dir, config);
    let replaced = crate::ops::install::replace_lost_members(ui, &mut cluster).await?;
    let changed = install(ui, &cluster, None).await? || new_record || replaced;
    // install reached etcd: it has served.
    cluster.dir.mark_etcd_served()?;
    if !changed {
        ui.out(format!(
            "Cluster {name} is up ({count} hosts); nothing changed."
        ));
    } else {
        ui.out(format!(
            "Cluster {name} is up: {count} hosts, {etcd} (reached over SSH).\nNext: kctl apply -f manifests/, kctl get pods"
        ));
        if members == 1 && new_record {
            ui.note(super::SINGLE_MASTER_NOTE);
        }
    }
    Ok(())
}

fn member_names(config: &ClusterConfig) -> Vec<&str> {
    config.etcd_hosts.iter().map(|h| h.name.as_str()).collect()
}

/// Which hosts run etcd's members: those named with `--etcd-host`, else
/// those of the existing cluster, else the first `--masters` (1, 3 or 5).
fn etcd_indices(
    specs: &[HostSpec],
    named: &[String],
    masters: Option<usize>,
    existing: Option<&ClusterConfig>,
) -> miette::Result<Vec<usize>> {
    let indices: Vec<usize> = if !named.is_empty() {
        let mut indices = vec![];
        for wanted in named {
            let i = specs
                .iter()
                .position(|s| &s.host == wanted || &s.display() == wanted)
                .ok_or_else(|| {
                    miette!(
                        help = "name one of the --host values",
                        "--etcd-host {wanted} is not one of the hosts"
                    )
                })?;
            if indices.contains(&i) {
                return Err(miette!("--etcd-host {wanted} is given twice"));
            }
            indices.push(i);
        }
        if let Some(m) = masters.filter(|m| *m != indices.len()) {
            return Err(miette!(
                help = "give --etcd-host once per member, or leave out one of the two",
                "--masters {m} but {} --etcd-host",
                indices.len()
            ));
        }
        indices
    } else if let Some(c) = existing.filter(|c| !c.etcd_hosts.is_empty()) {
        let indices: Vec<usize> = c
            .etcd_hosts
            .iter()
            .filter_map(|h| c.minions.iter().position(|m| m.id == h.name))
            .collect();
        if let Some(m) = masters.filter(|m| *m != indices.len()) {
            return Err(miette!(
                help = "`kctl down` and `kctl up --masters N` to make it again",
                "cluster has {} etcd member(s), not {m}; changing that on a running cluster is not built yet",
                indices.len()
            ));
        }
        indices
    } else {
        let m = masters.unwrap_or(1);
        if m > specs.len() {
            return Err(miette!(
                help = "each member runs on a host of its own: give more --host",
                "--masters {m} needs {m} hosts, and {} are given",
                specs.len()
            ));
        }
        (0..m).collect()
    };
    if indices.len() % 2 == 0 || indices.len() > 5 {
        return Err(miette!(
            help = "an even count survives no more losses than one fewer: 1, 3 or 5",
            "etcd must have 1, 3 or 5 members, not {}",
            indices.len()
        ));
    }
    Ok(indices)
}

fn set_private(dir: &Path) -> miette::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(report)
}

/// What one host's check found.
struct HostCheck {
    who: String,
    problems: Vec<String>,
    /// Packages `--install` may add (apt host, commands run as root).
    installable: Vec<&'static str>,
}

async fn check_host(
    config: &ClusterConfig,
    minion: &crate::cluster::MinionConfig,
    auth: &SshAuth,
    install: bool,
    known_hosts: &Path,
) -> HostCheck {
    let etcd = config
        .etcd_hosts
        .iter()
        .find(|e| e.name == minion.id)
        .map(|e| crate::bootstrap::etcd::etcd_service(&config.name, e, &config.etcd_hosts));
    let pod_routes: Vec<(String, Ipv4Addr)> = config
        .minions
        .iter()
        .map(|m| (m.pod_cidr.clone(), m.host_ip))
        .collect();
    let role = HostRole {
        cluster: &config.name,
        install,
        host_ip: minion.host_ip,
        runs_etcd: etcd.is_some(),
        pod_cidr: &minion.pod_cidr,
        pod_routes: &pod_routes,
        pod_net: config.pod_network.range.unwrap_or_default(),
        portal_net: config.portal_net,
    };
    let target = minion.ssh_target();
    let who = format!("{}@{}", target.user, target.host);
    let failed = |problem: String| HostCheck {
        who: who.clone(),
        problems: vec![problem],
        installable: vec![],
    };
    let exec = match SshExec::connect(&target, auth).await {
        Ok(exec) => exec,
        Err(e) => {
            let text = e.to_string();
            let hint = if text.contains("Host key verification failed")
                || text.contains("REMOTE HOST IDENTIFICATION HAS CHANGED")
            {
                format!(
                    " — its host key is not the one pinned in {}; if the host was reinstalled, check its new key, remove the old line there and run again",
                    known_hosts.display()
                )
            } else {
                String::new()
            };
            return failed(format!("cannot log in: {text}{hint}"));
        }
    };
    let facts = preflight::gather(&exec, etcd.as_ref()).await;
    exec.close().await;
    let facts = match facts {
        Ok(f) => f,
        Err(e) => return failed(e.to_string()),
    };
    let installable = preflight::installable(&facts, &role);
    let os = if facts.os.is_empty() { "?" } else { &facts.os };
    let problems = preflight::problems(&facts, &role, std::env::consts::ARCH)
        .into_iter()
        .map(|p| format!("({os}): {p}"))
        .collect();
    HostCheck {
        who,
        problems,
        installable,
    }
}

/// Checks every host (all of them, so every problem is reported at once),
/// and only then — when nothing else is wrong and this is no dry run —
/// installs missing packages where `--install` allows and checks those
/// hosts again. Returns problems as "HOST (OS): problem" lines, and what
/// was (or, in a dry run, would be) installed.
async fn check_hosts(
    config: &ClusterConfig,
    auth: &SshAuth,
    install: bool,
    dry_run: bool,
    known_hosts: &Path,
) -> (Vec<String>, Vec<String>) {
    let checks = join_all(
        config
            .minions
            .iter()
            .map(|m| check_host(config, m, auth, install, known_hosts)),
    )
    .await;
    let problems: Vec<String> = checks
        .iter()
        .flat_map(|c| c.problems.iter().map(move |p| format!("{} {p}", c.who)))
        .collect();
    let to_install: Vec<(usize, &HostCheck)> = checks
        .iter()
        .enumerate()
        .filter(|(_, c)| !c.installable.is_empty())
        .collect();
    let plan: Vec<String> = to_install
        .iter()
        .map(|(_, c)| format!("{}: {}", c.who, c.installable.join(" ")))
        .collect();
    if !problems.is_empty() || dry_run || to_install.is_empty() {
        return (problems, plan);
    }
    let installs = to_install.iter().map(|(i, c)| {
        let minion = &config.minions[*i];
        async move {
            let exec = SshExec::connect(&minion.ssh_target(), auth)
                .await
                .map_err(|e| format!("{} {e}", c.who))?;
            for argv in preflight::install_argvs(&c.installable) {
                if let Err(e) = exec.run_ok(&argv).await {
                    exec.close().await;
                    return Err(format!(
                        "{}: installing {}: {e}",
                        c.who,
                        c.installable.join(" ")
                    ));
                }
            }
            exec.close().await;
            let again = check_host(config, minion, auth, false, known_hosts).await;
            Ok(again
                .problems
                .into_iter()
                .map(|p| format!("{} {p}", again.who))
                .collect::<Vec<_>>())
        }
    });
    let problems = join_all(installs)
        .await
        .into_iter()
        .flat_map(|r| r.unwrap_or_else(|e| vec![e]))
        .collect();
    (problems, plan)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_specs() {
        assert_eq!(
            HostSpec::parse("10.0.0.5").unwrap(),
            HostSpec {
                user: "root".into(),
                host: "10.0.0.5".into(),
                port: 22
            }
        );
        let s = HostSpec::parse("admin@node-2.lan:2222").unwrap();
        assert_eq!(
            (s.user.as_str(), s.host.as_str(), s.port),
            ("admin", "node-2.lan", 2222)
        );
        assert_eq!(s.known_hosts_name(), "[node-2.lan]:2222");
        for bad in [
            "",
            "@host",
            "user@",
            "h:0",
            "h:x",
            "-oProxyCommand=x",
            "a b",
            "u;rm@h",
            "[::1]:22",
        ] {
            assert!(HostSpec::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn pod_ranges_are_consecutive_24s() {
        let net: Ipv4Net = "10.244.0.0/16".parse().unwrap();
        assert_eq!(pod_cidr(net, 1).unwrap().to_string(), "10.244.1.0/24");
        assert_eq!(pod_cidr(net, 3).unwrap().to_string(), "10.244.3.0/24");
        let small: Ipv4Net = "10.150.128.0/23".parse().unwrap();
        assert_eq!(pod_cidr(small, 1).unwrap().to_string(), "10.150.129.0/24");
        assert!(pod_cidr(small, 2).is_none());
        assert!(pod_cidr("10.1.1.0/24".parse().unwrap(), 1).is_none());
    }

    #[test]
    fn known_hosts_lines_are_renamed_and_markers_dropped() {
        let found = "# Host 10.0.0.5 found: line 3\n|1|abc=|def= ssh-ed25519 AAAAC3\n@revoked * ssh-rsa AAAAB3\n";
        assert_eq!(
            known_hosts_lines("10.0.0.5", found),
            ["10.0.0.5 ssh-ed25519 AAAAC3"]
        );
    }

    #[test]
    fn etcd_members_are_named_hosts_or_the_first_masters() {
        let specs: Vec<HostSpec> = ["10.0.0.1", "ops@10.0.0.2", "10.0.0.3", "10.0.0.4"]
            .iter()
            .map(|h| HostSpec::parse(h).unwrap())
            .collect();
        let named = |names: &[&str], masters| {
            let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
            etcd_indices(&specs, &names, masters, None)
        };
        assert_eq!(named(&[], None).unwrap(), [0]);
        assert_eq!(named(&[], Some(3)).unwrap(), [0, 1, 2]);
        assert_eq!(
            named(&["10.0.0.4", "ops@10.0.0.2", "10.0.0.1"], None).unwrap(),
            [3, 1, 0]
        );
        assert_eq!(named(&["10.0.0.3"], Some(1)).unwrap(), [2]);
        for (names, masters, says) in [
            (&["10.0.0.9"][..], None, "not one of the hosts"),
            (
                &["10.0.0.1", "10.0.0.1", "10.0.0.2"][..],
                None,
                "given twice",
            ),
            (&["10.0.0.1", "10.0.0.2"][..], None, "1, 3 or 5"),
            (&["10.0.0.1"][..], Some(3), "--masters 3 but 1 --etcd-host"),
            (&[][..], Some(5), "needs 5 hosts"),
            (&[][..], Some(2), "1, 3 or 5"),
        ] {
            let e = named(names, masters).unwrap_err().to_string();
            assert!(e.contains(says), "{names:?} {masters:?}: {e}");
        }
    }

    #[test]
    fn config_puts_etcd_on_the_chosen_host() {
        let hosts = vec![
            (
                HostSpec::parse("root@10.150.0.11").unwrap(),
                "10.150.0.11".parse().unwrap(),
            ),
            (
                HostSpec::parse("ops@10.150.0.12:2222").unwrap(),
                "10.150.0.12".parse().unwrap(),
            ),
        ];
        let c = cluster_config(
            "lab",
            &hosts,
            &[1],
            "10.150.128.0/17".parse().unwrap(),
            "10.150.64.0/18".parse().unwrap(),
            None,
        )
        .unwrap();
        assert_eq!(c.minions[1].pod_cidr, "10.150.130.0/24");
        assert_eq!(c.minions[1].ssh_port, 2222);
        assert_eq!(c.minions[0].helper_dir, "/var/lib/kctl/lab/minion-1");
        let etcd = &c.etcd_hosts[0];
        assert_eq!(
            (etcd.name.as_str(), etcd.ssh_user.as_str()),
            ("minion-2", "ops")
        );
        assert_eq!(c.etcd_endpoints, ["https://10.150.0.12:4001"]);
        assert_eq!(etcd.dir, "/var/lib/kctl/lab/etcd");
    }
}
