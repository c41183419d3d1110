//! Carrying out a minion's steps over `Exec`: docker and ip for containers,
//! nft for service rules. What to do comes from `plan`; this only does it,
//! reports what happened through the caller's `EventSink`, and returns what
//! it found.

use super::docker;
use super::error::{ConvergeError, MinionStage};
use super::event::{ConvergeEvent, EventSink};
use super::plan::{ports_without_hairpin, statuses, steps, Step};
use super::{RunContext, Supervisor, POD_STARTS_IN_FLIGHT};
use crate::argv;
use crate::exec::{Exec, ExecError};
use crate::services::rules::{self, Portal};
use crate::state::{PodPhase, PodRecord, PodStatus};
use futures::StreamExt;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

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
    events: &dyn EventSink,
) -> Result<MinionReport, ConvergeError> {
    let minion = exec.target();
    let observe = || async {
        docker::observe(exec, &ctx.cluster)
            .await
            .map_err(ConvergeError::exec(minion, MinionStage::Observe))
    };
    let observed = observe().await?;
    let mut report = MinionReport {
        desired: desired.to_vec(),
        ..MinionReport::default()
    };
    let mut to_start = Vec::new();
    for step in steps(desired, &observed) {
        match step {
            // Removals come first (steps puts them there): a changed pod's
            // old containers hold the names its new ones take.
            Step::Remove { ids, why } => {
                report.removed += ids.len();
                exec.run_ok(&docker::remove_argv(&ids))
                    .await
                    .map_err(ConvergeError::exec(minion, MinionStage::Remove))?;
                events.emit(ConvergeEvent::ContainersRemoved {
                    minion: minion.to_string(),
                    ids,
                    why,
                });
            }
            Step::Start(pod) => to_start.push(pod),
            Step::Restart { id, pod } => {
                let now = Instant::now();
                if supervisor.may_restart(&id, now) {
                    exec.run_ok(&argv!["docker", "start", id.clone()])
                        .await
                        .map_err(ConvergeError::exec(minion, MinionStage::Restart))?;
                    supervisor.restarted(&id, now);
                    events.emit(ConvergeEvent::ContainerRestarted {
                        minion: minion.to_string(),
                        pod: pod.clone(),
                        container: id,
                    });
                    report.restarted.push(pod);
                } else {
                    events.emit(ConvergeEvent::RestartDeferred {
                        minion: minion.to_string(),
                        pod,
                        container: id,
                    });
                }
            }
        }
    }
    // Pods start side by side, a bounded number at a time; each pod's own
    // containers keep their order (infra first). A failure stays the pod's.
    let results: Vec<(String, Result<(), StartFailure>)> = futures::stream::iter(to_start.iter())
        .map(|pod| async move {
            let id = pod.pod.id.clone();
            let result = start_pod(exec, ctx, pod).await;
            events.emit(match &result {
                Ok(()) => ConvergeEvent::PodStarted {
                    minion: minion.to_string(),
                    pod: id.clone(),
                },
                Err(e) => ConvergeEvent::PodFailed {
                    minion: minion.to_string(),
                    pod: id.clone(),
                    message: e.to_string(),
                },
            });
            (id, result)
        })
        .buffer_unordered(POD_STARTS_IN_FLIGHT)
        .collect()
        .await;
    for (pod, result) in results {
        match result {
            Ok(()) => report.started.push(pod),
            Err(e) => report.failures.push((pod, e.to_string())),
        }
    }
    report.started.sort();
    report.failures.sort();
    if !report.started.is_empty() || !report.restarted.is_empty() {
        let ports = ensure_hairpin(exec)
            .await
            .map_err(ConvergeError::exec(minion, MinionStage::Hairpin))?;
        if !ports.is_empty() {
            events.emit(ConvergeEvent::HairpinEnabled {
                minion: minion.to_string(),
                ports,
            });
        }
    }
    let deadline = Instant::now() + wait;
    loop {
        let observed = observe().await?;
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

/// Hairpin mode on every port of the pod bridge, so a pod reaches itself
/// through its service's portal (the DNATed packet leaves by the port it
/// came in). Docker sets it only when its userland proxy is off, which is
/// not the default on users' hosts. Returns the ports it turned on.
pub async fn ensure_hairpin<E: Exec>(exec: &E) -> Result<Vec<String>, ExecError> {
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
    let off = ports_without_hairpin(&ports.stdout_text());
    for port in &off {
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
    Ok(off)
}

/// Makes the minion's kctl service rules exactly `portals`, replacing its
/// nftables table whole in one transaction.
pub async fn sync_rules<E: Exec>(exec: &E, portals: &[Portal]) -> Result<(), ConvergeError> {
    let script = rules::render(portals);
    let restore = argv!["nft", "--file", "-"];
    let rules_failed = ConvergeError::exec(exec.target(), MinionStage::Rules);
    match exec.run(&restore, Some(script.as_bytes())).await {
        Ok(out) => out
            .check(exec.target(), &restore)
            .map(drop)
            .map_err(rules_failed),
        Err(e) => Err(rules_failed(e)),
    }
}

/// Why a pod did not start: docker said no (its own message), or the
/// command could not be run at all.
#[derive(Debug, thiserror::Error)]
enum StartFailure {
    #[error("{0}")]
    Docker(String),
    #[error(transparent)]
    Exec(#[from] ExecError),
}

/// Starts the infra container, then each app container; on failure the
/// pod's containers are left for the next converge to clean up.
async fn start_pod<E: Exec>(
    exec: &E,
    ctx: &RunContext,
    pod: &PodRecord,
) -> Result<(), StartFailure> {
    for argv in docker::run_argvs(pod, ctx) {
        let out = exec.run(&argv, None).await?;
        if !out.success() {
            let stderr = String::from_utf8_lossy(&out.stderr);
            return Err(StartFailure::Docker(stderr.trim().to_string()));
        }
    }
    Ok(())
}
