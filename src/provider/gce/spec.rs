//! What a GCE cluster is made of, and the names kctl gives its parts. Every
//! name embeds the cluster name: routes and firewall rules are unique per
//! project, not per network, and carry no labels, so the name is the only
//! way `down` finds them again.

use super::GceError;
use crate::model::names::is_rfc1035;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::time::Duration;

/// The VPC's MTU (gcloud's default for new networks). Docker bridges on the
/// minions must use it, or large packets between pods on different minions
/// are fragmented or dropped.
pub const GCE_MTU: u32 = 1460;
/// The subnet every node sits in.
pub const NODE_RANGE: &str = "10.240.0.0/16";
/// All pod ranges (10.244.N.0/24 lies inside it); outside the node range,
/// as GCE requires of static route destinations.
pub const POD_SUPERNET: &str = "10.244.0.0/14";
pub const SSH_USER: &str = "kctl";
pub const IMAGE_FAMILY: &str = "debian-12";
pub const IMAGE_PROJECT: &str = "debian-cloud";
/// The reference's recommendation: cheaper per useful resource than
/// f1-micro, and the free-tier VM.
pub const DEFAULT_MACHINE_TYPE: &str = "e2-micro";
/// Pod ranges are 10.244.N.0/24 with N < 256, and 10.244.0.0/14 ends at
/// 10.247.255.255; keep well inside one /16.
pub const MAX_MINIONS: usize = 254;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GceSpec {
    pub cluster: String,
    pub project: String,
    pub zone: String,
    pub minions: usize,
    /// How many master VMs, each running a member of etcd: 1, 3 or 5.
    pub masters: usize,
    pub machine_type: String,
    pub master_machine_type: String,
    pub ssh_user: String,
    /// One OpenSSH public key line (`ssh-ed25519 AAAA... comment`).
    pub ssh_public_key: String,
    /// Where the metadata files (startup scripts, ssh-keys) are written.
    pub work_dir: PathBuf,
    pub host_key_poll: Duration,
    pub host_key_timeout: Duration,
    /// How many times a create call is tried before `up` gives up.
    pub create_attempts: u32,
    /// Pause before retry `k` is `k * retry_backoff` (kube's scripts used 5 s).
    pub retry_backoff: Duration,
    /// Where SSH to the VMs may come from.
    pub ssh_sources: Vec<String>,
}

impl GceSpec {
    /// A spec with kctl's defaults: e2-micro for every machine, user `kctl`,
    /// host keys polled every 7 s (guest attributes allow about 10 reads a
    /// minute per VM) for up to 5 minutes (f1-micro and e2-micro boot
    /// slowly), 5 create attempts with pauses of 5 s, 10 s, ...
    pub fn new(
        cluster: &str,
        project: &str,
        zone: &str,
        minions: usize,
        ssh_public_key: &str,
        work_dir: PathBuf,
    ) -> GceSpec {
        GceSpec {
            cluster: cluster.to_string(),
            project: project.to_string(),
            zone: zone.to_string(),
            minions,
            masters: 1,
            machine_type: DEFAULT_MACHINE_TYPE.to_string(),
            master_machine_type: DEFAULT_MACHINE_TYPE.to_string(),
            ssh_user: SSH_USER.to_string(),
            ssh_public_key: ssh_public_key.trim().to_string(),
            work_dir,
            host_key_poll: Duration::from_secs(7),
            host_key_timeout: Duration::from_secs(300),
            create_attempts: 5,
            retry_backoff: Duration::from_secs(5),
            ssh_sources: vec!["0.0.0.0/0".to_string()],
        }
    }

