//! Carrying out a minion's steps: containers through the minion's
//! `ContainerEngine` (Docker's API), hairpin ports and service rules over
//! `Exec` (ip, nft). What to do comes from `plan`; this only does it,
//! reports what happened through the caller's `EventSink`, and returns what
//! it found.

use super::docker::{self, Observed, PAUSE_IMAGE};
use super::engine::{ContainerEngine, EngineError};
use super::error::{ConvergeError, MinionStage};
use super::event::{ConvergeEvent, EventSink};
use super::plan::{hairpin_batch, ports_without_hairpin, statuses, steps, Step};
use super::{RunContext, Supervisor};
use crate::argv;
use crate::exec::{Exec, ExecError};
use crate::model::{Hook, PortRef};
use crate::services::rules::{self, Portal};
use crate::state::{PodPhase, PodRecord, PodStatus};
use futures::{FutureExt, StreamExt};
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

/// Images looked for at once.
const IMAGE_CHECKS_IN_FLIGHT: usize = 8;

/// How often the wait for new containers looks again when Docker's event
/// stream is quiet or gone.
const WAIT_FALLBACK: Duration = Duration::from_millis(500);

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
/// up to `wait` for them to run, woken by Docker's events.
pub async fn converge_minion<D: ContainerEngine, E: Exec>(
    engine: &D,
    exec: &E,
    ctx: &RunContext,
    desired: &[PodRecord],
    wait: Duration,
    supervisor: &mut Supervisor,
    events: &dyn EventSink,
) -> Result<MinionReport, ConvergeError> {
    let minion = engine.target();
    let observe = || async {
        engine
            .observe(&ctx.cluster)
            .await
            .map_err(ConvergeError::engine(minion, MinionStage::Observe))
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
                let leaving: Vec<&Observed> =
                    observed.iter().filter(|c| ids.contains(&c.id)).collect();
                run_pre_stop_hooks(engine, exec, &leaving, &observed, events).await;
                engine
                    .remove(&ids)
                    .await
                    .map_err(ConvergeError::engine(minion, MinionStage::Remove))?;
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
                    engine
                        .start(&id)
                        .await
                        .map_err(ConvergeError::engine(minion, MinionStage::Restart))?;
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
    {
        // A pod that left the minion takes its emptyDir volumes along
        // (after its containers, which held them); one still held is
        // looked at again next round.
        let keep: BTreeSet<String> = desired.iter().map(|p| p.pod.id.clone()).collect();
        let gone = engine
            .remove_volumes_except(&ctx.cluster, &keep)
            .await
            .map_err(ConvergeError::engine(minion, MinionStage::Remove))?;
        if !gone.is_empty() {
            events.emit(ConvergeEvent::VolumesRemoved {
                minion: minion.to_string(),
                names: gone,
            });
        }
    }
    // Docker's events from before the first start on, so the wait below
    // misses none (the engine asks for them from now, whenever the stream
    // is first polled).
    let mut docker_events =
        (!wait.is_zero() && !to_start.is_empty()).then(|| engine.events(&ctx.cluster).fuse());
    let unavailable = ensure_images(engine, exec, ctx, &to_start).await?;
    let mut unready_volumes = bent_host_dirs(exec, &to_start).await;
    for (pod, why) in super::disk_volumes::unattached(exec, &to_start).await {
        unready_volumes.entry(pod).or_insert(why);
    }
    let can_clone: Vec<PodRecord> = to_start
        .iter()
        .filter(|pod| {
            missing_image(pod, &unavailable).is_none() && !unready_volumes.contains_key(&pod.pod.id)
        })
        .cloned()
        .collect();
    for (pod, why) in super::git_volumes::fill(exec, ctx, &can_clone).await {
        unready_volumes.entry(pod).or_insert(why);
    }
    // Pods start side by side, a bounded number at a time; each pod's own
    // containers keep their order (infra first). A failure stays the pod's.
    let results: Vec<(String, Result<(), EngineError>)> = futures::stream::iter(to_start.iter())
        .map(|pod| {
            let unavailable = &unavailable;
            let unready_volumes = &unready_volumes;
            async move {
                let id = pod.pod.id.clone();
                let result = match (missing_image(pod, unavailable), unready_volumes.get(&id)) {
                    (Some(e), _) => Err(e),
                    (None, Some(why)) => Err(EngineError::VolumeUnavailable(why.clone())),
                    (None, None) => start_pod(engine, exec, ctx, pod).await,
                };
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
            }
        })
        .buffer_unordered(ctx.starts_in_flight.max(1))
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
        let now = Instant::now();
        if settled || now >= deadline {
            return Ok(report);
        }
        // Look again at Docker's next event about the cluster's
        // containers, or after a while if none comes.
        let pause = tokio::time::sleep((deadline - now).min(WAIT_FALLBACK));
        match docker_events.as_mut() {
            Some(stream) => {
                tokio::select! {
                    _ = pause => {}
                    event = stream.next() => {
                        if matches!(event, Some(Ok(_))) {
                            // One look for however many came at once.
                            while let Some(Some(Ok(_))) = stream.next().now_or_never() {}
                        } else {
                            docker_events = None;
                        }
                    }
                }
            }
            None => pause.await,
        }
    }
}

