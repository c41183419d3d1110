//! Planning: the difference between what the manifests ask for and what the
//! cluster holds, as data. A `Plan` is shown before anything changes and then
//! carried out exactly as shown (the store writes its `ops`, converge makes
//! the minions match).

pub mod fields;
pub mod restore;
pub mod rollout;
pub mod schedule;

pub use fields::FieldChange;

use crate::model::{Kind, NodePort, Object, Pod, ReplicationController, Service, NODE_PORT_RANGE};
use crate::state::{ClusterState, PodRecord, ServiceRecord};
use ipnet::Ipv4Net;
use schedule::{Bound, Candidate, Scheduler, Unbound, Unschedulable};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

/// One write to the cluster's desired state.
#[derive(Debug, Clone, PartialEq)]
pub enum Op {
    PutService(ServiceRecord),
    DeleteService(String),
    PutController(ReplicationController),
    DeleteController(String),
    PutPod(PodRecord),
    DeletePod(String),
    /// Which set of files applied an object (for `apply --prune`): kind,
    /// id, set.
    PutOwner(Kind, String, String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Create,
    Update,
    Delete,
}

impl Action {
    fn sign(self) -> char {
        match self {
            Action::Create => '+',
            Action::Update => '~',
            Action::Delete => '-',
        }
    }
}

/// One line of the plan as the user sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub kind: Kind,
    pub id: String,
    pub action: Action,
    /// What changes, or where a pod goes.
    pub detail: String,
    /// Pod changes that follow from a controller change.
    pub pods: Vec<Change>,
    /// For an update: the fields that change.
    pub fields: Vec<FieldChange>,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Plan {
    pub changes: Vec<Change>,
    pub ops: Vec<Op>,
    /// Objects named by the input that need nothing done.
    pub unchanged: usize,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    #[error("{}", .0.iter().map(|u| u.to_string()).collect::<Vec<_>>().join("\n"))]
    Unschedulable(Vec<Unschedulable>),
    #[error("pod {pod} is managed by replicationController {controller}")]
    OwnedPod { pod: String, controller: String },
    #[error("{kind} {id} not found")]
    NotFound { kind: Kind, id: String },
    #[error("no portal IP left for service {service}: all of {range} are taken")]
    PortalsExhausted { service: String, range: Ipv4Net },
    #[error("replicationController {controller} is in a rolling update ({by})")]
    RolloutInProgress { controller: String, by: String },
    #[error("replicationController {controller} changed during its rolling update: {why}")]
    ChangedDuringRollout { controller: String, why: String },
    #[error("cluster already holds {0}: a snapshot is restored onto a cluster without objects")]
    NotEmpty(String),
    #[error("service {service} asks for portal IP {asked}, but it has {has}")]
    PortalIpFixed {
        service: String,
        asked: std::net::Ipv4Addr,
        has: std::net::Ipv4Addr,
    },
    #[error("service {service} asks for portal IP {ip}, {}", match taken_by {
        Some(other) => format!("which {other} has"),
        None => format!("which is no address of the portal range {range}"),
    })]
    PortalIpUnavailable {
        service: String,
        ip: std::net::Ipv4Addr,
        range: Ipv4Net,
        /// The service holding it; None when it is outside the range.
        taken_by: Option<String>,
    },
    #[error("service {service} asks for node port {port}, which service {taken_by} has")]
    NodePortTaken {
        service: String,
        port: u16,
        taken_by: String,
    },
    #[error("service {service} would answer on the minions' {protocol} port {port}, which service {taken_by} takes there")]
    MachinePortTaken {
        service: String,
        port: u16,
        protocol: String,
        taken_by: String,
    },
    #[error("no node port left for service {service}: all of {}-{} are taken", NODE_PORT_RANGE.start(), NODE_PORT_RANGE.end())]
    NodePortsExhausted { service: String },
    #[error("service {service} had portal IP {ip}, outside this cluster's portal range {range}")]
    PortalOutside {
        service: String,
        ip: std::net::Ipv4Addr,
        range: Ipv4Net,
        /// The range it came from.
        from: Ipv4Net,
    },
}

