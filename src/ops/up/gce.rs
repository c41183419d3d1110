//! `kctl up|down --provider gce`: machines from the user's `gcloud` (as
//! `kube-up.sh` did), then the same SSH bootstrap as every provider. Each
//! master runs a member of etcd; the workstation reaches them through SSH
//! tunnels.

use super::{UpOptions, DEFAULT_MINIONS};
use crate::cluster::{
    ClusterConfig, ClusterDir, EtcdHost, GceRecord, MinionConfig, PodNetwork, ProviderKind,
};
use crate::exec::Exec;
use crate::ops::down::{teardown_hosts, DownOptions};
use crate::ops::install::install;
use crate::ops::{report, Cluster};
use crate::provider::gce::{self, spec, GceSpec, Gcloud, GcloudProcess, Instance};
use crate::provider::host;
use crate::ssh::{SshAuth, SshExec};
use crate::ui::Ui;
use futures::StreamExt;
use miette::miette;
use std::time::{Duration, Instant};

pub const DEFAULT_ZONE: &str = "us-central1-b";
/// The 2014 tutorial's machine type, which kube-up.sh was turned down to.
/// (e2-micro is cheaper today: `--machine-type e2-micro`.)
pub const DEFAULT_MACHINE_TYPE: &str = "f1-micro";
pub const DEFAULT_PORTAL_NET: &str = "10.0.0.0/16";
const PLACEHOLDER_KEY: &str =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
/// New VMs boot and run their startup script (apt-get install docker.io
/// on an f1-micro) before they are of use.
pub const DEFAULT_BOOT_TIMEOUT: Duration = Duration::from_secs(600);

#[derive(Debug, Clone, Default)]
pub struct GceOptions {
    pub project: Option<String>,
    pub zone: Option<String>,
    pub machine_type: Option<String>,
    pub master_machine_type: Option<String>,
    pub boot_timeout: Option<Duration>,
    /// Where SSH to the VMs may come from [default: anywhere, as in 2014].
    pub ssh_sources: Vec<ipnet::Ipv4Net>,
}

/// `--project`, else gcloud's configured project.
async fn project_of<G: Gcloud>(g: &G, given: Option<&str>) -> miette::Result<String> {
    if let Some(p) = given {
        return Ok(p.to_string());
    }
    let argv = crate::argv!["config", "get-value", "project"];
    let out = g.run(&argv).await?;
    let project = out.stdout.trim().to_string();
    if !out.success() || project.is_empty() || project == "(unset)" {
        return Err(miette!(
            help = "pass --project PROJECT, or `gcloud config set project PROJECT`",
            "no GCE project given and gcloud has none configured"
        ));
    }
    Ok(project)
}

/// The cluster record for the machines `create` made (pure).
pub fn cluster_config(
    name: &str,
    record: GceRecord,
    made: &gce::GceCluster,
    portal_net: ipnet::Ipv4Net,
) -> ClusterConfig {
    let state = format!("/var/lib/kctl/{name}");
    let minions = made
        .minions
        .iter()
        .enumerate()
        .map(|(i, vm)| {
            let id = format!("minion-{}", i + 1);
            MinionConfig {
                helper_dir: format!("{state}/{id}"),
                docker_socket: crate::docker_api::DEFAULT_SOCKET.into(),
                id,
                host_ip: vm.internal_ip,
                ssh_port: 22,
                ssh_user: spec::SSH_USER.into(),
                pod_cidr: spec::pod_cidr(i + 1),
                ssh_host: Some(vm.external_ip.to_string()),
            }
        })
        .collect();
    let etcd_hosts: Vec<EtcdHost> = made
        .masters
        .iter()
        .enumerate()
        .map(|(i, vm)| EtcdHost {
            name: master_id(i + 1),
            ssh_host: vm.external_ip.to_string(),
            ssh_port: 22,
            ssh_user: spec::SSH_USER.into(),
            ip: vm.internal_ip,
            dir: format!("{state}/etcd"),
            joined: false,
        })
        .collect();
    ClusterConfig {
        name: name.to_string(),
        provider: ProviderKind::Gce,
        etcd_endpoints: etcd_hosts.iter().map(EtcdHost::endpoint).collect(),
        minions,
        portal_net,
        local: None,
        gce: Some(record),
        etcd_hosts,
        // GCE's routes carry pod ranges between VMs; its network's MTU is
        // 1460, and the pod bridge must not exceed it.
        pod_network: PodNetwork {
            host_routes: false,
            mtu: Some(gce::GCE_MTU),
            range: spec::POD_SUPERNET.parse().ok(),
            portal_via: None,
        },
        ssh_identity: None,
        offline_images: false,
        // Granted by ops::up from the flag and the record before.
        allow_host_dir: false,
        allow_privileged: false,
    }
}

