//! Placing pods on minions: a pure function of the minions, the pods already
//! bound and the pods to place.
//!
//! Rules, in order: a minion must be ready; no two pods on one minion may
//! claim the same host port and protocol; a persistent disk is used by one
//! pod in the whole cluster unless every use of it is read-only (v0.5's
//! NoDiskConflict, widened to all minions because GCE attaches a writable
//! disk to one instance only); among the minions left, prefer the
//! one with the fewest replicas of the same controller (spreading), then the
//! least loaded one, then the lowest name (so plans are reproducible).

use crate::model::{DiskUse, PodSpec, Protocol};
use std::collections::BTreeMap;
use std::fmt;

/// A minion as the scheduler sees it.
#[derive(Debug, Clone)]
pub struct Candidate {
    pub id: String,
    pub ready: bool,
    /// On its way out of the cluster (`kctl up --minions` fewer).
    pub leaving: bool,
}

/// A pod already bound to a minion, or just placed there.
#[derive(Debug, Clone)]
pub struct Bound {
    pub pod_id: String,
    pub host: String,
    pub owner: Option<String>,
    pub host_ports: Vec<(u16, Protocol)>,
    pub disks: Vec<DiskUse>,
}

impl Bound {
    pub fn new(pod_id: &str, host: &str, owner: Option<&str>, spec: &PodSpec) -> Self {
        Bound {
            pod_id: pod_id.to_string(),
            host: host.to_string(),
            owner: owner.map(str::to_string),
            host_ports: spec.host_ports().collect(),
            disks: spec.disks(),
        }
    }
}

/// A pod to place.
#[derive(Debug, Clone)]
pub struct Unbound<'a> {
    pub pod_id: &'a str,
    pub owner: Option<&'a str>,
    pub spec: &'a PodSpec,
    /// Where the pod ran before (a replaced bare pod stays put when it can).
    pub previous_host: Option<&'a str>,
}

/// Why a pod fits on no minion: one reason per minion.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unschedulable {
    pub pod_id: String,
    pub reasons: Vec<(String, String)>,
}

impl fmt::Display for Unschedulable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "pod {} fits on no minion", self.pod_id)?;
        if self.reasons.is_empty() {
            return write!(f, ": the cluster has no minions");
        }
        for (minion, reason) in &self.reasons {
            write!(f, "\n    {minion}: {reason}")?;
        }
        Ok(())
    }
}

pub struct Scheduler {
    candidates: Vec<Candidate>,
    bound: Vec<Bound>,
}

impl Scheduler {
    pub fn new(mut candidates: Vec<Candidate>, bound: Vec<Bound>) -> Self {
        candidates.sort_by(|a, b| a.id.cmp(&b.id));
        Scheduler { candidates, bound }
    }

    /// Why `pod` cannot go on `minion`, or `None` if it can.
    fn conflict(&self, minion: &Candidate, pod: &Unbound) -> Option<String> {
        if minion.leaving {
            return Some("minion is leaving the cluster".into());
        }
        if !minion.ready {
            return Some("minion is not ready".into());
        }
        for (port, proto) in pod.spec.host_ports() {
            if let Some(other) = self
                .bound
                .iter()
                .filter(|b| b.host == minion.id)
                .find(|b| b.host_ports.contains(&(port, proto)))
            {
                return Some(format!(
                    "hostPort {port}/{} is taken by pod {}",
                    proto.as_upper(),
                    other.pod_id
                ));
            }
        }
        for wanted in pod.spec.disks() {
            let other_use = self.bound.iter().find_map(|b| {
                b.disks
                    .iter()
                    .find(|d| d.disk == wanted.disk && !(d.read_only && wanted.read_only))
                    .map(|d| (b, d))
            });
            if let Some((other, used)) = other_use {
                let how = if used.read_only {
                    "read-only"
                } else {
                    "writable"
                };
                let place = if other.host == minion.id {
                    "here".to_string()
                } else {
                    format!("on {}", other.host)
                };
                return Some(format!(
                    "persistent disk {} is {how} in pod {} {place}",
                    wanted.disk, other.pod_id
                ));
            }
        }
        None
    }