    /// Checks every name and value syntactically, before any gcloud call.
    pub fn validate(&self) -> Result<(), GceError> {
        validate_cluster(&self.cluster)?;
        validate_project(&self.project)?;
        region_of(&self.zone)?;
        validate_machine_type(&self.machine_type)?;
        validate_machine_type(&self.master_machine_type)?;
        if ![1, 3, 5].contains(&self.masters) {
            return Err(invalid(
                "master count",
                &self.masters.to_string(),
                "must be 1, 3 or 5".to_string(),
            ));
        }
        if self.minions == 0 || self.minions > MAX_MINIONS {
            return Err(invalid(
                "minion count",
                &self.minions.to_string(),
                format!("must be 1 to {MAX_MINIONS}"),
            ));
        }
        if !is_rfc1035(&self.ssh_user) {
            return Err(invalid(
                "ssh user",
                &self.ssh_user,
                "must be a lower-case name".into(),
            ));
        }
        validate_public_key(&self.ssh_public_key)?;
        if self.ssh_sources.is_empty() {
            return Err(invalid(
                "ssh source ranges",
                "",
                "give at least one range, e.g. your address as a /32".into(),
            ));
        }
        for source in &self.ssh_sources {
            if source.parse::<ipnet::Ipv4Net>().is_err() {
                return Err(invalid(
                    "ssh source range",
                    source,
                    "must be an IPv4 CIDR such as 203.0.113.7/32".into(),
                ));
            }
        }
        // The longest derived names must still be valid resource names.
        let names = self.names()?;
        for name in [
            names.subnet.clone(),
            names.minion(self.minions),
            names.route(self.minions),
        ] {
            if !is_rfc1035(&name) {
                return Err(invalid(
                    "cluster name",
                    &self.cluster,
                    format!("derived resource name {name:?} is longer than 63 characters"),
                ));
            }
        }
        if self.host_key_poll.is_zero() {
            return Err(invalid(
                "host key poll interval",
                "0",
                "must be positive".into(),
            ));
        }
        Ok(())
    }

    pub fn names(&self) -> Result<Names, GceError> {
        Names::new(&self.cluster, &self.zone)
    }
}

/// The names of one cluster's resources, derived from cluster name and zone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Names {
    pub cluster: String,
    pub zone: String,
    pub region: String,
    pub network: String,
    pub subnet: String,
    pub master: String,
    pub master_tag: String,
    pub minion_tag: String,
    pub firewall_internal: String,
    pub firewall_ssh: String,
}

impl Names {
    pub fn new(cluster: &str, zone: &str) -> Result<Names, GceError> {
        let region = region_of(zone)?;
        let prefix = format!("kctl-{cluster}");
        Ok(Names {
            cluster: cluster.to_string(),
            zone: zone.to_string(),
            network: prefix.clone(),
            subnet: format!("{prefix}-{region}"),
            region,
            master: format!("{prefix}-master"),
            master_tag: format!("{prefix}-master"),
            minion_tag: format!("{prefix}-minion"),
            firewall_internal: format!("{prefix}-internal"),
            firewall_ssh: format!("{prefix}-ssh"),
        })
    }
    /// Master `n`, counted from 1: the first keeps the name a cluster of
    /// one master has always had.
    pub fn master_n(&self, n: usize) -> String {
        if n <= 1 {
            self.master.clone()
        } else {
            format!("{}-{n}", self.master)
        }
    }
    /// Every master's name.
    pub fn masters(&self, count: usize) -> Vec<String> {
        (1..=count.max(1)).map(|i| self.master_n(i)).collect()
    }
    /// Minion `n`, counted from 1.
    pub fn minion(&self, n: usize) -> String {
        format!("kctl-{}-minion-{n}", self.cluster)
    }
    /// The instance of a minion of the record: "minion-2" -> "kctl-C-minion-2".
    pub fn minion_instance(&self, id: &str) -> Option<String> {
        let n = id.strip_prefix("minion-")?.parse::<usize>().ok()?;
        Some(self.minion(n))
    }
    /// The route to minion `n`'s pods has the minion's name (as in 2014).
    pub fn route(&self, n: usize) -> String {
        self.minion(n)
    }
    pub fn labels(&self, role: Role) -> String {
        format!("kctl-cluster={},kctl-role={}", self.cluster, role.as_str())
    }
    /// `^kctl-C-minion-[0-9]+$`: routes of this cluster and no other.
    pub fn route_regex(&self) -> String {
        format!("^kctl-{}-minion-[0-9]+$", self.cluster)
    }
    pub fn firewall_regex(&self) -> String {
        format!("^kctl-{}-(internal|ssh)$", self.cluster)
    }
    /// Label filters are evaluated client-side; `~` with anchors is exact
    /// where `=` would be a case-insensitive word match.
    pub fn instance_filter(&self) -> String {
        regex_filter("labels.kctl-cluster", &format!("^{}$", self.cluster))
    }
}

