//! etcd on the machine that hosts it (ssh and gce providers): one member,
//! a service like the node helper, reachable from the cluster's minions
//! and from loopback (the workstation's SSH tunnel) and from nowhere else.

use super::service::{self, Service};
use super::setup::{install_credentials, CredentialFiles};
use crate::argv;
use crate::cluster::{EtcdHost, ETCD_CLIENT_PORT, ETCD_PEER_PORT};
use crate::exec::{Exec, ExecError};
use crate::pki::Credentials;
use std::net::Ipv4Addr;

/// Debian's `etcd-server` puts it here.
pub const ETCD_PROGRAM: &str = "/usr/bin/etcd";
/// The INPUT chain that keeps etcd's port to the cluster.
pub const ETCD_CHAIN: &str = "KCTL-ETCD";

/// The flags that make etcd speak only TLS, to clients and peers alike,
/// and admit only those with a certificate from the cluster's CA.
pub fn tls_flags(ca: &str, cert: &str, key: &str) -> Vec<String> {
    argv![
        "--cert-file",
        cert,
        "--key-file",
        key,
        "--client-cert-auth",
        "--trusted-ca-file",
        ca,
        "--peer-cert-file",
        cert,
        "--peer-key-file",
        key,
        "--peer-client-cert-auth",
        "--peer-trusted-ca-file",
        ca
    ]
}

/// etcd is one member on one machine, with no peer to wait for: a short
/// election timeout lets a restarted etcd lead, and so serve, in a fraction
/// of the default's second.
pub fn single_member_flags() -> Vec<String> {
    argv!["--heartbeat-interval", "25", "--election-timeout", "250"]
}

/// Where etcd's certificate, key and the CA's certificate are on its host.
pub fn tls_dir(host: &EtcdHost) -> String {
    format!("{}/tls", host.dir.trim_end_matches('/'))
}

pub fn etcd_service(cluster: &str, host: &EtcdHost) -> Service {
    let dir = host.dir.trim_end_matches('/');
    let tls = tls_dir(host);
    let peer = format!("https://127.0.0.1:{ETCD_PEER_PORT}");
    let name = format!("kctl-{cluster}");
    let mut args = argv![
        "--name",
        name.clone(),
        "--data-dir",
        format!("{dir}/data"),
        "--listen-client-urls",
        format!(
            "https://{}:{ETCD_CLIENT_PORT},https://127.0.0.1:{ETCD_CLIENT_PORT}",
            host.ip
        ),
        "--advertise-client-urls",
        host.endpoint(),
        "--listen-peer-urls",
        peer.clone(),
        "--initial-advertise-peer-urls",
        peer.clone(),
        "--initial-cluster",
        format!("{name}={peer}"),
        "--initial-cluster-state",
        "new"
    ];
    args.extend(single_member_flags());
    args.extend(tls_flags(
        &format!("{tls}/ca.crt"),
        &format!("{tls}/etcd.crt"),
        &format!("{tls}/etcd.key"),
    ));
    Service {
        unit: format!("kctl-etcd-{cluster}"),
        description: format!("etcd of kctl cluster {cluster}"),
        program: ETCD_PROGRAM.into(),
        args,
        pid_file: format!("{dir}/etcd.pid"),
        log_file: format!("{dir}/etcd.log"),
        after: vec![],
        supervisor: Some(format!("{dir}/kctl-node")),
    }
}

/// `iptables-restore --noflush` input for the chain that admits etcd's
/// client port from the minions and loopback only. Declaring the chain
/// flushes it, so a changed minion list replaces the rules whole.
pub fn etcd_firewall(minions: &[Ipv4Addr]) -> String {
    let port = ETCD_CLIENT_PORT;
    let mut rules = format!("*filter\n:{ETCD_CHAIN} - [0:0]\n");
    rules.push_str(&format!("-A {ETCD_CHAIN} -i lo -j RETURN\n"));
    for ip in minions {
        rules.push_str(&format!(
            "-A {ETCD_CHAIN} -s {ip}/32 -p tcp --dport {port} -j RETURN\n"
        ));
    }
    rules.push_str(&format!(
        "-A {ETCD_CHAIN} -p tcp --dport {port} -j REJECT --reject-with tcp-reset\n"
    ));
    rules.push_str("COMMIT\n");
    rules
}

fn input_chain_argv(op: &str) -> Vec<String> {
    argv!["nft", op, "chain", "ip", "filter", "INPUT"]
}

fn input_marker(host: &EtcdHost) -> String {
    format!(
        "{}/input-chain-made-by-kctl",
        host.dir.trim_end_matches('/')
    )
}

pub(crate) fn jump(op: &str) -> Vec<String> {
    argv!["iptables", "--wait", op, "INPUT", "--jump", ETCD_CHAIN]
}

/// Makes sure etcd runs on `host`, guarded by its firewall chain, serving
/// TLS with `credentials` (the CA's certificate, etcd's own and its key).
/// Without systemd, `binary` (kctl-node) is uploaded beside etcd's data to
/// supervise it. Returns true if anything changed.
pub async fn install_etcd<E: Exec>(
    exec: &E,
    cluster: &str,
    host: &EtcdHost,
    minions: &[Ipv4Addr],
    credentials: &Credentials,
    binary: &std::path::Path,
) -> Result<bool, ExecError> {
    exec.run_ok(&argv!["mkdir", "-p", host.dir.clone()]).await?;
    let mut changed = install_etcd_firewall(exec, host, minions).await?;
    let tls = tls_dir(host);
    let files = CredentialFiles {
        ca: format!("{tls}/ca.crt"),
        cert: format!("{tls}/etcd.crt"),
        key: format!("{tls}/etcd.key"),
    };
    let certificates_changed = install_credentials(exec, &files, credentials).await?;
    let systemd = service::has_systemd(exec).await?;
    let service = etcd_service(cluster, host);
    if !systemd {
        if let Some(supervisor) = &service.supervisor {
            changed |= super::setup::upload_if_different(exec, binary, supervisor).await?;
        }
    }
    changed |= certificates_changed;
    changed |= service::ensure_running(exec, &service, systemd, certificates_changed).await?;
    Ok(changed)
}

