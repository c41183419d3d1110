//! The converge layer's `ContainerEngine` over Docker's Engine API
//! (`bollard`), on a Unix socket: the minion's own (`kctl-node`), or a local
//! socket that the minion's SSH master forwards to it (`kctl apply`). One
//! HTTP request per operation, no process per container.

use crate::converge::docker::{
    Observed, LABEL_CLUSTER, LABEL_CONTAINER, LABEL_POD, LABEL_PRE_STOP, LABEL_SPEC,
};
use crate::converge::engine::{
    ContainerEngine, ContainerSpec, EngineError, EngineEvent, MountSpec,
};
use bollard::models::{
    ContainerCreateBody, ContainerInspectResponse, ContainerStateStatusEnum, HostConfig, Mount,
    MountType, MountVolumeOptions, MountVolumeOptionsDriverConfig, PortBinding, RestartPolicy,
    RestartPolicyNameEnum,
};
use bollard::query_parameters::{
    CreateContainerOptions, EventsOptions, ListContainersOptions, ListVolumesOptions,
    RemoveContainerOptions, RemoveVolumeOptions, RestartContainerOptions,
};
use bollard::Docker;
use futures::stream::{BoxStream, StreamExt, TryStreamExt};
use std::collections::HashMap;

/// Where dockerd listens on a minion unless told otherwise.
pub const DEFAULT_SOCKET: &str = "/var/run/docker.sock";

/// Seconds one request may take; pulls stream and are not bounded by it.
const REQUEST_TIMEOUT_SECONDS: u64 = 120;

/// Requests in flight at once when one operation needs several (inspecting
/// every container of a minion).
const REQUESTS_IN_FLIGHT: usize = 16;

#[derive(Clone)]
pub struct DockerApi {
    name: String,
    docker: Docker,
}

impl DockerApi {
    /// Connects to the dockerd at `socket` and asks its version, which
    /// proves it answers. Negotiation lowers bollard's API version to the
    /// daemon's (Debian 12's docker.io speaks 1.41, older than bollard's).
    pub async fn connect(name: &str, socket: &std::path::Path) -> Result<DockerApi, EngineError> {
        let transport = |message: String| EngineError::Transport {
            target: name.to_string(),
            message,
        };
        let path = socket.to_string_lossy();
        let docker =
            Docker::connect_with_unix(&path, REQUEST_TIMEOUT_SECONDS, bollard::API_DEFAULT_VERSION)
                .map_err(|e| transport(format!("{path}: {e}")))?
                .negotiate_version()
                .await
                .map_err(|e| transport(format!("{path}: {e}")))?;
        Ok(DockerApi {
            name: name.to_string(),
            docker,
        })
    }

    /// Whether dockerd answers now.
    pub async fn ping(&self) -> Result<(), EngineError> {
        self.docker
            .ping()
            .await
            .map(|_| ())
            .map_err(|e| self.error(e))
    }

    /// Like `connect`, but a dockerd that does not answer yet is no error:
    /// the client speaks API 1.41 (Debian 12's dockerd; newer ones accept
    /// it too) until then. The helper starts this way, so a minion whose
    /// runtime is down still heartbeats and says so.
    pub fn connect_lazily(name: &str, socket: &std::path::Path) -> Result<DockerApi, EngineError> {
        const DEBIAN_12: bollard::ClientVersion = bollard::ClientVersion {
            major_version: 1,
            minor_version: 41,
        };
        let path = socket.to_string_lossy();
        let docker = Docker::connect_with_unix(&path, REQUEST_TIMEOUT_SECONDS, &DEBIAN_12)
            .map_err(|e| EngineError::Transport {
                target: name.to_string(),
                message: format!("{path}: {e}"),
            })?;
        Ok(DockerApi {
            name: name.to_string(),
            docker,
        })
    }

