//! External load balancers, as Kubernetes v0.5's GCE cloud provider made
//! them for `createExternalLoadBalancer: true`: per service a target pool
//! of the cluster's minion instances, a regional forwarding rule on the
//! service's port pointing at it (which gets the external IP), and a
//! firewall rule letting that port reach the minions from anywhere.
//!
//! Pure: names, the plan (desired against found). Edge: `discover`
//! (list calls only) and `run` (the plan's gcloud calls, in order).
//! Every resource carries the description "kctl cluster C load balancer
//! for service S": names are shared per project and a prefix such as
//! `kctl-a-lb-` is also the start of cluster `a-lb`'s names, so the
//! description is what tells whose a resource is.

use super::commands as cmd;
use super::parse;
use super::spec::Names;
use super::transport::Gcloud;
use super::{failed, GceError};
use crate::model::names::is_rfc1035;
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

/// The protocols a target-pool forwarding rule carries for a service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum LbProtocol {
    Tcp,
    Udp,
}

impl LbProtocol {
    /// As forwarding rules spell it (`--ip-protocol`, `IPProtocol`).
    pub fn upper(self) -> &'static str {
        match self {
            LbProtocol::Tcp => "TCP",
            LbProtocol::Udp => "UDP",
        }
    }
    /// As firewall rules spell it (`--allow=tcp:P`).
    pub fn lower(self) -> &'static str {
        match self {
            LbProtocol::Tcp => "tcp",
            LbProtocol::Udp => "udp",
        }
    }
}

/// One service that wants a load balancer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadBalancer {
    pub service: String,
    pub port: u16,
    pub protocol: LbProtocol,
}

/// Hex digits of the name hash: short enough to leave room for the
/// cluster name (up to 47 characters), long enough that two services of
/// one cluster do not meet.
const HASH_LEN: usize = 6;

/// `kctl-C-lb-`: what every load balancer name of cluster C starts with.
pub fn lb_prefix(n: &Names) -> String {
    format!("kctl-{}-lb-", n.cluster)
}