/// Makes sure every image the pods need is on the minion, asking Docker
/// once per image: pulls what is missing, unless the cluster's minions
/// cannot pull. Returns the images that are not there, with why.
///
/// A pull is `docker pull` over `Exec`, one process per missing image: the
/// CLI brings the login's registry credentials (`docker login`, credential
/// helpers), which the Engine API would need to be sent.
async fn ensure_images<D: ContainerEngine, E: Exec>(
    engine: &D,
    exec: &E,
    ctx: &RunContext,
    pods: &[PodRecord],
) -> Result<BTreeMap<String, String>, ConvergeError> {
    use crate::model::PullPolicy;
    // Per image, the most eager policy of the containers that run it.
    let mut policies: BTreeMap<&str, PullPolicy> = BTreeMap::new();
    for c in pods.iter().flat_map(|p| &p.pod.spec.containers) {
        let policy = c.image_pull_policy.unwrap_or(PullPolicy::IfNotPresent);
        policies
            .entry(c.image.as_str())
            .and_modify(|p| *p = (*p).min(policy))
            .or_insert(policy);
    }
    if !pods.is_empty() {
        // Imported by bootstrap; nothing pulls it.
        policies.insert(PAUSE_IMAGE, PullPolicy::Never);
    }
    let images: BTreeSet<&str> = policies.keys().copied().collect();
    let checked: Vec<(String, Result<bool, EngineError>)> = futures::stream::iter(images)
        .map(|image| async move { (image.to_string(), engine.has_image(image).await) })
        .buffer_unordered(IMAGE_CHECKS_IN_FLIGHT)
        .collect()
        .await;
    let mut unavailable = BTreeMap::new();
    for (image, present) in checked {
        let present = match present {
            Ok(present) => present,
            // Docker refuses to look: the reference is not an image's
            // name. The pods that name it fail with Docker's words.
            Err(EngineError::Refused { message, .. }) => {
                unavailable.insert(image, message);
                continue;
            }
            Err(e) => {
                return Err(ConvergeError::engine(engine.target(), MinionStage::Images)(
                    e,
                ))
            }
        };
        let policy = policies
            .get(image.as_str())
            .copied()
            .unwrap_or(PullPolicy::IfNotPresent);
        // Minions that cannot pull run what `kctl image load` put there,
        // whatever the policy (`apply` says so).
        let pull = match policy {
            PullPolicy::Always => !ctx.offline_images,
            PullPolicy::IfNotPresent => !present,
            PullPolicy::Never => false,
        };
        if present && !pull {
            continue;
        }
        if policy == PullPolicy::Never && image != PAUSE_IMAGE {
            unavailable.insert(
                image.clone(),
                format!(
                    "image {image} is not on minion {} and its imagePullPolicy is Never (`kctl image load {image}` copies it there)",
                    engine.target()
                ),
            );
        } else if ctx.offline_images || image == PAUSE_IMAGE {
            unavailable.insert(
                image.clone(),
                format!(
                    "image {image} is not on minion {} (its minions cannot pull: `kctl image load {image}` copies it there)",
                    engine.target()
                ),
            );
        } else {
            let pull = argv!["docker", "pull", "--quiet", "--", image.clone()];
            let pulled = exec.run(&pull, None).await;
            let why = match pulled {
                Ok(out) if out.success() => None,
                Ok(out) => Some(out.stderr_text().trim().to_string()),
                Err(e) => Some(e.to_string()),
            };
            if let Some(why) = why {
                unavailable.insert(image.clone(), format!("pulling image {image}: {why}"));
            }
        }
    }
    Ok(unavailable)
}