/// The filter term `KEY~"REGEX"`. Quoted because `(`, `)` and `|` are
/// filter syntax to gcloud: it rejects `name~^kctl-demo-(internal|ssh)$`
/// ("Unexpected tokens") before any API call, and passes a quoted pattern
/// through whole (as the server filter `name eq ".*(REGEX).*"`).
pub fn regex_filter(key: &str, regex: &str) -> String {
    format!("{key}~\"{regex}\"")
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Master,
    Minion,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Master => "master",
            Role::Minion => "minion",
        }
    }
}

/// Minion `n`'s pod range, `10.244.n.0/24`.
pub fn pod_cidr(n: usize) -> String {
    format!("10.244.{n}.0/24")
}

/// The first address of minion `n`'s pod range (its bridge).
pub fn pod_gateway(n: usize) -> Ipv4Addr {
    Ipv4Addr::new(10, 244, n as u8, 1)
}

/// `us-central1-b` -> `us-central1`: the zone without its last `-x` part.
pub fn region_of(zone: &str) -> Result<String, GceError> {
    let bad = |why: &str| invalid("zone", zone, why.to_string());
    let (region, letter) = zone
        .rsplit_once('-')
        .ok_or_else(|| bad("expected REGION-LETTER, e.g. us-central1-b"))?;
    let parts: Vec<&str> = region.split('-').collect();
    let region_ok = parts.len() >= 2
        && parts.iter().all(|p| {
            !p.is_empty()
                && p.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        })
        && parts[0].chars().all(|c| c.is_ascii_lowercase())
        && parts[parts.len() - 1].ends_with(|c: char| c.is_ascii_digit());
    let letter_ok = letter.len() == 1 && letter.chars().all(|c| c.is_ascii_lowercase());
    if region_ok && letter_ok {
        Ok(region.to_string())
    } else {
        Err(bad("expected REGION-LETTER, e.g. us-central1-b"))
    }
}

/// The cluster name appears in resource names and as a label value, so it
/// must satisfy both: RFC 1035 (which is stricter than the label grammar).
pub fn validate_cluster(name: &str) -> Result<(), GceError> {
    if is_rfc1035(name) {
        Ok(())
    } else {
        Err(invalid(
            "cluster name",
            name,
            "must be lower-case letters, digits and '-', start with a letter and not end with '-' (it is part of GCE resource names and labels)".into(),
        ))
    }
}

/// Project ids: 6–30 chars, lower-case letters, digits and hyphens, starting
/// with a letter, not ending with a hyphen.
pub fn validate_project(project: &str) -> Result<(), GceError> {
    if (6..=30).contains(&project.len()) && is_rfc1035(project) {
        Ok(())
    } else {
        Err(invalid(
            "project id",
            project,
            "must be 6 to 30 lower-case letters, digits and '-', starting with a letter (the id, not the display name)".into(),
        ))
    }
}

pub fn validate_machine_type(machine_type: &str) -> Result<(), GceError> {
    if is_rfc1035(machine_type) {
        Ok(())
    } else {
        Err(invalid(
            "machine type",
            machine_type,
            "must be a machine type name such as e2-micro or f1-micro".into(),
        ))
    }
}

/// One OpenSSH public key line: `TYPE BASE64 [COMMENT]`, no newline (the
/// ssh-keys metadata is one key per line).
pub fn validate_public_key(key: &str) -> Result<(), GceError> {
    let mut parts = key.split_whitespace();
    let ok = !key.contains('\n')
        && parts
            .next()
            .is_some_and(|t| t.starts_with("ssh-") || t.starts_with("ecdsa-"))
        && parts.next().is_some_and(super::parse::base64_round_trips);
    if ok {
        Ok(())
    } else {
        let shown: String = key.chars().take(40).collect();
        Err(invalid(
            "ssh public key",
            &shown,
            "must be one OpenSSH public key line, `ssh-ed25519 AAAA... comment`".into(),
        ))
    }
}

fn invalid(what: &str, value: &str, why: String) -> GceError {
    GceError::Invalid {
        what: what.to_string(),
        value: value.to_string(),
        why,
    }
}