/// The name of a service's target pool, forwarding rule and firewall rule
/// (the three kinds have separate namespaces): `kctl-C-lb-SERVICE`, or, when
/// that is no valid GCE name (longer than 63, or not lower-case), as much
/// of the service id as fits and a hash of the whole id.
pub fn lb_name(n: &Names, service: &str) -> Result<String, GceError> {
    let prefix = lb_prefix(n);
    let plain = format!("{prefix}{service}");
    if is_rfc1035(&plain) {
        return Ok(plain);
    }
    let hash: String = Sha256::digest(service.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let hash = &hash[..HASH_LEN];
    let room = 63usize.saturating_sub(prefix.len() + HASH_LEN + 1);
    let kept: String = service
        .chars()
        .map(|c| c.to_ascii_lowercase())
        .filter(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-')
        .take(room)
        .collect();
    let kept = kept.trim_end_matches('-');
    let name = if kept.is_empty() {
        format!("{prefix}{hash}")
    } else {
        format!("{prefix}{kept}-{hash}")
    };
    if is_rfc1035(&name) {
        Ok(name)
    } else {
        Err(GceError::Invalid {
            what: "cluster name".into(),
            value: n.cluster.clone(),
            why: format!(
                "the load balancer name {name:?} of service {service} is longer than 63 characters"
            ),
        })
    }
}

/// What every load balancer resource of `service` says it is.
pub fn lb_description(n: &Names, service: &str) -> String {
    format!("{}{service}", description_prefix(n))
}

fn description_prefix(n: &Names) -> String {
    format!("kctl cluster {} load balancer for service ", n.cluster)
}

/// What exists of one service's load balancer.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FoundLb {
    pub name: String,
    /// The pool's instances by name, if the pool exists.
    pub pool: Option<BTreeSet<String>>,
    pub rule: Option<FoundRule>,
    /// Whether the firewall rule exists, and whether it is as kctl makes it
    /// for the service's port now.
    pub firewall: Option<FoundFirewall>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FoundRule {
    /// None if the rule has no address kctl can use (absent or not IPv4).
    pub ip: Option<Ipv4Addr>,
    pub protocol: String,
    /// `portRange` as GCE answers it: `"8080-8080"`.
    pub port_range: String,
    /// Its target's name, when the target is a pool in the cluster's region.
    pub target_pool: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FoundFirewall {
    /// `allowed[]` as `tcp:8080` words, sorted.
    pub allowed: Vec<String>,
    pub source_ranges: Vec<String>,
    pub target_tags: Vec<String>,
    pub on_network: bool,
}

/// Every load balancer of the cluster that exists, by service id.
pub type FoundLbs = BTreeMap<String, FoundLb>;

/// The service a resource's description names, if it is this cluster's.
fn owner(n: &Names, item: &Value) -> Option<String> {
    let text = item.get("description")?.as_str()?;
    let service = text.strip_prefix(&description_prefix(n))?;
    (!service.is_empty() && !service.contains(char::is_whitespace)).then(|| service.to_string())
}

fn strings(item: &Value, key: &str) -> Vec<String> {
    let mut out: Vec<String> = item
        .get(key)
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .map(str::to_string)
        .collect();
    out.sort();
    out
}

/// The last path segment of a URL, if the URL's path ends with
/// `/KIND/NAME` where `within` (e.g. `/regions/us-central1`) comes right
/// before.
fn named_in(url: &str, within: &str, kind: &str) -> Option<String> {
    let (head, name) = url.rsplit_once('/')?;
    head.ends_with(&format!("{within}/{kind}"))
        .then(|| name.to_string())
}

/// Sorts the listed resources into load balancers (pure): only those
/// whose description names this cluster and whose name is the one kctl
/// gives that service count; the rest are someone else's.
pub fn judge_lbs(
    n: &Names,
    pools: &[Value],
    rules: &[Value],
    firewalls: &[Value],
) -> Result<FoundLbs, GceError> {
    let mut found = FoundLbs::new();
    let mut entry = |item: &Value| -> Result<Option<String>, GceError> {
        let Some(service) = owner(n, item) else {
            return Ok(None);
        };
        let name = item.get("name").and_then(Value::as_str).unwrap_or("");
        let expected = lb_name(n, &service)?;
        if name != expected {
            return Ok(None);
        }
        found.entry(service.clone()).or_insert_with(|| FoundLb {
            name: expected,
            ..FoundLb::default()
        });
        Ok(Some(service))
    };
    let region = format!("/regions/{}", n.region);
    let zone = format!("/zones/{}", n.zone);
    let mut pool_of = vec![];
    for pool in pools {
        if let Some(service) = entry(pool)? {
            // Instances elsewhere than the cluster's zone count as foreign:
            // they are removed like any instance that is no minion.
            let members: BTreeSet<String> = strings(pool, "instances")
                .iter()
                .map(|url| named_in(url, &zone, "instances").unwrap_or_else(|| url.clone()))
                .collect();
            pool_of.push((service, members));
        }
    }
    let mut rule_of = vec![];
    for rule in rules {
        if let Some(service) = entry(rule)? {
            let text = |key: &str| rule.get(key).and_then(Value::as_str).unwrap_or("");
            rule_of.push((
                service,
                FoundRule {
                    // Untrusted: only a real IPv4 address is ever used.
                    ip: text("IPAddress").parse().ok().filter(usable_address),
                    protocol: text("IPProtocol").to_string(),
                    port_range: text("portRange").to_string(),
                    target_pool: named_in(text("target"), &region, "targetPools"),
                },
            ));
        }
    }
    let mut firewall_of = vec![];
    for rule in firewalls {
        if let Some(service) = entry(rule)? {
            let mut allowed: Vec<String> = rule
                .get("allowed")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .flat_map(|a| {
                    let protocol = a.get("IPProtocol").and_then(Value::as_str).unwrap_or("");
                    let ports = strings(a, "ports");
                    if ports.is_empty() {
                        vec![protocol.to_string()]
                    } else {
                        ports.iter().map(|p| format!("{protocol}:{p}")).collect()
                    }
                })
                .collect();
            allowed.sort();
            let network = rule.get("network").and_then(Value::as_str).unwrap_or("");
            firewall_of.push((
                service,
                FoundFirewall {
                    allowed,
                    source_ranges: strings(rule, "sourceRanges"),
                    target_tags: strings(rule, "targetTags"),
                    on_network: network.ends_with(&format!("/global/networks/{}", n.network)),
                },
            ));
        }
    }
    for (service, members) in pool_of {
        if let Some(lb) = found.get_mut(&service) {
            lb.pool = Some(members);
        }
    }
    for (service, rule) in rule_of {
        if let Some(lb) = found.get_mut(&service) {
            lb.rule = Some(rule);
        }
    }
    for (service, firewall) in firewall_of {
        if let Some(lb) = found.get_mut(&service) {
            lb.firewall = Some(firewall);
        }
    }
    Ok(found)
}

/// An address a forwarding rule may hand the minions' packet rules: not
/// 0.0.0.0, broadcast, multicast or loopback.
pub fn usable_address(ip: &Ipv4Addr) -> bool {
    !(ip.is_unspecified() || ip.is_broadcast() || ip.is_multicast() || ip.is_loopback())
}

/// One gcloud call of the load-balancer plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LbStep {
    CreatePool {
        name: String,
        service: String,
    },
    AddInstances {
        name: String,
        instances: Vec<String>,
    },
    RemoveInstances {
        name: String,
        instances: Vec<String>,
    },
    CreateRule {
        name: String,
        service: String,
        port: u16,
        protocol: LbProtocol,
    },
    DeleteRule {
        name: String,
    },
    DeletePool {
        name: String,
    },
    CreateFirewall {
        name: String,
        service: String,
        port: u16,
        protocol: LbProtocol,
    },
    DeleteFirewall {
        name: String,
    },
}

impl LbStep {
    /// The plan line: `+ target pool NAME (...)`.
    pub fn line(&self) -> String {
        match self {
            LbStep::CreatePool { name, service } => {
                format!("+ target pool {name} (service {service})")
            }
            LbStep::AddInstances { name, instances } => {
                format!("~ target pool {name}: add {}", instances.join(", "))
            }
            LbStep::RemoveInstances { name, instances } => {
                format!("~ target pool {name}: remove {}", instances.join(", "))
            }
            LbStep::CreateRule {
                name,
                port,
                protocol,
                ..
            } => format!(
                "+ forwarding rule {name} ({} {port} to target pool {name}; external IP from GCE)",
                protocol.upper()
            ),
            LbStep::DeleteRule { name } => format!("- forwarding rule {name}"),
            LbStep::DeletePool { name } => format!("- target pool {name}"),
            LbStep::CreateFirewall {
                name,
                port,
                protocol,
                ..
            } => format!(
                "+ firewall rule {name} ({}:{port} from 0.0.0.0/0 to the minions)",
                protocol.lower()
            ),
            LbStep::DeleteFirewall { name } => format!("- firewall rule {name}"),
        }
    }

    /// The gcloud argv (without "gcloud").
    pub fn argv(&self, project: &str, n: &Names) -> Vec<String> {
        match self {
            LbStep::CreatePool { name, service } => {
                cmd::target_pool_create(project, n, name, &lb_description(n, service))
            }
            LbStep::AddInstances { name, instances } => {
                cmd::target_pool_instances(project, n, name, instances, true)
            }
            LbStep::RemoveInstances { name, instances } => {
                cmd::target_pool_instances(project, n, name, instances, false)
            }
            LbStep::CreateRule {
                name,
                service,
                port,
                protocol,
            } => cmd::forwarding_rule_create(
                project,
                n,
                name,
                *port,
                protocol.upper(),
                &lb_description(n, service),
            ),
            LbStep::DeleteRule { name } => cmd::forwarding_rule_delete(project, n, name),
            LbStep::DeletePool { name } => cmd::target_pool_delete(project, n, name),
            LbStep::CreateFirewall {
                name,
                service,
                port,
                protocol,
            } => cmd::firewall_lb_create(
                project,
                n,
                name,
                &format!("{}:{port}", protocol.lower()),
                &lb_description(n, service),
            ),
            LbStep::DeleteFirewall { name } => {
                cmd::firewalls_delete(project, std::slice::from_ref(name))
            }
        }
    }

    fn is_delete(&self) -> bool {
        matches!(
            self,
            LbStep::DeleteRule { .. } | LbStep::DeletePool { .. } | LbStep::DeleteFirewall { .. }
        )
    }
}

/// Checks what a load balancer can carry, before anything is made.
pub fn validate(n: &Names, lb: &LoadBalancer) -> Result<(), GceError> {
    if lb.port == 0 {
        return Err(GceError::Invalid {
            what: format!("port of service {}", lb.service),
            value: "0".into(),
            why: "a forwarding rule needs a port from 1 to 65535".into(),
        });
    }
    lb_name(n, &lb.service).map(|_| ())
}

/// The gcloud calls that make what exists (`found`) into `desired`, with
/// the pools holding exactly `minions` (instance names), in an order GCE
/// accepts: what goes first (a forwarding rule before its pool), then what
/// is made (a pool before its rule). Empty when all is as it should be:
/// applying the same again changes nothing in the cloud.
pub fn plan(
    n: &Names,
    desired: &[LoadBalancer],
    minions: &[String],
    found: &FoundLbs,
) -> Result<Vec<LbStep>, GceError> {
    let mut deletes = vec![];
    let mut creates = vec![];
    let wanted: BTreeMap<&str, &LoadBalancer> =
        desired.iter().map(|lb| (lb.service.as_str(), lb)).collect();
    for (service, lb) in found {
        if wanted.contains_key(service.as_str()) {
            continue;
        }
        if lb.rule.is_some() {
            deletes.push(LbStep::DeleteRule {
                name: lb.name.clone(),
            });
        }
        if lb.pool.is_some() {
            deletes.push(LbStep::DeletePool {
                name: lb.name.clone(),
            });
        }
        if lb.firewall.is_some() {
            deletes.push(LbStep::DeleteFirewall {
                name: lb.name.clone(),
            });
        }
    }
    let minion_set: BTreeSet<String> = minions.iter().cloned().collect();
    for lb in wanted.values() {
        validate(n, lb)?;
        let name = lb_name(n, &lb.service)?;
        let have = found.get(&lb.service).cloned().unwrap_or_default();
        match &have.pool {
            None => {
                creates.push(LbStep::CreatePool {
                    name: name.clone(),
                    service: lb.service.clone(),
                });
                if !minions.is_empty() {
                    creates.push(LbStep::AddInstances {
                        name: name.clone(),
                        instances: minion_set.iter().cloned().collect(),
                    });
                }
            }
            Some(members) => {
                let add: Vec<String> = minion_set.difference(members).cloned().collect();
                let remove: Vec<String> = members.difference(&minion_set).cloned().collect();
                if !add.is_empty() {
                    creates.push(LbStep::AddInstances {
                        name: name.clone(),
                        instances: add,
                    });
                }
                if !remove.is_empty() {
                    creates.push(LbStep::RemoveInstances {
                        name: name.clone(),
                        instances: remove,
                    });
                }
            }
        }
        let rule_ok = have.rule.as_ref().is_some_and(|r| {
            r.protocol == lb.protocol.upper()
                && r.port_range == format!("{0}-{0}", lb.port)
                && r.target_pool.as_deref() == Some(name.as_str())
                && r.ip.is_some()
        });
        if !rule_ok {
            // A forwarding rule's port and protocol cannot be changed in
            // place: a new rule, with a new address.
            if have.rule.is_some() {
                deletes.push(LbStep::DeleteRule { name: name.clone() });
            }
            creates.push(LbStep::CreateRule {
                name: name.clone(),
                service: lb.service.clone(),
                port: lb.port,
                protocol: lb.protocol,
            });
        }
        let firewall_ok = have.firewall.as_ref().is_some_and(|f| {
            f.on_network
                && f.allowed == [format!("{}:{}", lb.protocol.lower(), lb.port)]
                && f.source_ranges == ["0.0.0.0/0"]
                && f.target_tags == [n.minion_tag.clone()]
        });
        if !firewall_ok {
            if have.firewall.is_some() {
                deletes.push(LbStep::DeleteFirewall { name: name.clone() });
            }
            creates.push(LbStep::CreateFirewall {
                name,
                service: lb.service.clone(),
                port: lb.port,
                protocol: lb.protocol,
            });
        }
    }
    // Rules before pools before firewall rules: a pool a rule targets
    // cannot be deleted.
    deletes.sort_by_key(|s| match s {
        LbStep::DeleteRule { .. } => 0,
        LbStep::DeletePool { .. } => 1,
        _ => 2,
    });
    deletes.extend(creates);
    Ok(deletes)
}

/// The reads of `discover`, in its order (list calls only).
pub fn discovery_reads(project: &str, n: &Names) -> Vec<Vec<String>> {
    vec![
        cmd::target_pools_list(project, n),
        cmd::forwarding_rules_list(project, n),
        cmd::firewalls_lb_list(project, n),
    ]
}

/// Every load balancer of the cluster that exists in its region.
pub async fn discover<G: Gcloud>(g: &G, project: &str, n: &Names) -> Result<FoundLbs, GceError> {
    let mut lists = vec![];
    for argv in discovery_reads(project, n) {
        let out = g.run(&argv).await?;
        if !out.success() {
            return Err(failed(&argv, &out));
        }
        lists.push(
            parse::list(&out.stdout).map_err(|message| GceError::BadOutput {
                argv: argv.clone(),
                message,
            })?,
        );
    }
    judge_lbs(n, &lists[0], &lists[1], &lists[2])
}

/// Runs the plan's calls in order; a delete of something gone already is
/// done. Says each step through `progress`.
pub async fn run<G: Gcloud>(
    g: &G,
    project: &str,
    n: &Names,
    steps: &[LbStep],
    progress: super::Progress<'_>,
) -> Result<(), GceError> {
    for step in steps {
        progress(&step.line());
        let argv = step.argv(project, n);
        let out = g.run(&argv).await?;
        let done = out.success() || (step.is_delete() && out.not_found());
        if !done {
            return Err(failed(&argv, &out));
        }
    }
    Ok(())
}

/// The external IP of each service's forwarding rule (validated IPv4).
pub fn addresses(found: &FoundLbs) -> BTreeMap<String, Ipv4Addr> {
    found
        .iter()
        .filter_map(|(service, lb)| Some((service.clone(), lb.rule.as_ref()?.ip?)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn names(cluster: &str) -> Names {
        Names::new(cluster, "us-central1-b").unwrap()
    }

    fn web() -> LoadBalancer {
        LoadBalancer {
            service: "web".into(),
            port: 8080,
            protocol: LbProtocol::Tcp,
        }
    }

    const API: &str = "https://compute.googleapis.com/compute/v1/projects/p-123456";

    /// The three resources as GCE lists them for service `web` of `cluster`.
    fn listed(cluster: &str, port: u16, ip: &str) -> (Vec<Value>, Vec<Value>, Vec<Value>) {
        let n = names(cluster);
        let name = lb_name(&n, "web").unwrap();
        let description = lb_description(&n, "web");
        let pool = json!({
            "name": name, "description": description,
            "instances": [format!("{API}/zones/us-central1-b/instances/kctl-{cluster}-minion-1")],
        });
        let rule = json!({
            "name": name, "description": description, "IPAddress": ip, "IPProtocol": "TCP",
            "portRange": format!("{port}-{port}"),
            "target": format!("{API}/regions/us-central1/targetPools/{name}"),
        });
        let firewall = json!({
            "name": name, "description": description,
            "network": format!("{API}/global/networks/kctl-{cluster}"),
            "allowed": [{"IPProtocol": "tcp", "ports": [port.to_string()]}],
            "sourceRanges": ["0.0.0.0/0"], "targetTags": [format!("kctl-{cluster}-minion")],
        });
        (vec![pool], vec![rule], vec![firewall])
    }

    #[test]
    fn names_fit_gce_and_long_ones_are_shortened_with_a_hash() {
        assert_eq!(lb_name(&names("demo"), "web").unwrap(), "kctl-demo-lb-web");
        let long_cluster = "c".repeat(47);
        let n = names(&long_cluster);
        let a = lb_name(&n, "frontend-service-abcdef").unwrap();
        let b = lb_name(&n, "frontend-service-abcdeg").unwrap();
        assert!(is_rfc1035(&a) && is_rfc1035(&b), "{a} {b}");
        assert!(a.starts_with(&lb_prefix(&n)), "{a}");
        assert_ne!(a, b);
        let c = lb_name(&names("c"), "Web.Front").unwrap();
        assert!(
            is_rfc1035(&c) && c.starts_with("kctl-c-lb-webfront-"),
            "{c}"
        );
    }

    #[test]
    fn nothing_there_makes_pool_instances_rule_and_firewall_in_order() {
        let n = names("demo");
        let minions = vec![
            "kctl-demo-minion-1".to_string(),
            "kctl-demo-minion-2".into(),
        ];
        let steps = plan(&n, &[web()], &minions, &FoundLbs::new()).unwrap();
        let lines: Vec<String> = steps.iter().map(LbStep::line).collect();
        assert_eq!(
            lines,
            [
                "+ target pool kctl-demo-lb-web (service web)",
                "~ target pool kctl-demo-lb-web: add kctl-demo-minion-1, kctl-demo-minion-2",
                "+ forwarding rule kctl-demo-lb-web (TCP 8080 to target pool kctl-demo-lb-web; external IP from GCE)",
                "+ firewall rule kctl-demo-lb-web (tcp:8080 from 0.0.0.0/0 to the minions)",
            ]
        );
        let argv = steps[2].argv("p-123456", &n);
        for flag in [
            "--ports=8080",
            "--ip-protocol=TCP",
            "--target-pool=kctl-demo-lb-web",
            "--region=us-central1",
        ] {
            assert!(argv.contains(&flag.to_string()), "{argv:?}");
        }
        let fw = steps[3].argv("p-123456", &n);
        for flag in [
            "--network=kctl-demo",
            "--allow=tcp:8080",
            "--source-ranges=0.0.0.0/0",
            "--target-tags=kctl-demo-minion",
        ] {
            assert!(fw.contains(&flag.to_string()), "{fw:?}");
        }
    }

    #[test]
    fn what_is_as_wanted_needs_no_call_and_its_address_is_read() {
        let n = names("demo");
        let (pools, rules, firewalls) = listed("demo", 8080, "203.0.113.10");
        let found = judge_lbs(&n, &pools, &rules, &firewalls).unwrap();
        let minions = vec!["kctl-demo-minion-1".to_string()];
        assert_eq!(plan(&n, &[web()], &minions, &found).unwrap(), vec![]);
        assert_eq!(
            addresses(&found).get("web"),
            Some(&"203.0.113.10".parse().unwrap())
        );
    }

    #[test]
    fn minions_that_came_and_went_are_added_and_removed() {
        let n = names("demo");
        let (pools, rules, firewalls) = listed("demo", 8080, "203.0.113.10");
        let found = judge_lbs(&n, &pools, &rules, &firewalls).unwrap();
        let minions = vec!["kctl-demo-minion-2".to_string()];
        let steps = plan(&n, &[web()], &minions, &found).unwrap();
        assert_eq!(
            steps,
            vec![
                LbStep::AddInstances {
                    name: "kctl-demo-lb-web".into(),
                    instances: vec!["kctl-demo-minion-2".into()]
                },
                LbStep::RemoveInstances {
                    name: "kctl-demo-lb-web".into(),
                    instances: vec!["kctl-demo-minion-1".into()]
                },
            ]
        );
    }

    #[test]
    fn a_new_port_replaces_rule_and_firewall_and_no_service_deletes_all_in_order() {
        let n = names("demo");
        let (pools, rules, firewalls) = listed("demo", 9090, "203.0.113.10");
        let found = judge_lbs(&n, &pools, &rules, &firewalls).unwrap();
        let minions = vec!["kctl-demo-minion-1".to_string()];
        let lines: Vec<String> = plan(&n, &[web()], &minions, &found)
            .unwrap()
            .iter()
            .map(LbStep::line)
            .collect();
        assert_eq!(lines[0], "- forwarding rule kctl-demo-lb-web");
        assert_eq!(lines[1], "- firewall rule kctl-demo-lb-web");
        assert!(lines[2].starts_with("+ forwarding rule"), "{lines:?}");
        assert!(lines[3].starts_with("+ firewall rule"), "{lines:?}");
        let gone: Vec<String> = plan(&n, &[], &minions, &found)
            .unwrap()
            .iter()
            .map(LbStep::line)
            .collect();
        assert_eq!(
            gone,
            [
                "- forwarding rule kctl-demo-lb-web",
                "- target pool kctl-demo-lb-web",
                "- firewall rule kctl-demo-lb-web"
            ]
        );
    }

    #[test]
    fn another_clusters_load_balancers_and_bad_addresses_are_not_taken() {
        // Cluster `demo-lb`'s service `web` is named kctl-demo-lb-lb-web,
        // which starts with cluster demo's prefix: its description differs.
        let n = names("demo");
        let (pools, rules, firewalls) = listed("demo-lb", 8080, "203.0.113.10");
        assert_eq!(
            judge_lbs(&n, &pools, &rules, &firewalls).unwrap(),
            FoundLbs::new()
        );
        for bad in ["127.0.0.1", "0.0.0.0", "203.0.113.10; drop", "::1", ""] {
            let (pools, rules, firewalls) = listed("demo", 8080, bad);
            let found = judge_lbs(&n, &pools, &rules, &firewalls).unwrap();
            assert_eq!(found["web"].rule.as_ref().unwrap().ip, None, "{bad}");
            assert!(addresses(&found).is_empty());
        }
    }

    #[test]
    fn a_port_that_cannot_be_forwarded_is_refused_before_any_call() {
        let n = names("demo");
        let zero = LoadBalancer { port: 0, ..web() };
        let e = plan(&n, &[zero], &[], &FoundLbs::new()).unwrap_err();
        assert!(e.to_string().contains("1 to 65535"), "{e}");
    }
}