/// Pods whose host directory is not its own real path on the minion (a
/// link somewhere along it could lead a bind anywhere, past the check of
/// the manifest), with the reason. `realpath -m` runs as an argv.
async fn bent_host_dirs<E: Exec>(exec: &E, pods: &[PodRecord]) -> BTreeMap<String, String> {
    let host_dirs: Vec<(&str, &str, &str)> = pods
        .iter()
        .flat_map(|pod| {
            pod.pod
                .spec
                .volumes
                .iter()
                .filter_map(|volume| match &volume.source {
                    crate::model::VolumeSource::HostDir { path } => {
                        Some((pod.pod.id.as_str(), volume.name.as_str(), path.as_str()))
                    }
                    crate::model::VolumeSource::EmptyDir
                    | crate::model::VolumeSource::GitRepo { .. }
                    | crate::model::VolumeSource::GcePersistentDisk { .. } => None,
                })
        })
        .collect();
    if host_dirs.is_empty() {
        return BTreeMap::new();
    }
    // One round trip for them all: a line each (checked paths hold no
    // line break).
    let mut ask = argv!["realpath", "-m", "--"];
    ask.extend(host_dirs.iter().map(|(_, _, path)| path.to_string()));
    let answer = exec
        .run(&ask, None)
        .await
        .ok()
        .filter(|out| out.success())
        .map(|out| {
            out.stdout_text()
                .lines()
                .map(str::to_string)
                .collect::<Vec<_>>()
        })
        .filter(|lines| lines.len() == host_dirs.len());
    let mut bent = BTreeMap::new();
    for (i, (pod, volume, path)) in host_dirs.iter().enumerate() {
        let wanted = match path.trim_end_matches('/') {
            "" => "/",
            trimmed => trimmed,
        };
        let why = match answer.as_ref().map(|lines| lines[i].as_str()) {
            Some(real) if real == wanted => continue,
            Some(real) => format!(
                "host directory {path} of volume {volume} leads to {real}: kctl binds a host directory by its real path only"
            ),
            None => format!("host directory {path} of volume {volume}: its real path could not be read"),
        };
        bent.insert(pod.to_string(), why);
    }
    bent
}

/// The reason `pod` cannot start, if one of its images is unavailable.
fn missing_image(pod: &PodRecord, unavailable: &BTreeMap<String, String>) -> Option<EngineError> {
    std::iter::once(PAUSE_IMAGE)
        .chain(pod.pod.spec.containers.iter().map(|c| c.image.as_str()))
        .find_map(|image| unavailable.get(image))
        .map(|why| EngineError::ImageUnavailable(why.clone()))
}

/// The pod bridge's ports that are not in hairpin mode.
pub async fn pod_ports_without_hairpin<E: Exec>(exec: &E) -> Result<Vec<String>, ExecError> {
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
    Ok(ports_without_hairpin(&ports.stdout_text()))
}