impl PlanError {
    pub fn help(&self) -> Option<String> {
        match self {
            PlanError::Unschedulable(_) => Some(
                "lower `replicas` or drop the `hostPort`; `kctl get minions` shows which minions are NotReady; on a local or GCE cluster, `kctl up --minions N` adds minions"
                    .into(),
            ),
            PlanError::OwnedPod { controller, .. } => Some(format!(
                "change the pod template of replicationController {controller}, or give the pod another id"
            )),
            PlanError::NotFound { kind, .. } => Some(format!(
                "`kctl get {}` lists what exists; --ignore-not-found makes this a no-op",
                kind.display_name()
            )),
            PlanError::PortalIpFixed { .. } => Some(
                "a service keeps its portal IP for life: leave `portalIP` out, or delete the service and apply it again"
                    .into(),
            ),
            PlanError::PortalIpUnavailable { range, .. } => Some(format!(
                "leave `portalIP` out to get a free one, or pick a free address of {range} (`kctl get services` shows those taken)"
            )),
            PlanError::NodePortTaken { .. } => Some(
                "leave `nodePort` out to get a free one, or pick another (`kctl get services` shows those taken)".into(),
            ),
            PlanError::MachinePortTaken { .. } => Some(
                "give one of the services another `port` or `nodePort`".into(),
            ),
            PlanError::NodePortsExhausted { .. } => Some(
                "delete NodePort services you no longer need".into(),
            ),
            PlanError::PortalsExhausted { .. } => Some(
                "delete services you no longer need, or make the cluster with a larger --portal-net"
                    .into(),
            ),
            PlanError::RolloutInProgress { .. } => Some(
                "wait for it to finish (`kctl get rc -w`); if its kctl was stopped, the update ends by itself within 15 s".into(),
            ),
            PlanError::NotEmpty(_) => Some(
                "restore onto a new cluster (`kctl up --cluster NAME`), or `kctl delete` what it holds".into(),
            ),
            PlanError::PortalOutside { from, .. } => Some(format!(
                "the snapshot's portal range is {from}: make the cluster with `kctl up --portal-net {from}`"
            )),
            PlanError::ChangedDuringRollout { controller, .. } => Some(format!(
                "its update's mark in etcd was lost meanwhile; `kctl describe rc {controller}` shows what runs, and the rolling update can run again"
            )),
        }
    }
}

impl Plan {
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    /// (to add, to change, to destroy), counting pods individually.
    pub fn counts(&self) -> (usize, usize, usize) {
        let mut counts = (0, 0, 0);
        let mut add = |c: &Change| match c.action {
            Action::Create => counts.0 += 1,
            Action::Update => counts.1 += 1,
            Action::Delete => counts.2 += 1,
        };
        for change in &self.changes {
            add(change);
            change.pods.iter().for_each(&mut add);
        }
        counts
    }

    /// The plan in the style of `terraform plan`.
    pub fn render(&self) -> String {
        let mut out = String::new();
        for change in &self.changes {
            render_change(&mut out, change, 2);
            for pod in &change.pods {
                render_change(&mut out, pod, 6);
            }
        }
        let (add, change, destroy) = self.counts();
        if self.is_empty() {
            let _ = writeln!(
                out,
                "No changes. {} object{} up to date.",
                self.unchanged,
                if self.unchanged == 1 { " is" } else { "s are" }
            );
        } else {
            let _ = write!(
                out,
                "Plan: {add} to add, {change} to change, {destroy} to destroy"
            );
            if self.unchanged > 0 {
                let _ = write!(out, ", {} unchanged", self.unchanged);
            }
            out.push_str(".\n");
        }
        out
    }
}

