//! `kctl up`: a provider makes the machines, one shared SSH bootstrap
//! (`ops::install`) prepares them. Every step checks before it acts, so
//! running `up` on a healthy cluster changes nothing, and on a broken one
//! repairs it.

pub mod gce;
pub mod local;
pub mod ssh;

use crate::cluster::{ClusterConfig, ClusterDir, ProviderKind};
use crate::ui::Ui;

pub const DEFAULT_MINIONS: usize = 3;

/// Everything `kctl up` may be told; each provider reads its part.
#[derive(Debug, Clone)]
pub struct UpOptions {
    pub provider: ProviderKind,
    pub minions: Option<usize>,
    /// How many etcd members (local only so far).
    pub masters: Option<usize>,
    pub portal_net: Option<ipnet::Ipv4Net>,
    pub dry_run: bool,
    pub ssh: ssh::SshOptions,
    pub gce: gce::GceOptions,
    /// What pods may ask for that a cluster refuses by default.
    pub allowances: Allowances,
}

/// What a cluster lets pods ask for beyond its defaults; kept in its
/// record, given once to `up` (a later `up` without the flag keeps it).
#[derive(Debug, Clone, Copy, Default)]
pub struct Allowances {
    /// Host directories that would hand a pod the machine (`/`, `/etc`,
    /// Docker's socket, kctl's own directories).
    pub host_dir: bool,
    /// Privileged containers and added capabilities.
    pub privileged: bool,
}

impl Allowances {
    /// Writes them into a record a provider is making, before its helpers
    /// are set up: they check records with these choices as arguments.
    pub fn grant(self, config: &mut ClusterConfig) {
        config.allow_host_dir = self.host_dir;
        config.allow_privileged = self.privileged;
    }
}

/// The cluster's record if it exists; an error if another provider made it.
pub fn existing_record(
    dir: &ClusterDir,
    provider: ProviderKind,
) -> miette::Result<Option<ClusterConfig>> {
    if !dir.exists() {
        return Ok(None);
    }
    let config = dir.load()?;
    if config.provider != provider {
        return Err(miette::miette!(
            help = "`kctl down` it first, or pick another --cluster name",
            "cluster {} was made by the {} provider",
            dir.name,
            config.provider.name()
        ));
    }
    Ok(Some(config))
}

/// Says what this `up` allowed that the cluster did not before.
fn note_new_allowances(ui: &Ui, before: Allowances, told: Allowances) {
    if told.host_dir && !before.host_dir {
        ui.note("pods of this cluster may bind any host directory (--allow-host-dir)");
    }
    if told.privileged && !before.privileged {
        ui.note("pods of this cluster may run privileged containers (--allow-privileged)");
    }
}

/// Makes or repairs the cluster. What it allowed before stays allowed (a
/// later `up` without the flag keeps it), and what this `up` is told is
/// added; the providers write both into the record they make.
pub async fn up(ui: &Ui, name: &str, mut options: UpOptions) -> miette::Result<()> {
    let told = options.allowances;
    let dir = ClusterDir::new(name)?;
    // Its keys and the record its helpers trust live there.
    if let Some(open) = crate::files::unsafe_ancestor(&dir.dir) {
        return Err(miette::miette!(
            help = "set KCTL_HOME to a directory of yours that only you (and root) can write, e.g. ~/.kctl",
            "{} is under {}, which another user can write: the cluster's keys and record would not be yours alone",
            dir.dir.display(),
            open.display()
        ));
    }
    let before = match dir.exists().then(|| dir.load()) {
        Some(Ok(config)) => Allowances {
            host_dir: config.allow_host_dir,
            privileged: config.allow_privileged,
        },
        _ => Allowances::default(),
    };
    options.allowances = Allowances {
        host_dir: before.host_dir || told.host_dir,
        privileged: before.privileged || told.privileged,
    };
    let dry_run = options.dry_run;
    let made = make_or_repair(ui, name, options).await;
    if !dry_run {
        note_new_allowances(ui, before, told);
    }
    made
}

async fn make_or_repair(ui: &Ui, name: &str, options: UpOptions) -> miette::Result<()> {
    match options.provider {
        ProviderKind::Local => {
            if options.dry_run {
                return Err(miette::miette!(
                    "--dry-run is for the gce and ssh providers; a local `up` changes only this machine"
                ));
            }
            local::up(
                ui,
                name,
                options.minions,
                options.masters,
                options.portal_net,
                options.allowances,
            )
            .await
        }
        ProviderKind::Ssh => ssh::up(ui, name, &options).await,
        ProviderKind::Gce => gce::up(ui, name, &options).await,
    }
}

/// What `up` says of a new cluster whose state lives in one etcd member:
/// the machine that holds it is the cluster's single point of loss.
pub const SINGLE_MASTER_NOTE: &str = "Its state lives in one etcd: `kctl snapshot save FILE` keeps a copy to restore onto a new cluster (`kctl snapshot restore FILE`) should that machine be lost.";

/// Takes a running cluster down to `count` minions: the pods of the
/// others move first (none is lost), then `remove_machines` deletes those
/// minions' machines, and etcd and the record forget them.
pub async fn shrink(
    ui: &Ui,
    dir: &ClusterDir,
    config: &ClusterConfig,
    count: usize,
    remove_machines: impl AsyncFnOnce(&crate::ui::Task, &[String]) -> miette::Result<()>,
) -> miette::Result<()> {
    let leaving: Vec<String> = config.minions[count..]
        .iter()
        .map(|m| m.id.clone())
        .collect();
    let cluster = crate::ops::Cluster::new(dir.clone(), config.clone());
    // The cordons hold until etcd forgets the minions: nothing may be
    // placed on a machine that is being deleted.
    let cordons = crate::ops::rollout::evacuate(ui, &cluster, &leaving).await?;
    let task = ui.task(format!("removing {}", leaving.join(", ")));
    remove_machines(&task, &leaving).await?;
    let mut store = cluster.store().await?;
    for id in &leaving {
        store.forget_minion(id).await?;
    }
    // Their certificates stop working in etcd now.
    if config.etcd_tls() {
        let staying: Vec<String> = config.minions[..count]
            .iter()
            .map(|m| m.id.clone())
            .collect();
        store.ensure_access(&config.name, &staying).await?;
        crate::ops::install::revoke_minions(&cluster, &store, &leaving).await?;
    }
    cordons.end().await;
    // The record says what is left at once, whatever fails later.
    let mut smaller = config.clone();
    smaller.minions.truncate(count);
    dir.save(&smaller)?;
    task.done(format!("removed {}", leaving.join(", ")));
    Ok(())
}
