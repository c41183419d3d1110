//! `kctl down`: remove everything `up` made, also for a cluster that is
//! half-built or half-broken. Each step tolerates its target being gone.

use super::{report, require_root, Cluster};
use crate::bootstrap::{etcd, teardown};
use crate::cluster::{ClusterConfig, ClusterDir, ProviderKind};
use crate::provider::host;
use crate::provider::local::{self, Layout};
use crate::ssh::SshExec;
use crate::ui::Ui;
use futures::future::join_all;
use miette::miette;

#[derive(Debug, Clone, Default)]
pub struct DownOptions {
    /// Only with the gce provider and no local record: where to look.
    pub provider: Option<ProviderKind>,
    pub project: Option<String>,
    pub zone: Option<String>,
    pub dry_run: bool,
    /// Forget the record even if some machine could not be cleaned.
    pub force: bool,
}

pub async fn down(ui: &Ui, name: &str, options: &DownOptions) -> miette::Result<()> {
    let dir = ClusterDir::new(name)?;
    let config = if dir.exists() {
        Some(dir.load()?)
    } else {
        None
    };
    let provider = match (&config, options.provider) {
        (Some(c), Some(p)) if c.provider != p => {
            return Err(miette!(
                "cluster {name} was made by the {} provider, not {}",
                c.provider.name(),
                p.name()
            ))
        }
        (Some(c), _) => c.provider,
        (None, Some(p)) => p,
        (None, None) => {
            if dir.dir.exists() {
                // A record dir without cluster.json: an `up` that failed
                // before saving anything.
                std::fs::remove_dir_all(&dir.dir).map_err(report)?;
            }
            ui.out(format!("Cluster {name} does not exist; nothing to do."));
            return Ok(());
        }
    };
    if !options.dry_run {
        // SSH masters a killed kctl left (they persist for a while when
        // idle): they name the cluster's own known_hosts.
        let known_hosts = dir.known_hosts().display().to_string();
        host::terminate(
            &host::ssh_processes_naming(&known_hosts),
            std::time::Duration::from_secs(2),
        )
        .await;
    }
    match provider {
        ProviderKind::Local => match config {
            Some(config) if options.dry_run => {
                ui.out(local_dry_run(&dir, &config));
                Ok(())
            }
            Some(config) => down_local(ui, dir, config).await,
            None => {
                ui.out(format!("Cluster {name} does not exist; nothing to do."));
                Ok(())
            }
        },
        ProviderKind::Ssh => match config {
            Some(config) => down_hosts(ui, Cluster::new(dir, config), options).await,
            None => Err(miette!(
                help = "the ssh provider's hosts are known only from the record",
                "cluster {name} has no record here"
            )),
        },
        ProviderKind::Gce => super::up::gce::down(ui, dir, config, options).await,
    }
}

