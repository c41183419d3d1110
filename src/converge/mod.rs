//! Bringing one minion's containers to the desired state. The same routine
//! serves `kctl apply` (over SSH from the workstation) and `kctl-node`
//! (locally on the minion): only the `Exec` differs.
//!
//! A pod is an infrastructure container (`<pod>_POD`, running kctl's pause
//! image) that holds the pod's network namespace, IP and host ports, plus
//! one container per manifest container joined to that namespace, as
//! Kubernetes v0.5 did. Every container carries labels naming its cluster,
//! pod, container and spec hash, so the minion itself says what runs there.

pub mod docker;
pub mod supervisor;

use crate::argv;
use crate::exec::{Exec, ExecError};
use crate::services::rules::{self, Portal};
use crate::state::{ContainerStatus, PodPhase, PodRecord, PodStatus};
use docker::Observed;
use futures::StreamExt;
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

/// Pods started at once on one minion. Each is two `docker run`s in
/// sessions of the minion's SSH master (MaxSessions bounds them too);
/// more than this mostly queues on dockerd and the minion's two cores.
pub const POD_STARTS_IN_FLIGHT: usize = 16;
pub use supervisor::Supervisor;

pub use docker::INFRA_CONTAINER;

/// Facts about the cluster that shape `docker run`.
#[derive(Debug, Clone)]
pub struct RunContext {
    pub cluster: String,
    /// Never pull (local clusters have no registry): fail at once instead.
    pub offline_images: bool,
    /// The services' variables, for containers started now.
    pub service_env: Vec<crate::model::EnvVar>,
}

/// One thing to do on a minion.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    /// Remove containers (stale, orphaned, or of a pod being restarted).
    Remove { ids: Vec<String>, why: String },
    /// Start a pod's containers from scratch.
    Start(PodRecord),
    /// Start an exited container again, as its pod's restart policy says.
    Restart { id: String, pod: String },
}

/// Whether an exited container is to run again.
fn restart_wanted(policy: crate::model::RestartPolicy, exit_code: i64) -> bool {
    use crate::model::RestartPolicy::*;
    match policy {
        Always => true,
        OnFailure => exit_code != 0,
        Never => false,
    }
}

/// What must change so that `observed` becomes `desired`. Pure.
pub fn steps(desired: &[PodRecord], observed: &[Observed]) -> Vec<Step> {
    let wanted: BTreeMap<&str, &PodRecord> =
        desired.iter().map(|p| (p.pod.id.as_str(), p)).collect();
    let mut remove = Vec::new();
    let mut reasons = BTreeSet::new();
    for c in observed {
        match wanted.get(c.pod.as_str()) {
            None => {
                remove.push(c.id.clone());
                reasons.insert(format!("pod {} is gone", c.pod));
            }
            Some(p) if c.spec_hash != p.spec_hash() => {
                remove.push(c.id.clone());
                reasons.insert(format!("pod {} changed", c.pod));
            }
            Some(_) => {}
        }
    }
    let mut starts = Vec::new();
    for pod in desired {
        let hash = pod.spec_hash();
        let mine: Vec<&Observed> = observed
            .iter()
            .filter(|c| c.pod == pod.pod.id && c.spec_hash == hash)
            .collect();
        let infra_ok = mine
            .iter()
            .any(|c| c.container == INFRA_CONTAINER && c.running);
        let all_present = pod
            .pod
            .spec
            .containers
            .iter()
            .all(|spec| mine.iter().any(|c| c.container == spec.name));
        if infra_ok && all_present {
            for c in mine
                .iter()
                .filter(|c| c.container != INFRA_CONTAINER && c.finished)
            {
                if restart_wanted(pod.pod.spec.restart_policy, c.exit_code) {
                    starts.push(Step::Restart {
                        id: c.id.clone(),
                        pod: pod.pod.id.clone(),
                    });
                }
            }
            continue;
        }
        // Half a pod (a failed start, a dead infra container) is started
        // again whole: its containers share the infra container's network.
        if !mine.is_empty() {
            remove.extend(mine.iter().map(|c| c.id.clone()));
            reasons.insert(format!("pod {} is incomplete", pod.pod.id));
        }
        starts.push(Step::Start(pod.clone()));
    }
    let mut out = Vec::new();
    if !remove.is_empty() {
        out.push(Step::Remove {
            ids: remove,
            why: reasons.into_iter().collect::<Vec<_>>().join("; "),
        });
    }
    out.extend(starts);
    out
}

