//! A cluster's record on the workstation: `$KCTL_HOME/clusters/NAME/`, with
//! `cluster.json` (what `up` made, so `down` can unmake it), the cluster's
//! SSH key pair and known_hosts, and the provider's own files.

use crate::ssh::{SshAuth, SshTarget};
use serde::{Deserialize, Serialize};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

pub const DEFAULT_CLUSTER: &str = "default";

#[derive(Debug, thiserror::Error, miette::Diagnostic)]
pub enum ClusterError {
    #[error("invalid cluster name {0:?}")]
    #[diagnostic(help("use 1 to 20 lower-case letters, digits and '-', starting with a letter"))]
    BadName(String),
    #[error("cluster {name:?} does not exist (no {path})")]
    #[diagnostic(help("`kctl up --cluster {name}` creates it"))]
    Missing { name: String, path: String },
    #[error("cluster record {path} is unreadable: {message}")]
    Corrupt { path: String, message: String },
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

pub fn validate_name(name: &str) -> Result<(), ClusterError> {
    let ok = (1..=20).contains(&name.len())
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && !name.ends_with('-')
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if ok {
        Ok(())
    } else {
        Err(ClusterError::BadName(name.to_string()))
    }
}

/// `$KCTL_HOME`, else `~/.kctl`.
pub fn kctl_home() -> PathBuf {
    if let Some(home) = std::env::var_os("KCTL_HOME").filter(|h| !h.is_empty()) {
        return PathBuf::from(home);
    }
    let home = std::env::var_os("HOME").unwrap_or_else(|| "/root".into());
    PathBuf::from(home).join(".kctl")
}

#[derive(Debug, Clone)]
pub struct ClusterDir {
    pub name: String,
    pub dir: PathBuf,
}

impl ClusterDir {
    pub fn new(name: &str) -> Result<ClusterDir, ClusterError> {
        validate_name(name)?;
        Ok(ClusterDir {
            name: name.to_string(),
            dir: kctl_home().join("clusters").join(name),
        })
    }
    pub fn config_file(&self) -> PathBuf {
        self.dir.join("cluster.json")
    }
    pub fn identity(&self) -> PathBuf {
        self.dir.join("id_ed25519")
    }
    pub fn known_hosts(&self) -> PathBuf {
        self.dir.join("known_hosts")
    }
    pub fn minion_dir(&self, minion: &str) -> PathBuf {
        self.dir.join("minions").join(minion)
    }
    pub fn etcd_dir(&self) -> PathBuf {
        self.dir.join("etcd")
    }
    /// Marks the cluster's etcd as having served: from then on, a member
    /// without data lost it (rather than never having had any).
    pub fn mark_etcd_served(&self) -> Result<(), ClusterError> {
        let dir = self.etcd_dir();
        std::fs::create_dir_all(&dir).map_err(|e| io_error(&dir, e))?;
        let marker = dir.join("served");
        std::fs::write(&marker, "").map_err(|e| io_error(&marker, e))
    }
    pub fn etcd_served(&self) -> bool {
        self.etcd_dir().join("served").exists()
    }
    /// The cluster's CA and certificates (the CA's key never leaves it).
    pub fn pki(&self) -> crate::pki::ClusterPki {
        crate::pki::ClusterPki::new(self.dir.join("pki"))
    }
    /// How SSH logs in to the cluster's machines: with the cluster's own
    /// key (local, gce), or the user's (ssh provider; None = ssh's own
    /// defaults).
    pub fn auth(&self, config: &ClusterConfig) -> SshAuth {
        SshAuth {
            identity: match config.provider {
                ProviderKind::Ssh => config.ssh_identity.clone(),
                ProviderKind::Local | ProviderKind::Gce => Some(self.identity()),
            },
            known_hosts: self.known_hosts(),
        }
    }
    pub fn exists(&self) -> bool {
        self.config_file().exists()
    }

