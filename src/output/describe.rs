//! What `kctl describe` and `kctl get events` print: everything known
//! about one object, readable, with its recent events. Pure functions of
//! the state, the events and the time now.

use super::{format_labels, or_none, pod_phase, table};
use crate::events::Event;
use crate::model::{Container, ProbeAction, ReplicationController};
use crate::state::{ClusterState, PodRecord, ServiceRecord};
use std::fmt::Write;

/// How long ago, as kubectl says it: `45s`, `12m`, `3h`, `2d`.
pub fn age(then_ms: u64, now_ms: u64) -> String {
    let s = now_ms.saturating_sub(then_ms) / 1000;
    match s {
        0..=119 => format!("{s}s"),
        120..=7199 => format!("{}m", s / 60),
        7200..=172_799 => format!("{}h", s / 3600),
        _ => format!("{}d", s / 86_400),
    }
}

/// Lines of `Key:  value`, the values in one column.
#[derive(Default)]
struct Fields(Vec<(String, String)>);

impl Fields {
    fn add(&mut self, key: &str, value: impl Into<String>) -> &mut Self {
        self.0.push((key.to_string(), value.into()));
        self
    }

    fn render(&self, indent: usize) -> String {
        let width = self.0.iter().map(|(k, _)| k.len()).max().unwrap_or(0) + 2;
        let mut out = String::new();
        for (key, value) in &self.0 {
            let key = format!("{key}:");
            let _ = writeln!(out, "{:indent$}{key:<width$}{value}", "");
        }
        out
    }
}

/// Runs of one event repeated (a container restarting over and over)
/// shown once, with how often and when last.
pub fn collapse(events: &[Event]) -> Vec<(Event, usize)> {
    let mut out: Vec<(Event, usize)> = Vec::new();
    for e in events {
        match out.last_mut() {
            Some((last, count))
                if last.subject == e.subject
                    && last.id == e.id
                    && last.reason == e.reason
                    && last.message == e.message
                    && last.source == e.source =>
            {
                *count += 1;
                last.time_ms = e.time_ms;
            }
            _ => out.push((e.clone(), 1)),
        }
    }
    out
}

/// `kctl get events`: every event, oldest first.
pub fn events_table(events: &[Event], now_ms: u64) -> String {
    let rows = collapse(events)
        .into_iter()
        .map(|(e, count)| {
            vec![
                age(e.time_ms, now_ms),
                format!("{}/{}", e.subject.name(), e.id),
                e.reason.clone(),
                e.source.clone(),
                repeated(&e.message, count),
            ]
        })
        .collect();
    table(&["AGE", "OBJECT", "REASON", "FROM", "MESSAGE"], rows)
}

fn repeated(message: &str, count: usize) -> String {
    if count > 1 {
        format!("{message} (x{count})")
    } else {
        message.to_string()
    }
}

/// The `Events:` section of a description.
fn events_section(events: &[Event], now_ms: u64) -> String {
    if events.is_empty() {
        return "Events:  <none>\n".into();
    }
    let rows = collapse(events)
        .into_iter()
        .map(|(e, count)| {
            vec![
                age(e.time_ms, now_ms),
                e.reason.clone(),
                e.source.clone(),
                repeated(&e.message, count),
            ]
        })
        .collect();
    let mut out = "Events:\n".to_string();
    for line in table(&["AGE", "REASON", "FROM", "MESSAGE"], rows).lines() {
        let _ = writeln!(out, "  {line}");
    }
    out
}

fn indented_table(header: &[&str], rows: Vec<Vec<String>>) -> String {
    table(header, rows)
        .lines()
        .map(|l| format!("  {l}\n"))
        .collect()
}