fn render_change(out: &mut String, change: &Change, indent: usize) {
    let _ = write!(
        out,
        "{:indent$}{} {} {}",
        "",
        change.action.sign(),
        change.kind,
        change.id
    );
    if !change.detail.is_empty() {
        let _ = write!(out, " ({})", change.detail);
    }
    out.push('\n');
    for field in &change.fields {
        let _ = writeln!(out, "{:width$}{field}", "", width = indent + 4);
    }
}

/// Makes the ids of pods a controller creates: `<controller>-<suffix>`.
pub trait PodNamer {
    fn suffix(&mut self) -> String;
}

/// Five random lower-case letters and digits, as Kubernetes does.
pub struct RandomNamer;

impl PodNamer for RandomNamer {
    fn suffix(&mut self) -> String {
        use rand::Rng;
        const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
        let mut rng = rand::rng();
        (0..5)
            .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char)
            .collect()
    }
}

fn controller_pod_prefix(controller: &str) -> String {
    // 57 + '-' + 5 keeps a pod id within a DNS label's 63 characters
    // (and a subdomain's, when the controller's id has dots).
    let mut prefix = controller.to_ascii_lowercase();
    prefix.truncate(57);
    prefix.trim_end_matches(['-', '.']).to_string()
}

struct Planner<'a> {
    state: &'a ClusterState,
    portal_net: Ipv4Net,
    portals_taken: std::collections::BTreeSet<std::net::Ipv4Addr>,
    /// Portal IPs new services of this plan ask for: not handed out to
    /// the others, whatever their order.
    portals_asked: std::collections::BTreeSet<std::net::Ipv4Addr>,
    /// Node ports held, by service: the cluster's, then those this plan
    /// gives.
    node_ports_taken: BTreeMap<u16, String>,
    /// Node ports new services of this plan name, as `portals_asked`.
    node_ports_asked: BTreeSet<u16>,
    plan: Plan,
    scheduler: Scheduler,
    taken_ids: BTreeSet<String>,
    /// Pods this plan deletes: no longer counted as a controller's.
    deleted: BTreeSet<String>,
    unschedulable: Vec<Unschedulable>,
    /// The leader's reconcile leaves a controller in a rolling update
    /// alone; `apply` refuses to change one.
    reconciling: bool,
    refused: Option<PlanError>,
}

impl<'a> Planner<'a> {
    fn new(state: &'a ClusterState, portal_net: Ipv4Net) -> Self {
        let candidates = state
            .minions
            .keys()
            .map(|id| Candidate {
                id: id.clone(),
                // Ready while its node helper's heartbeat lease lives and
                // its runtime answers.
                ready: state.ready(id),
                leaving: state.cordoned.contains(id),
            })
            .collect();
        let bound = state
            .pods
            .values()
            .map(|p| Bound::new(&p.pod.id, &p.host, p.owner.as_deref(), &p.pod.spec))
            .collect();
        Planner {
            state,
            portal_net,
            portals_taken: state.services.values().map(|s| s.portal_ip).collect(),
            portals_asked: BTreeSet::new(),
            node_ports_taken: state
                .services
                .values()
                .filter_map(|s| Some((s.node_port?, s.service.id.clone())))
                .collect(),
            node_ports_asked: BTreeSet::new(),
            plan: Plan::default(),
            scheduler: Scheduler::new(candidates, bound),
            taken_ids: state.pods.keys().cloned().collect(),
            deleted: BTreeSet::new(),
            unschedulable: Vec::new(),
            reconciling: false,
            refused: None,
        }
    }

    /// Frees a pod's place for the pods placed after it.
    fn unbind(&mut self, pod_id: &str) {
        self.scheduler.remove(pod_id);
    }

    fn delete_pod(&mut self, record: &PodRecord) -> Change {
        self.unbind(&record.pod.id);
        self.deleted.insert(record.pod.id.clone());
        self.plan.ops.push(Op::DeletePod(record.pod.id.clone()));
        Change {
            kind: Kind::Pod,
            id: record.pod.id.clone(),
            action: Action::Delete,
            detail: format!("on {}", record.host),
            pods: vec![],
            fields: vec![],
        }
    }