    pub fn load(&self) -> Result<ClusterConfig, ClusterError> {
        let path = self.config_file();
        let text = std::fs::read_to_string(&path).map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                ClusterError::Missing {
                    name: self.name.clone(),
                    path: path.display().to_string(),
                }
            } else {
                io_error(&path, e)
            }
        })?;
        let config: ClusterConfig =
            serde_json::from_str(&text).map_err(|e| ClusterError::Corrupt {
                path: path.display().to_string(),
                message: e.to_string(),
            })?;
        let mut problems = config.problems();
        if config.name != self.name {
            problems.push(format!("name: {:?} is not {:?}", config.name, self.name));
        }
        if !problems.is_empty() {
            return Err(ClusterError::Corrupt {
                path: path.display().to_string(),
                message: problems.join("; "),
            });
        }
        Ok(config)
    }

    /// Writes the record whole (`files::write_private`), so a crash never
    /// leaves half a record for `down` to trip over.
    pub fn save(&self, config: &ClusterConfig) -> Result<(), ClusterError> {
        let path = self.config_file();
        let text = serde_json::to_string_pretty(config).unwrap_or_default();
        std::os::unix::fs::DirBuilderExt::mode(std::fs::DirBuilder::new().recursive(true), 0o700)
            .create(&self.dir)
            .map_err(|e| io_error(&self.dir, e))?;
        crate::files::write_private(&path, (text + "\n").as_bytes()).map_err(|e| io_error(&path, e))
    }
}

pub fn io_error(path: &Path, source: std::io::Error) -> ClusterError {
    ClusterError::Io {
        path: path.display().to_string(),
        source,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProviderKind {
    /// Network namespaces on this machine.
    Local,
    /// Machines the user already has, reached over SSH.
    Ssh,
    /// Google Compute Engine instances made with the user's `gcloud`.
    Gce,
}

impl ProviderKind {
    pub fn name(self) -> &'static str {
        match self {
            ProviderKind::Local => "local",
            ProviderKind::Ssh => "ssh",
            ProviderKind::Gce => "gce",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MinionConfig {
    pub id: String,
    /// The minion's address on the node network; SSH goes here.
    pub host_ip: Ipv4Addr,
    pub ssh_port: u16,
    pub ssh_user: String,
    pub pod_cidr: String,
    /// Where the node helper's binary, pid file and log live on the minion.
    #[serde(default = "default_helper_dir")]
    pub helper_dir: String,
    /// Where the minion's dockerd listens (kctl talks to its API there).
    #[serde(default = "default_docker_socket")]
    pub docker_socket: String,
    /// Where SSH goes when that is not `host_ip` (a cloud VM's external
    /// address; `host_ip` is then its address on the cluster's network).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ssh_host: Option<String>,
}

fn default_helper_dir() -> String {
    "/var/lib/kctl".into()
}

fn default_docker_socket() -> String {
    crate::docker_api::DEFAULT_SOCKET.into()
}

impl MinionConfig {
    pub fn ssh_target(&self) -> SshTarget {
        SshTarget {
            name: self.id.clone(),
            host: self
                .ssh_host
                .clone()
                .unwrap_or_else(|| self.host_ip.to_string()),
            port: self.ssh_port,
            user: self.ssh_user.clone(),
        }
    }
}

/// etcd's client port on a machine kctl bootstraps: the port Kubernetes
/// used in 2014, away from 2379 where a packaged etcd may already listen.
pub const ETCD_CLIENT_PORT: u16 = 4001;
/// Its peer port: on loopback where etcd is one member, on the member's
/// cluster address (admitted from the other members only) where it is
/// one of several.
pub const ETCD_PEER_PORT: u16 = 7001;
/// The peer port of the local provider's members (etcd's own default).
pub const LOCAL_ETCD_PEER_PORT: u16 = 2380;

/// A machine that runs a member of the cluster's etcd, when that is not
/// this one. Minions reach it at `ip`; the workstation through an SSH
/// tunnel, so etcd never listens where the internet could reach it
/// unguarded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EtcdHost {
    /// For messages: a minion's id, or `master`.
    pub name: String,
    pub ssh_host: String,
    pub ssh_port: u16,
    pub ssh_user: String,
    pub ip: Ipv4Addr,
    /// Data, pid file and log on that machine.
    pub dir: String,
    /// The member joined an etcd that was already running (it replaced a
    /// member whose data was lost), rather than forming it with the others.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub joined: bool,
}

impl EtcdHost {
    pub fn ssh_target(&self) -> SshTarget {
        SshTarget {
            name: self.name.clone(),
            host: self.ssh_host.clone(),
            port: self.ssh_port,
            user: self.ssh_user.clone(),
        }
    }
    /// What minions' helpers connect to.
    pub fn endpoint(&self) -> String {
        format!("https://{}:{ETCD_CLIENT_PORT}", self.ip)
    }
    /// What the other members reach it at (where there are others).
    pub fn peer_url(&self) -> String {
        format!("https://{}:{ETCD_PEER_PORT}", self.ip)
    }
}

/// Reads the etcd hosts of a record: a list, or the single `etcdHost`
/// object that records written before `--masters` hold.
fn one_or_many_hosts<'de, D>(deserializer: D) -> Result<Vec<EtcdHost>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        Many(Vec<EtcdHost>),
        One(EtcdHost),
    }
    Ok(match Option::<OneOrMany>::deserialize(deserializer)? {
        None => vec![],
        Some(OneOrMany::Many(hosts)) => hosts,
        Some(OneOrMany::One(host)) => vec![host],
    })
}

/// How pods reach each other across minions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PodNetwork {
    /// Each minion routes the other minions' pod ranges itself; false
    /// where the cloud's routes do it (GCE).
    pub host_routes: bool,
    /// The MTU of the pod bridge, when the machines' network needs a
    /// smaller one than Docker's default (GCE: 1460).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
    /// The range every minion's /24 comes from, where kctl chose them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub range: Option<ipnet::Ipv4Net>,
    /// Where a minion routes the portal range, when it has no default
    /// route to send it along (a local minion: the bridge's address).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub portal_via: Option<std::net::Ipv4Addr>,
}

