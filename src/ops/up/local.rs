//! `kctl up` with the local provider: namespaces on this machine made by
//! the provider, then the same SSH bootstrap as every other provider.

use super::DEFAULT_MINIONS;
use crate::cluster::{ClusterConfig, ClusterDir, LocalNetwork, PodNetwork, ProviderKind};
use crate::ops::install::{ensure_certificates, install};
use crate::ops::{report, require_root, Cluster};
use crate::provider::host;
use crate::provider::local::{self, Layout, MAX_MINIONS};
use crate::ui::Ui;
use futures::future::join_all;
use miette::miette;
use std::os::unix::fs::PermissionsExt;

/// Programs the local provider runs on this machine, with the Debian
/// package that brings each.
const LOCAL_TOOLS: &[(&str, &str)] = &[
    ("ip", "iproute2"),
    ("nsenter", "util-linux"),
    ("ssh", "openssh-client"),
    ("ssh-keygen", "openssh-client"),
    ("/usr/sbin/sshd", "openssh-server"),
    ("dockerd", "docker.io"),
    ("docker", "docker.io"),
    ("etcd", "etcd-server"),
    ("iptables", "iptables"),
    ("nft", "nftables"),
];

fn missing_tools() -> Vec<(&'static str, &'static str)> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    LOCAL_TOOLS
        .iter()
        .filter(|(tool, _)| {
            if tool.starts_with('/') {
                return !std::path::Path::new(tool).exists();
            }
            !std::env::split_paths(&path).any(|dir| dir.join(tool).is_file())
        })
        .copied()
        .collect()
}