    fn error(&self, e: bollard::errors::Error) -> EngineError {
        match e {
            bollard::errors::Error::DockerResponseServerError {
                status_code,
                message,
            } => EngineError::Refused {
                target: self.name.clone(),
                status: status_code,
                message,
            },
            other => EngineError::Transport {
                target: self.name.clone(),
                message: other.to_string(),
            },
        }
    }

    /// `result`'s value, None where Docker answered 404 (no such thing).
    fn unless_missing<T>(
        &self,
        result: Result<T, bollard::errors::Error>,
    ) -> Result<Option<T>, EngineError> {
        match result {
            Ok(value) => Ok(Some(value)),
            Err(e) => match self.error(e) {
                e if e.is_not_found() => Ok(None),
                e => Err(e),
            },
        }
    }

    async fn inspect(&self, id: &str) -> Result<Option<Observed>, EngineError> {
        // None if removed between the list and now.
        let found = self.unless_missing(self.docker.inspect_container(id, None).await)?;
        Ok(found.and_then(observed))
    }
}

/// The Engine API's body for a container spec.
pub fn create_body(spec: &ContainerSpec) -> ContainerCreateBody {
    let port_key =
        |p: &crate::converge::engine::Published| format!("{}/{}", p.container_port, p.protocol);
    let port_bindings: HashMap<String, Option<Vec<PortBinding>>> = spec
        .published
        .iter()
        .map(|p| {
            (
                port_key(p),
                Some(vec![PortBinding {
                    host_ip: None,
                    host_port: Some(p.host_port.to_string()),
                }]),
            )
        })
        .collect();
    let restart = match spec.restart {
        crate::converge::engine::RestartKind::Always => RestartPolicyNameEnum::ALWAYS,
        crate::converge::engine::RestartKind::OnFailure => RestartPolicyNameEnum::ON_FAILURE,
        crate::converge::engine::RestartKind::No => RestartPolicyNameEnum::NO,
    };
    let mut volume_mounts = Vec::new();
    let mut binds = Vec::new();
    for mount in &spec.mounts {
        match mount {
            MountSpec::Volume {
                name,
                labels,
                device_options,
                target,
                read_only,
            } => volume_mounts.push(Mount {
                target: Some(target.clone()),
                source: Some(name.clone()),
                typ: Some(MountType::VOLUME),
                read_only: Some(*read_only),
                volume_options: Some(MountVolumeOptions {
                    labels: Some(labels.clone().into_iter().collect()),
                    driver_config: (!device_options.is_empty()).then(|| {
                        MountVolumeOptionsDriverConfig {
                            name: Some("local".to_string()),
                            options: Some(device_options.clone().into_iter().collect()),
                        }
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            MountSpec::Bind {
                source,
                target,
                read_only,
            } => binds.push(match read_only {
                true => format!("{source}:{target}:ro"),
                false => format!("{source}:{target}"),
            }),
        }
    }
    let security = &spec.security;
    let mut security_opt = Vec::new();
    if security.allow_privilege_escalation == Some(false) {
        security_opt.push("no-new-privileges".to_string());
    }
    ContainerCreateBody {
        hostname: spec.hostname.clone(),
        user: security.run_as_user.map(|uid| uid.to_string()),
        image: Some(spec.image.clone()),
        entrypoint: (!spec.entrypoint.is_empty()).then(|| spec.entrypoint.clone()),
        cmd: (!spec.command.is_empty()).then(|| spec.command.clone()),
        env: (!spec.env.is_empty()).then(|| spec.env.clone()),
        labels: Some(spec.labels.clone().into_iter().collect()),
        working_dir: spec.working_dir.clone(),
        exposed_ports: (!spec.published.is_empty())
            .then(|| spec.published.iter().map(port_key).collect()),
        host_config: Some(HostConfig {
            network_mode: Some(spec.network.clone()),
            restart_policy: Some(RestartPolicy {
                name: Some(restart),
                maximum_retry_count: None,
            }),
            port_bindings: (!port_bindings.is_empty()).then_some(port_bindings),
            memory: spec.memory_bytes,
            cpu_shares: spec.cpu_shares,
            mounts: (!volume_mounts.is_empty()).then_some(volume_mounts),
            // Binds make a missing host directory, as v0.5's kubelet had
            // it; typed bind mounts would refuse (API 1.41 cannot ask for
            // that). Paths are checked to hold no `:`.
            binds: (!binds.is_empty()).then_some(binds),
            privileged: security.privileged.then_some(true),
            readonly_rootfs: security.read_only_root_filesystem.then_some(true),
            cap_add: (!security.capabilities_add.is_empty())
                .then(|| security.capabilities_add.clone()),
            cap_drop: (!security.capabilities_drop.is_empty())
                .then(|| security.capabilities_drop.clone()),
            security_opt: (!security_opt.is_empty()).then_some(security_opt),
            pids_limit: spec.pids_limit,
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// What kctl reads of an inspected container; None without kctl's labels.
fn observed(c: ContainerInspectResponse) -> Option<Observed> {
    let labels = c.config.as_ref()?.labels.as_ref()?;
    let state = c.state.as_ref();
    let status = state.and_then(|s| s.status);
    let ip = c
        .network_settings
        .as_ref()
        .and_then(|n| n.networks.as_ref())
        .and_then(|n| n.get(crate::converge::docker::POD_NETWORK))
        .and_then(|e| e.ip_address.as_deref())
        .and_then(|ip| ip.parse().ok());
    Some(Observed {
        id: c.id.clone()?,
        pod: labels.get(LABEL_POD)?.clone(),
        container: labels.get(LABEL_CONTAINER)?.clone(),
        spec_hash: labels.get(LABEL_SPEC).cloned().unwrap_or_default(),
        running: state.and_then(|s| s.running).unwrap_or(false),
        finished: matches!(
            status,
            Some(ContainerStateStatusEnum::EXITED | ContainerStateStatusEnum::DEAD)
        ),
        exit_code: state.and_then(|s| s.exit_code).unwrap_or(0),
        restart_count: c
            .restart_count
            .and_then(|n| u32::try_from(n).ok())
            .unwrap_or(0),
        ip,
        pre_stop: crate::converge::docker::pre_stop_of(labels.get(LABEL_PRE_STOP)),
    })
}

fn cluster_filter(cluster: &str) -> HashMap<String, Vec<String>> {
    HashMap::from([(
        "label".to_string(),
        vec![format!("{LABEL_CLUSTER}={cluster}")],
    )])
}

impl ContainerEngine for DockerApi {
    fn target(&self) -> &str {
        &self.name
    }

    async fn observe(&self, cluster: &str) -> Result<Vec<Observed>, EngineError> {
        let listed = self
            .docker
            .list_containers(Some(ListContainersOptions {
                all: true,
                filters: Some(cluster_filter(cluster)),
                ..Default::default()
            }))
            .await
            .map_err(|e| self.error(e))?;
        let ids: Vec<String> = listed.into_iter().filter_map(|c| c.id).collect();
        let found: Vec<Option<Observed>> = futures::stream::iter(ids)
            .map(|id| async move { self.inspect(&id).await })
            .buffered(REQUESTS_IN_FLIGHT)
            .try_collect()
            .await?;
        Ok(found.into_iter().flatten().collect())
    }

    async fn has_image(&self, image: &str) -> Result<bool, EngineError> {
        let found = self.unless_missing(self.docker.inspect_image(image).await)?;
        Ok(found.is_some())
    }

    async fn run(&self, spec: &ContainerSpec) -> Result<(), EngineError> {
        let created = self
            .docker
            .create_container(
                Some(CreateContainerOptions {
                    name: Some(spec.name.clone()),
                    ..Default::default()
                }),
                create_body(spec),
            )
            .await
            .map_err(|e| self.error(e))?;
        self.docker
            .start_container(&created.id, None)
            .await
            .map_err(|e| self.error(e))
    }

    async fn start(&self, id: &str) -> Result<(), EngineError> {
        self.docker
            .start_container(id, None)
            .await
            .map_err(|e| self.error(e))
    }

    async fn restart(&self, id: &str, grace_seconds: i32) -> Result<(), EngineError> {
        self.docker
            .restart_container(
                id,
                Some(RestartContainerOptions {
                    t: Some(grace_seconds),
                    signal: None,
                }),
            )
            .await
            .map_err(|e| self.error(e))
    }

    async fn exec(&self, id: &str, command: &[String]) -> Result<Option<i64>, EngineError> {
        use bollard::exec::{CreateExecOptions, StartExecResults};
        let created = self
            .docker
            .create_exec(
                id,
                CreateExecOptions {
                    cmd: Some(command.to_vec()),
                    attach_stdout: Some(true),
                    attach_stderr: Some(true),
                    ..Default::default()
                },
            )
            .await
            .map_err(|e| self.error(e))?;
        // The command's output is read to its end, which is when it exits.
        if let StartExecResults::Attached { mut output, .. } = self
            .docker
            .start_exec(&created.id, None)
            .await
            .map_err(|e| self.error(e))?
        {
            while let Some(chunk) = output.next().await {
                chunk.map_err(|e| self.error(e))?;
            }
        }
        let finished = self
            .docker
            .inspect_exec(&created.id)
            .await
            .map_err(|e| self.error(e))?;
        Ok(finished.exit_code)
    }

    async fn remove(&self, ids: &[String]) -> Result<(), EngineError> {
        let results: Vec<Result<(), EngineError>> = futures::stream::iter(ids.to_vec())
            .map(|id| async move {
                let options = RemoveContainerOptions {
                    force: true,
                    v: true,
                    link: false,
                };
                let removed = self.docker.remove_container(&id, Some(options)).await;
                // Already gone is as good as removed.
                self.unless_missing(removed).map(drop)
            })
            .buffer_unordered(REQUESTS_IN_FLIGHT)
            .collect()
            .await;
        results.into_iter().collect()
    }

    async fn remove_volumes_except(
        &self,
        cluster: &str,
        keep: &std::collections::BTreeSet<String>,
    ) -> Result<Vec<String>, EngineError> {
        let listed = self
            .docker
            .list_volumes(Some(ListVolumesOptions {
                filters: Some(cluster_filter(cluster)),
            }))
            .await
            .map_err(|e| self.error(e))?;
        let gone: Vec<String> = listed
            .volumes
            .unwrap_or_default()
            .into_iter()
            .filter(|v| {
                v.labels
                    .get(LABEL_POD)
                    .is_some_and(|pod| !keep.contains(pod))
            })
            .map(|v| v.name)
            .collect();
        let mut removed = Vec::new();
        for name in gone {
            match self
                .docker
                .remove_volume(&name, Some(RemoveVolumeOptions { force: false }))
                .await
            {
                Ok(()) => removed.push(name),
                Err(e) => match self.error(e) {
                    e if e.is_not_found() => {}
                    // In use (409): a container of it is not gone yet.
                    EngineError::Refused { status: 409, .. } => {}
                    e => return Err(e),
                },
            }
        }
        Ok(removed)
    }

    fn events(&self, cluster: &str) -> BoxStream<'static, Result<EngineEvent, EngineError>> {
        let mut filters = cluster_filter(cluster);
        filters.insert("type".into(), vec!["container".into()]);
        // The request goes out when the stream is first polled; asking
        // from now on loses nothing that happens before that. (Docker
        // counts in whole seconds, so a few earlier events may come too.)
        let since = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs().to_string())
            .ok();
        let this = self.clone();
        self.docker
            .events(Some(EventsOptions {
                since,
                filters: Some(filters),
                ..Default::default()
            }))
            .map(move |event| {
                let event = event.map_err(|e| this.error(e))?;
                Ok(EngineEvent {
                    container_id: event.actor.and_then(|a| a.id).unwrap_or_default(),
                    action: event.action.unwrap_or_default(),
                })
            })
            .boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::converge::engine::{Published, RestartKind};

    #[test]
    fn a_spec_becomes_the_engine_api_body() {
        let spec = ContainerSpec {
            name: "web-1_POD".into(),
            image: "kctl/pause:0.1".into(),
            command: vec![],
            env: vec!["A=1; rm -rf /".into()],
            labels: [("io.kctl.pod".to_string(), "web-1".to_string())].into(),
            hostname: Some("web-1".into()),
            network: "kctl".into(),
            restart: RestartKind::OnFailure,
            published: vec![Published {
                host_port: 80,
                container_port: 8080,
                protocol: "tcp",
            }],
            working_dir: None,
            memory_bytes: Some(1 << 20),
            cpu_shares: Some(512),
            mounts: vec![],
            security: Default::default(),
            pids_limit: Some(2048),
            entrypoint: vec![],
        };
        let body = serde_json::to_value(create_body(&spec)).unwrap();
        assert_eq!(body["Image"], "kctl/pause:0.1");
        assert_eq!(body["Env"][0], "A=1; rm -rf /");
        assert_eq!(body["Labels"]["io.kctl.pod"], "web-1");
        assert_eq!(body["ExposedPorts"], serde_json::json!({"8080/tcp": {}}));
        let host = &body["HostConfig"];
        assert_eq!(host["NetworkMode"], "kctl");
        assert_eq!(host["PidsLimit"], 2048);
        assert_eq!(host["RestartPolicy"]["Name"], "on-failure");
        assert_eq!(
            host["PortBindings"]["8080/tcp"][0]["HostPort"],
            serde_json::json!("80")
        );
        assert_eq!(host["Memory"], 1 << 20);
        assert_eq!(host["CpuShares"], 512);
        assert!(body.get("Cmd").is_none_or(|c| c.is_null()));
    }

    #[test]
    fn inspected_containers_are_read() {
        let inspect =
            |json: &str| observed(serde_json::from_str::<ContainerInspectResponse>(json).unwrap());
        let infra = inspect(
            r#"{"Id":"abc","RestartCount":2,
            "State":{"Status":"running","Running":true,"ExitCode":0},
            "Config":{"Labels":{"io.kctl.pod":"p","io.kctl.container":"POD","io.kctl.spec":"h"}},
            "NetworkSettings":{"IPAddress":"","Networks":{"bridge":{"IPAddress":"172.17.0.2"},"kctl":{"IPAddress":"10.101.1.5"}}}}"#,
        )
        .unwrap();
        assert_eq!(
            (
                infra.pod.as_str(),
                infra.container.as_str(),
                infra.spec_hash.as_str()
            ),
            ("p", "POD", "h")
        );
        assert_eq!(infra.restart_count, 2);
        assert!(infra.running && !infra.finished);
        assert_eq!(
            infra.ip,
            Some("10.101.1.5".parse().unwrap()),
            "the pod network's address, not another network's"
        );
        let exited = inspect(
            r#"{"Id":"def","State":{"Status":"exited","Running":false,"ExitCode":3},
            "Config":{"Labels":{"io.kctl.pod":"p","io.kctl.container":"web"}}}"#,
        )
        .unwrap();
        assert!(exited.finished && !exited.running);
        assert_eq!(exited.exit_code, 3);
        assert_eq!(exited.ip, None);
        // Restarting by Docker's policy is neither running nor finished.
        let restarting = inspect(
            r#"{"Id":"r","State":{"Status":"restarting","Running":false,"ExitCode":1},
            "Config":{"Labels":{"io.kctl.pod":"p","io.kctl.container":"web"}}}"#,
        )
        .unwrap();
        assert!(!restarting.finished);
        // Not kctl's: skipped.
        assert!(inspect(r#"{"Id":"x","Config":{"Labels":null}}"#).is_none());
    }
}