impl Default for PodNetwork {
    fn default() -> Self {
        PodNetwork {
            host_routes: true,
            mtu: None,
            range: None,
            portal_via: None,
        }
    }
}

/// Where a GCE cluster lives, so `down` can find it again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GceRecord {
    pub project: String,
    pub zone: String,
}

/// What the local provider allocated on this machine.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LocalNetwork {
    /// Picks the cluster's /16 (`10.<100+slot>.0.0/16`) and its link names.
    pub slot: u8,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClusterConfig {
    pub name: String,
    pub provider: ProviderKind,
    /// Where the minions' helpers reach etcd, one endpoint per member. The
    /// workstation uses them too, unless `etcd_hosts` is set (then it
    /// tunnels over SSH).
    pub etcd_endpoints: Vec<String>,
    pub minions: Vec<MinionConfig>,
    /// Where services' portal IPs come from.
    pub portal_net: ipnet::Ipv4Net,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub local: Option<LocalNetwork>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gce: Option<GceRecord>,
    /// The machines of the cluster that run etcd's members (ssh, gce), in
    /// the order of `etcd_endpoints`; empty where etcd runs on this
    /// machine (local provider).
    #[serde(
        default,
        alias = "etcdHost",
        deserialize_with = "one_or_many_hosts",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub etcd_hosts: Vec<EtcdHost>,
    #[serde(default)]
    pub pod_network: PodNetwork,
    /// The user's key for the ssh provider's hosts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ssh_identity: Option<PathBuf>,
    /// Minions cannot reach a registry: never pull, so a missing image
    /// fails at once with a clear message.
    #[serde(default)]
    pub offline_images: bool,
    /// Pods may bind any host directory (`kctl up --allow-host-dir`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub allow_host_dir: bool,
    /// Pods may run privileged containers (`kctl up --allow-privileged`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub allow_privileged: bool,
}

/// The address in an etcd endpoint (`https://IP:PORT`), if it names one.
pub fn endpoint_addr(endpoint: &str) -> Option<std::net::SocketAddrV4> {
    let authority = endpoint.split("://").nth(1).unwrap_or(endpoint);
    authority.split('/').next()?.parse().ok()
}

impl ClusterConfig {
    /// What records read back from etcd must pass on this cluster.
    pub fn record_policy(&self) -> crate::model::RecordPolicy {
        crate::model::RecordPolicy {
            allow_host_dir: self.allow_host_dir,
            allow_privileged: self.allow_privileged,
            portal_net: Some(self.portal_net),
        }
    }

