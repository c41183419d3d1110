//! Reaching into what runs: `kctl logs`, `kctl exec`, `kctl ssh` and
//! `kctl port-forward`.
//!
//! `logs`, `exec` and `ssh` hand the terminal to the system `ssh` with the
//! cluster's own host keys (as Kamal's `app exec` does): a TTY, window
//! size, Ctrl-C and the remote exit status then work as in any SSH
//! session, and kctl passes the status on. On the minion they run the
//! Docker CLI against the minion's socket. `port-forward` keeps a
//! multiplexed connection open and forwards a loopback port through it.

use super::{Cluster, CommandExited};
use crate::argv;
use crate::cluster::MinionConfig;
use crate::converge::docker::container_name;
use crate::exec::Exec;
use crate::model::Pod;
use crate::ssh::SshExec;
use crate::state::{ClusterState, PodRecord};
use crate::ui::Ui;
use miette::{miette, IntoDiagnostic};

/// Which container of a pod a command is for: the one named, or the
/// pod's only container; its Docker name.
pub fn pick_container(pod: &Pod, wanted: Option<&str>) -> miette::Result<(String, String)> {
    let names: Vec<&str> = pod
        .spec
        .containers
        .iter()
        .map(|c| c.name.as_str())
        .collect();
    let chosen = match (wanted, names.as_slice()) {
        (Some(w), _) if names.contains(&w) => w,
        (Some(w), _) => {
            return Err(miette!(
                help = format!("it has: {}", names.join(", ")),
                "pod {} has no container {w:?}",
                pod.id
            ))
        }
        (None, [only]) => only,
        (None, _) => {
            return Err(super::usage_error(
                &format!(
                    "pod {} has {} containers: name one with -c",
                    pod.id,
                    names.len()
                ),
                &format!("-c one of: {}", names.join(", ")),
            ))
        }
    };
    Ok((chosen.to_string(), container_name(&pod.id, chosen)))
}

/// Where the user wants a local port to lead.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ForwardTarget {
    Pod(String),
    Service(String),
}

impl ForwardTarget {
    /// `pod/NAME`, `service/NAME` (or `po/`, `pods/`, `svc/`,
    /// `services/`); a bare NAME is a pod, as in kubectl.
    pub fn parse(text: &str) -> Option<ForwardTarget> {
        let (kind, name) = text.split_once('/').unwrap_or(("pod", text));
        if name.is_empty() {
            return None;
        }
        match kind {
            "pod" | "pods" | "po" => Some(ForwardTarget::Pod(name.into())),
            "service" | "services" | "svc" => Some(ForwardTarget::Service(name.into())),
            _ => None,
        }
    }
}

impl std::fmt::Display for ForwardTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ForwardTarget::Pod(n) => write!(f, "pod/{n}"),
            ForwardTarget::Service(n) => write!(f, "service/{n}"),
        }
    }
}

/// `[LOCAL:]REMOTE`: `8080` forwards 8080 to 8080; `:8080` and `0:8080`
/// take a free local port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortPair {
    /// None: any free port.
    pub local: Option<u16>,
    pub remote: u16,
}

impl PortPair {
    pub fn parse(text: &str) -> Option<PortPair> {
        let port = |s: &str| s.parse::<u16>().ok();
        match text.split_once(':') {
            None => {
                let remote = port(text).filter(|p| *p != 0)?;
                Some(PortPair {
                    local: Some(remote),
                    remote,
                })
            }
            Some((local, remote)) => {
                let remote = port(remote).filter(|p| *p != 0)?;
                let local = match local {
                    "" | "0" => None,
                    local => Some(port(local).filter(|p| *p != 0)?),
                };
                Some(PortPair { local, remote })
            }
        }
    }
}

/// A pod and the minion it is bound to, or an error that says how to
/// find the right name.
fn locate<'a>(
    cluster: &'a Cluster,
    state: &'a ClusterState,
    pod: &str,
) -> miette::Result<(&'a PodRecord, &'a MinionConfig)> {
    let record = state.pods.get(pod).ok_or_else(|| {
        miette!(
            help = "`kctl get pods` lists them",
            "pod {pod:?} not found in cluster {}",
            cluster.config.name
        )
    })?;
    let minion = minion_config(cluster, &record.host)?;
    Ok((record, minion))
}

