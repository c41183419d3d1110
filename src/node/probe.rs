//! Liveness probes, run by the node helper on its own minion after each
//! converge: `httpGet` (healthy on 200–399), `tcpSocket` (connects), `exec`
//! (exits 0 — not the 2014 "output says ok"). A failed probe restarts the
//! container unless the pod's policy is `never`, with the same back-off as
//! restarts after exits; the verdict is reported in the pod's status, which
//! takes the pod out of its services' endpoints until it passes again.

use crate::converge::executor::{pre_stop, HookTarget};
use crate::converge::{
    ContainerEngine, ConvergeEvent, EngineError, EventSink, MinionReport, Supervisor,
};
use crate::exec::{Exec, HttpGetError};
use crate::model::{probe_path_problem, PodSpec, Probe, ProbeAction, RestartPolicy};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};
use tracing::warn;

/// Why a probe failed.
#[derive(Debug, thiserror::Error)]
pub enum ProbeFailure {
    #[error("bad probe host {0:?}")]
    BadHost(String),
    /// Validation refuses such paths; one in etcd from elsewhere is not
    /// sent either.
    #[error("probe path {0:?} {1}")]
    BadPath(String, &'static str),
    #[error("the pod has no IP")]
    NoPodIp,
    #[error("no such port")]
    NoSuchPort,
    #[error("HTTP {0}")]
    HttpStatus(u16),
    #[error("not an HTTP answer: {0:?}")]
    NotHttp(String),
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("{0}")]
    Engine(#[from] EngineError),
    #[error("exited with {0:?}")]
    Exited(Option<i64>),
    #[error("no answer within {0}s")]
    Timeout(u64),
}

/// Runs the due probes of every pod the report covers; each failure is
/// an event.
pub async fn run_probes<D: ContainerEngine, E: Exec>(
    engine: &D,
    exec: &E,
    report: &MinionReport,
    supervisor: &mut Supervisor,
    events: &dyn EventSink,
) {
    let now = Instant::now();
    for pod in &report.desired {
        let Some(status) = report.statuses.get(&pod.pod.id) else {
            continue;
        };
        for spec in &pod.pod.spec.containers {
            let Some(probe) = &spec.liveness_probe else {
                continue;
            };
            let Some(c) = status.containers.iter().find(|c| c.name == spec.name) else {
                continue;
            };
            if !c.running {
                continue;
            }
            let up = supervisor.running_for(&c.container_id, c.restart_count, now);
            if up < Duration::from_secs(probe.initial_delay_seconds.into()) {
                continue;
            }
            let verdict = check(
                engine,
                probe,
                &pod.pod.spec,
                status.pod_ip.map(IpAddr::V4),
                &c.container_id,
            )
            .await;
            supervisor.set_health(&c.container_id, verdict.is_ok());
            let Err(why) = verdict else {
                continue;
            };
            let mut restarted = false;
            if pod.pod.spec.restart_policy != RestartPolicy::Never
                && supervisor.may_restart(&c.container_id, now)
            {
                if let Some(hook) = &spec.pre_stop {
                    let target = HookTarget {
                        container_id: &c.container_id,
                        pod_ip: status.pod_ip,
                    };
                    let hook = crate::converge::docker::with_port_number(hook, &pod.pod.spec);
                    pre_stop(
                        engine,
                        exec,
                        &target,
                        &pod.pod.id,
                        &spec.name,
                        &hook,
                        events,
                    )
                    .await;
                }
                match engine.restart(&c.container_id, 1).await {
                    Ok(_) => {
                        supervisor.restarted(&c.container_id, now);
                        restarted = true;
                    }
                    Err(e) => warn!("restart of {}/{}: {e}", pod.pod.id, spec.name),
                }
            }
            events.emit(ConvergeEvent::ProbeFailed {
                minion: pod.host.clone(),
                pod: pod.pod.id.clone(),
                container: spec.name.clone(),
                message: why.to_string(),
                restarted,
            });
        }
    }
}

/// One probe, bounded by its timeout.
async fn check<D: ContainerEngine>(
    engine: &D,
    probe: &Probe,
    spec: &PodSpec,
    pod_ip: Option<IpAddr>,
    container_id: &str,
) -> Result<(), ProbeFailure> {
    let timeout = Duration::from_secs(probe.timeout_seconds.max(1).into());
    let attempt = async {
        match &probe.action {
            ProbeAction::HttpGet { path, port, host } => {
                if let Some(problem) = probe_path_problem(path) {
                    return Err(ProbeFailure::BadPath(path.clone(), problem));
                }
                let ip = match host {
                    Some(h) => h
                        .parse::<IpAddr>()
                        .map_err(|_| ProbeFailure::BadHost(h.clone()))?,
                    None => pod_ip.ok_or(ProbeFailure::NoPodIp)?,
                };
                let port = spec.port_number(port).ok_or(ProbeFailure::NoSuchPort)?;
                http_status(SocketAddr::new(ip, port), path)
                    .await
                    .and_then(|code| {
                        if (200..400).contains(&code) {
                            Ok(())
                        } else {
                            Err(ProbeFailure::HttpStatus(code))
                        }
                    })
            }
            ProbeAction::TcpSocket { port } => {
                let ip = pod_ip.ok_or(ProbeFailure::NoPodIp)?;
                let port = spec.port_number(port).ok_or(ProbeFailure::NoSuchPort)?;
                tokio::net::TcpStream::connect(SocketAddr::new(ip, port))
                    .await
                    .map(drop)
                    .map_err(ProbeFailure::from)
            }
            ProbeAction::Exec { command } => match engine.exec(container_id, command).await? {
                Some(0) => Ok(()),
                code => Err(ProbeFailure::Exited(code)),
            },
        }
    };
    tokio::time::timeout(timeout, attempt)
        .await
        .unwrap_or(Err(ProbeFailure::Timeout(timeout.as_secs())))
}

/// The status code of `GET path` at `addr`.
async fn http_status(addr: SocketAddr, path: &str) -> Result<u16, ProbeFailure> {
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    crate::exec::http_status(&mut stream, addr, path)
        .await
        .map_err(|e| match e {
            HttpGetError::Io(e) => ProbeFailure::Io(e),
            HttpGetError::NotHttp(line) => ProbeFailure::NotHttp(line),
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::converge::engine::RecordingEngine;
    use crate::model::PortRef;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn probe(action: ProbeAction) -> Probe {
        Probe {
            action,
            initial_delay_seconds: 0,
            timeout_seconds: 1,
        }
    }

    /// A one-shot HTTP server on loopback answering with `status`.
    async fn server(status: &'static str) -> SocketAddr {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            if let Ok((mut s, _)) = listener.accept().await {
                let mut buf = [0u8; 256];
                let _ = s.read(&mut buf).await;
                let _ = s
                    .write_all(format!("HTTP/1.0 {status}\r\n\r\n").as_bytes())
                    .await;
            }
        });
        addr
    }

