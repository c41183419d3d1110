//! Events: what happened to an object, for `kctl describe` and `kctl get
//! events` (scheduled, started, probe failed, restarted, rescheduled ...).
//! Pure: which events a committed plan or a converge event makes. kctl
//! and the helpers record them in etcd beside the cluster's state (see
//! `store`), a bounded history per object that expires after a while.

use crate::converge::ConvergeEvent;
use crate::plan::Op;
use crate::state::{ClusterState, PodStatus};
use serde::{Deserialize, Serialize};

/// How many events an object keeps; older ones are deleted.
pub const EVENTS_PER_OBJECT: usize = 20;

/// What an event is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Subject {
    Pod,
    ReplicationController,
    Service,
    Minion,
}

impl Subject {
    /// As `kctl get` names the kind (and in the event's etcd key).
    pub fn name(self) -> &'static str {
        match self {
            Subject::Pod => "pod",
            Subject::ReplicationController => "replicationController",
            Subject::Service => "service",
            Subject::Minion => "minion",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Event {
    pub subject: Subject,
    pub id: String,
    /// Unix time in milliseconds, by the recorder's clock.
    pub time_ms: u64,
    /// One word, as Kubernetes' reasons: Scheduled, Started, Failed ...
    pub reason: String,
    pub message: String,
    /// Who recorded it: `kctl` or `kctl-node/<minion>`.
    pub source: String,
}

/// The time now, as events record it.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// An event with no time or source yet: the recorder adds them.
pub fn event(subject: Subject, id: &str, reason: &str, message: String) -> Event {
    Event {
        subject,
        id: id.to_string(),
        time_ms: 0,
        reason: reason.to_string(),
        message,
        source: String::new(),
    }
}

/// The events a committed plan makes, judged against the state it was
/// planned from.
pub fn of_plan(before: &ClusterState, ops: &[Op]) -> Vec<Event> {
    use Subject::*;
    let mut out = Vec::new();
    for op in ops {
        match op {
            Op::PutPod(p) => {
                let id = &p.pod.id;
                match before.pods.get(id) {
                    None => {
                        out.push(event(Pod, id, "Scheduled", format!("bound to {}", p.host)));
                        if let Some(rc) = &p.owner {
                            out.push(event(
                                ReplicationController,
                                rc,
                                "SuccessfulCreate",
                                format!("created pod {id} on {}", p.host),
                            ));
                        }
                    }
                    Some(old) if !old.draining && p.draining => out.push(event(
                        Pod,
                        id,
                        "Draining",
                        "out of its services' endpoints; it stops once every minion forgot it"
                            .into(),
                    )),
                    Some(old) if old.host != p.host => out.push(event(
                        Pod,
                        id,
                        "Scheduled",
                        format!("moved from {} to {}", old.host, p.host),
                    )),
                    Some(old) if old.pod != p.pod => out.push(event(
                        Pod,
                        id,
                        "Updated",
                        "its spec changed: containers are replaced".into(),
                    )),
                    Some(_) => {}
                }
            }
            Op::DeletePod(id) => {
                let Some(old) = before.pods.get(id) else {
                    continue;
                };
                // The leader deletes pods of a minion that stopped
                // answering and schedules replacements.
                let (reason, why) = if before.ready(&old.host) {
                    ("Deleted", String::new())
                } else {
                    ("Rescheduled", format!(": minion {} is not ready", old.host))
                };
                out.push(event(
                    Pod,
                    id,
                    reason,
                    format!("removed from {}{why}", old.host),
                ));
                if let Some(rc) = &old.owner {
                    out.push(event(
                        ReplicationController,
                        rc,
                        "SuccessfulDelete",
                        format!("deleted pod {id}{why}"),
                    ));
                }
            }
            Op::PutController(rc) => match before.controllers.get(&rc.id) {
                None => out.push(event(
                    ReplicationController,
                    &rc.id,
                    "Created",
                    format!("{} replica(s)", rc.replicas),
                )),
                Some(old) if old.replicas != rc.replicas && old.template == rc.template => out
                    .push(event(
                        ReplicationController,
                        &rc.id,
                        "Resized",
                        format!("{} to {} replica(s)", old.replicas, rc.replicas),
                    )),
                Some(old) if old != rc => out.push(event(
                    ReplicationController,
                    &rc.id,
                    "Updated",
                    "its spec changed".into(),
                )),
                Some(_) => {}
            },
            Op::DeleteController(id) => out.push(event(
                ReplicationController,
                id,
                "Deleted",
                "deleted".into(),
            )),
            Op::PutService(s) => {
                let id = &s.service.id;
                match before.services.get(id) {
                    None => out.push(event(
                        Service,
                        id,
                        "Created",
                        format!(
                            "portal {}:{}/{}",
                            s.portal_ip,
                            s.service.port,
                            s.service.protocol.as_upper()
                        ),
                    )),
                    Some(old) if old != s => {
                        out.push(event(Service, id, "Updated", "its spec changed".into()))
                    }
                    Some(_) => {}
                }
            }
            Op::DeleteService(id) => out.push(event(Service, id, "Deleted", "deleted".into())),
            Op::PutOwner(..) => {}
        }
    }
    out
}

/// The event a converge event makes, if it is worth keeping: what
/// happened to a pod or a service, not bookkeeping.
pub fn of_converge(e: &ConvergeEvent) -> Option<Event> {
    use ConvergeEvent as C;
    use Subject::*;
    Some(match e {
        C::PodStarted { minion, pod } => event(
            Pod,
            pod,
            "Started",
            format!("containers started on {minion}"),
        ),
        C::PodFailed {
            minion,
            pod,
            message,
        } => event(Pod, pod, "Failed", format!("on {minion}: {message}")),
        C::ProbeFailed {
            pod,
            container,
            message,
            restarted,
            ..
        } => event(
            Pod,
            pod,
            "Unhealthy",
            format!(
                "liveness probe of container {container} failed: {message}{}",
                if *restarted { "; restarted it" } else { "" }
            ),
        ),
        C::PostStartFailed {
            pod,
            container,
            message,
            restarted,
            ..
        } => event(
            Pod,
            pod,
            "FailedPostStartHook",
            format!(
                "postStart hook of container {container}, started again: {message}{}",
                if *restarted { "; restarted it" } else { "" }
            ),
        ),
        C::PreStopFailed {
            pod,
            container,
            message,
            ..
        } => event(
            Pod,
            pod,
            "FailedPreStopHook",
            format!("preStop hook of container {container}: {message}"),
        ),
        C::EndpointsChanged { service, endpoints } => event(
            Service,
            service,
            "Endpoints",
            format!("{endpoints} endpoint(s)"),
        ),
        // Restarts are counted in the statuses, whoever restarted the
        // container (Docker, the helper, a failed probe): `of_status`.
        C::ContainerRestarted { .. }
        | C::ContainersRemoved { .. }
        | C::VolumesRemoved { .. }
        | C::RestartDeferred { .. }
        | C::HairpinEnabled { .. }
        | C::StatusRecorded { .. }
        | C::RulesSynced { .. }
        | C::EventsNotRecorded { .. } => return None,
    })
}

/// The events a pod's newly observed status makes against the one
/// recorded before: a container restarted.
pub fn of_status(pod: &str, old: Option<&PodStatus>, new: &PodStatus) -> Vec<Event> {
    new.containers
        .iter()
        .filter_map(|c| {
            let before = old?
                .containers
                .iter()
                .find(|o| o.container_id == c.container_id)?;
            (c.restart_count > before.restart_count).then(|| {
                let exit = match before.exit_code.or(c.exit_code) {
                    Some(code) if !before.running || !c.running => {
                        format!(" after exit code {code}")
                    }
                    _ => String::new(),
                };
                event(
                    Subject::Pod,
                    pod,
                    "Restarted",
                    format!(
                        "container {} started again{exit} ({} restart(s) in all)",
                        c.name, c.restart_count
                    ),
                )
            })
        })
        .collect()
}

/// The key an event is stored under, below the object's prefix: it sorts
/// by time, then by its place in the batch recorded together (`seq`);
/// `nonce` keeps batches of two recorders in one millisecond apart.
pub fn key_name(e: &Event, seq: usize, nonce: u32) -> String {
    format!("{:013}-{seq:04}-{nonce:08x}", e.time_ms)
}

/// Of an object's event keys, those beyond the newest `keep` (keys sort
/// by time).
pub fn beyond_newest(mut keys: Vec<String>, keep: usize) -> Vec<String> {
    keys.sort();
    let excess = keys.len().saturating_sub(keep);
    keys.truncate(excess);
    keys
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Container, Pod, PodSpec, PodTemplate, ReplicationController};
    use crate::state::PodRecord;

    fn pod(id: &str, host: &str, owner: Option<&str>) -> PodRecord {
        PodRecord {
            pod: Pod {
                id: id.into(),
                labels: Default::default(),
                spec: PodSpec {
                    containers: vec![Container {
                        name: "web".into(),
                        image: "nginx".into(),
                        ..Container::default()
                    }],
                    ..PodSpec::default()
                },
            },
            host: host.into(),
            owner: owner.map(str::to_string),
            draining: false,
        }
    }

    fn rc(replicas: u32) -> ReplicationController {
        ReplicationController {
            id: "web".into(),
            labels: Default::default(),
            replicas,
            selector: Default::default(),
            template: PodTemplate {
                labels: Default::default(),
                spec: PodSpec::default(),
            },
        }
    }

    fn reasons(events: &[Event]) -> Vec<String> {
        events
            .iter()
            .map(|e| format!("{} {} {}: {}", e.subject.name(), e.id, e.reason, e.message))
            .collect()
    }

    #[test]
    fn a_plan_says_what_was_scheduled_resized_and_rescheduled() {
        let mut before = ClusterState::default();
        before.heartbeats.insert("minion-1".into());
        before.controllers.insert("web".into(), rc(2));
        before
            .pods
            .insert("web-a".into(), pod("web-a", "minion-1", Some("web")));
        before
            .pods
            .insert("web-b".into(), pod("web-b", "minion-2", Some("web")));
        let ops = [
            Op::PutController(rc(3)),
            Op::DeletePod("web-b".into()),
            Op::PutPod(pod("web-c", "minion-1", Some("web"))),
            // Unchanged: no event.
            Op::PutPod(pod("web-a", "minion-1", Some("web"))),
        ];
        assert_eq!(
            reasons(&of_plan(&before, &ops)),
            [
                "replicationController web Resized: 2 to 3 replica(s)",
                "pod web-b Rescheduled: removed from minion-2: minion minion-2 is not ready",
                "replicationController web SuccessfulDelete: deleted pod web-b: minion minion-2 is not ready",
                "pod web-c Scheduled: bound to minion-1",
                "replicationController web SuccessfulCreate: created pod web-c on minion-1",
            ]
        );
        let deleted = of_plan(&before, &[Op::DeletePod("web-a".into())]);
        assert_eq!(deleted[0].reason, "Deleted");
    }

    #[test]
    fn converge_events_worth_keeping_become_pod_and_service_events() {
        let failed = of_converge(&ConvergeEvent::PodFailed {
            minion: "minion-1".into(),
            pod: "db".into(),
            message: "No such image: nope".into(),
        })
        .unwrap();
        assert_eq!(
            (
                failed.subject,
                failed.reason.as_str(),
                failed.message.as_str()
            ),
            (Subject::Pod, "Failed", "on minion-1: No such image: nope")
        );
        assert!(of_converge(&ConvergeEvent::RulesSynced {
            minion: "minion-1".into()
        })
        .is_none());
    }

    #[test]
    fn a_higher_restart_count_of_the_same_container_is_a_restart() {
        let status = |restarts, id: &str| PodStatus {
            containers: vec![crate::state::ContainerStatus {
                name: "web".into(),
                container_id: id.into(),
                running: true,
                restart_count: restarts,
                exit_code: None,
                healthy: None,
            }],
            ..PodStatus::default()
        };
        let events = of_status("p", Some(&status(0, "c1")), &status(2, "c1"));
        assert_eq!(
            reasons(&events),
            ["pod p Restarted: container web started again (2 restart(s) in all)"]
        );
        assert!(of_status("p", Some(&status(2, "c1")), &status(2, "c1")).is_empty());
        // A new container (the pod was replaced) is not a restart.
        assert!(of_status("p", Some(&status(0, "c1")), &status(1, "c2")).is_empty());
        assert!(of_status("p", None, &status(1, "c1")).is_empty());
    }

    #[test]
    fn history_keeps_the_newest_keys() {
        let keys: Vec<String> = [5, 1, 4, 2, 3]
            .iter()
            .map(|t| {
                key_name(
                    &Event {
                        time_ms: *t,
                        ..event(Subject::Pod, "p", "R", String::new())
                    },
                    0,
                    0,
                )
            })
            .collect();
        let old = beyond_newest(keys, 3);
        assert_eq!(
            old,
            ["0000000000001-0000-00000000", "0000000000002-0000-00000000"]
        );
        assert!(beyond_newest(vec!["a".into()], 3).is_empty());
    }
}