    /// Schedules and records a new pod; `None` when it fits nowhere.
    fn create_pod(
        &mut self,
        pod: Pod,
        owner: Option<&str>,
        previous_host: Option<&str>,
        action: Action,
    ) -> Option<Change> {
        let unbound = Unbound {
            pod_id: &pod.id,
            owner,
            spec: &pod.spec,
            previous_host,
        };
        match self.scheduler.place(&unbound) {
            Ok(host) => {
                self.taken_ids.insert(pod.id.clone());
                let change = Change {
                    kind: Kind::Pod,
                    id: pod.id.clone(),
                    action,
                    detail: format!("on {host}"),
                    pods: vec![],
                    fields: vec![],
                };
                self.plan.ops.push(Op::PutPod(PodRecord {
                    pod,
                    host,
                    owner: owner.map(str::to_string),
                    draining: false,
                }));
                Some(change)
            }
            Err(e) => {
                self.unschedulable.push(e);
                None
            }
        }
    }

    fn new_pod_id(&mut self, controller: &str, namer: &mut dyn PodNamer) -> String {
        let prefix = controller_pod_prefix(controller);
        loop {
            let id = format!("{prefix}-{}", namer.suffix());
            if !self.taken_ids.contains(&id) {
                return id;
            }
        }
    }

    fn service(&mut self, asked: &Service) -> Result<(), PlanError> {
        let requested = asked.portal_ip;
        let old = self.state.services.get(&asked.id);
        let svc = &Service {
            portal_ip: None,
            // Naming the node port the service has (as `get` prints it)
            // is no change from asking for any.
            node_port: match (asked.node_port, old) {
                (Some(NodePort::Port(p)), Some(o)) if o.node_port == Some(p) => {
                    o.service.node_port.or(asked.node_port)
                }
                _ => asked.node_port,
            },
            ..asked.clone()
        };
        if let (Some(ip), Some(o)) = (requested, old) {
            if ip != o.portal_ip {
                return Err(PlanError::PortalIpFixed {
                    service: svc.id.clone(),
                    asked: ip,
                    has: o.portal_ip,
                });
            }
        }
        if old.is_some_and(|o| o.service == *svc) {
            self.plan.unchanged += 1;
            return Ok(());
        }
        // A service keeps its portal IP for life; a new one gets the one it
        // asks for if that is free, or the lowest free address of the range.
        let portal_ip = match (old, requested) {
            (Some(o), _) => o.portal_ip,
            (None, Some(ip)) => {
                let taken_by = self
                    .state
                    .services
                    .values()
                    .find(|s| s.portal_ip == ip)
                    .map(|s| s.service.id.clone());
                let usable = self.portal_net.hosts().any(|host| host == ip);
                if !usable || self.portals_taken.contains(&ip) {
                    return Err(PlanError::PortalIpUnavailable {
                        service: svc.id.clone(),
                        ip,
                        range: self.portal_net,
                        taken_by: if usable {
                            taken_by.or(Some("another service of this apply".into()))
                        } else {
                            None
                        },
                    });
                }
                ip
            }
            (None, None) => {
                let unavailable = self
                    .portals_taken
                    .union(&self.portals_asked)
                    .copied()
                    .collect();
                crate::services::allocate_portal(self.portal_net, &unavailable).ok_or_else(
                    || PlanError::PortalsExhausted {
                        service: svc.id.clone(),
                        range: self.portal_net,
                    },
                )?
            }
        };
        self.portals_taken.insert(portal_ip);
        let node_port = self.node_port(svc, old)?;
        self.check_machine_ports(svc, node_port)?;
        self.plan.changes.push(Change {
            kind: Kind::Service,
            id: svc.id.clone(),
            action: if old.is_some() {
                Action::Update
            } else {
                Action::Create
            },
            detail: match node_port {
                Some(node_port) => {
                    format!("portal {portal_ip}:{}, node port {node_port}", svc.port)
                }
                None => format!("portal {portal_ip}:{}", svc.port),
            },
            pods: vec![],
            fields: old
                .map(|o| fields::changes(&o.service, svc))
                .unwrap_or_default(),
        });
        self.plan.ops.push(Op::PutService(ServiceRecord {
            service: svc.clone(),
            portal_ip,
            node_port,
        }));
        Ok(())
    }

