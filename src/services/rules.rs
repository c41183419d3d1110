//! The packet rules that make portals work: one nftables table, `ip kctl`,
//! owned by kctl on every minion and replaced whole in one `nft -f`
//! transaction (the script deletes the table and defines it again), so the
//! rules are never half-updated and nothing stale survives.
//!
//! Why nftables and not iptables-restore: with 1,000 services of 10
//! endpoints, `iptables-restore` through Debian's iptables-nft takes about
//! 10 s to rewrite the rules and iptables-legacy about 0.5 s; the same rule
//! set as one nft transaction takes about 0.2 s (`cargo bench --bench
//! rules`). nftables is what the kernel runs for iptables-nft anyway, and
//! its maps let one lookup find a portal among thousands.
//!
//! - `services`: a verdict map from (portal, protocol, port) to the service's
//!   chain, consulted from nat PREROUTING (traffic from pods and other
//!   machines) and nat OUTPUT (traffic from the minion itself);
//! - `svc-<hash>`: `dnat to numgen random mod n map {…}`, an even spread over
//!   the endpoints, decided per new connection; the client's source address
//!   is kept;
//! - `hairpin`: pairs (ip, ip) of every endpoint, so POSTROUTING masquerades
//!   exactly the connections a pod makes to itself through a portal;
//! - `no_endpoints`: portals whose service has no endpoints, rejected at once
//!   (TCP reset, ICMP port unreachable for UDP) in filter OUTPUT and FORWARD.

use crate::model::Protocol;
use crate::state::{short_digest, ClusterState, Endpoint};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::Ipv4Addr;

/// The nftables table kctl owns on every minion.
pub const TABLE: &str = "kctl";

/// Everything the rules of one portal depend on.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Portal {
    pub service: String,
    pub ip: Ipv4Addr,
    pub port: u16,
    pub protocol: Protocol,
    pub endpoints: Vec<(Ipv4Addr, u16)>,
    /// Addresses of the machines that answer on the port too: every
    /// minion's own (`createExternalLoadBalancer`), the cloud load
    /// balancer's (its forwarding rule delivers packets to that address),
    /// and `publicIPs`.
    pub published: Vec<Ipv4Addr>,
    /// A port of the machines that leads to the service too (v1
    /// NodePort), and the minions' addresses it answers on.
    pub node_port: Option<NodePortRule>,
}

/// Where a node port answers.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct NodePortRule {
    pub port: u16,
    pub on: Vec<Ipv4Addr>,
}

/// The portals of a cluster, from its services and their endpoints.
pub fn portals(state: &ClusterState, endpoints: &BTreeMap<String, Vec<Endpoint>>) -> Vec<Portal> {
    let minions: std::collections::BTreeSet<Ipv4Addr> =
        state.minions.values().map(|m| m.host_ip).collect();
    state
        .services
        .values()
        .map(|record| {
            let mut published: std::collections::BTreeSet<Ipv4Addr> =
                record.service.public_ips.iter().copied().collect();
            if record.service.external {
                published.extend(&minions);
                let lb = state.load_balancers.get(&record.service.id);
                if let Some(lb) = lb.filter(|lb| lb.usable()) {
                    published.insert(lb.ip);
                }
            }
            Portal {
                service: record.service.id.clone(),
                ip: record.portal_ip,
                port: record.service.port,
                protocol: record.service.protocol,
                endpoints: endpoints
                    .get(&record.service.id)
                    .map(|eps| eps.iter().map(|e| (e.ip, e.port)).collect())
                    .unwrap_or_default(),
                published: published.into_iter().collect(),
                // A record read back is not trusted: a port outside the
                // range (sshd's, etcd's) is never taken over.
                node_port: record
                    .node_port
                    .filter(|port| crate::model::NODE_PORT_RANGE.contains(port))
                    .map(|port| NodePortRule {
                        port,
                        on: minions.iter().copied().collect(),
                    }),
            }
        })
        .collect()
}

/// A digest of the rule set: when it matches what a minion last got, the
/// minion needs no visit.
pub fn digest(portals: &[Portal]) -> String {
    let text: String = portals.iter().map(|p| format!("{p:?}\n")).collect();
    short_digest(text.as_bytes())
}

/// The chain of one service: the same name for the same service and
/// protocol, whatever its endpoints.
pub fn service_chain(p: &Portal) -> String {
    let key = format!("{}/{}", p.service, p.protocol.as_lower());
    format!("svc-{}", short_digest(key.as_bytes()))
}

fn key_at(p: &Portal, ip: Ipv4Addr) -> String {
    format!("{ip} . {} . {}", p.protocol.as_lower(), p.port)
}

