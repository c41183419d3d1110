//! etcd on the machines that host it (ssh and gce providers): one member
//! on each, a service like the node helper, reachable from the cluster's
//! machines and from loopback (the workstation's SSH tunnel) and from
//! nowhere else; members talk to each other on the peer port, which only
//! the other members may reach.

use super::service::{self, Service};
use super::setup::{install_credentials, CredentialFiles};
use crate::argv;
use crate::cluster::{EtcdHost, ETCD_CLIENT_PORT, ETCD_PEER_PORT};
use crate::exec::{Exec, ExecError};
use crate::pki::{Credentials, MemberCredentials};
use std::net::Ipv4Addr;

/// Debian's `etcd-server` puts it here.
pub const ETCD_PROGRAM: &str = "/usr/bin/etcd";
/// The INPUT chain that keeps etcd's port to the cluster.
pub const ETCD_CHAIN: &str = "KCTL-ETCD";

/// Where a member's certificates and keys are: one pair to serve
/// clients, one to speak with its peers.
pub struct MemberFiles {
    pub cert: String,
    pub key: String,
    pub peer_cert: String,
    pub peer_key: String,
}

impl MemberFiles {
    /// On an etcd host, in its `tls/` directory.
    pub fn in_dir(tls: &str) -> MemberFiles {
        MemberFiles {
            cert: format!("{tls}/etcd.crt"),
            key: format!("{tls}/etcd.key"),
            peer_cert: format!("{tls}/peer.crt"),
            peer_key: format!("{tls}/peer.key"),
        }
    }

    /// On the workstation, where the local provider's members run.
    pub fn in_pki(pki: &crate::pki::ClusterPki, member: &crate::pki::EtcdMember) -> MemberFiles {
        let path = |p: std::path::PathBuf| p.display().to_string();
        MemberFiles {
            cert: path(pki.cert_file(&member.server_stem())),
            key: path(pki.key_file(&member.server_stem())),
            peer_cert: path(pki.cert_file(&member.peer_stem())),
            peer_key: path(pki.key_file(&member.peer_stem())),
        }
    }
}