    /// What is wrong with a record read back (`cluster.json` on the
    /// workstation, the setup request a minion keeps): its names, hosts
    /// and paths reach ssh's argv, unit files and iptables rules, so each
    /// must be what kctl would have written.
    pub fn problems(&self) -> Vec<String> {
        use crate::model::names::{
            dns_subdomain_problem, host_name_problem, is_rfc1035, machine_path_problem,
            minion_id_problem, user_name_problem,
        };
        let mut problems = Vec::new();
        let mut note = |place: String, problem: Option<String>| {
            if let Some(p) = problem {
                problems.push(format!("{place}: {p}"));
            }
        };
        note(
            "name".into(),
            validate_name(&self.name).err().map(|e| e.to_string()),
        );
        for (i, m) in self.minions.iter().enumerate() {
            let place = format!("minions[{i}]");
            note(place.clone(), minion_id_problem(&m.id));
            note(place.clone(), user_name_problem(&m.ssh_user));
            note(
                place.clone(),
                m.ssh_host.as_deref().and_then(host_name_problem),
            );
            note(place.clone(), machine_path_problem(&m.helper_dir));
            note(place.clone(), machine_path_problem(&m.docker_socket));
            let network = m.pod_cidr.parse::<ipnet::Ipv4Net>();
            note(
                place.clone(),
                match network {
                    Ok(net) if net == net.trunc() => None,
                    _ => Some(format!("pod range {:?} is no IPv4 network", m.pod_cidr)),
                },
            );
            if self.minions[..i].iter().any(|other| other.id == m.id) {
                note(place, Some(format!("id {:?} is given twice", m.id)));
            }
        }
        for (i, h) in self.etcd_hosts.iter().enumerate() {
            let place = format!("etcdHosts[{i}]");
            note(
                place.clone(),
                dns_subdomain_problem(&h.name).map(|p| format!("name {:?} {p}", h.name)),
            );
            note(place.clone(), user_name_problem(&h.ssh_user));
            note(place.clone(), host_name_problem(&h.ssh_host));
            note(place, machine_path_problem(&h.dir));
        }
        for (i, endpoint) in self.etcd_endpoints.iter().enumerate() {
            let plain = endpoint
                .strip_prefix("https://")
                .or_else(|| endpoint.strip_prefix("http://"))
                .and_then(|rest| rest.parse::<std::net::SocketAddrV4>().ok());
            if plain.is_none() {
                note(
                    format!("etcdEndpoints[{i}]"),
                    Some(format!("{endpoint:?} is no http(s)://IP:PORT")),
                );
            }
        }
        if let Some(g) = &self.gce {
            for (what, value) in [("project", &g.project), ("zone", &g.zone)] {
                if !is_rfc1035(value) {
                    note(
                        "gce".into(),
                        Some(format!("{what} {value:?} is no GCE name")),
                    );
                }
            }
        }
        if let Some(mtu) = self.pod_network.mtu {
            if !(576..=9216).contains(&mtu) {
                note(
                    "podNetwork".into(),
                    Some(format!("MTU {mtu} is out of range")),
                );
            }
        }
        problems
    }

    /// etcd speaks TLS and wants client certificates (every cluster made
    /// since kctl has a CA; an older one until its next `up`).
    pub fn etcd_tls(&self) -> bool {
        self.etcd_endpoints
            .iter()
            .any(|e| e.starts_with("https://"))
    }

    pub fn minion(&self, id: &str) -> Option<&MinionConfig> {
        self.minions.iter().find(|m| m.id == id)
    }