/// Puts etcd's firewall chain in place (made anew from `minions`) and
/// jumped to from INPUT. Run by `up`, and by the helper on the etcd host
/// when it starts, since a reboot wipes it. True if the jump was missing.
pub async fn install_etcd_firewall<E: Exec>(
    exec: &E,
    host: &EtcdHost,
    minions: &[Ipv4Addr],
) -> Result<bool, ExecError> {
    let restore = argv!["iptables-restore", "--wait", "--noflush"];
    exec.run(&restore, Some(etcd_firewall(minions).as_bytes()))
        .await?
        .check(exec.target(), &restore)?;
    if exec.run(&jump("--check"), None).await?.success() {
        return Ok(false);
    }
    // With iptables-nft the INPUT base chain exists only once a rule needs
    // it; if kctl's jump is what makes it, `down` removes it.
    let had_input = exec.run(&input_chain_argv("list"), None).await?;
    if !had_input.success() && had_input.stderr_text().contains("No such file") {
        exec.run_ok(&argv!["touch", input_marker(host)]).await?;
    }
    exec.run_ok(&jump("--insert")).await?;
    Ok(true)
}

/// Stops etcd, deletes its data and its firewall chain. Returns what was
/// removed, for `down` to report.
pub async fn remove_etcd<E: Exec>(
    exec: &E,
    cluster: &str,
    host: &EtcdHost,
) -> Result<Vec<String>, ExecError> {
    let mut removed = vec![];
    let systemd = service::has_systemd(exec).await?;
    if service::remove(exec, &etcd_service(cluster, host), systemd).await? {
        removed.push("etcd".to_string());
    }
    if super::teardown::remove_chain(exec, "filter", ETCD_CHAIN, jump).await? {
        removed.push(format!("iptables chain {ETCD_CHAIN}"));
    }
    let made_input = exec
        .run(&argv!["test", "-e", input_marker(host)], None)
        .await?
        .success();
    if made_input {
        let input = exec.run(&input_chain_argv("list"), None).await?;
        // Only an empty chain: rules added since are someone else's.
        let empty = input.success() && !input.stdout_text().lines().any(is_nft_rule);
        if empty {
            exec.run_ok(&input_chain_argv("delete")).await?;
            removed.push("empty nftables chain ip filter INPUT".into());
        }
    }
    Ok(removed)
}

/// A rule line in `nft list chain` output (not the table/chain framing or
/// the chain's `type … hook … policy` line).
fn is_nft_rule(line: &str) -> bool {
    let l = line.trim();
    !(l.is_empty()
        || l == "}"
        || l.starts_with("table ")
        || l.starts_with("chain ")
        || l.starts_with("type "))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host() -> EtcdHost {
        EtcdHost {
            name: "minion-1".into(),
            ssh_host: "10.150.0.11".into(),
            ssh_port: 22,
            ssh_user: "root".into(),
            ip: "10.150.0.11".parse().unwrap(),
            dir: "/var/lib/kctl/c1/etcd/".into(),
        }
    }

    #[test]
    fn etcd_listens_on_the_cluster_address_and_loopback_only() {
        let s = etcd_service("c1", &host());
        let args = s.args.join(" ");
        assert!(
            args.contains("--listen-client-urls https://10.150.0.11:4001,https://127.0.0.1:4001")
        );
        assert!(args.contains("--listen-peer-urls https://127.0.0.1:7001"));
        // TLS only, and only clients with a certificate of the cluster's CA.
        assert!(args.contains(
            "--cert-file /var/lib/kctl/c1/etcd/tls/etcd.crt --key-file /var/lib/kctl/c1/etcd/tls/etcd.key --client-cert-auth --trusted-ca-file /var/lib/kctl/c1/etcd/tls/ca.crt"
        ));
        assert!(args.contains("--peer-client-cert-auth"));
        assert!(!args.contains("http://"));
        assert!(args.contains("--data-dir /var/lib/kctl/c1/etcd/data"));
        assert_eq!(s.pid_file, "/var/lib/kctl/c1/etcd/etcd.pid");
        assert_eq!(s.unit, "kctl-etcd-c1");
    }

    #[test]
    fn nft_rule_lines_are_told_from_framing() {
        let listed = "table ip filter {\n\tchain INPUT {\n\t\ttype filter hook input priority filter; policy accept;\n\t}\n}\n";
        assert!(!listed.lines().any(is_nft_rule));
        assert!(is_nft_rule("\t\tcounter packets 0 bytes 0 jump KCTL-ETCD"));
    }

    #[test]
    fn firewall_admits_minions_and_loopback_then_rejects() {
        let rules = etcd_firewall(&[
            "10.150.0.11".parse().unwrap(),
            "10.150.0.12".parse().unwrap(),
        ]);
        let lines: Vec<&str> = rules.lines().collect();
        assert_eq!(lines[1], ":KCTL-ETCD - [0:0]");
        assert_eq!(lines[2], "-A KCTL-ETCD -i lo -j RETURN");
        assert!(lines[3].starts_with("-A KCTL-ETCD -s 10.150.0.11/32 -p tcp --dport 4001"));
        assert!(lines[5].contains("-j REJECT"), "reject comes last: {rules}");
        assert_eq!(lines[6], "COMMIT");
    }
}