/// A byte count as a person writes it: `64 MiB`, `1.5 GiB`, `1000 bytes`.
fn bytes(n: u64) -> String {
    const UNITS: [(&str, u64); 3] = [("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)];
    for (unit, size) in UNITS {
        if n >= size {
            let value = n as f64 / size as f64;
            return if n % size == 0 {
                format!("{} {unit}", n / size)
            } else {
                format!("{value:.1} {unit}")
            };
        }
    }
    format!("{n} bytes")
}

fn probe_text(container: &Container) -> Option<String> {
    let probe = container.liveness_probe.as_ref()?;
    let action = match &probe.action {
        ProbeAction::HttpGet { path, port, host } => format!(
            "http-get http://{}:{port}{path}",
            host.as_deref().unwrap_or("<pod IP>")
        ),
        ProbeAction::TcpSocket { port } => format!("tcp-socket :{port}"),
        ProbeAction::Exec { command } => format!("exec {}", crate::exec::shell_line(command)),
    };
    Some(format!(
        "{action} delay={}s timeout={}s",
        probe.initial_delay_seconds, probe.timeout_seconds
    ))
}

fn container_fields(state: &ClusterState, pod: &PodRecord, c: &Container) -> String {
    let mut f = Fields::default();
    f.add("Image", &c.image);
    if !c.command.is_empty() {
        f.add("Command", crate::exec::shell_line(&c.command));
    }
    if !c.ports.is_empty() {
        let ports: Vec<String> = c
            .ports
            .iter()
            .map(|p| {
                let mut text = match &p.name {
                    Some(name) => format!("{name} {}/{}", p.container_port, p.protocol.as_upper()),
                    None => format!("{}/{}", p.container_port, p.protocol.as_upper()),
                };
                if let Some(hp) = p.host_port {
                    let _ = write!(text, " (host port {hp})");
                }
                text
            })
            .collect();
        f.add("Ports", ports.join(", "));
    }
    if !c.env.is_empty() {
        let env: Vec<String> = c
            .env
            .iter()
            .map(|e| format!("{}={}", e.name, e.value))
            .collect();
        f.add("Env", env.join(" "));
    }
    if let Some(cpu) = c.cpu {
        f.add("CPU", format!("{cpu} millicores"));
    }
    if let Some(memory) = c.memory {
        f.add("Memory", bytes(memory));
    }
    if let Some(probe) = probe_text(c) {
        f.add("Liveness", probe);
    }
    let observed = state
        .statuses
        .get(&pod.pod.id)
        .filter(|s| s.spec_hash == pod.spec_hash())
        .and_then(|s| s.containers.iter().find(|o| o.name == c.name));
    match observed {
        None => {
            f.add("State", "Waiting (not started)");
        }
        Some(o) => {
            let state = match (o.running, o.exit_code) {
                (true, _) => "Running".to_string(),
                (false, Some(code)) => format!("Exited (code {code})"),
                (false, None) => "Exited".to_string(),
            };
            f.add("State", state);
            f.add(
                "Healthy",
                match (o.healthy, &c.liveness_probe) {
                    (_, None) => "no probe",
                    (None, Some(_)) => "not probed yet",
                    (Some(true), _) => "yes",
                    (Some(false), _) => "no: its last probe failed",
                },
            );
            f.add("Restarts", o.restart_count.to_string());
            f.add(
                "Container ID",
                o.container_id.chars().take(12).collect::<String>(),
            );
        }
    }
    format!("  {}:\n{}", c.name, f.render(4))
}

/// `kctl describe pod ID`.
pub fn describe_pod(
    state: &ClusterState,
    pod: &PodRecord,
    events: &[Event],
    now_ms: u64,
) -> String {
    let (phase, message) = pod_phase(state, pod);
    let status = state.statuses.get(&pod.pod.id);
    let mut f = Fields::default();
    f.add("Name", &pod.pod.id)
        .add("Labels", or_none(format_labels(&pod.pod.labels)))
        .add(
            "Controller",
            pod.owner.as_ref().map_or("<none>".to_string(), |rc| {
                format!("replicationController/{rc}")
            }),
        )
        .add(
            "Minion",
            match state.minions.get(&pod.host) {
                Some(m) => format!("{}/{}", pod.host, m.host_ip),
                None => pod.host.clone(),
            },
        )
        .add("Status", phase.as_str())
        .add(
            "Restart policy",
            format!("{:?}", pod.pod.spec.restart_policy),
        );
    if let Some(message) = message {
        f.add("Message", message);
    }
    f.add(
        "Pod IP",
        status
            .and_then(|s| s.pod_ip)
            .map_or("<none>".to_string(), |ip| ip.to_string()),
    );
    let services: Vec<String> = state
        .services
        .values()
        .filter(|s| crate::model::selector_matches(&s.service.selector, &pod.pod.labels))
        .map(|s| format!("{} ({}:{})", s.service.id, s.portal_ip, s.service.port))
        .collect();
    f.add("Services", or_none(services.join(", ")));
    let mut out = f.render(0);
    out.push_str("Containers:\n");
    for c in &pod.pod.spec.containers {
        out.push_str(&container_fields(state, pod, c));
    }
    if !pod.pod.spec.volumes.is_empty() {
        let mut volumes = Fields::default();
        for volume in &pod.pod.spec.volumes {
            let what = match &volume.source {
                crate::model::VolumeSource::EmptyDir => format!(
                    "emptyDir on {}: kept across container restarts; \
                     a pod moved to another minion starts with an empty one",
                    pod.host
                ),
                crate::model::VolumeSource::HostDir { path } => {
                    format!("hostDir {path} of {}", pod.host)
                }
                crate::model::VolumeSource::GitRepo {
                    repository,
                    revision,
                    ..
                } => format!(
                    "gitRepo {repository}{} on {}: cloned when the pod starts there",
                    revision
                        .as_ref()
                        .map(|r| format!(" at {r}"))
                        .unwrap_or_default(),
                    pod.host
                ),
                crate::model::VolumeSource::GcePersistentDisk {
                    pd_name,
                    fs_type,
                    partition,
                    read_only,
                } => format!(
                    "GCE persistent disk {pd_name}{} ({fs_type}{}), attached to {} by \
                     `kctl apply`: its files follow the pod to another minion",
                    partition
                        .map(|p| format!(" partition {p}"))
                        .unwrap_or_default(),
                    if *read_only { ", read-only" } else { "" },
                    pod.host
                ),
            };
            volumes.add(&volume.name, what);
        }
        out.push_str("Volumes:\n");
        out.push_str(&volumes.render(2));
    }
    out.push_str(&events_section(events, now_ms));
    out
}

/// `kctl describe rc ID`.
pub fn describe_controller(
    state: &ClusterState,
    rc: &ReplicationController,
    events: &[Event],
    now_ms: u64,
) -> String {
    let pods: Vec<&PodRecord> = state.pods_owned_by(&rc.id).collect();
    let running = pods
        .iter()
        .filter(|p| pod_phase(state, p).0 == crate::state::PodPhase::Running)
        .count();
    let mut f = Fields::default();
    f.add("Name", &rc.id)
        .add("Labels", or_none(format_labels(&rc.labels)))
        .add("Selector", format_labels(&rc.selector))
        .add("Image(s)", rc.template.spec.images().join(","))
        .add(
            "Replicas",
            format!(
                "{} desired, {} current, {running} running",
                rc.replicas,
                pods.len()
            ),
        );
    let mut out = f.render(0);
    if pods.is_empty() {
        out.push_str("Pods:  <none>\n");
    } else {
        out.push_str("Pods:\n");
        let rows = pods
            .iter()
            .map(|p| {
                vec![
                    p.pod.id.clone(),
                    p.host.clone(),
                    pod_phase(state, p).0.as_str().to_string(),
                    state
                        .statuses
                        .get(&p.pod.id)
                        .and_then(|s| s.pod_ip)
                        .map_or("<none>".to_string(), |ip| ip.to_string()),
                ]
            })
            .collect();
        out.push_str(&indented_table(
            &["NAME", "MINION", "STATUS", "POD IP"],
            rows,
        ));
    }
    out.push_str(&events_section(events, now_ms));
    out
}

/// `kctl describe service ID`.
pub fn describe_service(
    state: &ClusterState,
    record: &ServiceRecord,
    events: &[Event],
    now_ms: u64,
) -> String {
    let s = &record.service;
    let endpoints = state.endpoints.get(&s.id).cloned().unwrap_or_default();
    let mut f = Fields::default();
    f.add("Name", &s.id)
        .add("Labels", or_none(format_labels(&s.labels)))
        .add("Selector", format_labels(&s.selector))
        .add(
            "Portal",
            format!("{}:{}/{}", record.portal_ip, s.port, s.protocol.as_upper()),
        )
        .add(
            "Container port",
            s.container_port.as_ref().map_or(
                "the first port of the pod's first container".to_string(),
                |p| p.to_string(),
            ),
        );
    let mut outside: Vec<String> = Vec::new();
    if s.external {
        outside.push(format!("every minion's address, port {}", s.port));
    }
    outside.extend(s.public_ips.iter().map(|ip| format!("{ip}:{}", s.port)));
    if let Some(node_port) = record.node_port {
        outside.push(format!("every minion's address, node port {node_port}"));
    }
    if !outside.is_empty() {
        f.add("Also answers on", outside.join("; "));
    }
    if endpoints.is_empty() {
        f.add("Endpoints", "<none>: no running pod matches the selector");
    } else {
        let list: Vec<String> = endpoints
            .iter()
            .map(|e| format!("{}:{} ({})", e.ip, e.port, e.pod))
            .collect();
        f.add("Endpoints", list.join(", "));
    }
    let mut out = f.render(0);
    out.push_str(&events_section(events, now_ms));
    out
}

/// `kctl describe minion ID`.
pub fn describe_minion(
    state: &ClusterState,
    id: &str,
    events: &[Event],
    now_ms: u64,
) -> Option<String> {
    let m = state.minions.get(id)?;
    let status = match (state.heartbeats.contains(id), state.not_ready.get(id)) {
        (true, None) => "Ready".to_string(),
        (true, Some(reason)) => format!("NotReady: {reason}"),
        (false, _) => "NotReady: its helper does not heartbeat".to_string(),
    };
    let mut f = Fields::default();
    f.add("Name", id)
        .add("Address", m.host_ip.to_string())
        .add("Pod range", &m.pod_cidr)
        .add(
            "SSH",
            format!("{}@{}:{}", m.ssh_user, m.host_ip, m.ssh_port),
        )
        .add("Status", status);
    if state.cordoned.contains(id) {
        f.add(
            "Leaving",
            "yes: no new pods go here while `kctl up --minions` moves them off (`kctl up` clears it if that was interrupted)",
        );
    }
    f.add(
        "Last seen",
        state
            .last_seen
            .get(id)
            .map_or("never".to_string(), |t| age(t * 1000, now_ms) + " ago"),
    )
    .add(
        "kctl-node",
        state
            .helper_versions
            .get(id)
            .map_or("<unknown>".to_string(), |v| {
                format!("{} (sha256 {})", v.version, v.sha256)
            }),
    );
    let mut out = f.render(0);
    let pods: Vec<&PodRecord> = state.pods_on(id).collect();
    if pods.is_empty() {
        out.push_str("Pods:  <none>\n");
    } else {
        out.push_str("Pods:\n");
        let rows = pods
            .iter()
            .map(|p| {
                vec![
                    p.pod.id.clone(),
                    pod_phase(state, p).0.as_str().to_string(),
                    p.owner.clone().unwrap_or_else(|| "<none>".into()),
                ]
            })
            .collect();
        out.push_str(&indented_table(&["NAME", "STATUS", "CONTROLLER"], rows));
    }
    out.push_str(&events_section(events, now_ms));
    Some(out)
}