/// The observed status of each desired pod. Pure.
pub fn statuses(
    desired: &[PodRecord],
    observed: &[Observed],
    supervisor: &Supervisor,
) -> BTreeMap<String, PodStatus> {
    desired
        .iter()
        .map(|pod| (pod.pod.id.clone(), pod_status(pod, observed, supervisor)))
        .collect()
}

fn pod_status(pod: &PodRecord, observed: &[Observed], supervisor: &Supervisor) -> PodStatus {
    let hash = pod.spec_hash();
    let mine: Vec<&Observed> = observed
        .iter()
        .filter(|c| c.pod == pod.pod.id && c.spec_hash == hash)
        .collect();
    let infra = mine.iter().find(|c| c.container == INFRA_CONTAINER);
    let mut containers = Vec::new();
    let mut missing = Vec::new();
    for spec in &pod.pod.spec.containers {
        match mine.iter().find(|c| c.container == spec.name) {
            Some(c) => containers.push(ContainerStatus {
                name: spec.name.clone(),
                container_id: c.id.clone(),
                running: c.running,
                restart_count: c.restart_count + supervisor.restarts(&c.id),
                exit_code: (!c.running).then_some(c.exit_code),
                healthy: supervisor.health(&c.id),
            }),
            None => missing.push(spec.name.clone()),
        }
    }
    let all_running = infra.is_some_and(|c| c.running)
        && missing.is_empty()
        && containers.iter().all(|c| c.running);
    // Docker restarts per the pod's policy; an exited container that it
    // is not restarting has stopped for good.
    let stopped_for_good = mine
        .iter()
        .filter(|c| c.container != INFRA_CONTAINER)
        .any(|c| c.finished);
    let (phase, message) = if all_running {
        (PodPhase::Running, None)
    } else if infra.is_none() && containers.is_empty() {
        (PodPhase::Waiting, Some("not started".to_string()))
    } else if stopped_for_good && missing.is_empty() {
        let exits: Vec<String> = containers
            .iter()
            .filter(|c| !c.running)
            .map(|c| format!("{} exited with {}", c.name, c.exit_code.unwrap_or(-1)))
            .collect();
        (PodPhase::Terminated, Some(exits.join(", ")))
    } else {
        let waiting: Vec<String> = containers
            .iter()
            .filter(|c| !c.running)
            .map(|c| c.name.clone())
            .chain(missing)
            .collect();
        (
            PodPhase::Waiting,
            Some(format!("waiting for {}", waiting.join(", "))),
        )
    };
    PodStatus {
        phase,
        spec_hash: hash,
        pod_ip: infra.and_then(|c| c.ip),
        containers,
        message,
    }
}

/// What converging one minion did and found.
#[derive(Debug, Clone, Default)]
pub struct MinionReport {
    pub removed: usize,
    pub started: Vec<String>,
    pub statuses: BTreeMap<String, PodStatus>,
    /// Pods that failed to start, with docker's words.
    pub failures: Vec<(String, String)>,
    /// Pods one of whose containers was started again after it exited.
    pub restarted: Vec<String>,
    /// The pods bound to the minion, as converged.
    pub desired: Vec<PodRecord>,
}