/// Hairpin mode on every port of the pod bridge, so a pod reaches itself
/// through its service's portal (the DNATed packet leaves by the port it
/// came in). Docker sets it only when its userland proxy is off, which is
/// not the default on users' hosts. Returns the ports it turned on.
pub async fn ensure_hairpin<E: Exec>(exec: &E) -> Result<Vec<String>, ExecError> {
    let off = pod_ports_without_hairpin(exec).await?;
    if !off.is_empty() {
        // One `ip` for all of them.
        let batch = argv!["ip", "-batch", "-"];
        exec.run(&batch, Some(hairpin_batch(&off).as_bytes()))
            .await?
            .check(exec.target(), &batch)?;
    }
    Ok(off)
}

/// Makes the minion's kctl service rules exactly `portals`, replacing its
/// nftables table whole in one transaction.
/// A minion's service rules as `nft list` prints them; None when kctl's
/// table is not there at all. For `rules::drift`.
pub async fn listed_rules<E: Exec>(exec: &E) -> Result<Option<String>, ExecError> {
    let argv = crate::argv!["nft", "list", "table", "ip", crate::services::rules::TABLE];
    let out = exec.run(&argv, None).await?;
    if out.success() {
        Ok(Some(out.stdout_text()))
    } else if out.stderr_text().contains("No such file or directory") {
        Ok(None)
    } else {
        out.check(exec.target(), &argv).map(|_| None)
    }
}

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

/// Starts the infra container, then each app container; on failure the
/// pod's containers are left for the next converge to clean up.
async fn start_pod<D: ContainerEngine, E: Exec>(
    engine: &D,
    exec: &E,
    ctx: &RunContext,
    pod: &PodRecord,
) -> Result<(), EngineError> {
    let specs = docker::pod_containers(pod, ctx);
    let mut pod_ip = None;
    // The first is the infra container; the others are the pod's own.
    for (i, spec) in specs.iter().enumerate() {
        engine.run(spec).await?;
        let Some(container) = i
            .checked_sub(1)
            .and_then(|i| pod.pod.spec.containers.get(i))
        else {
            continue;
        };
        let Some(hook) = &container.post_start else {
            continue;
        };
        // A GET goes to the pod's address, which Docker gave its infra
        // container.
        if matches!(hook, Hook::HttpGet(_)) && pod_ip.is_none() {
            pod_ip = engine
                .observe(&ctx.cluster)
                .await?
                .iter()
                .find(|o| o.pod == pod.pod.id && o.container == docker::INFRA_CONTAINER)
                .and_then(|o| o.ip);
        }
        let hook = docker::with_port_number(hook, &pod.pod.spec);
        let target = HookTarget {
            container_id: &spec.name,
            pod_ip,
        };
        let Err(why) = post_start(engine, exec, &target, &hook).await else {
            continue;
        };
        // The pod did not start: none of it stays running, and the next
        // round starts it whole again.
        let started: Vec<String> = specs[..=i].iter().map(|s| s.name.clone()).collect();
        engine.remove(&started).await?;
        return Err(EngineError::HookFailed(format!(
            "postStart hook of container {} {why}",
            container.name
        )));
    }
    Ok(())
}

/// Where a hook runs: the container a command runs in, and the pod's
/// address a GET goes to.
pub struct HookTarget<'a> {
    pub container_id: &'a str,
    pub pod_ip: Option<std::net::Ipv4Addr>,
}