    #[tokio::test]
    async fn http_probe_accepts_2xx_3xx_only() {
        let exec = RecordingEngine::default();
        let spec = PodSpec::default();
        for (status, healthy) in [
            ("200 OK", true),
            ("302 Found", true),
            ("500 Oops", false),
            ("404 No", false),
        ] {
            let addr = server(status).await;
            let p = probe(ProbeAction::HttpGet {
                path: "/healthz".into(),
                port: PortRef::Number(addr.port()),
                host: None,
            });
            let verdict = check(&exec, &p, &spec, Some(addr.ip()), "c1").await;
            assert_eq!(verdict.is_ok(), healthy, "{status}: {verdict:?}");
        }
    }

    #[tokio::test]
    async fn a_path_that_would_add_request_lines_is_never_sent() {
        // A listener that records whether anything connected.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let p = probe(ProbeAction::HttpGet {
            path: "/ok\r\nX-Evil: 1".into(),
            port: PortRef::Number(addr.port()),
            host: None,
        });
        let verdict = check(
            &RecordingEngine::default(),
            &p,
            &PodSpec::default(),
            Some(addr.ip()),
            "c1",
        )
        .await;
        assert!(
            matches!(verdict, Err(ProbeFailure::BadPath(..))),
            "{verdict:?}"
        );
        let accepted = tokio::time::timeout(Duration::from_millis(100), listener.accept()).await;
        assert!(accepted.is_err(), "the probe connected");
    }

    #[tokio::test]
    async fn tcp_probe_needs_a_listener() {
        let exec = RecordingEngine::default();
        let spec = PodSpec::default();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let p = probe(ProbeAction::TcpSocket {
            port: PortRef::Number(port),
        });
        assert!(
            check(&exec, &p, &spec, Some("127.0.0.1".parse().unwrap()), "c1")
                .await
                .is_ok()
        );
        drop(listener);
        assert!(
            check(&exec, &p, &spec, Some("127.0.0.1".parse().unwrap()), "c1")
                .await
                .is_err()
        );
    }

    #[tokio::test]
    async fn exec_probe_is_healthy_on_exit_zero_only() {
        let spec = PodSpec::default();
        let p = probe(ProbeAction::Exec {
            command: vec!["check".into(), "--ok".into()],
        });
        let failing = RecordingEngine {
            exec_exit_code: 1,
            ..Default::default()
        };
        assert!(check(&failing, &p, &spec, None, "c1").await.is_err());
        assert_eq!(failing.requests(), ["exec c1 check --ok"]);
        let passing = RecordingEngine::default();
        assert!(check(&passing, &p, &spec, None, "c1").await.is_ok());
    }
}