/// Makes the minion run exactly `desired` (the pods bound to it), then waits
/// up to `wait` for them to run.
pub async fn converge_minion<E: Exec>(
    exec: &E,
    ctx: &RunContext,
    desired: &[PodRecord],
    wait: Duration,
    supervisor: &mut Supervisor,
) -> Result<MinionReport, ExecError> {
    let observed = docker::observe(exec, &ctx.cluster).await?;
    let mut report = MinionReport {
        desired: desired.to_vec(),
        ..MinionReport::default()
    };
    let mut to_start = Vec::new();
    for step in steps(desired, &observed) {
        match step {
            // Removals come first (steps puts them there): a changed pod's
            // old containers hold the names its new ones take.
            Step::Remove { ids, .. } => {
                report.removed += ids.len();
                exec.run_ok(&docker::remove_argv(&ids)).await?;
            }
            Step::Start(pod) => to_start.push(pod),
            Step::Restart { id, pod } => {
                let now = Instant::now();
                if supervisor.may_restart(&id, now) {
                    exec.run_ok(&argv!["docker", "start", id.clone()]).await?;
                    supervisor.restarted(&id, now);
                    report.restarted.push(pod);
                }
            }
        }
    }
    // Pods start side by side, a bounded number at a time; each pod's own
    // containers keep their order (infra first). A failure stays the pod's.
    let results: Vec<(String, Result<(), String>)> = futures::stream::iter(to_start.iter())
        .map(|pod| async move { (pod.pod.id.clone(), start_pod(exec, ctx, pod).await) })
        .buffer_unordered(POD_STARTS_IN_FLIGHT)
        .collect()
        .await;
    for (pod, result) in results {
        match result {
            Ok(()) => report.started.push(pod),
            Err(e) => report.failures.push((pod, e)),
        }
    }
    report.started.sort();
    report.failures.sort();
    if !report.started.is_empty() || !report.restarted.is_empty() {
        ensure_hairpin(exec).await?;
    }
    let deadline = Instant::now() + wait;
    loop {
        let observed = docker::observe(exec, &ctx.cluster).await?;
        report.statuses = statuses(desired, &observed, supervisor);
        let settled = report
            .statuses
            .iter()
            .filter(|(id, _)| !report.failures.iter().any(|(f, _)| f == *id))
            .all(|(_, s)| s.phase != PodPhase::Waiting);
        if settled || Instant::now() >= deadline {
            return Ok(report);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Ports of the pod bridge whose hairpin mode is off, from
/// `ip -d -o link show master BRIDGE`.
pub fn ports_without_hairpin(text: &str) -> Vec<String> {
    text.lines()
        .filter(|l| l.contains("hairpin off"))
        .filter_map(|l| {
            let name = l.split_whitespace().nth(1)?.trim_end_matches(':');
            Some(name.split('@').next()?.to_string())
        })
        .collect()
}

/// Hairpin mode on every port of the pod bridge, so a pod reaches itself
/// through its service's portal (the DNATed packet leaves by the port it
/// came in). Docker sets it only when its userland proxy is off, which is
/// not the default on users' hosts.
pub async fn ensure_hairpin<E: Exec>(exec: &E) -> Result<(), ExecError> {
    let ports = exec
        .run(
            &argv![
                "ip",
                "-d",
                "-o",
                "link",
                "show",
                "master",
                docker::POD_BRIDGE
            ],
            None,
        )
        .await?;
    for port in ports_without_hairpin(&ports.stdout_text()) {
        exec.run_ok(&argv![
            "ip",
            "link",
            "set",
            "dev",
            port,
            "type",
            "bridge_slave",
            "hairpin",
            "on"
        ])
        .await?;
    }
    Ok(())
}

/// Makes the minion's kctl service rules exactly `portals`, replacing its
/// nftables table whole in one transaction.
pub async fn sync_rules<E: Exec>(exec: &E, portals: &[Portal]) -> Result<(), ExecError> {
    let script = rules::render(portals);
    let restore = argv!["nft", "--file", "-"];
    exec.run(&restore, Some(script.as_bytes()))
        .await?
        .check(exec.target(), &restore)?;
    Ok(())
}

/// Starts the infra container, then each app container; on failure the
/// pod's containers are left for the next converge to clean up, and the
/// error is docker's own message.
async fn start_pod<E: Exec>(exec: &E, ctx: &RunContext, pod: &PodRecord) -> Result<(), String> {
    for argv in docker::run_argvs(pod, ctx) {
        let out = exec.run(&argv, None).await.map_err(|e| e.to_string())?;
        if !out.success() {
            let stderr = String::from_utf8_lossy(&out.stderr);
            return Err(stderr.trim().to_string());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
