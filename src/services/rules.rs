//! The iptables rules that make portals work, rendered whole as one
//! `iptables-restore --noflush` input: the rule set on a minion is replaced
//! in one transaction per table, never edited rule by rule.
//!
//! nat table:
//! - `KCTL-SERVICES`, jumped to from PREROUTING (traffic from pods and other
//!   machines) and OUTPUT (traffic from the minion itself), matches each
//!   portal and port and jumps to the service's chain;
//! - `KCTL-SVC-<hash>` picks one endpoint per new connection, evenly
//!   (`statistic --mode random` with probability 1/(n-i) for the i-th of n);
//! - `KCTL-SEP-<hash>` DNATs to the endpoint, and marks a connection from a
//!   pod to itself (hairpin) so `KCTL-POSTROUTING` masquerades it: the only
//!   case where the client's address is not kept.
//!
//! filter table: `KCTL-REJECT`, jumped to from OUTPUT and FORWARD, rejects
//! connections to a portal with no endpoints at once.

use crate::model::Protocol;
use crate::state::{short_digest, ClusterState, Endpoint};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::net::Ipv4Addr;

pub const SERVICES_CHAIN: &str = "KCTL-SERVICES";
pub const POSTROUTING_CHAIN: &str = "KCTL-POSTROUTING";
pub const REJECT_CHAIN: &str = "KCTL-REJECT";
const SERVICE_PREFIX: &str = "KCTL-SVC-";
const ENDPOINT_PREFIX: &str = "KCTL-SEP-";
/// The mark bit for hairpin connections, as kube-proxy uses.
const MASQUERADE_MARK: &str = "0x4000/0x4000";

/// Everything the rules of one portal depend on.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Portal {
    pub service: String,
    pub ip: Ipv4Addr,
    pub port: u16,
    pub protocol: Protocol,
    pub endpoints: Vec<(Ipv4Addr, u16)>,
}

/// The portals of a cluster, from its services and their endpoints.
pub fn portals(state: &ClusterState, endpoints: &BTreeMap<String, Vec<Endpoint>>) -> Vec<Portal> {
    state
        .services
        .values()
        .map(|record| Portal {
            service: record.service.id.clone(),
            ip: record.portal_ip,
            port: record.service.port,
            protocol: record.service.protocol,
            endpoints: endpoints
                .get(&record.service.id)
                .map(|eps| eps.iter().map(|e| (e.ip, e.port)).collect())
                .unwrap_or_default(),
        })
        .collect()
}

/// A digest of the rule set: when it matches what a minion last got, the
/// minion needs no visit.
pub fn digest(portals: &[Portal]) -> String {
    let text: String = portals.iter().map(|p| format!("{p:?}\n")).collect();
    short_digest(text.as_bytes())
}

fn service_chain(p: &Portal) -> String {
    let key = format!("{}/{}", p.service, p.protocol.as_lower());
    format!("{SERVICE_PREFIX}{}", &short_digest(key.as_bytes()))
}

fn endpoint_chain(p: &Portal, ip: Ipv4Addr, port: u16) -> String {
    let key = format!("{}/{}/{ip}:{port}", p.service, p.protocol.as_lower());
    format!("{ENDPOINT_PREFIX}{}", &short_digest(key.as_bytes()))
}

/// Chains kctl owns that `iptables-save` output shows, per table.
pub fn existing_chains(save: &str) -> BTreeMap<String, BTreeSet<String>> {
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut table = String::new();
    for line in save.lines() {
        if let Some(t) = line.strip_prefix('*') {
            table = t.trim().to_string();
        } else if let Some(decl) = line.strip_prefix(':') {
            if let Some(chain) = decl.split_whitespace().next() {
                if chain.starts_with("KCTL-") {
                    out.entry(table.clone())
                        .or_default()
                        .insert(chain.to_string());
                }
            }
        }
    }
    out
}

/// True if `save` holds `-A <from> ... -j <to>` in `table`.
fn has_jump(save: &str, table: &str, from: &str, to: &str) -> bool {
    let mut current = "";
    save.lines().any(|line| {
        if let Some(t) = line.strip_prefix('*') {
            current = t.trim();
            return false;
        }
        current == table
            && line.starts_with(&format!("-A {from} "))
            && line.ends_with(&format!("-j {to}"))
    })
}