    /// Places one pod and remembers it, so later placements see it.
    pub fn place(&mut self, pod: &Unbound) -> Result<String, Unschedulable> {
        let mut reasons = Vec::new();
        let mut fits = Vec::new();
        for minion in &self.candidates {
            match self.conflict(minion, pod) {
                Some(reason) => reasons.push((minion.id.clone(), reason)),
                None => fits.push(minion),
            }
        }
        let load = |host: &str| self.bound.iter().filter(|b| b.host == host).count();
        let siblings = |host: &str| {
            pod.owner.map_or(0, |owner| {
                self.bound
                    .iter()
                    .filter(|b| b.host == host && b.owner.as_deref() == Some(owner))
                    .count()
            })
        };
        let chosen = fits
            .iter()
            .min_by_key(|m| {
                let stays = pod.previous_host != Some(m.id.as_str());
                (siblings(&m.id), stays, load(&m.id), m.id.clone())
            })
            .map(|m| m.id.clone());
        match chosen {
            Some(host) => {
                self.bound
                    .push(Bound::new(pod.pod_id, &host, pod.owner, pod.spec));
                Ok(host)
            }
            None => Err(Unschedulable {
                pod_id: pod.pod_id.to_string(),
                reasons,
            }),
        }
    }

    /// Forgets a bound pod (it is being deleted), freeing its ports.
    pub fn remove(&mut self, pod_id: &str) {
        self.bound.retain(|b| b.pod_id != pod_id);
    }

    /// Pods per minion after everything placed so far.
    pub fn load(&self) -> BTreeMap<String, usize> {
        let mut load: BTreeMap<String, usize> =
            self.candidates.iter().map(|c| (c.id.clone(), 0)).collect();
        for b in &self.bound {
            *load.entry(b.host.clone()).or_default() += 1;
        }
        load
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Container, Port, RestartPolicy};

    fn spec(host_port: Option<u16>) -> PodSpec {
        PodSpec {
            containers: vec![Container {
                name: "c".into(),
                image: "img".into(),
                ports: vec![Port {
                    name: None,
                    container_port: 8080,
                    host_port,
                    protocol: Protocol::Tcp,
                }],
                ..Default::default()
            }],
            restart_policy: RestartPolicy::Always,
            volumes: vec![],
        }
    }

    fn minions(n: usize) -> Vec<Candidate> {
        (1..=n)
            .map(|i| Candidate {
                id: format!("minion-{i}"),
                ready: true,
                leaving: false,
            })
            .collect()
    }