fn minion_config<'a>(cluster: &'a Cluster, id: &str) -> miette::Result<&'a MinionConfig> {
    cluster.config.minion(id).ok_or_else(|| {
        miette!(
            help = "`kctl get minions` lists them",
            "minion {id:?} is not in cluster {}",
            cluster.config.name
        )
    })
}

/// The Docker CLI on the minion, against the socket kctl uses there.
fn docker_on(minion: &MinionConfig, args: &[String]) -> Vec<String> {
    let mut argv = argv!["docker", "-H", format!("unix://{}", minion.docker_socket)];
    argv.extend(args.iter().cloned());
    argv
}

/// Runs `remote` on the minion through the system ssh with the user's
/// terminal; returns when it ends, failing with its exit status.
async fn run_interactive(
    cluster: &Cluster,
    minion: &MinionConfig,
    tty: bool,
    stdin: bool,
    remote: &[String],
) -> miette::Result<()> {
    let argv = crate::ssh::interactive_argv(&minion.ssh_target(), &cluster.auth(), tty, remote)
        .into_diagnostic()?;
    let mut command = tokio::process::Command::new(&argv[0]);
    command.args(&argv[1..]);
    if !stdin {
        command.stdin(std::process::Stdio::null());
    }
    // Ctrl-C belongs to the session (ssh passes it on or ends); kctl
    // stays to report how it ended.
    let keep_running = tokio::spawn(async { while tokio::signal::ctrl_c().await.is_ok() {} });
    let status = command.status().await;
    keep_running.abort();
    let status =
        status.map_err(|e| miette!(help = "kctl needs OpenSSH's `ssh`", "running ssh: {e}"))?;
    match status.code() {
        Some(0) => Ok(()),
        Some(code) => Err(CommandExited(code).into()),
        None => {
            use std::os::unix::process::ExitStatusExt;
            Err(CommandExited(128 + status.signal().unwrap_or(0)).into())
        }
    }
}

pub struct ExecOptions {
    pub container: Option<String>,
    pub stdin: bool,
    pub tty: bool,
    pub command: Vec<String>,
}

/// `kctl exec`: a command in a pod's container; its exit status is kctl's.
pub async fn exec(name: &str, pod: &str, options: &ExecOptions) -> miette::Result<()> {
    let cluster = Cluster::open(name)?;
    let state = cluster.store().await?.snapshot().await?.state;
    let (record, minion) = locate(&cluster, &state, pod)?;
    let (_, docker_name) = pick_container(&record.pod, options.container.as_deref())?;
    let mut args = argv!["exec"];
    if options.stdin {
        args.push("-i".into());
    }
    if options.tty {
        args.push("-t".into());
    }
    // Flags end before the names, which come from records.
    args.extend(["--".into(), docker_name]);
    args.extend(options.command.iter().cloned());
    let remote = docker_on(minion, &args);
    run_interactive(&cluster, minion, options.tty, options.stdin, &remote).await
}

pub struct LogOptions {
    pub container: Option<String>,
    pub follow: bool,
    pub tail: Option<u64>,
    pub previous: bool,
}

/// `kctl logs`: what a pod's container printed, stdout to stdout and
/// stderr to stderr.
pub async fn logs(name: &str, pod: &str, options: &LogOptions) -> miette::Result<()> {
    let cluster = Cluster::open(name)?;
    let state = cluster.store().await?.snapshot().await?.state;
    let (record, minion) = locate(&cluster, &state, pod)?;
    let (container, docker_name) = pick_container(&record.pod, options.container.as_deref())?;
    let mut args = argv!["logs"];
    if options.follow {
        args.push("--follow".into());
    }
    if let Some(n) = options.tail {
        args.extend(["--tail".into(), n.to_string()]);
    }
    // The helper restarts a container by starting the same one again, so
    // its log holds every run. The boundary is when the last run ended:
    // Docker records `StartedAt` a moment after the new process may have
    // printed its first line, `FinishedAt` before the next start.
    let restarts = state
        .statuses
        .get(pod)
        .and_then(|s| s.containers.iter().find(|c| c.name == container))
        .map_or(0, |c| c.restart_count);
    if options.previous && restarts == 0 {
        return Err(miette!(
            help = "without --previous, kctl logs shows the current run",
            "container {container} of pod {pod} has not restarted: there is no previous run"
        ));
    }
    if restarts > 0 {
        let exec = SshExec::connect(&minion.ssh_target(), &cluster.auth())
            .await
            .map_err(super::report)?;
        let state = exec
            .run_ok(&docker_on(
                minion,
                &argv![
                    "inspect",
                    "--format",
                    "{{.State.Running}} {{.State.StartedAt}} {{.State.FinishedAt}}",
                    "--",
                    &docker_name
                ],
            ))
            .await
            .map_err(super::report)?;
        exec.close().await;
        let bound = if options.previous {
            "--until"
        } else {
            "--since"
        };
        args.extend([bound.into(), run_boundary(&state)?]);
    }
    args.extend(["--".into(), docker_name]);
    let remote = docker_on(minion, &args);
    run_interactive(&cluster, minion, false, false, &remote).await
}