/// Runs `hook` for at most `limit`: a command in the container, or a GET
/// sent from the minion; why it failed, if it did. The hook may come from
/// a record or a label: it is checked again first.
async fn run_hook<D: ContainerEngine, E: Exec>(
    engine: &D,
    exec: &E,
    target: &HookTarget<'_>,
    hook: &Hook,
    limit: Duration,
) -> Result<(), String> {
    if let Some(problem) = hook.problem() {
        return Err(format!("was not run: {problem}"));
    }
    let attempt = async {
        match hook {
            Hook::Exec(argv) => match engine.exec(target.container_id, argv).await {
                Ok(Some(0)) => Ok(()),
                Ok(code) => Err(format!(
                    "exited {}",
                    code.map_or("without a status".to_string(), |c| c.to_string())
                )),
                Err(e) => Err(e.to_string()),
            },
            Hook::HttpGet(get) => {
                let ip = match &get.host {
                    Some(host) => host
                        .parse::<std::net::IpAddr>()
                        .map_err(|_| format!("has a host {host:?} that is no IP address"))?,
                    None => target
                        .pod_ip
                        .map(std::net::IpAddr::V4)
                        .ok_or("found the pod without an IP address")?,
                };
                let PortRef::Number(port) = get.port else {
                    return Err(format!(
                        "names port {}, which the pod does not have",
                        get.port
                    ));
                };
                let addr = std::net::SocketAddr::new(ip, port);
                // Bounded inside, so that a forward it opens is closed.
                match exec.http_get(addr, &get.path, limit).await {
                    Ok(code) if (200..400).contains(&code) => Ok(()),
                    Ok(code) => Err(format!("got HTTP {code} from GET {addr}{}", get.path)),
                    Err(e) => Err(e.to_string()),
                }
            }
        }
    };
    // A GET ends by itself at the limit (and closes what it opened): the
    // outer bound only backs it up.
    let outer = match hook {
        Hook::HttpGet(_) => limit + Duration::from_secs(2),
        Hook::Exec(_) => limit,
    };
    match tokio::time::timeout(outer, attempt).await {
        Ok(result) => result,
        Err(_) => Err(format!("still running after {}s", limit.as_secs())),
    }
}

/// Runs the preStop hook of each running container that has one, side by
/// side, each for at most its grace; failures are events, and the
/// containers are stopped anyway. `observed` gives the pods' addresses.
pub async fn run_pre_stop_hooks<D: ContainerEngine, E: Exec>(
    engine: &D,
    exec: &E,
    containers: &[&Observed],
    observed: &[Observed],
    events: &dyn EventSink,
) {
    let hooks =
        containers.iter().filter(|c| c.running).filter_map(|c| {
            let hook = c.pre_stop.as_ref()?;
            let pod_ip = observed
                .iter()
                .find(|o| o.pod == c.pod && o.container == docker::INFRA_CONTAINER)
                .and_then(|o| o.ip);
            let target = HookTarget {
                container_id: &c.id,
                pod_ip,
            };
            Some(async move {
                pre_stop(engine, exec, &target, &c.pod, &c.container, hook, events).await
            })
        });
    futures::future::join_all(hooks).await;
}

/// One container's postStart hook, for at most its limit; why it failed.
pub async fn post_start<D: ContainerEngine, E: Exec>(
    engine: &D,
    exec: &E,
    target: &HookTarget<'_>,
    hook: &Hook,
) -> Result<(), String> {
    let limit = Duration::from_secs(crate::model::POST_START_LIMIT_SECONDS);
    run_hook(engine, exec, target, hook, limit).await
}

/// One container's preStop hook, for at most its grace; a failure is an
/// event.
pub async fn pre_stop<D: ContainerEngine, E: Exec>(
    engine: &D,
    exec: &E,
    target: &HookTarget<'_>,
    pod: &str,
    container: &str,
    hook: &Hook,
    events: &dyn EventSink,
) {
    let grace = Duration::from_secs(crate::model::PRE_STOP_GRACE_SECONDS);
    if let Err(message) = run_hook(engine, exec, target, hook, grace).await {
        events.emit(ConvergeEvent::PreStopFailed {
            minion: engine.target().to_string(),
            pod: pod.to_string(),
            container: container.to_string(),
            message,
        });
    }
}