/// How the record names master `n` (from 1): `master`, `master-2`, ...
pub fn master_id(n: usize) -> String {
    if n <= 1 {
        "master".to_string()
    } else {
        format!("master-{n}")
    }
}

/// known_hosts lines for every VM, naming it by its external address and
/// its instance name ("34.1.1.1,kctl-demo-master ssh-ed25519 AAAA…"), so
/// that its pinned key stays tied to the instance if the address changes.
pub fn known_hosts(made: &gce::GceCluster) -> Vec<String> {
    made.masters
        .iter()
        .chain(&made.minions)
        .flat_map(|vm: &Instance| {
            vm.host_keys
                .iter()
                .map(move |key| format!("{},{} {key}", vm.external_ip, vm.name))
        })
        .collect()
}

/// A VM whose key read now differs from the one pinned when it was made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChangedKey {
    pub instance: String,
    pub pinned: String,
    pub read: String,
}

/// Checks the keys just read from guest attributes against the cluster's
/// known_hosts (pure). Keys are pinned once, when a VM is first seen: any
/// process in a VM can write guest attributes, so a later different key is
/// never taken. A VM without a pinned line (new, or an older record
/// without instance names, matched by address) is pinned now.
pub fn check_pinned(pinned: &str, made: &gce::GceCluster) -> Vec<ChangedKey> {
    let entries: Vec<(Vec<&str>, String)> = pinned
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .filter_map(|l| {
            let (hosts, key) = l.trim().split_once(' ')?;
            let key: Vec<&str> = key.split_whitespace().take(2).collect();
            Some((hosts.split(',').collect(), key.join(" ")))
        })
        .collect();
    let mut changed = vec![];
    for vm in made.masters.iter().chain(&made.minions) {
        let by_name: Vec<&String> = entries
            .iter()
            .filter(|(hosts, _)| hosts.contains(&vm.name.as_str()))
            .map(|(_, key)| key)
            .collect();
        // Lines of an older kctl name only the address; a line that names
        // an instance is that instance's, whatever address it had.
        let ip = vm.external_ip.to_string();
        let pins = if by_name.is_empty() {
            entries
                .iter()
                .filter(|(hosts, _)| {
                    hosts.contains(&ip.as_str())
                        && hosts.iter().all(|h| h.parse::<std::net::IpAddr>().is_ok())
                })
                .map(|(_, key)| key)
                .collect()
        } else {
            by_name
        };
        let Some(read) = vm.host_keys.first() else {
            continue;
        };
        if !pins.is_empty() && !pins.contains(&read) {
            changed.push(ChangedKey {
                instance: vm.name.clone(),
                pinned: pins[0].clone(),
                read: read.clone(),
            });
        }
    }
    changed
}

fn short_key(key: &str) -> String {
    let (kind, blob) = key.split_once(' ').unwrap_or(("", key));
    let tail: String = blob
        .chars()
        .rev()
        .take(12)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect();
    format!("{kind} …{tail}")
}

/// What a VM's startup script has told, read over SSH (pure judgement of
/// the two marker reads).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BootState {
    Done,
    /// Finished, but an older or newer script of another format: what it
    /// set up is not what this kctl expects. The marker's text.
    OtherFormat(String),
    /// The failed marker: the log's tail.
    Failed(String),
    Running,
}

/// The done marker is "FORMAT VERSION"; only the format decides.
pub fn boot_state(done: Option<&str>, failed: Option<&str>) -> BootState {
    match (done.map(str::trim), failed) {
        (Some(m), _) if m.split_whitespace().next() == Some(gce::BOOT_FORMAT) => BootState::Done,
        (Some(m), _) => BootState::OtherFormat(m.to_string()),
        (None, Some(log)) => BootState::Failed(log.trim_end().to_string()),
        (None, None) => BootState::Running,
    }
}

/// A file's content over SSH: None if it does not exist; an error if it
/// exists but cannot be read (a sudo rule that wants a password, say), so
/// the wait says why instead of "still running".
async fn read_remote(exec: &SshExec, path: &str) -> Result<Option<String>, String> {
    let out = exec
        .run(&crate::argv!["cat", path], None)
        .await
        .map_err(|e| e.to_string())?;
    if out.success() {
        Ok(Some(out.stdout_text()))
    } else if out.stderr_text().contains("No such file or directory") {
        Ok(None)
    } else {
        Err(format!("cannot read {path}: {}", out.stderr_text().trim()))
    }
}