/// Where the last run of a restarted container begins in its log, from
/// `docker inspect`'s `Running StartedAt FinishedAt`. A running container:
/// when the run before it ended (`FinishedAt`; Docker records `StartedAt`
/// a moment after the new process may have printed). A stopped one (a
/// crash loop between restarts): a little before its last start, since
/// `FinishedAt` is then the end of that very run.
fn run_boundary(state: &str) -> miette::Result<String> {
    use time::format_description::well_known::Rfc3339;
    let fields: Vec<&str> = state.split_whitespace().collect();
    let [running, started, finished] = fields[..] else {
        return Err(miette!("unexpected answer from docker inspect: {state:?}"));
    };
    if running == "true" {
        return Ok(finished.to_string());
    }
    let started = time::OffsetDateTime::parse(started, &Rfc3339)
        .map_err(|e| miette!("docker's start time {started:?}: {e}"))?;
    let before = started - time::Duration::milliseconds(50);
    Ok(format!(
        "{}.{:09}",
        before.unix_timestamp(),
        before.nanosecond()
    ))
}

/// `kctl ssh`: a shell on a minion, or one command there.
pub async fn ssh(name: &str, minion: &str, command: &[String]) -> miette::Result<()> {
    let cluster = Cluster::open(name)?;
    let minion = minion_config(&cluster, minion)?;
    let tty = command.is_empty() && std::io::IsTerminal::is_terminal(&std::io::stdin());
    run_interactive(&cluster, minion, tty, true, command).await
}