pub async fn up(
    ui: &Ui,
    name: &str,
    minions: Option<usize>,
    masters: Option<usize>,
    portal_net: Option<ipnet::Ipv4Net>,
    allowances: super::Allowances,
) -> miette::Result<()> {
    let dir = ClusterDir::new(name)?;
    require_root("kctl up (local provider)")?;
    let missing = missing_tools();
    if !missing.is_empty() {
        let mut packages: Vec<&str> = missing.iter().map(|(_, p)| *p).collect();
        packages.dedup();
        return Err(miette!(
            help = format!("apt-get install {}", packages.join(" ")),
            "missing programs: {}",
            missing
                .iter()
                .map(|(t, _)| *t)
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }

    let existing = super::existing_record(&dir, ProviderKind::Local)?;
    let before = existing.as_ref().map_or(0, |c| c.minions.len());
    let count = match (&existing, minions) {
        (_, Some(n)) => n,
        (Some(c), None) => c.minions.len(),
        (None, None) => DEFAULT_MINIONS,
    };
    if !(1..=MAX_MINIONS).contains(&count) {
        return Err(miette!("--minions must be between 1 and {MAX_MINIONS}"));
    }
    let had_masters = existing.as_ref().map(|c| c.etcd_endpoints.len());
    let masters = masters.or(had_masters).unwrap_or(1);
    if masters % 2 == 0 || !(1..=local::MAX_MASTERS).contains(&masters) {
        return Err(miette!(
            help = "an even count survives no more losses than one fewer: 1, 3 or 5",
            "--masters must be 1, 3 or 5"
        ));
    }
    if let Some(had) = had_masters.filter(|had| *had != masters) {
        return Err(miette!(
            help = "`kctl down` and `kctl up --masters N` to make it again",
            "cluster {name} has {had} etcd member(s); changing that on a running cluster is not built yet"
        ));
    }
    // Fewer minions: the last ones go, once their pods have moved.
    if let Some(config) = existing.as_ref().filter(|_| count < before) {
        let slot = config
            .local
            .as_ref()
            .map(|l| l.slot)
            .ok_or_else(|| miette!("cluster {name} was not made by the local provider"))?;
        let layout = Layout {
            cluster: name.to_string(),
            slot,
        };
        super::shrink(ui, &dir, config, count, async |_, leaving: &[String]| {
            for id in leaving {
                if let Some(index) = Layout::index_of(id) {
                    local::remove_minion(&dir, &layout, index).await;
                }
                let _ = std::fs::remove_dir_all(dir.minion_dir(id));
            }
            Ok(())
        })
        .await?;
    }

    let layout = match &existing {
        Some(c) => Layout {
            cluster: name.to_string(),
            slot: c
                .local
                .as_ref()
                .map(|l| l.slot)
                .ok_or_else(|| miette!("cluster {name} was not made by the local provider"))?,
        },
        None => local::claim_slot(name).await?,
    };
    let portal_net = match (&existing, portal_net) {
        (Some(c), Some(p)) if p != c.portal_net => {
            return Err(miette!(
                help = "`kctl down` and `kctl up --portal-net CIDR` to rebuild it",
                "cluster {name} has portal range {}; it cannot change while services hold addresses in it",
                c.portal_net
            ))
        }
        (Some(c), _) => c.portal_net,
        (None, Some(p)) => p,
        (None, None) => layout.default_portal_net(),
    };
    let mut config = ClusterConfig {
        name: name.to_string(),
        portal_net,
        provider: ProviderKind::Local,
        etcd_endpoints: layout.etcd_endpoints(masters),
        minions: (1..=count).map(|i| layout.minion(i)).collect(),
        local: Some(LocalNetwork { slot: layout.slot }),
        gce: None,
        etcd_hosts: vec![],
        pod_network: PodNetwork {
            portal_via: Some(layout.bridge_ip()),
            ..PodNetwork::default()
        },
        ssh_identity: None,
        offline_images: true,
        allow_host_dir: false,
        allow_privileged: false,
    };
    allowances.grant(&mut config);
    // Record first: whatever fails later, `down` knows what to remove.
    dir.save(&config)?;
    std::fs::set_permissions(&dir.dir, std::fs::Permissions::from_mode(0o700)).map_err(report)?;
    let mut changed = existing.is_none();

    let task = ui.task("cluster key and host network");
    changed |= host::ensure_ssh_key(&dir.identity(), &format!("kctl-{name}")).await?;
    let public = std::fs::read_to_string(dir.identity().with_extension("pub")).map_err(report)?;
    crate::files::write_private(&dir.dir.join("authorized_keys"), public.as_bytes())
        .map_err(report)?;
    changed |= local::ensure_host_network(&layout).await?;
    changed |= local::ensure_portal_route(&layout, portal_net).await?;
    task.done(format!(
        "network {} on bridge {}",
        layout.cluster_cidr(),
        layout.bridge()
    ));

    let renewed = ensure_certificates(ui, &Cluster::new(dir.clone(), config.clone()))?;
    changed |= !renewed.made.is_empty();
    let task = ui.task("etcd");
    // Any member's: each reads only its own, but one restart is cheap.
    let new_certificate = renewed.contains("ca")
        || renewed
            .made
            .iter()
            .any(|(stem, _)| crate::pki::is_etcd_stem(stem));
    // Members whose data is gone (their disk lost) while others kept
    // theirs: the cluster goes on without them, and new members of the
    // same addresses join it.
    let lost: Vec<usize> = (1..=masters)
        .filter(|m| !local::etcd_member_has_data(&dir, *m))
        .collect();
    // Once etcd has served, a member without data lost it. Without a
    // majority that kept theirs, starting afresh would be an empty
    // cluster, whose helpers would remove every container as unwanted.
    let served = existing.is_some() && dir.etcd_served();
    if served && lost.len() * 2 >= masters {
        return Err(miette!(
            help = "restore a snapshot onto a new cluster: `kctl down`, `kctl up --masters {masters}`, `kctl snapshot restore FILE`",
            "{} of the {masters} etcd member(s) of cluster {name} lost their data: no majority is left to bring the state back",
            lost.len()
        ));
    }
    let replacing = served && !lost.is_empty();
    let keeping: Vec<usize> = (1..=masters)
        .filter(|m| !replacing || !lost.contains(m))
        .collect();
    // All at once: a member of several serves only once a majority runs.
    let started = join_all(
        keeping
            .iter()
            .map(|m| local::ensure_etcd(&dir, &layout, *m, masters, new_certificate, false)),
    )
    .await;
    for result in started {
        changed |= result?;
    }
    if replacing {
        let cluster = Cluster::new(dir.clone(), config.clone());
        let store = cluster
            .store_waiting(std::time::Duration::from_secs(20))
            .await?;
        for m in &lost {
            // Whatever still runs of it must not come back as its old self.
            let member_dir = local::etcd_member_dir(&dir, *m);
            local::stop_etcd_member(&member_dir).await;
            // What is left of its data (no log) would confuse the new one.
            let _ = std::fs::remove_dir_all(member_dir.join("data"));
            store
                .replace_member(
                    &layout.etcd_member_name(*m),
                    &local::etcd_peer_url(&layout, *m),
                )
                .await?;
            local::ensure_etcd(&dir, &layout, *m, masters, false, true).await?;
            ui.note(format!(
                "etcd member {} had lost its data: replaced by a new member at {}",
                layout.etcd_member_name(*m),
                layout.etcd_member_ip(*m)
            ));
        }
        changed = true;
    }
    // Beside etcd, so that helpers renew their certificates while no
    // kctl runs; it reads the CA at start.
    let signer = crate::ops::helper_binary()?;
    changed |= local::ensure_signer(
        &dir,
        &signer,
        &config.etcd_endpoints,
        renewed.contains("ca"),
    )
    .await?;
    task.done(match masters {
        1 => format!("etcd at {}", layout.etcd_endpoint()),
        n => format!(
            "etcd of {n} members at {}",
            (1..=n)
                .map(|m| layout.etcd_member_ip(m).to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    });

    let task = ui.task(format!("{count} minions (namespace, sshd, dockerd)"));
    let made =
        join_all((1..=count).map(|i| local::ensure_minion(&dir, &layout, i, portal_net))).await;
    for result in made {
        changed |= result?;
    }
    let known_hosts: Vec<String> = (1..=count)
        .map(|i| local::known_hosts_line(&dir, &layout, i))
        .collect::<Result<_, _>>()?;
    crate::files::write_private(
        &dir.known_hosts(),
        (known_hosts.join("\n") + "\n").as_bytes(),
    )
    .map_err(report)?;
    task.done(format!("{count} minions running"));

    let cluster = Cluster::new(dir, config);
    changed |= install(ui, &cluster, None).await?;
    // install reached etcd: it has served.
    cluster.dir.mark_etcd_served()?;
    if existing.is_some() && count > before {
        let joined: Vec<String> = cluster.config.minions[before..]
            .iter()
            .map(|m| m.id.clone())
            .collect();
        let from = cluster.config.minions[0].id.clone();
        crate::ops::image::copy_loaded(ui, &cluster, &from, &joined).await?;
    }

    if existing.is_some() && count != before {
        ui.out(format!(
            "Cluster {name} is up with {count} minions (it had {before})."
        ));
    } else if changed && existing.is_some() {
        ui.out(format!(
            "Cluster {name} was repaired and is up ({count} minions)."
        ));
    } else if changed {
        let etcd = match masters {
            1 => format!("etcd at {}", layout.etcd_endpoint()),
            n => format!("etcd of {n} members (any one may be lost)"),
        };
        ui.out(format!(
            "Cluster {name} is up: {count} minions, {etcd}.\nNext: kctl image load …, kctl apply -f manifests/, kctl get pods"
        ));
        if masters == 1 {
            ui.note(format!(
                "{} A local cluster can have 3 members: `kctl up --masters 3`.",
                super::SINGLE_MASTER_NOTE
            ));
        }
    } else {
        ui.out(format!(
            "Cluster {name} is up ({count} minions); nothing changed."
        ));
    }
    Ok(())
}