/// The `iptables-restore --noflush` input that makes a minion's kctl rules
/// exactly `portals`, given what `iptables-save` shows there now: chains
/// kctl no longer needs are flushed and deleted, missing jumps are added.
pub fn render(portals: &[Portal], save: &str) -> String {
    let existing = existing_chains(save);
    let mut nat_chains: BTreeSet<String> = [SERVICES_CHAIN, POSTROUTING_CHAIN]
        .into_iter()
        .map(String::from)
        .collect();
    let mut nat = String::new();
    let mut reject = String::new();
    for p in portals {
        let proto = p.protocol.as_lower();
        let comment = format!("{} portal", p.service);
        if p.endpoints.is_empty() {
            let how = match p.protocol {
                Protocol::Tcp => "tcp-reset",
                Protocol::Udp => "icmp-port-unreachable",
            };
            let _ = writeln!(
                reject,
                "-A {REJECT_CHAIN} -d {}/32 -p {proto} -m {proto} --dport {} -m comment --comment \"{comment} has no endpoints\" -j REJECT --reject-with {how}",
                p.ip, p.port
            );
            continue;
        }
        let svc_chain = service_chain(p);
        nat_chains.insert(svc_chain.clone());
        let _ = writeln!(
            nat,
            "-A {SERVICES_CHAIN} -d {}/32 -p {proto} -m {proto} --dport {} -m comment --comment \"{comment}\" -j {svc_chain}",
            p.ip, p.port
        );
        let n = p.endpoints.len();
        for (i, &(ip, port)) in p.endpoints.iter().enumerate() {
            let ep_chain = endpoint_chain(p, ip, port);
            nat_chains.insert(ep_chain.clone());
            if i + 1 < n {
                let _ = writeln!(
                    nat,
                    "-A {svc_chain} -m statistic --mode random --probability {:.11} -j {ep_chain}",
                    1.0 / (n - i) as f64
                );
            } else {
                let _ = writeln!(nat, "-A {svc_chain} -j {ep_chain}");
            }
            let _ = writeln!(
                nat,
                "-A {ep_chain} -s {ip}/32 -j MARK --set-xmark {MASQUERADE_MARK}"
            );
            let _ = writeln!(
                nat,
                "-A {ep_chain} -p {proto} -m {proto} -j DNAT --to-destination {ip}:{port}"
            );
        }
    }
    let _ = writeln!(
        nat,
        "-A {POSTROUTING_CHAIN} -m mark --mark {MASQUERADE_MARK} -j MASQUERADE"
    );

    let mut out = String::from("*nat\n");
    declare(&mut out, &nat_chains, existing.get("nat"));
    out.push_str(&nat);
    for (from, to) in [
        ("PREROUTING", SERVICES_CHAIN),
        ("OUTPUT", SERVICES_CHAIN),
        ("POSTROUTING", POSTROUTING_CHAIN),
    ] {
        if !has_jump(save, "nat", from, to) {
            let _ = writeln!(out, "-I {from} 1 -j {to}");
        }
    }
    out.push_str("COMMIT\n*filter\n");
    let filter_chains: BTreeSet<String> = [REJECT_CHAIN.to_string()].into();
    declare(&mut out, &filter_chains, existing.get("filter"));
    out.push_str(&reject);
    for from in ["OUTPUT", "FORWARD"] {
        if !has_jump(save, "filter", from, REJECT_CHAIN) {
            let _ = writeln!(out, "-I {from} 1 -j {REJECT_CHAIN}");
        }
    }
    out.push_str("COMMIT\n");
    out
}

/// Declares (and so flushes) every wanted chain, and flushes and deletes
/// every kctl chain that exists but is no longer wanted. The bootstrap's
/// own filter chain is not the services' business and is left alone.
fn declare(out: &mut String, wanted: &BTreeSet<String>, existing: Option<&BTreeSet<String>>) {
    let stale: Vec<&String> = existing
        .into_iter()
        .flatten()
        .filter(|c| !wanted.contains(*c))
        .filter(|c| c.starts_with(SERVICE_PREFIX) || c.starts_with(ENDPOINT_PREFIX))
        .collect();
    for chain in wanted.iter().chain(stale.iter().copied()) {
        let _ = writeln!(out, ":{chain} - [0:0]");
    }
    for chain in stale {
        let _ = writeln!(out, "-X {chain}");
    }
}

#[cfg(test)]
mod tests;