/// Where a portal answers: its own IP, then the machines' it is
/// published on, then its node port on the minions.
fn keys(p: &Portal) -> impl Iterator<Item = String> + '_ {
    let on_node_port = p.node_port.iter().flat_map(move |rule| {
        rule.on
            .iter()
            .map(move |ip| format!("{ip} . {} . {}", p.protocol.as_lower(), rule.port))
    });
    std::iter::once(p.ip)
        .chain(p.published.iter().copied())
        .map(move |ip| key_at(p, ip))
        .chain(on_node_port)
}

fn elements(out: &mut String, items: &[String]) {
    // nft refuses an empty element list: an empty set simply has none.
    if !items.is_empty() {
        let _ = writeln!(out, "    elements = {{ {} }}", items.join(", "));
    }
}

/// The `nft -f` script that makes the minion's kctl table exactly
/// `portals`. Deleting and defining the table happen in one transaction.
pub fn render(portals: &[Portal]) -> String {
    let mut out = String::new();
    // `table` first creates the table if absent, so the delete never fails.
    let _ = writeln!(
        out,
        "table ip {TABLE}\ndelete table ip {TABLE}\ntable ip {TABLE} {{"
    );

    let with_endpoints: Vec<&Portal> = portals.iter().filter(|p| !p.endpoints.is_empty()).collect();
    let mut hairpin: Vec<String> = with_endpoints
        .iter()
        .flat_map(|p| p.endpoints.iter().map(|(ip, _)| format!("{ip} . {ip}")))
        .collect();
    hairpin.sort();
    hairpin.dedup();
    out.push_str("  set hairpin {\n    type ipv4_addr . ipv4_addr\n");
    elements(&mut out, &hairpin);
    out.push_str("  }\n");

    // One key, one chain: nft refuses a map with a key twice, which would
    // leave every minion's rules unwritten. The plan refuses such
    // services; records read back could still hold them, and the first
    // service (by order of the portals) keeps the key.
    let mut seen = std::collections::HashSet::new();
    let services: Vec<String> = with_endpoints
        .iter()
        .flat_map(|p| keys(p).map(move |k| (k, service_chain(p))))
        .filter(|(k, _)| seen.insert(k.clone()))
        .map(|(k, chain)| format!("{k} : goto {chain}"))
        .collect();
    out.push_str("  map services {\n    type ipv4_addr . inet_proto . inet_service : verdict\n");
    elements(&mut out, &services);
    out.push_str("  }\n");

    let rejected: Vec<String> = portals
        .iter()
        .filter(|p| p.endpoints.is_empty())
        .flat_map(keys)
        .filter(|k| seen.insert(k.clone()))
        .collect();
    let mut published: Vec<String> = portals
        .iter()
        .flat_map(|p| {
            let on_node_port = p.node_port.iter().flat_map(|rule| &rule.on);
            p.published
                .iter()
                .chain(on_node_port)
                .map(|ip| ip.to_string())
        })
        .collect();
    published.sort();
    published.dedup();
    out.push_str("  set no_endpoints {\n    type ipv4_addr . inet_proto . inet_service\n");
    elements(&mut out, &rejected);
    out.push_str("  }\n");
    out.push_str("  set published {\n    type ipv4_addr\n");
    elements(&mut out, &published);
    out.push_str("  }\n");

    // Just before Docker's own nat rules (dstnat, -100), which never
    // match a portal anyway.
    for hook in ["prerouting", "output"] {
        let _ = writeln!(
            out,
            "  chain nat-{hook} {{\n    type nat hook {hook} priority -101; policy accept;\n    ip daddr . meta l4proto . th dport vmap @services\n  }}"
        );
    }
    out.push_str(
        // A connection to a machine's own address that leaves for a pod
        // of another minion is masqueraded, so that the reply comes back
        // this way; one to a pod here keeps its client's address.
        "  chain nat-postrouting {\n    type nat hook postrouting priority srcnat; policy accept;\n    ct status dnat ip saddr . ip daddr @hairpin masquerade\n    ct status dnat ct original ip daddr @published oifname != \"kctl0\" masquerade\n  }\n",
    );
    for hook in ["output", "forward"] {
        let _ = writeln!(
            out,
            "  chain filter-{hook} {{\n    type filter hook {hook} priority -1; policy accept;\n    ip daddr . meta l4proto . th dport @no_endpoints meta l4proto tcp reject with tcp reset\n    ip daddr . meta l4proto . th dport @no_endpoints reject\n  }}"
        );
    }
    for p in &with_endpoints {
        let targets: Vec<String> = p
            .endpoints
            .iter()
            .enumerate()
            .map(|(i, (ip, port))| format!("{i} : {ip} . {port}"))
            .collect();
        // Only a checked id goes into the script's text (records are
        // checked when read; this holds even if a caller skipped that).
        let comment = match crate::model::names::service_id_problem(&p.service) {
            None => format!("\n    comment \"{} portal\"", p.service),
            Some(_) => String::new(),
        };
        let _ = writeln!(
            out,
            "  chain {} {{{comment}\n    meta l4proto {} dnat ip addr . port to numgen random mod {} map {{ {} }}\n  }}",
            service_chain(p),
            p.protocol.as_lower(),
            targets.len(),
            targets.join(", ")
        );
    }
    out.push_str("}\n");
    out
}