/// Why a VM is not ready.
#[derive(Debug, Clone)]
struct NotReady {
    /// The machine's name in the record ("master", "minion-2").
    machine: String,
    /// Never answered over SSH before the deadline.
    silent: bool,
    /// The VM said it will not get ready (its script failed): no point
    /// waiting for the others.
    fatal: bool,
    message: String,
}

/// Waits until every VM answers over SSH and its startup script has left
/// its done marker. A failed marker stops the wait at once with the
/// script's log; SSH that never answers ends in a timeout.
async fn wait_for_boot(
    config: &ClusterConfig,
    auth: &SshAuth,
    timeout: Duration,
) -> Result<(), Vec<NotReady>> {
    let deadline = Instant::now() + timeout;
    let mut targets: Vec<crate::ssh::SshTarget> =
        config.minions.iter().map(|m| m.ssh_target()).collect();
    for etcd in &config.etcd_hosts {
        targets.push(etcd.ssh_target());
    }
    let poll = Duration::from_secs(3).min(timeout / 4);
    let waits = targets.into_iter().map(|target| async move {
        let mut last = String::from("no SSH answer yet");
        let mut answered = false;
        let mut exec: Option<SshExec> = None;
        let not_ready = |silent: bool, message: String| NotReady {
            machine: target.name.clone(),
            silent,
            fatal: !silent,
            message,
        };
        while Instant::now() < deadline {
            if exec.is_none() {
                match SshExec::connect(&target, auth).await {
                    Ok(e) => exec = Some(e),
                    Err(e) => last = e.to_string(),
                }
            }
            if let Some(e) = &exec {
                answered = true;
                let state = async {
                    let done = read_remote(e, gce::BOOT_DONE).await?;
                    let failed = match done {
                        Some(_) => None,
                        None => read_remote(e, gce::BOOT_FAILED).await?,
                    };
                    Ok::<_, String>(boot_state(done.as_deref(), failed.as_deref()))
                }
                .await;
                let outcome = match state {
                    Ok(BootState::Done) => Some(Ok(())),
                    Ok(BootState::OtherFormat(marker)) => Some(Err(not_ready(false, format!(
                        "{}: its startup script left the marker {marker:?}, but this kctl ({}) expects format {}: the VM was made by another kctl and must be made again (`kctl down`, `kctl up`)",
                        target.name,
                        gce::BOOT_VERSION,
                        gce::BOOT_FORMAT
                    )))),
                    Ok(BootState::Failed(log)) => Some(Err(not_ready(false, format!(
                        "{}: its startup script failed; the end of its log ({}):\n{log}",
                        target.name,
                        gce::BOOT_FAILED
                    )))),
                    Ok(BootState::Running) => {
                        last = "its startup script is still running".into();
                        None
                    }
                    Err(err) => {
                        last = err;
                        // Connect again next round.
                        if let Some(e) = exec.take() {
                            e.close().await;
                        }
                        None
                    }
                };
                if let Some(outcome) = outcome {
                    if let Some(e) = exec.take() {
                        e.close().await;
                    }
                    return outcome;
                }
            }
            tokio::time::sleep(poll).await;
        }
        if let Some(e) = exec {
            e.close().await;
        }
        Err(NotReady {
            fatal: false,
            ..not_ready(
                !answered,
                format!(
                    "{} not ready after {}s: {last}",
                    target.name,
                    timeout.as_secs()
                ),
            )
        })
    });
    // A startup script that failed is reported at once, without waiting
    // for the other VMs; timeouts all come at the deadline.
    let mut pending: futures::stream::FuturesUnordered<_> = waits.collect();
    let mut failures = vec![];
    while let Some(result) = pending.next().await {
        match result {
            Ok(()) => {}
            Err(f) if f.fatal => {
                return Err(vec![f]);
            }
            Err(f) => failures.push(f),
        }
    }
    if failures.is_empty() {
        Ok(())
    } else {
        Err(failures)
    }
}