    fn unbound<'a>(id: &'a str, owner: Option<&'a str>, spec: &'a PodSpec) -> Unbound<'a> {
        Unbound {
            pod_id: id,
            owner,
            spec,
            previous_host: None,
        }
    }

    #[test]
    fn replicas_spread_over_minions() {
        let s = spec(None);
        let mut sched = Scheduler::new(minions(3), vec![]);
        let hosts: Vec<String> = ["a", "b", "c"]
            .iter()
            .map(|id| sched.place(&unbound(id, Some("rc"), &s)).unwrap())
            .collect();
        assert_eq!(hosts, ["minion-1", "minion-2", "minion-3"]);
    }

    #[test]
    fn spreading_beats_load() {
        // minion-1 is busy with other pods but has no replica of "rc";
        // minion-2 is idle but already has one.
        let s = spec(None);
        let bound = vec![
            Bound {
                pod_id: "x".into(),
                host: "minion-1".into(),
                owner: None,
                host_ports: vec![],
                disks: vec![],
            },
            Bound {
                pod_id: "y".into(),
                host: "minion-1".into(),
                owner: None,
                host_ports: vec![],
                disks: vec![],
            },
            Bound {
                pod_id: "rc-1".into(),
                host: "minion-2".into(),
                owner: Some("rc".into()),
                host_ports: vec![],
                disks: vec![],
            },
        ];
        let mut sched = Scheduler::new(minions(2), bound);
        assert_eq!(
            sched.place(&unbound("rc-2", Some("rc"), &s)).unwrap(),
            "minion-1"
        );
    }

    #[test]
    fn least_loaded_minion_wins_for_bare_pods() {
        let s = spec(None);
        let bound = vec![Bound {
            pod_id: "x".into(),
            host: "minion-1".into(),
            owner: None,
            host_ports: vec![],
            disks: vec![],
        }];
        let mut sched = Scheduler::new(minions(2), bound);
        assert_eq!(sched.place(&unbound("p", None, &s)).unwrap(), "minion-2");
    }

    #[test]
    fn host_port_conflict_rules_out_minion() {
        let s = spec(Some(80));
        let mut sched = Scheduler::new(minions(2), vec![]);
        assert_eq!(sched.place(&unbound("a", None, &s)).unwrap(), "minion-1");
        assert_eq!(sched.place(&unbound("b", None, &s)).unwrap(), "minion-2");
        let err = sched.place(&unbound("c", None, &s)).unwrap_err();
        assert_eq!(err.pod_id, "c");
        assert_eq!(err.reasons.len(), 2);
        assert!(err.reasons[0]
            .1
            .contains("hostPort 80/TCP is taken by pod a"));
        assert!(err
            .to_string()
            .contains("minion-2: hostPort 80/TCP is taken by pod b"));
    }

    #[test]
    fn same_port_other_protocol_fits() {
        let tcp = spec(Some(53));
        let mut udp = spec(Some(53));
        udp.containers[0].ports[0].protocol = Protocol::Udp;
        let mut sched = Scheduler::new(minions(1), vec![]);
        sched.place(&unbound("a", None, &tcp)).unwrap();
        assert_eq!(sched.place(&unbound("b", None, &udp)).unwrap(), "minion-1");
    }

    #[test]
    fn not_ready_minion_is_skipped() {
        let s = spec(None);
        let mut cands = minions(2);
        cands[0].ready = false;
        let mut sched = Scheduler::new(cands, vec![]);
        assert_eq!(sched.place(&unbound("a", None, &s)).unwrap(), "minion-2");
        let mut none = Scheduler::new(vec![], vec![]);
        let err = none.place(&unbound("a", None, &s)).unwrap_err();
        assert!(err.to_string().contains("no minions"));
    }

    #[test]
    fn replaced_pod_prefers_its_previous_minion() {
        let s = spec(None);
        let mut sched = Scheduler::new(minions(3), vec![]);
        let mut p = unbound("a", None, &s);
        p.previous_host = Some("minion-3");
        assert_eq!(sched.place(&p).unwrap(), "minion-3");
    }

    fn with_disk(disk: &str, read_only: bool) -> PodSpec {
        let mut s = spec(None);
        s.volumes = vec![crate::model::Volume {
            name: "data".into(),
            source: crate::model::VolumeSource::GcePersistentDisk {
                pd_name: disk.into(),
                fs_type: "ext4".into(),
                partition: None,
                read_only,
            },
        }];
        s
    }

    #[test]
    fn a_writable_disk_is_used_by_one_pod_in_the_cluster() {
        let writable = with_disk("db", false);
        let mut sched = Scheduler::new(minions(2), vec![]);
        assert_eq!(
            sched.place(&unbound("a", None, &writable)).unwrap(),
            "minion-1"
        );
        let err = sched.place(&unbound("b", None, &writable)).unwrap_err();
        assert_eq!(
            err.reasons,
            [
                (
                    "minion-1".into(),
                    "persistent disk db is writable in pod a here".into()
                ),
                (
                    "minion-2".into(),
                    "persistent disk db is writable in pod a on minion-1".into()
                ),
            ]
        );
        // A read-only use conflicts with the writable one too.
        let read_only = with_disk("db", true);
        assert!(sched.place(&unbound("c", None, &read_only)).is_err());
        // Another disk is free; and a deleted pod frees its disk.
        assert!(sched
            .place(&unbound("d", None, &with_disk("logs", false)))
            .is_ok());
        sched.remove("a");
        assert!(sched.place(&unbound("b", None, &writable)).is_ok());
    }

    #[test]
    fn read_only_uses_of_one_disk_share_it() {
        let read_only = with_disk("site", true);
        let mut sched = Scheduler::new(minions(2), vec![]);
        for pod in ["a", "b", "c"] {
            sched.place(&unbound(pod, None, &read_only)).unwrap();
        }
        let err = sched
            .place(&unbound("w", None, &with_disk("site", false)))
            .unwrap_err();
        assert!(err.reasons[0].1.contains("is read-only in pod a"), "{err}");
    }
}
