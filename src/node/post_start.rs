//! postStart after a container is started again in place: by Docker's
//! restart policy, or by this helper (a restart after an exit or a failed
//! probe). kctl's own starts of new containers run the hook themselves;
//! v0.5's kubelet ran it at every start it made, and so the helper runs it
//! at every start it sees. A failure is an event, and the container is
//! restarted as after a failed probe (unless the pod's policy is `never`
//! or its back-off is not over).

use crate::converge::docker::with_port_number;
use crate::converge::executor::{post_start, HookTarget};
use crate::converge::{ContainerEngine, ConvergeEvent, EventSink, MinionReport, Supervisor};
use crate::exec::Exec;
use crate::model::RestartPolicy;
use std::time::Instant;
use tracing::warn;

/// Runs the postStart hook of every container of the report's pods that
/// runs again since the last round.
pub async fn run_after_restarts<D: ContainerEngine, E: Exec>(
    engine: &D,
    exec: &E,
    report: &MinionReport,
    supervisor: &mut Supervisor,
    events: &dyn EventSink,
) {
    for pod in &report.desired {
        let Some(status) = report.statuses.get(&pod.pod.id) else {
            continue;
        };
        for spec in &pod.pod.spec.containers {
            let Some(c) = status.containers.iter().find(|c| c.name == spec.name) else {
                continue;
            };
            if !c.running || !supervisor.started_again(&c.container_id, c.restart_count) {
                continue;
            }
            let Some(hook) = &spec.post_start else {
                continue;
            };
            let target = HookTarget {
                container_id: &c.container_id,
                pod_ip: status.pod_ip,
            };
            let hook = with_port_number(hook, &pod.pod.spec);
            let Err(message) = post_start(engine, exec, &target, &hook).await else {
                continue;
            };
            let now = Instant::now();
            let mut restarted = false;
            if pod.pod.spec.restart_policy != RestartPolicy::Never
                && supervisor.may_restart(&c.container_id, now)
            {
                match engine.restart(&c.container_id, 1).await {
                    Ok(()) => {
                        supervisor.restarted(&c.container_id, now);
                        restarted = true;
                    }
                    Err(e) => warn!("restart of {}/{}: {e}", pod.pod.id, spec.name),
                }
            }
            events.emit(ConvergeEvent::PostStartFailed {
                minion: pod.host.clone(),
                pod: pod.pod.id.clone(),
                container: spec.name.clone(),
                message,
                restarted,
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::converge::engine::RecordingEngine;
    use crate::converge::event::EventLog;
    use crate::exec::RecordingExec;
    use crate::model::{Container, Hook, Pod, PodSpec};
    use crate::state::{ContainerStatus, PodPhase, PodRecord, PodStatus};

    fn report(restart_count: u32) -> MinionReport {
        let pod = PodRecord {
            pod: Pod {
                id: "web".into(),
                labels: Default::default(),
                spec: PodSpec {
                    containers: vec![Container {
                        name: "app".into(),
                        image: "img".into(),
                        post_start: Some(Hook::Exec(vec!["touch".into(), "/tmp/up".into()])),
                        ..Container::default()
                    }],
                    ..PodSpec::default()
                },
            },
            host: "minion-1".into(),
            owner: None,
            draining: false,
        };
        MinionReport {
            desired: vec![pod],
            statuses: [(
                "web".to_string(),
                PodStatus {
                    host: "minion-1".into(),
                    phase: PodPhase::Running,
                    spec_hash: String::new(),
                    pod_ip: Some("10.101.1.2".parse().unwrap()),
                    containers: vec![ContainerStatus {
                        name: "app".into(),
                        container_id: "c1".into(),
                        running: true,
                        restart_count,
                        exit_code: None,
                        healthy: None,
                    }],
                    message: None,
                },
            )]
            .into(),
            ..MinionReport::default()
        }
    }

    #[tokio::test]
    async fn runs_once_per_start_in_place_and_not_on_first_sight() {
        let engine = RecordingEngine::default();
        let exec = RecordingExec::default();
        let mut supervisor = Supervisor::default();
        let events = EventLog::default();
        let hooked = |engine: &RecordingEngine| {
            engine
                .requests()
                .iter()
                .filter(|r| *r == "exec c1 touch /tmp/up")
                .count()
        };
        // First sight: kctl started it and ran the hook then.
        run_after_restarts(&engine, &exec, &report(0), &mut supervisor, &events).await;
        assert_eq!(hooked(&engine), 0);
        // The same run again: nothing.
        run_after_restarts(&engine, &exec, &report(0), &mut supervisor, &events).await;
        assert_eq!(hooked(&engine), 0);
        // Started again in place: once.
        run_after_restarts(&engine, &exec, &report(1), &mut supervisor, &events).await;
        run_after_restarts(&engine, &exec, &report(1), &mut supervisor, &events).await;
        assert_eq!(hooked(&engine), 1);
        assert!(events.take().is_empty());
        // A failure is an event, and the container is restarted.
        let failing = RecordingEngine {
            exec_exit_code: 3,
            ..Default::default()
        };
        run_after_restarts(&failing, &exec, &report(2), &mut supervisor, &events).await;
        assert!(
            failing.requests().contains(&"restart c1 1".to_string()),
            "{:?}",
            failing.requests()
        );
        assert_eq!(
            events.take(),
            [ConvergeEvent::PostStartFailed {
                minion: "minion-1".into(),
                pod: "web".into(),
                container: "app".into(),
                message: "exited 3".into(),
                restarted: true,
            }]
        );
    }
}