/// The flags that make etcd speak only TLS, to clients and peers alike,
/// and admit only those with a certificate from the cluster's CA that the
/// revocation list `crl` does not name (etcd reads it at every client
/// connection); on the peer port, only a member's peer certificate.
pub fn tls_flags(ca: &str, files: &MemberFiles, crl: &str) -> Vec<String> {
    argv![
        "--cert-file",
        &files.cert,
        "--key-file",
        &files.key,
        "--client-cert-auth",
        "--trusted-ca-file",
        ca,
        "--client-crl-file",
        crl,
        "--peer-cert-file",
        &files.peer_cert,
        "--peer-key-file",
        &files.peer_key,
        "--peer-client-cert-auth",
        "--peer-trusted-ca-file",
        ca,
        "--peer-cert-allowed-cn",
        crate::pki::ETCD_PEER_NAME
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

/// Where the cluster's certificate revocation list is on an etcd host.
pub fn crl_path(host: &EtcdHost) -> String {
    format!("{}/{}", tls_dir(host), crate::pki::CRL_FILE)
}

/// Puts the revocation list `crl` (PEM) on the etcd host, unless it is
/// there already. etcd needs no restart: it reads the file at every
/// client connection. True if it was written.
pub async fn install_revocations<E: Exec>(
    exec: &E,
    host: &EtcdHost,
    crl: &str,
) -> Result<bool, ExecError> {
    install_private_file(exec, &crl_path(host), crl).await
}

/// Writes `text` to `path` (mode 0600), unless it holds that already.
/// True if it was written.
async fn install_private_file<E: Exec>(
    exec: &E,
    path: &str,
    text: &str,
) -> Result<bool, ExecError> {
    let have = exec.run(&argv!["cat", path], None).await?;
    if have.success() && have.stdout == text.as_bytes() {
        return Ok(false);
    }
    let write = argv!["install", "-D", "-m", "0600", "/dev/stdin", path];
    exec.run(&write, Some(text.as_bytes()))
        .await?
        .check(exec.target(), &write)?;
    Ok(true)
}

/// Where the CA's key is on an etcd host, for the renewal signer.
fn ca_key_path(host: &EtcdHost) -> String {
    format!("{}/ca.key", tls_dir(host))
}

/// The renewal signer beside `host`'s etcd member (`kctl-node sign`): it
/// signs the helpers' certificate renewals with the CA, through the
/// member on this machine.
pub fn signer_service(cluster: &str, host: &EtcdHost) -> Service {
    let dir = host.dir.trim_end_matches('/');
    let tls = tls_dir(host);
    Service {
        unit: format!("kctl-signer-{cluster}"),
        description: format!("certificate renewals of kctl cluster {cluster}"),
        program: format!("{dir}/kctl-node"),
        args: argv![
            "sign",
            "--cluster",
            cluster,
            "--etcd",
            format!("https://127.0.0.1:{ETCD_CLIENT_PORT}"),
            "--ca-cert",
            format!("{tls}/ca.crt"),
            "--ca-key",
            ca_key_path(host)
        ],
        pid_file: format!("{dir}/signer.pid"),
        log_file: format!("{dir}/signer.log"),
        after: vec![format!("kctl-etcd-{cluster}.service")],
        pre_start: vec![],
        supervisor: Some(format!("{dir}/kctl-node")),
    }
}

/// What an etcd member trusts and is trusted by: its certificate and key
/// with the CA's, and the CA's revocation list; and the CA's key, for the
/// renewal signer beside it.
#[derive(Clone, Copy)]
pub struct EtcdTrust<'a> {
    pub credentials: &'a MemberCredentials,
    pub revocations: &'a str,
    pub ca_key: &'a str,
}

/// etcd's member name for `host`. One member keeps the name it always
/// had, so clusters made before `--masters` keep their data as it is.
pub fn member_name(cluster: &str, host: &EtcdHost, members: &[EtcdHost]) -> String {
    if members.len() <= 1 {
        format!("kctl-{cluster}")
    } else {
        format!("kctl-{cluster}-{}", host.name)
    }
}

/// The service of `host`'s member of the etcd made of `members` (all of
/// them, `host` among them).
pub fn etcd_service(cluster: &str, host: &EtcdHost, members: &[EtcdHost]) -> Service {
    let dir = host.dir.trim_end_matches('/');
    let tls = tls_dir(host);
    let name = member_name(cluster, host, members);
    let alone = members.len() <= 1;
    // One member talks to no peer: its peer port stays on loopback.
    let peer = if alone {
        format!("https://127.0.0.1:{ETCD_PEER_PORT}")
    } else {
        host.peer_url()
    };
    let initial_cluster = if alone {
        format!("{name}={peer}")
    } else {
        members
            .iter()
            .map(|m| format!("{}={}", member_name(cluster, m, members), m.peer_url()))
            .collect::<Vec<_>>()
            .join(",")
    };
    let mut args = argv![
        "--name",
        name,
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
        peer,
        "--initial-cluster",
        initial_cluster,
        "--initial-cluster-state",
        // Read only while the data directory is empty: a member that
        // replaced a lost one joins the running cluster.
        if host.joined { "existing" } else { "new" }
    ];
    if alone {
        args.extend(single_member_flags());
    } else {
        args.extend(member_flags());
    }
    args.extend(tls_flags(
        &format!("{tls}/ca.crt"),
        &MemberFiles::in_dir(&tls),
        &crl_path(host),
    ));
    Service {
        unit: format!("kctl-etcd-{cluster}"),
        description: format!("etcd of kctl cluster {cluster}"),
        program: ETCD_PROGRAM.into(),
        args,
        pid_file: format!("{dir}/etcd.pid"),
        log_file: format!("{dir}/etcd.log"),
        after: vec![],
        // A reboot wipes the chain that keeps etcd's ports to the cluster,
        // and a master runs no helper to put it back: etcd does, before it
        // listens. Deleting the jump first keeps exactly one.
        pre_start: vec![
            (
                false,
                argv![
                    "/usr/sbin/iptables-restore",
                    "--wait",
                    "--noflush",
                    firewall_file(host)
                ],
            ),
            (true, with_program("/usr/sbin/iptables", jump("--delete"))),
            (false, with_program("/usr/sbin/iptables", jump("--insert"))),
        ],
        supervisor: Some(format!("{dir}/kctl-node")),
    }
}

/// etcd's own defaults, for a member of several: peers on loaded or small
/// machines must not call an election for one slow heartbeat.
pub fn member_flags() -> Vec<String> {
    argv!["--heartbeat-interval", "100", "--election-timeout", "1000"]
}

/// `iptables-restore --noflush` input for the chain that admits etcd's
/// client port from the minions, the other members and loopback only, and
/// its peer port from the other members only. Declaring the chain flushes
/// it, so a changed list replaces the rules whole.
pub fn etcd_firewall(minions: &[Ipv4Addr], members: &[Ipv4Addr]) -> String {
    let mut rules = format!("*filter\n:{ETCD_CHAIN} - [0:0]\n");
    rules.push_str(&format!("-A {ETCD_CHAIN} -i lo -j RETURN\n"));
    let mut clients: Vec<Ipv4Addr> = minions.to_vec();
    clients.extend(members.iter().filter(|ip| !minions.contains(ip)));
    for ip in clients {
        rules.push_str(&format!(
            "-A {ETCD_CHAIN} -s {ip}/32 -p tcp --dport {ETCD_CLIENT_PORT} -j RETURN\n"
        ));
    }
    if members.len() > 1 {
        for ip in members {
            rules.push_str(&format!(
                "-A {ETCD_CHAIN} -s {ip}/32 -p tcp --dport {ETCD_PEER_PORT} -j RETURN\n"
            ));
        }
    }
    for port in [ETCD_CLIENT_PORT, ETCD_PEER_PORT] {
        rules.push_str(&format!(
            "-A {ETCD_CHAIN} -p tcp --dport {port} -j REJECT --reject-with tcp-reset\n"
        ));
    }
    rules.push_str("COMMIT\n");
    rules
}

/// Where etcd's firewall rules are kept on its host, for its unit to
/// restore at each start.
pub fn firewall_file(host: &EtcdHost) -> String {
    format!("{}/firewall.rules", host.dir.trim_end_matches('/'))
}

/// `argv` with its program named by absolute path (systemd's ExecStartPre).
fn with_program(program: &str, mut argv: Vec<String>) -> Vec<String> {
    argv[0] = program.to_string();
    argv
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

/// The cluster addresses of etcd's members.
pub fn member_ips(members: &[EtcdHost]) -> Vec<Ipv4Addr> {
    members.iter().map(|m| m.ip).collect()
}

/// Makes sure `host`'s member of the etcd of `members` runs, guarded by
/// its firewall chain, serving TLS with `credentials` (the CA's
/// certificate, etcd's own and its key). Without systemd, `binary`
/// (kctl-node) is uploaded beside etcd's data to supervise it. A member of
/// several serves only once a majority runs: start them all before waiting
/// on any. Returns true if anything changed.
pub async fn install_etcd<E: Exec>(
    exec: &E,
    cluster: &str,
    host: &EtcdHost,
    members: &[EtcdHost],
    minions: &[Ipv4Addr],
    trust: EtcdTrust<'_>,
    binary: &std::path::Path,
) -> Result<bool, ExecError> {
    let EtcdTrust {
        credentials,
        revocations,
        ca_key,
    } = trust;
    exec.run_ok(&argv!["mkdir", "-p", host.dir.clone()]).await?;
    let mut changed = install_etcd_firewall(exec, host, minions, &member_ips(members)).await?;
    let tls = tls_dir(host);
    let member = MemberFiles::in_dir(&tls);
    let ca = format!("{tls}/ca.crt");
    let server = CredentialFiles {
        ca: ca.clone(),
        cert: member.cert,
        key: member.key,
    };
    let peer = CredentialFiles {
        ca,
        cert: member.peer_cert,
        key: member.peer_key,
    };
    let peer_credentials = Credentials {
        ca: credentials.server.ca.clone(),
        own: credentials.peer.clone(),
    };
    let certificates_changed = install_credentials(exec, &server, &credentials.server).await?
        | install_credentials(exec, &peer, &peer_credentials).await?;
    // Before etcd (re)starts: it refuses every client without the file.
    changed |= install_revocations(exec, host, revocations).await?;
    let systemd = service::has_systemd(exec).await?;
    let service = etcd_service(cluster, host, members);
    let signer = signer_service(cluster, host);
    // etcd's supervisor (without systemd) and the signer.
    let binary_changed = super::setup::upload_if_different(exec, binary, &signer.program).await?;
    changed |= certificates_changed;
    changed |= service::ensure_running(exec, &service, systemd, certificates_changed).await?;
    let ca_key_changed = install_private_file(exec, &ca_key_path(host), ca_key).await?;
    changed |= binary_changed | ca_key_changed;
    changed |= service::ensure_running(
        exec,
        &signer,
        systemd,
        binary_changed || ca_key_changed || certificates_changed,
    )
    .await?;
    Ok(changed)
}

/// Puts etcd's firewall chain in place (made anew from `minions` and the
/// `members`' addresses) and jumped to from INPUT. Run by `up`, and by the
/// helper on an etcd host when it starts, since a reboot wipes it. True if
/// the jump was missing.
pub async fn install_etcd_firewall<E: Exec>(
    exec: &E,
    host: &EtcdHost,
    minions: &[Ipv4Addr],
    members: &[Ipv4Addr],
) -> Result<bool, ExecError> {
    let rules = etcd_firewall(minions, members);
    let restore = argv!["iptables-restore", "--wait", "--noflush"];
    exec.run(&restore, Some(rules.as_bytes()))
        .await?
        .check(exec.target(), &restore)?;
    let keep = argv![
        "install",
        "-D",
        "-m",
        "0600",
        "/dev/stdin",
        firewall_file(host)
    ];
    exec.run(&keep, Some(rules.as_bytes()))
        .await?
        .check(exec.target(), &keep)?;
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

/// Stops `host`'s etcd member and removes its firewall chain (its data
/// goes with the state directory). Returns what was removed, for `down` to
/// report.
pub async fn remove_etcd<E: Exec>(
    exec: &E,
    cluster: &str,
    host: &EtcdHost,
    members: &[EtcdHost],
) -> Result<Vec<String>, ExecError> {
    let mut removed = vec![];
    let systemd = service::has_systemd(exec).await?;
    if service::remove(exec, &signer_service(cluster, host), systemd).await? {
        removed.push("the certificate renewal signer".to_string());
    }
    if service::remove(exec, &etcd_service(cluster, host, members), systemd).await? {
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
            joined: false,
        }
    }

    fn trio() -> Vec<EtcdHost> {
        (1..=3)
            .map(|i| EtcdHost {
                name: format!("minion-{i}"),
                ssh_host: format!("10.150.0.1{i}"),
                ip: format!("10.150.0.1{i}").parse().unwrap(),
                joined: i == 3,
                ..host()
            })
            .collect()
    }

    #[test]
    fn members_of_three_meet_on_their_cluster_addresses() {
        let members = trio();
        let s = etcd_service("c1", &members[1], &members);
        let args = s.args.join(" ");
        assert!(args.contains("--name kctl-c1-minion-2 "), "{args}");
        assert!(args.contains("--listen-peer-urls https://10.150.0.12:7001 "));
        assert!(args.contains("--initial-advertise-peer-urls https://10.150.0.12:7001 "));
        assert!(args.contains(
            "--initial-cluster kctl-c1-minion-1=https://10.150.0.11:7001,kctl-c1-minion-2=https://10.150.0.12:7001,kctl-c1-minion-3=https://10.150.0.13:7001 "
        ));
        assert!(args.contains("--initial-cluster-state new "));
        assert!(args.contains("--election-timeout 1000"));
        assert!(args.contains("--peer-client-cert-auth"));
        // The member that replaced a lost one joins the running cluster.
        let joined = etcd_service("c1", &members[2], &members).args.join(" ");
        assert!(
            joined.contains("--initial-cluster-state existing "),
            "{joined}"
        );
        // One member keeps its old name and loopback peer port.
        let alone = etcd_service("c1", &host(), &[host()]).args.join(" ");
        assert!(alone.contains("--name kctl-c1 "));
        assert!(alone.contains("--initial-cluster kctl-c1=https://127.0.0.1:7001 "));
    }

    #[test]
    fn etcd_listens_on_the_cluster_address_and_loopback_only() {
        let s = etcd_service("c1", &host(), &[host()]);
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
        // Peers only with a member's peer certificate, not its server one
        // nor a minion's.
        let allowed = s.args.iter().position(|a| a == "--peer-cert-allowed-cn");
        assert_eq!(allowed.map(|i| s.args[i + 1].as_str()), Some("etcd"));
        assert!(!args.contains("http://"));
        assert!(args.contains("--data-dir /var/lib/kctl/c1/etcd/data"));
        assert_eq!(s.pid_file, "/var/lib/kctl/c1/etcd/etcd.pid");
        assert_eq!(s.unit, "kctl-etcd-c1");
        // Its guard comes back before it listens, after a reboot too.
        let unit = s.systemd_unit();
        assert!(unit.contains(
            "ExecStartPre=/usr/sbin/iptables-restore --wait --noflush /var/lib/kctl/c1/etcd/firewall.rules\n\
             ExecStartPre=-/usr/sbin/iptables --wait --delete INPUT --jump KCTL-ETCD\n\
             ExecStartPre=/usr/sbin/iptables --wait --insert INPUT --jump KCTL-ETCD\n\
             ExecStart=/usr/bin/etcd "
        ), "{unit}");
    }

    #[test]
    fn nft_rule_lines_are_told_from_framing() {
        let listed = "table ip filter {\n\tchain INPUT {\n\t\ttype filter hook input priority filter; policy accept;\n\t}\n}\n";
        assert!(!listed.lines().any(is_nft_rule));
        assert!(is_nft_rule("\t\tcounter packets 0 bytes 0 jump KCTL-ETCD"));
    }

    #[test]
    fn firewall_admits_minions_and_loopback_then_rejects() {
        let minions = [
            "10.150.0.11".parse().unwrap(),
            "10.150.0.12".parse().unwrap(),
        ];
        let rules = etcd_firewall(&minions, &minions[..1]);
        let lines: Vec<&str> = rules.lines().collect();
        assert_eq!(lines[1], ":KCTL-ETCD - [0:0]");
        assert_eq!(lines[2], "-A KCTL-ETCD -i lo -j RETURN");
        assert!(lines[3].starts_with("-A KCTL-ETCD -s 10.150.0.11/32 -p tcp --dport 4001"));
        assert!(lines[5].contains("--dport 4001 -j REJECT"), "{rules}");
        assert!(lines[6].contains("--dport 7001 -j REJECT"), "{rules}");
        assert_eq!(lines[7], "COMMIT");
    }

    #[test]
    fn firewall_admits_peers_to_the_peer_port_only_from_members() {
        // GCE: the masters are not minions.
        let minions: Vec<Ipv4Addr> = vec!["10.240.0.3".parse().unwrap()];
        let masters: Vec<Ipv4Addr> = ["10.240.0.10", "10.240.0.11", "10.240.0.12"]
            .iter()
            .map(|ip| ip.parse().unwrap())
            .collect();
        let rules = etcd_firewall(&minions, &masters);
        for ip in &masters {
            assert!(rules.contains(&format!("-s {ip}/32 -p tcp --dport 4001 -j RETURN")));
            assert!(rules.contains(&format!("-s {ip}/32 -p tcp --dport 7001 -j RETURN")));
        }
        assert!(!rules.contains("-s 10.240.0.3/32 -p tcp --dport 7001"));
        let peer_reject = rules.find("--dport 7001 -j REJECT").unwrap();
        assert!(rules.rfind("--dport 7001 -j RETURN").unwrap() < peer_reject);
    }
}