    /// A port a service takes on every minion's own address (its own port
    /// when published there, its node port) may be no other's: one key
    /// of the minions' rules leads to one service.
    fn check_machine_ports(&self, svc: &Service, node_port: Option<u16>) -> Result<(), PlanError> {
        let planned: BTreeMap<&str, &ServiceRecord> = self
            .plan
            .ops
            .iter()
            .filter_map(|op| match op {
                Op::PutService(r) => Some((r.service.id.as_str(), r)),
                _ => None,
            })
            .collect();
        let others = self
            .state
            .services
            .values()
            .filter(|r| !planned.contains_key(r.service.id.as_str()))
            .chain(planned.values().copied())
            .filter(|r| r.service.id != svc.id);
        let mine = machine_ports(svc, node_port);
        for other in others {
            let theirs = machine_ports(&other.service, other.node_port);
            if let Some((protocol, port)) = mine.iter().find(|p| theirs.contains(p)) {
                return Err(PlanError::MachinePortTaken {
                    service: svc.id.clone(),
                    port: *port,
                    protocol: protocol.as_upper().to_string(),
                    taken_by: other.service.id.clone(),
                });
            }
        }
        Ok(())
    }

    /// The node port `svc` gets: the one it names if no other service
    /// holds it, else the one it has, else the lowest free one.
    fn node_port(
        &mut self,
        svc: &Service,
        old: Option<&ServiceRecord>,
    ) -> Result<Option<u16>, PlanError> {
        let had = old.and_then(|o| o.node_port);
        let port = match (svc.node_port, had) {
            (None, _) => None,
            (Some(NodePort::Port(asked)), _) => {
                if let Some(other) = self.node_ports_taken.get(&asked).filter(|o| **o != svc.id) {
                    return Err(PlanError::NodePortTaken {
                        service: svc.id.clone(),
                        port: asked,
                        taken_by: other.clone(),
                    });
                }
                Some(asked)
            }
            (Some(NodePort::Any), Some(had)) => Some(had),
            (Some(NodePort::Any), None) => Some(
                NODE_PORT_RANGE
                    .clone()
                    .find(|p| {
                        !self.node_ports_taken.contains_key(p) && !self.node_ports_asked.contains(p)
                    })
                    .ok_or_else(|| PlanError::NodePortsExhausted {
                        service: svc.id.clone(),
                    })?,
            ),
        };
        self.node_ports_taken.retain(|_, holder| *holder != svc.id);
        if let Some(port) = port {
            self.node_ports_taken.insert(port, svc.id.clone());
        }
        Ok(port)
    }