/// Removes what bootstrap put on the cluster's machines (ssh and gce
/// providers): every minion in parallel, then etcd. Returns one line per
/// machine of what was removed; machines that could not be reached are
/// errors, unless `force`.
pub async fn teardown_hosts(
    ui: &Ui,
    cluster: &Cluster,
    force: bool,
) -> miette::Result<Vec<String>> {
    let config = &cluster.config;
    let auth = cluster.auth();
    let task = ui.task(format!(
        "removing kctl from {} minions",
        config.minions.len()
    ));
    let minions = config.minions.iter().map(|m| {
        let auth = auth.clone();
        async move {
            let exec = SshExec::connect(&m.ssh_target(), &auth).await?;
            let done = teardown::teardown_minion(&exec, config, m).await;
            if done.errors.is_empty() {
                // The cluster's directory goes when its last part does.
                let _ = teardown::remove_empty_parents(&exec, &m.helper_dir).await;
            }
            exec.close().await;
            Ok::<_, crate::exec::ExecError>(done)
        }
    });
    let mut lines = vec![];
    let mut failures = vec![];
    for (m, result) in config.minions.iter().zip(super::per_minion(minions).await) {
        match result {
            Ok(done) => {
                if done.removed.is_empty() {
                    lines.push(format!("{}: nothing left to remove", m.id));
                } else {
                    lines.push(format!("{}: removed {}", m.id, done.removed.join(", ")));
                }
                failures.extend(done.errors.into_iter().map(|e| format!("{}: {e}", m.id)));
            }
            Err(e) => failures.push(e.to_string()),
        }
    }
    if failures.is_empty() {
        task.done(format!(
            "kctl removed from {} minions",
            config.minions.len()
        ));
    } else {
        task.fail(format!("{} minions could not be cleaned", failures.len()));
    }
    let members = &config.etcd_hosts;
    if !members.is_empty() {
        let names: Vec<&str> = members.iter().map(|h| h.name.as_str()).collect();
        let task = ui.task(format!("removing etcd from {}", names.join(", ")));
        let removals = members.iter().map(|host| {
            let auth = &auth;
            async move {
                let exec = SshExec::connect(&host.ssh_target(), auth).await?;
                let result = async {
                    let mut removed = etcd::remove_etcd(&exec, &config.name, host, members).await?;
                    if teardown::remove_state_dir(&exec, &host.dir).await? {
                        removed.push(format!("{} (etcd's data)", host.dir));
                    }
                    Ok::<_, crate::exec::ExecError>(removed)
                }
                .await;
                exec.close().await;
                result
            }
        });
        let mut failed = 0;
        for (host, result) in members.iter().zip(join_all(removals).await) {
            match result {
                Ok(removed) if removed.is_empty() => {
                    lines.push(format!("{}: no etcd left to remove", host.name))
                }
                Ok(removed) => lines.push(format!("{}: removed {}", host.name, removed.join(", "))),
                Err(e) => {
                    failed += 1;
                    failures.push(format!("etcd on {}: {e}", host.name));
                }
            }
        }
        if failed == 0 {
            task.done(format!("etcd on {} gone", names.join(", ")));
        } else {
            task.fail(format!("etcd could not be removed from {failed} host(s)"));
        }
    }
    if !failures.is_empty() && !force {
        return Err(miette!(
            help = "fix access and run `kctl down` again, or `kctl down --force` to forget the cluster anyway",
            "some machines could not be cleaned:
{}",
            failures.join("
")
        ));
    }
    lines.extend(failures.into_iter().map(|f| format!("NOT CLEANED: {f}")));
    Ok(lines)
}

async fn down_hosts(ui: &Ui, cluster: Cluster, options: &DownOptions) -> miette::Result<()> {
    let name = cluster.config.name.clone();
    if options.dry_run {
        ui.out(format!(
            "--dry-run: `kctl down` would remove kctl's containers, Docker network, rules, routes, kctl-node and etcd from: {}",
            cluster
                .config
                .minions
                .iter()
                .map(|m| m.ssh_target().host)
                .collect::<Vec<_>>()
                .join(", ")
        ));
        return Ok(());
    }
    let lines = teardown_hosts(ui, &cluster, options.force).await?;
    for line in &lines {
        ui.out(line.clone());
    }
    std::fs::remove_dir_all(&cluster.dir.dir).map_err(report)?;
    if lines.iter().any(|l| l.starts_with("NOT CLEANED")) {
        ui.out(format!(
            "Cluster {name} is forgotten; the hosts marked NOT CLEANED above still carry parts of it."
        ));
        return Ok(());
    }
    ui.out(format!(
        "Cluster {name} is down; the hosts are as they were before `kctl up`."
    ));
    Ok(())
}

/// What `down` would remove of a local cluster (pure but for the path).
fn local_dry_run(dir: &ClusterDir, config: &ClusterConfig) -> String {
    let mut lines = vec![format!(
        "--dry-run: `kctl down` would remove cluster {}:",
        config.name
    )];
    if let Some(net) = &config.local {
        let layout = Layout {
            cluster: config.name.clone(),
            slot: net.slot,
        };
        for m in &config.minions {
            if let Some(i) = Layout::index_of(&m.id) {
                lines.push(format!(
                    "  {}: namespace {}, its sshd, dockerd, containers and kctl-node",
                    m.id,
                    layout.netns(i)
                ));
            }
        }
        lines.push(format!(
            "  etcd at {}, bridge {}, routes for {}",
            config.etcd_endpoints.join(", "),
            layout.bridge(),
            layout.cluster_cidr()
        ));
    }
    lines.push(format!(
        "  {} (record, keys, certificates)",
        dir.dir.display()
    ));
    lines.join("\n")
}

async fn down_local(ui: &Ui, dir: ClusterDir, config: ClusterConfig) -> miette::Result<()> {
    let name = config.name.clone();
    require_root("kctl down (local provider)")?;
    let Some(net) = &config.local else {
        return Err(miette::miette!(
            "cluster record of {name} has no local network"
        ));
    };
    let layout = Layout {
        cluster: name.to_string(),
        slot: net.slot,
    };
    let count = config.minions.len();

    let task = ui.task(format!("removing {count} minions"));
    let indices: Vec<usize> = config
        .minions
        .iter()
        .filter_map(|m| Layout::index_of(&m.id))
        .collect();
    join_all(
        indices
            .iter()
            .map(|&i| local::remove_minion(&dir, &layout, i)),
    )
    .await;
    task.done(format!(
        "removed {count} minions (containers, dockerd, sshd, namespaces)"
    ));

    let task = ui.task("etcd and host network");
    local::stop_etcd(&dir).await;
    local::remove_host_network(&layout).await;
    local::remove_portal_route(&layout, config.portal_net).await;
    host::unmount_all_under(&dir.dir).await;
    std::fs::remove_dir_all(&dir.dir).map_err(report)?;
    task.done(format!(
        "removed etcd, bridge {}, routes for {}, {}",
        layout.bridge(),
        layout.cluster_cidr(),
        dir.dir.display()
    ));
    ui.out(format!("Cluster {name} is down; nothing of it is left."));
    Ok(())
}