/// `kctl port-forward`: a loopback port on this machine to a pod's port
/// (through its minion) or to a service's portal (through a Ready
/// minion, whose service rules pick an endpoint), until Ctrl-C.
pub async fn port_forward(
    ui: &Ui,
    name: &str,
    target: &ForwardTarget,
    ports: &[PortPair],
) -> miette::Result<()> {
    let cluster = Cluster::open(name)?;
    let state = cluster.store().await?.snapshot().await?.state;
    let (minion, address) = match target {
        ForwardTarget::Pod(pod) => {
            let (_, minion) = locate(&cluster, &state, pod)?;
            let ip = state
                .statuses
                .get(pod)
                .and_then(|s| s.pod_ip)
                .ok_or_else(|| {
                    miette!(
                        help = format!("`kctl describe pod {pod}` says why"),
                        "pod {pod} has no IP yet: it is not running"
                    )
                })?;
            (minion, ip)
        }
        ForwardTarget::Service(service) => {
            let record = state.services.get(service).ok_or_else(|| {
                miette!(
                    help = "`kctl get services` lists them",
                    "service {service:?} not found in cluster {}",
                    cluster.config.name
                )
            })?;
            let via = state
                .minions
                .keys()
                .find(|m| state.ready(m))
                .ok_or_else(|| {
                    miette!(
                        help = "`kctl get minions` shows them; `kctl up` repairs the cluster",
                        "no minion is Ready to carry the connection"
                    )
                })?;
            (minion_config(&cluster, via)?, record.portal_ip)
        }
    };
    let exec = SshExec::connect(&minion.ssh_target(), &cluster.auth())
        .await
        .map_err(super::report)?;
    for pair in ports {
        if let Some(local) = pair.local {
            // ssh's own refusal does not say why.
            if let Err(e) = std::net::TcpListener::bind(("127.0.0.1", local)) {
                return Err(miette!(
                    help = "choose another local port: LOCAL:REMOTE, or :REMOTE for any free one",
                    "cannot listen on 127.0.0.1:{local}: {e}"
                ));
            }
        }
        let local = exec
            .forward_tcp(pair.local, &address.to_string(), pair.remote)
            .await
            .map_err(|e| {
                miette!(
                    help = "choose another local port: LOCAL:REMOTE, or :REMOTE for any free one",
                    "cannot forward 127.0.0.1:{}: {e}",
                    pair.local.unwrap_or(0)
                )
            })?;
        ui.out(format!(
            "Forwarding from 127.0.0.1:{local} -> {target}:{} ({address}:{} via {})",
            pair.remote, pair.remote, minion.id
        ));
    }
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .into_diagnostic()?;
    let lost = loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => break None,
            _ = terminate.recv() => break None,
            _ = tokio::time::sleep(std::time::Duration::from_secs(5)) => {
                if let Err(e) = exec.check().await {
                    break Some(e);
                }
            }
        }
    };
    exec.close().await;
    match lost {
        None => Ok(()),
        Some(e) => Err(miette!(
            help = "run kctl port-forward again",
            "the SSH connection to {} was lost: {e}",
            minion.id
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Container, PodSpec};

    fn pod(containers: &[&str]) -> Pod {
        Pod {
            id: "web".into(),
            spec: PodSpec {
                containers: containers
                    .iter()
                    .map(|n| Container {
                        name: n.to_string(),
                        image: "nginx".into(),
                        ..Container::default()
                    })
                    .collect(),
                ..PodSpec::default()
            },
            labels: Default::default(),
        }
    }

    #[test]
    fn the_only_container_is_the_default_and_a_named_one_must_exist() {
        assert_eq!(
            pick_container(&pod(&["app"]), None).unwrap(),
            ("app".into(), "web_app".into())
        );
        assert_eq!(
            pick_container(&pod(&["app", "log"]), Some("log"))
                .unwrap()
                .1,
            "web_log"
        );
        let missing = pick_container(&pod(&["app"]), Some("db")).unwrap_err();
        assert!(missing.to_string().contains("no container \"db\""));
        let ambiguous = pick_container(&pod(&["app", "log"]), None).unwrap_err();
        assert!(crate::cli::is_usage_error(&ambiguous));
        assert!(format!("{ambiguous:?}").contains("app, log"));
    }

    #[test]
    fn a_stopped_container_current_run_begins_at_its_last_start() {
        let running = "true 2026-12-02T21:08:25.820340006Z 2026-12-02T21:08:25.669202688Z";
        assert_eq!(
            run_boundary(running).unwrap(),
            "2026-12-02T21:08:25.669202688Z"
        );
        let stopped = "false 2026-12-02T21:08:25.820340006Z 2026-12-02T21:08:26.1Z";
        let at = run_boundary(stopped).unwrap();
        assert!(at.ends_with(".770340006"), "{at}");
        assert!(run_boundary("garbage").is_err());
    }

    #[test]
    fn forward_targets_and_ports_read_as_kubectl_writes_them() {
        assert_eq!(
            ForwardTarget::parse("svc/tomcat"),
            Some(ForwardTarget::Service("tomcat".into()))
        );
        assert_eq!(
            ForwardTarget::parse("web"),
            Some(ForwardTarget::Pod("web".into()))
        );
        assert_eq!(ForwardTarget::parse("deployment/x"), None);
        assert_eq!(ForwardTarget::parse("pod/"), None);
        let pair = |l, r| {
            Some(PortPair {
                local: l,
                remote: r,
            })
        };
        assert_eq!(PortPair::parse("8080"), pair(Some(8080), 8080));
        assert_eq!(PortPair::parse("18080:8080"), pair(Some(18080), 8080));
        assert_eq!(PortPair::parse(":8080"), pair(None, 8080));
        assert_eq!(PortPair::parse("0:8080"), pair(None, 8080));
        for bad in ["", "0", "x", "8080:", "70000", "a:80", "1:2:3"] {
            assert_eq!(PortPair::parse(bad), None, "{bad}");
        }
    }
}
