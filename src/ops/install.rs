//! Installing kctl on a cluster's machines, whichever provider made them:
//! etcd on its host, then every minion bootstrapped and given its helper in
//! parallel over SSH, then registered in etcd; done when every helper
//! heartbeats. `up` of every provider and `minion start` end here.

use super::{report, Cluster};
use crate::argv;
use crate::bootstrap::{self, etcd};
use crate::cluster::{ClusterConfig, EtcdHost};
use crate::exec::Exec;
use crate::pki::{Credentials, EtcdMember, MemberCredentials, Renewed};
use crate::ssh::SshExec;
use crate::state::MinionRecord;
use crate::ui::Ui;
use futures::future::join_all;
use std::time::Duration;

/// How long a freshly started helper may take to heartbeat. Generous:
/// small cloud VMs are slow.
const HEARTBEAT_WAIT: Duration = Duration::from_secs(30);

/// The cluster's etcd members as their certificates name them: the etcd
/// host's name, or on this machine (the local provider) the member's
/// number.
pub fn etcd_members(config: &ClusterConfig) -> Vec<EtcdMember> {
    if !config.etcd_hosts.is_empty() {
        return config.etcd_hosts.iter().map(etcd_member).collect();
    }
    // The local provider's members share this machine: one dialing
    // another speaks from the other's address (the kernel picks a local
    // destination as the source), and etcd checks a peer's certificate
    // against the address it comes from. So each names all of them.
    let all: Vec<std::net::IpAddr> = config
        .etcd_endpoints
        .iter()
        .filter_map(|e| crate::cluster::endpoint_addr(e))
        .map(|a| std::net::IpAddr::V4(*a.ip()))
        .collect();
    (1..=all.len())
        .map(|member| EtcdMember {
            name: member.to_string(),
            ips: all.clone(),
        })
        .collect()
}

fn etcd_member(host: &EtcdHost) -> EtcdMember {
    EtcdMember {
        name: host.name.clone(),
        ips: vec![std::net::IpAddr::V4(host.ip)],
    }
}

/// Makes the cluster's CA and certificates, or renews those that need it.
/// Returns what it made.
pub fn ensure_certificates(ui: &Ui, cluster: &Cluster) -> miette::Result<Renewed> {
    let config = &cluster.config;
    if !config.etcd_tls() {
        return Ok(Renewed::default());
    }
    let task = ui.task("certificates");
    let minions: Vec<String> = config.minions.iter().map(|m| m.id.clone()).collect();
    let renewed = cluster.dir.pki().ensure(
        &config.name,
        &etcd_members(config),
        &minions,
        time::OffsetDateTime::now_utc(),
    )?;
    task.done(if renewed.made.is_empty() {
        "certificates valid".to_string()
    } else {
        let made: Vec<String> = renewed
            .made
            .iter()
            .map(|(stem, why)| format!("{stem} ({why})"))
            .collect();
        format!("made certificates: {}", made.join(", "))
    });
    Ok(renewed)
}