    fn controller(&mut self, rc: &ReplicationController, namer: &mut dyn PodNamer) {
        if let Some(rollout) = self.state.rollouts.get(&rc.id) {
            if !self.reconciling && self.refused.is_none() {
                self.refused = Some(PlanError::RolloutInProgress {
                    controller: rc.id.clone(),
                    by: rollout.by.clone(),
                });
            }
            return;
        }
        let old = self.state.controllers.get(&rc.id);
        let owned: Vec<PodRecord> = self
            .state
            .pods_owned_by(&rc.id)
            .filter(|p| !self.deleted.contains(&p.pod.id))
            .cloned()
            .collect();
        let template_changed = old.is_some_and(|o| o.template != rc.template);
        let mut pods = Vec::new();
        let mut detail = Vec::new();

        // Pods that no longer match the template are replaced, all of them,
        // and so are pods left draining by a rolling update that ended.
        let (current, stale): (Vec<PodRecord>, Vec<PodRecord>) = owned.into_iter().partition(|p| {
            p.pod.spec == rc.template.spec && p.pod.labels == rc.template.labels && !p.draining
        });
        if !stale.is_empty() {
            detail.push(format!(
                "pod template changed: replaces {} pods",
                stale.len()
            ));
        }
        for p in &stale {
            pods.push(self.delete_pod(p));
        }

        let want = rc.replicas as usize;
        if current.len() > want {
            // Remove surplus from the minions that hold the most replicas,
            // so what remains stays spread.
            let mut victims = current.clone();
            victims.sort_by_key(|p| {
                let same_host = current.iter().filter(|q| q.host == p.host).count();
                (
                    std::cmp::Reverse(same_host),
                    std::cmp::Reverse(p.pod.id.clone()),
                )
            });
            for p in victims.iter().take(current.len() - want) {
                pods.push(self.delete_pod(p));
            }
        }
        for _ in current.len()..want {
            let id = self.new_pod_id(&rc.id, namer);
            let pod = Pod {
                id,
                labels: rc.template.labels.clone(),
                spec: rc.template.spec.clone(),
            };
            if let Some(change) = self.create_pod(pod, Some(&rc.id), None, Action::Create) {
                pods.push(change);
            }
        }

        match old {
            Some(old) if old == rc && pods.is_empty() => self.plan.unchanged += 1,
            old => {
                if let Some(old) = old {
                    if old.replicas != rc.replicas {
                        detail.insert(0, format!("replicas {} → {}", old.replicas, rc.replicas));
                    } else if !template_changed && old != rc {
                        detail.push("labels or selector changed".into());
                    } else if old == rc {
                        detail.push(format!("restores {} replicas", rc.replicas));
                    }
                } else {
                    detail.push(format!("{} replicas", rc.replicas));
                }
                self.plan.changes.push(Change {
                    kind: Kind::ReplicationController,
                    id: rc.id.clone(),
                    action: if old.is_some() {
                        Action::Update
                    } else {
                        Action::Create
                    },
                    detail: detail.join(", "),
                    pods,
                    fields: old.map(|o| fields::changes(o, rc)).unwrap_or_default(),
                });
                if old != Some(rc) {
                    self.plan.ops.push(Op::PutController(rc.clone()));
                }
            }
        }
    }

    fn pod(&mut self, pod: &Pod) -> Result<(), PlanError> {
        match self.state.pods.get(&pod.id) {
            Some(old) if old.owner.is_some() => Err(PlanError::OwnedPod {
                pod: pod.id.clone(),
                controller: old.owner.clone().unwrap_or_default(),
            }),
            Some(old) if old.pod == *pod => {
                self.plan.unchanged += 1;
                Ok(())
            }
            Some(old) => {
                // A changed pod is replaced in place: same id, same minion
                // when it still fits there.
                let old = old.clone();
                self.unbind(&old.pod.id);
                self.plan.ops.push(Op::DeletePod(old.pod.id.clone()));
                if let Some(mut change) =
                    self.create_pod(pod.clone(), None, Some(&old.host), Action::Update)
                {
                    change.detail = format!("replaced, {}", change.detail);
                    change.fields = fields::changes(&old.pod, pod);
                    self.plan.changes.push(change);
                }
                Ok(())
            }
            None => {
                if let Some(change) = self.create_pod(pod.clone(), None, None, Action::Create) {
                    self.plan.changes.push(change);
                }
                Ok(())
            }
        }
    }