    /// The etcd member on the machine at `ip`, if one runs there.
    pub fn etcd_host_at(&self, ip: Ipv4Addr) -> Option<&EtcdHost> {
        self.etcd_hosts.iter().find(|h| h.ip == ip)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_names() {
        for ok in ["default", "t1", "a-b-c", "x2345678901234567890"] {
            assert!(validate_name(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "1abc",
            "Abc",
            "a_b",
            "a-",
            "x23456789012345678901",
            "a/b",
            "..",
        ] {
            assert!(validate_name(bad).is_err(), "{bad}");
        }
    }

    fn sane_record() -> ClusterConfig {
        serde_json::from_str(
            r#"{"name":"c1","provider":"ssh","etcdEndpoints":["https://10.150.0.11:4001"],
            "minions":[{"id":"minion-1","hostIp":"10.150.0.11","sshPort":22,"sshUser":"debian",
              "podCidr":"10.244.1.0/24","helperDir":"/var/lib/kctl/c1/minion-1",
              "sshHost":"node1.example"}],
            "etcdHosts":[{"name":"minion-1","sshHost":"10.150.0.11","sshPort":22,"sshUser":"root",
              "ip":"10.150.0.11","dir":"/var/lib/kctl/c1/etcd"}],
            "portalNet":"10.0.0.0/16"}"#,
        )
        .unwrap()
    }

    #[test]
    fn a_record_with_what_kctl_never_writes_is_refused_whole() {
        assert_eq!(sane_record().problems(), Vec::<String>::new());
        type Craft = fn(&mut ClusterConfig);
        let crafted: [(&str, Craft); 9] = [
            ("host", |c| {
                c.minions[0].ssh_host = Some("-oProxyCommand=sh".into())
            }),
            ("user name", |c| c.minions[0].ssh_user = "-lroot".into()),
            ("id", |c| c.minions[0].id = "../../etc".into()),
            ("pod range", |c| {
                c.minions[0].pod_cidr = "10.244.1.0/24 -j ACCEPT\n-A INPUT".into()
            }),
            ("path", |c| {
                c.minions[0].helper_dir = "/var/lib/kctl\nExecStartPre=/bin/sh".into()
            }),
            ("path", |c| c.minions[0].helper_dir = "/".into()),
            ("path", |c| c.etcd_hosts[0].dir = "/var/lib/../../".into()),
            ("etcdEndpoints", |c| {
                c.etcd_endpoints[0] = "https://evil;rm:4001".into()
            }),
            ("given twice", |c| {
                let again = c.minions[0].clone();
                c.minions.push(again)
            }),
        ];
        for (says, craft) in crafted {
            let mut record = sane_record();
            craft(&mut record);
            let problems = record.problems();
            assert!(
                problems.iter().any(|p| p.contains(says)),
                "{says}: {problems:?}"
            );
        }
    }

    #[test]
    fn load_refuses_a_crafted_record_and_one_filed_under_another_name() {
        let home = tempfile::tempdir().unwrap();
        let dir = ClusterDir {
            name: "c1".into(),
            dir: home.path().join("c1"),
        };
        let mut record = sane_record();
        dir.save(&record).unwrap();
        assert_eq!(dir.load().unwrap(), record);
        record.minions[0].ssh_host = Some("-oProxyCommand=sh".into());
        dir.save(&record).unwrap();
        let error = dir.load().unwrap_err().to_string();
        assert!(
            error.contains("minions[0]") && error.contains("ProxyCommand"),
            "{error}"
        );
        let other = ClusterDir {
            name: "c2".into(),
            dir: dir.dir.clone(),
        };
        record.minions[0].ssh_host = None;
        dir.save(&record).unwrap();
        assert!(other
            .load()
            .unwrap_err()
            .to_string()
            .contains("is not \"c2\""));
    }

    #[test]
    fn records_with_one_etcd_host_read_as_a_list_of_one() {
        let host = r#"{"name":"minion-1","sshHost":"10.150.0.11","sshPort":22,"sshUser":"root","ip":"10.150.0.11","dir":"/var/lib/kctl/c1/etcd"}"#;
        let record = |etcd: &str| {
            format!(
                r#"{{"name":"c1","provider":"ssh","etcdEndpoints":["https://10.150.0.11:4001"],"minions":[],"portalNet":"10.0.0.0/16"{etcd}}}"#
            )
        };
        let old: ClusterConfig =
            serde_json::from_str(&record(&format!(r#","etcdHost":{host}"#))).unwrap();
        assert_eq!(old.etcd_hosts.len(), 1);
        assert_eq!(old.etcd_hosts[0].name, "minion-1");
        assert!(!old.etcd_hosts[0].joined);
        let local: ClusterConfig = serde_json::from_str(&record("")).unwrap();
        assert!(local.etcd_hosts.is_empty());
        // Written back, it is a list, and reads the same.
        let text = serde_json::to_string(&old).unwrap();
        assert!(text.contains(r#""etcdHosts":[{"#), "{text}");
        let again: ClusterConfig = serde_json::from_str(&text).unwrap();
        assert_eq!(again, old);
    }
}
