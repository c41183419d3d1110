//! What must change on a minion, and what its pods' statuses are, from the
//! desired pods and the containers observed there. Pure: no I/O, no clock.

use super::docker::{Observed, INFRA_CONTAINER};
use super::Supervisor;
use crate::state::{ContainerStatus, PodPhase, PodRecord, PodStatus};
use std::collections::{BTreeMap, BTreeSet};

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

/// What `steps` would do, as sentences about the minion: where what it
/// runs differs from etcd. Pure.
pub fn describe_steps(steps: &[Step]) -> Vec<String> {
    steps
        .iter()
        .map(|step| match step {
            Step::Remove { ids, why } => {
                format!("{} container(s) that etcd does not want: {why}", ids.len())
            }
            Step::Start(pod) => format!("pod {} is not running", pod.pod.id),
            Step::Restart { pod, .. } => format!("a container of pod {pod} exited"),
        })
        .collect()
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
        host: pod.host.clone(),
        phase,
        spec_hash: hash,
        pod_ip: infra.and_then(|c| c.ip),
        containers,
        message,
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

/// `ip -batch` input that turns hairpin mode on for each bridge port.
pub fn hairpin_batch(ports: &[String]) -> String {
    ports
        .iter()
        .map(|port| format!("link set dev {port} type bridge_slave hairpin on\n"))
        .collect()
}