    /// Deletes an object (a controller with its pods); `why` is added to
    /// the plan's line.
    fn delete_object(&mut self, kind: Kind, id: &str, why: &str) {
        let id = &id.to_string();
        match kind {
            Kind::Service => {
                self.plan.ops.push(Op::DeleteService(id.clone()));
                self.plan.changes.push(Change {
                    kind,
                    id: id.clone(),
                    action: Action::Delete,
                    detail: why.to_string(),
                    pods: vec![],
                    fields: vec![],
                });
            }
            Kind::ReplicationController => {
                // Its rolling update would bring it back.
                if let Some(rollout) = self.state.rollouts.get(id) {
                    if self.refused.is_none() {
                        self.refused = Some(PlanError::RolloutInProgress {
                            controller: id.clone(),
                            by: rollout.by.clone(),
                        });
                    }
                    return;
                }
                let owned: Vec<PodRecord> = self.state.pods_owned_by(id).cloned().collect();
                let pods = owned.iter().map(|p| self.delete_pod(p)).collect();
                self.plan.ops.push(Op::DeleteController(id.clone()));
                self.plan.changes.push(Change {
                    kind,
                    id: id.clone(),
                    action: Action::Delete,
                    detail: if why.is_empty() {
                        format!("and its {} pods", owned.len())
                    } else {
                        format!("and its {} pods; {why}", owned.len())
                    },
                    pods,
                    fields: vec![],
                });
            }
            Kind::Pod => {
                // A controller's pod may be deleted on its own: the
                // controller brings its count back on the next apply.
                let Some(record) = self.state.pods.get(id).cloned() else {
                    return;
                };
                let already = self.plan.ops.contains(&Op::DeletePod(id.clone()));
                if already {
                    return;
                }
                let change = self.delete_pod(&record);
                self.plan.changes.push(change);
            }
        }
    }

    fn finish(self) -> Result<Plan, PlanError> {
        if let Some(refused) = self.refused {
            return Err(refused);
        }
        if self.unschedulable.is_empty() {
            Ok(self.plan)
        } else {
            Err(PlanError::Unschedulable(self.unschedulable))
        }
    }
}

/// The ports `service` takes on every minion's own address.
fn machine_ports(service: &Service, node_port: Option<u16>) -> Vec<(crate::model::Protocol, u16)> {
    let mut ports = Vec::new();
    if service.external {
        ports.push((service.protocol, service.port));
    }
    if let Some(node_port) = node_port {
        ports.push((service.protocol, node_port));
    }
    ports
}

/// What `kctl apply` must do to make the cluster hold `objects`. Objects not
/// named are left alone. Services come first, then controllers, then pods,
/// so that pods started in the same apply can see their services.
pub fn plan_apply(
    objects: &[Object],
    state: &ClusterState,
    portal_net: Ipv4Net,
    namer: &mut dyn PodNamer,
) -> Result<Plan, PlanError> {
    // A set nobody owns anything by prunes nothing.
    plan_apply_pruning(objects, state, portal_net, namer, "")
}

/// `plan_apply` that also deletes what an earlier apply of the same set
/// of files created and the files no longer hold (`apply --prune`): the
/// objects etcd records as owned by `set`, and nothing else.
pub fn plan_apply_pruning(
    objects: &[Object],
    state: &ClusterState,
    portal_net: Ipv4Net,
    namer: &mut dyn PodNamer,
    set: &str,
) -> Result<Plan, PlanError> {
    let mut planner = Planner::new(state, portal_net);
    planner.portals_asked = objects
        .iter()
        .filter_map(|o| match o {
            Object::Service(s) if !state.services.contains_key(&s.id) => s.portal_ip,
            _ => None,
        })
        .collect();
    planner.node_ports_asked = objects
        .iter()
        .filter_map(|o| match o {
            Object::Service(s) => match s.node_port {
                Some(NodePort::Port(p)) => Some(p),
                _ => None,
            },
            _ => None,
        })
        .collect();
    let mut ordered: Vec<&Object> = objects.iter().collect();
    ordered.sort_by_key(|o| o.kind());
    for object in ordered {
        match object {
            Object::Service(s) => planner.service(s)?,
            Object::ReplicationController(rc) => planner.controller(rc, namer),
            Object::Pod(p) => planner.pod(p)?,
        }
    }
    for (kind, id) in prunable(objects, state, set) {
        planner.delete_object(kind, &id, "pruned: no longer in the files");
    }
    planner.finish()
}