pub async fn up(ui: &Ui, name: &str, options: &UpOptions) -> miette::Result<()> {
    let opts = &options.gce;
    let dir = ClusterDir::new(name)?;
    let existing = super::existing_record(&dir, ProviderKind::Gce)?;
    let recorded = existing.as_ref().and_then(|c| c.gce.clone());
    let g = GcloudProcess::new();
    let project = match (&opts.project, &recorded) {
        (Some(p), _) => p.clone(),
        (None, Some(r)) => r.project.clone(),
        (None, None) if options.dry_run => "PROJECT".to_string(),
        (None, None) => project_of(&g, None).await?,
    };
    let zone = opts
        .zone
        .clone()
        .or_else(|| recorded.as_ref().map(|r| r.zone.clone()))
        .unwrap_or_else(|| DEFAULT_ZONE.to_string());
    if let Some(r) = &recorded {
        where_recorded(name, r, opts.project.as_deref(), opts.zone.as_deref())?;
    }
    let before = existing.as_ref().map_or(0, |c| c.minions.len());
    let count = match (&existing, options.minions) {
        (Some(c), None) if !c.minions.is_empty() => c.minions.len(),
        (_, n) => n.unwrap_or(DEFAULT_MINIONS),
    };
    let portal_net = options
        .portal_net
        .or(existing.as_ref().map(|c| c.portal_net))
        .unwrap_or_else(|| DEFAULT_PORTAL_NET.parse().unwrap_or_default());

    let key_file = dir.identity().with_extension("pub");
    let public_key = match std::fs::read_to_string(&key_file) {
        Ok(key) => key,
        // Stands for the key `up` generates once gcloud has passed its
        // checks (an all-zero ed25519 key: well-formed, never usable).
        Err(_) => format!("{PLACEHOLDER_KEY} kctl-{name}"),
    };
    let had_masters = existing
        .as_ref()
        .map(|c| c.etcd_hosts.len())
        .filter(|n| *n > 0);
    let masters = options.masters.or(had_masters).unwrap_or(1);
    if let Some(had) = had_masters.filter(|had| *had != masters) {
        return Err(miette!(
            help = "`kctl down` and `kctl up --masters N` to make it again",
            "cluster {name} has {had} master(s); changing that on a running cluster is not built yet"
        ));
    }
    let mut gspec = GceSpec::new(name, &project, &zone, count, &public_key, dir.dir.clone());
    gspec.masters = masters;
    gspec.machine_type = opts
        .machine_type
        .clone()
        .unwrap_or_else(|| DEFAULT_MACHINE_TYPE.into());
    gspec.master_machine_type = opts
        .master_machine_type
        .clone()
        .unwrap_or_else(|| DEFAULT_MACHINE_TYPE.into());
    if !opts.ssh_sources.is_empty() {
        gspec.ssh_sources = opts.ssh_sources.iter().map(|n| n.to_string()).collect();
    }
    gspec.validate()?;

    if options.dry_run {
        let commands = gce::up_commands(&gspec)?;
        ui.out(format!(
            "# kctl up --provider gce would run these {} gcloud commands (none was run);\n# then SSH to each VM: etcd on the master, Docker network, rules and kctl-node on the minions.",
            commands.len()
        ));
        if gspec.ssh_sources.iter().any(|s| s == "0.0.0.0/0") {
            ui.out(format!(
                "# warning: SSH (tcp:22) to every VM is open to 0.0.0.0/0, as kube-up.sh had it; `--ssh-source YOUR.ADDRESS/32` narrows the firewall rule {} to your own address.",
                gspec.names()?.firewall_ssh
            ));
        }
        for argv in commands {
            ui.out(gce::shell_line(&argv));
        }
        return Ok(());
    }

    let task = ui.task(format!("checking gcloud, project {project}, zone {zone}"));
    let report_ = gce::preflight(&g, &gspec).await;
    let preflight = match report_ {
        Ok(r) => r,
        Err(e) => {
            if existing.is_none() {
                let _ = std::fs::remove_dir_all(&dir.dir);
            }
            return Err(e.into());
        }
    };
    task.done(format!("gcloud ready (account {})", preflight.account));
    std::fs::create_dir_all(&dir.dir).map_err(report)?;
    set_private(&dir.dir)?;
    host::ensure_ssh_key(&dir.identity(), &format!("kctl-{name}")).await?;
    gspec.ssh_public_key = std::fs::read_to_string(&key_file)
        .map_err(report)?
        .trim()
        .to_string();
    for w in &preflight.warnings {
        ui.warn(w.clone());
    }

    // Without a record here, anything of this name in the project belongs
    // to someone else (or to a record that was lost): never adopt it, as
    // this record's `down` would then delete it.
    let knowledge = match existing {
        Some(_) => gce::Knowledge::Recorded,
        None => gce::Knowledge::FromFlags,
    };
    let found = match gce::discover(&g, &project, &zone, name, knowledge).await {
        Ok(found) => found,
        Err(e) => {
            if existing.is_none() {
                let _ = std::fs::remove_dir_all(&dir.dir);
            }
            return Err(e.into());
        }
    };
    if existing.is_none() && !found.nothing_at_all() {
        let _ = std::fs::remove_dir_all(&dir.dir);
        return Err(miette!(
            help = format!(
                "pick another --cluster name; if it is yours and its record is lost, `kctl down --cluster {name} --provider gce --project {project} --zone {zone}` deletes it"
            ),
            "project {project} already has resources of a kctl cluster named {name} that this machine has no record of: {}",
            found
                .lines()
                .into_iter()
                .chain(found.left_alone.clone())
                .chain(found.elsewhere.iter().map(|i| format!("instance {i}")))
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    // Quotas before the first create: a shortfall creates nothing.
    if let Err(e) = gce::check_quotas(&g, &gspec, &preflight, &found).await {
        if existing.is_none() {
            let _ = std::fs::remove_dir_all(&dir.dir);
        }
        return Err(e.into());
    }

    // A record before anything exists in the cloud: whatever fails later,
    // `down` knows where to look.
    let record = GceRecord {
        project: project.clone(),
        zone: zone.clone(),
    };
    if existing.is_none() {
        let mut pending = cluster_config(
            name,
            record.clone(),
            &gce::GceCluster {
                masters: vec![placeholder()],
                minions: vec![],
            },
            portal_net,
        );
        pending.etcd_hosts = vec![];
        pending.etcd_endpoints = vec![];
        dir.save(&pending)?;
    }

    // Fewer minions: the last ones go, once their pods have moved.
    if let Some(config) = existing.as_ref().filter(|_| count < before) {
        let indices: Vec<usize> = (count + 1..=before).collect();
        super::shrink(ui, &dir, config, count, async |task, _: &[String]| {
            let progress = |line: &str| task.set(line.to_string());
            Ok(gce::remove_minions(&g, &gspec, &indices, &progress).await?)
        })
        .await?;
    }

    let masters_text = match masters {
        1 => "master".to_string(),
        n => format!("{n} masters"),
    };
    let task = ui.task(format!(
        "network, firewall rules, {masters_text} and {count} minions ({}), routes, host keys",
        gspec.machine_type
    ));
    let progress = |line: &str| task.set(line.to_string());
    let made = gce::create(&g, &gspec, &progress).await?;
    task.done(format!(
        "{} VMs running in {zone}; host keys pinned from guest attributes",
        count + masters
    ));
    let pinned = std::fs::read_to_string(dir.known_hosts()).unwrap_or_default();
    let changed = check_pinned(&pinned, &made);
    if !changed.is_empty() {
        let file = dir.known_hosts().display().to_string();
        return Err(miette!(
            help = format!(
                "anything running in a VM can write its guest attributes, so kctl keeps the key it pinned when the VM was made. If you replaced the VM yourself, delete its line from {file} and run `kctl up` again; if not, treat the VM as compromised (`kctl down` deletes it). Nothing was changed on the VMs"
            ),
            "host key changed: {}",
            changed
                .iter()
                .map(|c| format!(
                    "{} now publishes {}, but {file} pins {}",
                    c.instance,
                    short_key(&c.read),
                    short_key(&c.pinned)
                ))
                .collect::<Vec<_>>()
                .join("; ")
        ));
    }
    let known = known_hosts(&made).join("\n") + "\n";
    crate::files::write_private(&dir.known_hosts(), known.as_bytes()).map_err(report)?;
    let mut config = cluster_config(name, record, &made, portal_net);
    options.allowances.grant(&mut config);
    // A member that replaced a lost one stays marked as having joined.
    if let Some(c) = &existing {
        for host in &mut config.etcd_hosts {
            host.joined = c.etcd_hosts.iter().any(|h| h.name == host.name && h.joined);
        }
    }
    dir.save(&config)?;

    let task = ui.task("waiting for the VMs to boot and run their startup scripts");
    let timeout = opts.boot_timeout.unwrap_or(DEFAULT_BOOT_TIMEOUT);
    if let Err(failures) = wait_for_boot(&config, &dir.auth(&config), timeout).await {
        // A VM that never answered SSH: its serial console says why
        // (a kernel panic, the guest agent, sshd not starting).
        let mut lines = vec![];
        for f in failures {
            lines.push(f.message);
            if f.silent {
                let instance = instance_of(&gspec.names()?, &f.machine);
                if let Some(tail) = gce::serial_tail(&g, &project, &zone, &instance, 15).await {
                    lines.push(format!(
                        "last lines of {instance}'s serial console:\n{tail}"
                    ));
                }
            }
        }
        return Err(miette!(
            help = "the VMs stay; fix the cause and run `kctl up` again (a VM runs its startup script again when it reboots), or `kctl down` removes them",
            "{}",
            lines.join("\n")
        ));
    }
    task.done("VMs ready");

    let etcd = match masters {
        1 => format!("etcd at {}", config.etcd_endpoints.join(",")),
        n => format!("etcd of {n} members (any one may be lost)"),
    };
    let mut cluster = Cluster::new(dir, config);
    let replaced = crate::ops::install::replace_lost_members(ui, &mut cluster).await?;
    let changed = install(ui, &cluster, None).await? || existing.is_none() || replaced;
    // install reached etcd: it has served.
    cluster.dir.mark_etcd_served()?;
    if before > 0 && count > before {
        // Images `kctl image load` gave the others (the VMs may pull too).
        let joined: Vec<String> = cluster.config.minions[before..]
            .iter()
            .map(|m| m.id.clone())
            .collect();
        let from = cluster.config.minions[0].id.clone();
        crate::ops::image::copy_loaded(ui, &cluster, &from, &joined).await?;
    }
    // Target pools hold the minions there are now.
    let mut store = cluster.store().await?;
    let state = store.snapshot().await?.state;
    crate::ops::load_balancers::converge(
        ui,
        &cluster,
        Some(&mut store),
        &state,
        &state.services,
        false,
    )
    .await?;
    if before > 0 && count != before {
        ui.out(format!(
            "Cluster {name} is up on GCE ({project}, {zone}) with {count} minions (it had {before})."
        ));
    } else if changed {
        ui.out(format!(
            "Cluster {name} is up on GCE ({project}, {zone}): {masters_text} + {count} minions, {etcd} (reached over SSH).\nNext: kctl apply -f manifests/, kctl get pods; `kctl down` deletes every VM, route, firewall rule and the network."
        ));
        if masters == 1 && existing.is_none() {
            ui.note(super::SINGLE_MASTER_NOTE);
        }
    } else {
        ui.out(format!(
            "Cluster {name} is up on GCE ({count} minions); nothing changed."
        ));
    }
    Ok(())
}

/// The instance behind a machine of the record ("master", "master-2",
/// "minion-2").
fn instance_of(names: &spec::Names, machine: &str) -> String {
    if let Some(n) = machine.strip_prefix("minion-").and_then(|n| n.parse().ok()) {
        return names.minion(n);
    }
    let n = machine
        .strip_prefix("master-")
        .and_then(|n| n.parse().ok())
        .unwrap_or(1);
    names.master_n(n)
}

/// `--project` and `--zone` may repeat the record, never contradict it:
/// they would point `up` or `down` at another cluster's resources (pure).
pub fn where_recorded(
    name: &str,
    record: &GceRecord,
    project: Option<&str>,
    zone: Option<&str>,
) -> miette::Result<()> {
    let contradictions: Vec<String> = [
        ("--project", project, &record.project),
        ("--zone", zone, &record.zone),
    ]
    .into_iter()
    .filter_map(|(flag, given, recorded)| match given {
        Some(g) if g != recorded => Some(format!("{flag} {g} (recorded: {recorded})")),
        _ => None,
    })
    .collect();
    if contradictions.is_empty() {
        Ok(())
    } else {
        Err(miette!(
            help = format!(
                "run it again without them; for a cluster elsewhere, use its own --cluster name"
            ),
            "cluster {name} is recorded in project {} zone {}; refusing {}. Nothing was changed",
            record.project,
            record.zone,
            contradictions.join(" and ")
        ))
    }
}

fn placeholder() -> Instance {
    Instance {
        name: String::new(),
        internal_ip: std::net::Ipv4Addr::UNSPECIFIED,
        external_ip: std::net::Ipv4Addr::UNSPECIFIED,
        host_keys: vec![],
    }
}

fn set_private(dir: &std::path::Path) -> miette::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(report)
}

/// `kctl down` for GCE: kctl's parts off the VMs when they answer (so a
/// cluster on VMs someone keeps is clean too), then every resource of the
/// cluster found in the cloud, by the record or by `--project`/`--zone`.
pub async fn down(
    ui: &Ui,
    dir: ClusterDir,
    config: Option<ClusterConfig>,
    options: &DownOptions,
) -> miette::Result<()> {
    let name = dir.name.clone();
    let recorded = config.as_ref().and_then(|c| c.gce.clone());
    let g = GcloudProcess::new();
    let (project, zone, knowledge) = match &recorded {
        Some(r) => {
            where_recorded(
                &name,
                r,
                options.project.as_deref(),
                options.zone.as_deref(),
            )?;
            (r.project.clone(), r.zone.clone(), gce::Knowledge::Recorded)
        }
        None => {
            let project = match &options.project {
                Some(p) => p.clone(),
                None => project_of(&g, None).await?,
            };
            // Routes and firewall rules are project-wide: a guessed zone
            // could strip them from a cluster that lives in another.
            let Some(zone) = options.zone.clone() else {
                return Err(miette!(
                    help = format!(
                        "kctl down --cluster {name} --provider gce --project {project} --zone ZONE"
                    ),
                    "cluster {name} has no record here: say which zone it is in"
                ));
            };
            (project, zone, gce::Knowledge::FromFlags)
        }
    };

    if options.dry_run {
        // What exists, found with read-only list calls; no delete runs.
        let found = gce::discover(&g, &project, &zone, &name, knowledge).await?;
        if !found.elsewhere.is_empty() {
            return Err(gce::GceError::OtherZone {
                cluster: name.clone(),
                zone: zone.clone(),
                elsewhere: found.elsewhere,
            }
            .into());
        }
        let commands = gce::down_commands(&project, &zone, &name, &found)?;
        ui.out("# kctl down would run these gcloud commands (no delete was run):");
        for line in &found.left_alone {
            ui.out(format!("# left alone: {line}"));
        }
        for argv in commands {
            ui.out(gce::shell_line(&argv));
        }
        return Ok(());
    }

    // The VMs are deleted anyway; cleaning them first matters only for
    // what outlives them (nothing here), so failures are not fatal.
    if let Some(c) = &config {
        if !c.minions.is_empty() {
            let cluster = Cluster::new(dir.clone(), c.clone());
            match tokio::time::timeout(Duration::from_secs(60), teardown_hosts(ui, &cluster, true))
                .await
            {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => ui.warn(format!(
                    "skipped cleaning the VMs before deleting them: {e}"
                )),
                Err(_) => {
                    ui.warn("skipped cleaning the VMs before deleting them: no answer in 60s")
                }
            }
        }
    }

    let task = ui.task(format!(
        "deleting cluster {name} in project {project}, zone {zone}"
    ));
    let progress = |line: &str| task.set(line.to_string());
    let done = gce::destroy(&g, &project, &zone, &name, knowledge, &progress).await?;
    let deleted = done.deleted;
    task.done(format!("{} resources deleted", deleted.len()));
    for line in &deleted {
        ui.out(format!("deleted {line}"));
    }
    for line in &done.left_alone {
        ui.warn(format!("left alone: {line}"));
    }
    if dir.dir.exists() {
        std::fs::remove_dir_all(&dir.dir).map_err(report)?;
    }
    if deleted.is_empty() {
        ui.out(format!(
            "Cluster {name}: nothing of it exists in {project}/{zone}."
        ));
    } else {
        ui.out(format!(
            "Cluster {name} is down; nothing of it is left in {project}/{zone}."
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vm(name: &str, internal: &str, external: &str) -> Instance {
        Instance {
            name: name.into(),
            internal_ip: internal.parse().unwrap(),
            external_ip: external.parse().unwrap(),
            host_keys: vec!["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIExample".into()],
        }
    }

    #[test]
    fn record_ssh_goes_to_external_addresses_and_etcd_to_the_master() {
        let made = gce::GceCluster {
            masters: vec![vm("kctl-d-master", "10.240.0.2", "34.1.1.1")],
            minions: vec![
                vm("kctl-d-minion-1", "10.240.0.3", "34.1.1.2"),
                vm("kctl-d-minion-2", "10.240.0.4", "34.1.1.3"),
            ],
        };
        let record = GceRecord {
            project: "p".into(),
            zone: "us-central1-b".into(),
        };
        let c = cluster_config("d", record, &made, "10.0.0.0/16".parse().unwrap());
        assert_eq!(c.minions[1].pod_cidr, "10.244.2.0/24");
        assert_eq!(c.minions[1].host_ip.to_string(), "10.240.0.4");
        assert_eq!(c.minions[1].ssh_target().host, "34.1.1.3");
        assert_eq!(c.minions[1].ssh_user, "kctl");
        assert_eq!(c.etcd_endpoints, ["https://10.240.0.2:4001"]);
        assert_eq!(c.etcd_hosts[0].ssh_host, "34.1.1.1");
        assert!(!c.pod_network.host_routes);
        assert_eq!(c.pod_network.mtu, Some(1460));
        let lines = known_hosts(&made);
        assert_eq!(lines.len(), 3);
        assert!(lines[0].starts_with("34.1.1.1,kctl-d-master ssh-ed25519 "));
    }

    #[test]
    fn three_masters_are_three_etcd_members_each_known_by_its_instance() {
        let made = gce::GceCluster {
            masters: vec![
                vm("kctl-d-master", "10.240.0.2", "34.1.1.1"),
                vm("kctl-d-master-2", "10.240.0.5", "34.1.1.5"),
                vm("kctl-d-master-3", "10.240.0.6", "34.1.1.6"),
            ],
            minions: vec![vm("kctl-d-minion-1", "10.240.0.3", "34.1.1.2")],
        };
        let record = GceRecord {
            project: "p".into(),
            zone: "us-central1-b".into(),
        };
        let c = cluster_config("d", record, &made, "10.0.0.0/16".parse().unwrap());
        assert_eq!(
            c.etcd_endpoints,
            [
                "https://10.240.0.2:4001",
                "https://10.240.0.5:4001",
                "https://10.240.0.6:4001"
            ]
        );
        let ids: Vec<&str> = c.etcd_hosts.iter().map(|h| h.name.as_str()).collect();
        assert_eq!(ids, ["master", "master-2", "master-3"]);
        assert_eq!(c.etcd_hosts[2].ssh_host, "34.1.1.6");
        let names = spec::Names::new("d", "us-central1-b").unwrap();
        let instances: Vec<String> = ids.iter().map(|id| instance_of(&names, id)).collect();
        assert_eq!(
            instances,
            ["kctl-d-master", "kctl-d-master-2", "kctl-d-master-3"]
        );
        assert_eq!(instance_of(&names, "minion-1"), "kctl-d-minion-1");
        let lines = known_hosts(&made);
        assert!(lines[2].starts_with("34.1.1.6,kctl-d-master-3 ssh-ed25519 "));
    }

    #[test]
    fn a_key_is_pinned_once_and_a_different_one_later_is_refused() {
        let mut made = gce::GceCluster {
            masters: vec![vm("kctl-d-master", "10.240.0.2", "34.1.1.1")],
            minions: vec![vm("kctl-d-minion-1", "10.240.0.3", "34.1.1.2")],
        };
        // First up: nothing pinned yet; everything is taken.
        assert!(check_pinned("", &made).is_empty());
        let pinned = known_hosts(&made).join("\n");
        assert!(check_pinned(&pinned, &made).is_empty());
        // The master's address changed (stop/start): same key, still fine.
        made.masters[0].external_ip = "34.9.9.9".parse().unwrap();
        assert!(check_pinned(&pinned, &made).is_empty());
        // A minion publishes another key: refused, named.
        made.minions[0].host_keys = vec!["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOther".into()];
        let changed = check_pinned(&pinned, &made);
        assert_eq!(changed.len(), 1);
        assert_eq!(changed[0].instance, "kctl-d-minion-1");
        assert!(changed[0].pinned.ends_with("AAAAIExample"));
        // Records of an older kctl pin by address only.
        let old = "34.1.1.2 ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIExample\n";
        assert_eq!(check_pinned(old, &made).len(), 1);
        // A new VM (a minion added later) is pinned on first sight, also
        // when its ephemeral address once belonged to another instance.
        made.minions
            .push(vm("kctl-d-minion-2", "10.240.0.4", "34.1.1.1"));
        made.minions[1].host_keys = vec!["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAINew".into()];
        assert_eq!(check_pinned(&pinned, &made).len(), 1);
    }

    #[test]
    fn flags_may_repeat_the_record_but_never_contradict_it() {
        let record = GceRecord {
            project: "my-proj-123".into(),
            zone: "us-central1-b".into(),
        };
        assert!(where_recorded("d", &record, None, None).is_ok());
        assert!(where_recorded("d", &record, Some("my-proj-123"), Some("us-central1-b")).is_ok());
        let err = where_recorded("d", &record, None, Some("us-east1-b"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("--zone us-east1-b (recorded: us-central1-b)"),
            "{err}"
        );
        assert!(err.contains("Nothing was changed"), "{err}");
        let err = where_recorded("d", &record, Some("other-proj"), Some("us-east1-b"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("--project other-proj") && err.contains("--zone us-east1-b"),
            "{err}"
        );
    }

    #[test]
    fn boot_markers_are_judged() {
        let f = gce::BOOT_FORMAT;
        assert_eq!(
            boot_state(Some(&format!("{f} 0.1.0\n")), None),
            BootState::Done
        );
        // Another kctl version writing the same format is fine.
        assert_eq!(
            boot_state(Some(&format!("{f} 9.9.9\n")), None),
            BootState::Done
        );
        assert_eq!(
            boot_state(Some("0 0.0.1\n"), None),
            BootState::OtherFormat("0 0.0.1".into())
        );
        assert_eq!(
            boot_state(None, Some("E: Unable to locate package dokcer.io\n")),
            BootState::Failed("E: Unable to locate package dokcer.io".into())
        );
        assert_eq!(boot_state(None, None), BootState::Running);
    }
}