fn member_names(members: &[EtcdHost]) -> String {
    members
        .iter()
        .map(|m| m.name.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Installs etcd's members on their hosts: a new etcd all at once (a
/// member of several serves only once a majority of them runs), one that
/// has served member by member (see below).
async fn install_etcd_members(
    ui: &Ui,
    cluster: &Cluster,
    binary: &std::path::Path,
) -> miette::Result<bool> {
    let config = &cluster.config;
    let members = &config.etcd_hosts;
    let task = ui.task(match members.len() {
        1 => format!("etcd on {}", members[0].name),
        n => format!("etcd of {n} members on {}", member_names(members)),
    });
    let minion_ips: Vec<_> = config.minions.iter().map(|m| m.host_ip).collect();
    let pki = cluster.dir.pki();
    let credentials: Vec<MemberCredentials> = members
        .iter()
        .map(|host| pki.etcd_member(&etcd_member(host)))
        .collect::<Result<_, _>>()?;
    let revocations = read_revocations(cluster)?;
    let ca_key = pki.ca_key()?;
    let install_one = |index: usize| {
        install_member(
            cluster,
            &members[index],
            &minion_ips,
            etcd::EtcdTrust {
                credentials: &credentials[index],
                revocations: &revocations,
                ca_key: &ca_key,
            },
            binary,
        )
    };
    let mut changed = false;
    let mut failures = vec![];
    if members.len() > 1 && cluster.dir.etcd_served() {
        // A running etcd: one member at a time, each serving again before
        // the next restarts (a new certificate, a changed unit), so the
        // cluster keeps its quorum.
        for (index, host) in members.iter().enumerate() {
            match install_one(index).await {
                Ok(false) => {}
                Ok(true) => {
                    changed = true;
                    if !member_serves(cluster, index).await {
                        ui.warn(format!(
                            "etcd member on {} does not serve yet; going on with the others",
                            host.name
                        ));
                    }
                }
                Err(e) => failures.push(format!("etcd on {}: {e}", host.name)),
            }
        }
    } else {
        // A member of several serves only once a majority runs: all at once.
        let installs = (0..members.len()).map(install_one);
        for (host, result) in members.iter().zip(join_all(installs).await) {
            match result {
                Ok(c) => changed |= c,
                Err(e) => failures.push(format!("etcd on {}: {e}", host.name)),
            }
        }
    }
    if !failures.is_empty() {
        task.fail("etcd could not be installed");
        return Err(miette::miette!("{}", failures.join("\n")));
    }
    task.done(match members.len() {
        1 => format!("etcd at {} on {}", members[0].endpoint(), members[0].name),
        n => format!("etcd of {n} members on {}", member_names(members)),
    });
    Ok(changed)
}

async fn install_member(
    cluster: &Cluster,
    host: &EtcdHost,
    minion_ips: &[std::net::Ipv4Addr],
    trust: etcd::EtcdTrust<'_>,
    binary: &std::path::Path,
) -> Result<bool, crate::exec::ExecError> {
    let config = &cluster.config;
    let exec = SshExec::connect(&host.ssh_target(), &cluster.auth()).await?;
    let result = etcd::install_etcd(
        &exec,
        &config.name,
        host,
        &config.etcd_hosts,
        minion_ips,
        trust,
        binary,
    )
    .await;
    exec.close().await;
    result
}

fn read_revocations(cluster: &Cluster) -> miette::Result<String> {
    let path = cluster.dir.pki().crl_file();
    std::fs::read_to_string(&path)
        .map_err(|e| miette::miette!("{}: {e}; `kctl up` makes it", path.display()))
}

/// Revokes the certificates of minions that left (with those their
/// helpers renewed, which etcd lists) and forgets their keys
/// (a minion that comes back gets a new one), and gives etcd the new
/// revocation list: on this machine etcd reads it where it is; on etcd
/// hosts it is copied over.
pub async fn revoke_minions(
    cluster: &Cluster,
    store: &crate::store::Store,
    leaving: &[String],
) -> miette::Result<()> {
    let pki = cluster.dir.pki();
    for id in leaving {
        let renewed = store.take_renewed_serials(id).await?;
        pki.revoke_minion(id, &renewed, time::OffsetDateTime::now_utc())?;
    }
    let revocations = read_revocations(cluster)?;
    let copies = cluster.config.etcd_hosts.iter().map(|host| {
        let revocations = &revocations;
        async move {
            let failed = |e: crate::exec::ExecError| miette::miette!("etcd on {}: {e}", host.name);
            let exec = SshExec::connect(&host.ssh_target(), &cluster.auth())
                .await
                .map_err(failed)?;
            let result = etcd::install_revocations(&exec, host, revocations).await;
            exec.close().await;
            result.map_err(failed)
        }
    });
    for result in join_all(copies).await {
        result?;
    }
    Ok(())
}

/// Whether etcd member `index` of the cluster answers and knows a leader,
/// within a while: through its own host's tunnel, to it alone.
async fn member_serves(cluster: &Cluster, index: usize) -> bool {
    let Some(endpoint) = cluster.member_endpoint(index).await else {
        return false;
    };
    let Ok(tls) = cluster.dir.pki().workstation() else {
        return false;
    };
    crate::store::Store::connect_waiting(
        &[endpoint],
        &cluster.config.name,
        Some(&tls),
        Duration::from_secs(20),
    )
    .await
    .is_ok()
}

/// Whether the member on `host` has its data: its write-ahead log, which
/// a member that joined or started and then died half-way may lack.
async fn member_has_data(host: &EtcdHost, auth: &crate::ssh::SshAuth) -> miette::Result<bool> {
    let exec = SshExec::connect(&host.ssh_target(), auth)
        .await
        .map_err(report)?;
    let wal = format!("{}/data/member/wal", host.dir.trim_end_matches('/'));
    let found = exec.run(&argv!["test", "-d", wal], None).await;
    exec.close().await;
    Ok(found.map_err(report)?.success())
}

/// Once etcd has served, a member whose data is gone (its disk lost, its
/// machine reinstalled) lost it: the others go on, and a new member at the
/// same address replaces it. The record marks it as joined, so its service
/// joins the running cluster. Without a majority that kept its data,
/// starting afresh would be an empty cluster whose helpers would remove
/// every container as unwanted: that is refused. Returns true if a member
/// was replaced (the record is saved).
pub async fn replace_lost_members(ui: &Ui, cluster: &mut Cluster) -> miette::Result<bool> {
    let members = cluster.config.etcd_hosts.clone();
    if members.is_empty() || !cluster.dir.etcd_served() {
        return Ok(false);
    }
    let auth = cluster.auth();
    let found = join_all(members.iter().map(|m| member_has_data(m, &auth))).await;
    let mut lost = vec![];
    for (member, has_data) in members.iter().zip(found) {
        // A host that does not answer has not shown it lost anything.
        if matches!(has_data, Ok(false)) {
            lost.push(member.clone());
        }
    }
    if lost.is_empty() {
        return Ok(false);
    }
    let n = members.len();
    let name = &cluster.config.name;
    if lost.len() * 2 >= n {
        return Err(miette::miette!(
            help = format!("restore a snapshot onto a new cluster: `kctl down`, `kctl up`, `kctl snapshot restore FILE`"),
            "{} of the {n} etcd member(s) of cluster {name} lost their data ({}): no majority is left to bring the state back",
            lost.len(),
            member_names(&lost)
        ));
    }
    let task = ui.task(format!("replacing etcd members {}", member_names(&lost)));
    for host in &lost {
        // Whatever still runs of it must not come back as its old self,
        // and what is left of its data (no log) would confuse the new one.
        let exec = SshExec::connect(&host.ssh_target(), &auth)
            .await
            .map_err(report)?;
        let service = etcd::etcd_service(name, host, &members);
        let stopped = async {
            let systemd = crate::bootstrap::service::has_systemd(&exec).await?;
            crate::bootstrap::service::stop(&exec, &service, systemd).await?;
            let data = format!("{}/data", host.dir.trim_end_matches('/'));
            exec.run_ok(&argv!["rm", "-rf", data]).await
        }
        .await;
        exec.close().await;
        stopped.map_err(report)?;
    }
    let store = cluster.store_waiting(Duration::from_secs(20)).await?;
    for host in &lost {
        store
            .replace_member(&etcd::member_name(name, host, &members), &host.peer_url())
            .await?;
        if let Some(h) = cluster
            .config
            .etcd_hosts
            .iter_mut()
            .find(|h| h.name == host.name)
        {
            h.joined = true;
        }
        cluster.dir.save(&cluster.config)?;
        ui.note(format!(
            "etcd member on {} had lost its data: replaced by a new member at {}",
            host.name, host.ip
        ));
    }
    task.done(format!("{} etcd member(s) replaced", lost.len()));
    Ok(true)
}

/// Bootstraps the named minions (all when `only` is None). Returns true if
/// anything changed.
pub async fn install(ui: &Ui, cluster: &Cluster, only: Option<&[String]>) -> miette::Result<bool> {
    let config = &cluster.config;
    let auth = cluster.auth();
    // Where etcd runs on this machine (local provider), `up` made the
    // certificates before starting it.
    let renewed = if config.etcd_hosts.is_empty() {
        Renewed::default()
    } else {
        ensure_certificates(ui, cluster)?
    };
    let mut changed = !renewed.made.is_empty();
    let pki = cluster.dir.pki();
    let binary = super::helper_binary()?;

    if !config.etcd_hosts.is_empty() {
        changed |= install_etcd_members(ui, cluster, &binary).await?;
    }

    // Before any helper starts: each minion's certificate gets only its
    // own rights in etcd (see store::access).
    let mut store = cluster.store_waiting(Duration::from_secs(20)).await?;
    if config.etcd_tls() {
        let ids: Vec<String> = config.minions.iter().map(|m| m.id.clone()).collect();
        changed |= store.ensure_access(&config.name, &ids).await?;
    }

    let minions: Vec<_> = config
        .minions
        .iter()
        .filter(|m| only.is_none_or(|ids| ids.contains(&m.id)))
        .collect();
    let task = ui.task(format!("bootstrap {} minions over SSH", minions.len()));
    let credentials: Vec<Option<Credentials>> = minions
        .iter()
        .map(|m| config.etcd_tls().then(|| pki.minion(&m.id)).transpose())
        .collect::<Result<_, _>>()?;
    let boots = minions.iter().zip(&credentials).map(|(m, credentials)| {
        let auth = auth.clone();
        let binary = &binary;
        async move {
            let exec = SshExec::connect(&m.ssh_target(), &auth).await?;
            let result =
                bootstrap::setup_minion(&exec, config, &m.id, binary, credentials.as_ref()).await;
            exec.close().await;
            result
        }
    });
    let mut failures = vec![];
    for result in super::per_minion(boots).await {
        match result {
            Ok(c) => changed |= c,
            Err(e) => failures.push(e.to_string()),
        }
    }
    if !failures.is_empty() {
        return Err(miette::miette!("{}", failures.join("\n")));
    }
    task.done(format!(
        "{} minions bootstrapped (pod network, routes, forwarding rules, pause image, kctl-node)",
        minions.len()
    ));

    let registered = store.snapshot().await?.state.minions;
    for m in &minions {
        let record = MinionRecord {
            id: m.id.clone(),
            host_ip: m.host_ip,
            pod_cidr: m.pod_cidr.clone(),
            ssh_port: m.ssh_port,
            ssh_user: m.ssh_user.clone(),
        };
        if registered.get(&m.id) != Some(&record) {
            store.put_minion(&record).await?;
            changed = true;
        }
    }

    let task = ui.task("waiting for every minion's heartbeat");
    let ids: Vec<&str> = minions.iter().map(|m| m.id.as_str()).collect();
    super::wait_for_heartbeats(&mut store, &ids, HEARTBEAT_WAIT).await?;
    task.done(format!("{} minions Ready", ids.len()));
    Ok(changed)
}