/// The chains every minion's table has, whatever its services.
const HOOK_CHAINS: [&str; 5] = [
    "nat-prerouting",
    "nat-output",
    "nat-postrouting",
    "filter-output",
    "filter-forward",
];

/// How a minion's rules differ from `expected`, read from `nft list table
/// ip kctl` as `listing` (None: the table is not there); one sentence per
/// difference, none when they match.
pub fn drift(expected: &[Portal], listing: Option<&str>) -> Vec<String> {
    let Some(listing) = listing else {
        return vec![format!(
            "the nftables table ip {TABLE} is missing: no portal works"
        )];
    };
    let mut out = Vec::new();
    for chain in HOOK_CHAINS {
        if !listing.contains(&format!("chain {chain} {{")) {
            out.push(format!("chain {chain} is missing"));
        }
    }
    let routed: BTreeMap<String, String> = block_elements(listing, "map services")
        .into_iter()
        .filter_map(|item| {
            let (key, verdict) = item.split_once(':')?;
            Some((
                key.trim().to_string(),
                verdict
                    .trim()
                    .trim_start_matches("goto ")
                    .trim()
                    .to_string(),
            ))
        })
        .collect();
    let rejected: std::collections::BTreeSet<String> = block_elements(listing, "set no_endpoints")
        .into_iter()
        .collect();
    for (p, k) in expected.iter().flat_map(|p| keys(p).map(move |k| (p, k))) {
        let name = format!("portal {k} (service {})", p.service);
        if p.endpoints.is_empty() {
            if !rejected.contains(&k) {
                out.push(format!("{name} has no endpoints but is not rejected"));
            }
            if routed.contains_key(&k) {
                out.push(format!("{name} has no endpoints but still leads somewhere"));
            }
            continue;
        }
        let chain = service_chain(p);
        match routed.get(&k) {
            None => {
                out.push(format!("{name} is missing"));
                continue;
            }
            Some(c) if *c != chain => {
                out.push(format!("{name} goes to chain {c}, not {chain}"));
                continue;
            }
            Some(_) => {}
        }
        if k != key_at(p, p.ip) {
            // The chain's targets are checked once, at the portal's own IP.
            continue;
        }
        let mut want: Vec<String> = p
            .endpoints
            .iter()
            .map(|(ip, port)| format!("{ip} . {port}"))
            .collect();
        want.sort();
        let mut have: Vec<String> = chain_targets(listing, &chain);
        have.sort();
        if want != have {
            out.push(format!(
                "{name} leads to [{}], not [{}]",
                have.join(", "),
                want.join(", ")
            ));
        }
    }
    let known: std::collections::BTreeSet<String> = expected.iter().flat_map(keys).collect();
    for k in routed.keys().chain(rejected.iter()) {
        if !known.contains(k) {
            out.push(format!("portal {k} is not a service in etcd"));
        }
    }
    out
}

/// The items of the `elements = { … }` of the block that starts with
/// `head` (e.g. `map services`); the list may span lines.
fn block_elements(listing: &str, head: &str) -> Vec<String> {
    let Some(start) = listing.find(&format!("{head} {{")) else {
        return vec![];
    };
    let block = &listing[start..];
    let block = &block[..block
        .find("\n\t}")
        .or_else(|| block.find("\n  }"))
        .unwrap_or(block.len())];
    let Some(open) = block.find("elements = {") else {
        return vec![];
    };
    let rest = &block[open + "elements = {".len()..];
    let list = &rest[..rest.find('}').unwrap_or(rest.len())];
    list.split(',')
        .map(|item| item.split_whitespace().collect::<Vec<_>>().join(" "))
        .filter(|item| !item.is_empty())
        .collect()
}

/// The `ip . port` targets of a service chain's dnat map.
fn chain_targets(listing: &str, chain: &str) -> Vec<String> {
    let Some(start) = listing.find(&format!("chain {chain} {{")) else {
        return vec![];
    };
    let body = &listing[start..];
    let Some(open) = body.find("map {") else {
        return vec![];
    };
    let rest = &body[open + "map {".len()..];
    rest[..rest.find('}').unwrap_or(rest.len())]
        .split(',')
        .filter_map(|item| {
            item.split_once(':')
                .map(|(_, target)| target.trim().to_string())
        })
        .collect()
}

#[cfg(test)]
mod tests;