/// The objects `set` owns that `objects` no longer hold and that still
/// exist. Pure.
pub fn prunable(objects: &[Object], state: &ClusterState, set: &str) -> Vec<(Kind, String)> {
    let mut out: Vec<(Kind, String)> = state
        .owners
        .iter()
        .filter(|(_, owner)| owner.as_str() == set)
        .map(|((kind, id), _)| (*kind, id.clone()))
        .filter(|(kind, id)| !objects.iter().any(|o| o.kind() == *kind && o.id() == id))
        .filter(|(kind, id)| match kind {
            Kind::Service => state.services.contains_key(id),
            Kind::ReplicationController => state.controllers.contains_key(id),
            Kind::Pod => state.pods.get(id).is_some_and(|p| p.owner.is_none()),
        })
        .collect();
    out.sort();
    out
}

/// What the cluster's leader must do to keep every controller's promise
/// while nobody is applying anything: pods of a controller on a minion that
/// is not ready are replaced on ready minions (same scheduler as `apply`),
/// and pods that vanished for any other reason are made again.
/// Unlike `apply`, it does what it can: pods that fit nowhere are returned
/// beside the plan rather than failing it.
pub fn plan_reconcile(
    state: &ClusterState,
    namer: &mut dyn PodNamer,
) -> (Plan, Vec<Unschedulable>) {
    // Deleting and creating pods allocates no portal: any range will do.
    let mut planner = Planner::new(state, Ipv4Net::default());
    planner.reconciling = true;
    for rc in state.controllers.values() {
        if state.rollouts.contains_key(&rc.id) {
            continue;
        }
        let lost: Vec<PodRecord> = state
            .pods_owned_by(&rc.id)
            .filter(|p| !state.heartbeats.contains(&p.host))
            .cloned()
            .collect();
        let mut moved: Vec<Change> = lost.iter().map(|p| planner.delete_pod(p)).collect();
        let before = planner.plan.changes.len();
        planner.controller(rc, namer);
        if moved.is_empty() {
            continue;
        }
        let detail = format!("replaces {} pods of minions that are not ready", lost.len());
        match planner.plan.changes.get_mut(before) {
            Some(change) => {
                moved.append(&mut change.pods);
                change.pods = moved;
                change.detail = detail;
            }
            // Nothing could be started in their place: still report the loss.
            None => planner.plan.changes.push(Change {
                kind: Kind::ReplicationController,
                id: rc.id.clone(),
                action: Action::Update,
                detail,
                pods: moved,
                fields: vec![],
            }),
        }
    }
    // A bare pod is drained only to leave a cordoned minion; drained on a
    // minion no longer cordoned, the kctl moving it is gone (its cordons'
    // lease expired): back into service where it runs.
    for pod in state
        .pods
        .values()
        .filter(|p| p.owner.is_none() && p.draining && !state.cordoned.contains(&p.host))
    {
        let back = rollout::plan_undrain(pod);
        planner.plan.changes.extend(back.changes);
        planner.plan.ops.extend(back.ops);
    }
    (planner.plan, planner.unschedulable)
}

/// What `kctl delete` must do to remove the named objects. Deleting a
/// controller deletes its pods.
pub fn plan_delete(
    targets: &[(Kind, String)],
    state: &ClusterState,
    ignore_not_found: bool,
) -> Result<Plan, PlanError> {
    // Deleting allocates nothing: any range will do.
    let mut planner = Planner::new(state, Ipv4Net::default());
    for (kind, id) in targets {
        let found = match kind {
            Kind::Service => state.services.contains_key(id),
            Kind::ReplicationController => state.controllers.contains_key(id),
            Kind::Pod => state.pods.contains_key(id),
        };
        if !found {
            if ignore_not_found {
                continue;
            }
            return Err(PlanError::NotFound {
                kind: *kind,
                id: id.clone(),
            });
        }
        planner.delete_object(*kind, id, "");
    }
    planner.finish()
}

#[cfg(test)]
mod tests;
