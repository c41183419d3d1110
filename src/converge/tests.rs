use super::docker::*;
use super::engine::{ContainerSpec, Published, RecordingEngine, RestartKind};
use super::*;
use crate::argv;
use crate::exec::RecordingExec;
use crate::model::{
    Container, EnvVar, Hook, HttpGetHook, Labels, Pod, PodSpec, Port, PortRef, Protocol,
    RestartPolicy,
};
use crate::state::{PodPhase, PodRecord};
use std::time::Duration;

fn pod(id: &str, image: &str) -> PodRecord {
    PodRecord {
        pod: Pod {
            id: id.into(),
            labels: Labels::from([("name".to_string(), "web".to_string())]),
            spec: PodSpec {
                containers: vec![Container {
                    name: "web".into(),
                    image: image.into(),
                    command: vec!["serve".into(), "--port=8080".into()],
                    working_dir: Some("/srv".into()),
                    ports: vec![Port {
                        name: None,
                        container_port: 8080,
                        host_port: Some(80),
                        protocol: Protocol::Tcp,
                    }],
                    env: vec![EnvVar {
                        name: "GREETING".into(),
                        value: "hello; rm -rf /".into(),
                    }],
                    cpu: Some(500),
                    memory: Some(64 << 20),
                    liveness_probe: None,
                    ..Default::default()
                }],
                restart_policy: RestartPolicy::OnFailure,
                volumes: vec![],
            },
        },
        host: "minion-1".into(),
        owner: None,
        draining: false,
    }
}

fn ctx() -> RunContext {
    RunContext {
        cluster: "c1".into(),
        offline_images: true,
        service_env: vec![EnvVar {
            name: "WEB_SERVICE_HOST".into(),
            value: "10.0.0.1".into(),
        }],
        starts_in_flight: 6,
    }
}

fn observed(p: &PodRecord, container: &str, running: bool) -> Observed {
    Observed {
        id: format!("{}-{container}", p.pod.id),
        pod: p.pod.id.clone(),
        container: container.into(),
        spec_hash: p.spec_hash(),
        running,
        finished: !running,
        exit_code: if running { 0 } else { 1 },
        restart_count: 0,
        ip: (container == INFRA_CONTAINER).then(|| "10.101.1.2".parse().unwrap()),
        pre_stop: None,
    }
}

#[test]
fn a_pod_id_of_dotted_labels_is_a_hostname_linux_takes() {
    // Pod ids are DNS subdomains of up to 253 characters, as in v0.5; a
    // hostname has at most 63.
    let id = format!("Logger-0.25lps.{}", "a".repeat(60));
    let specs = pod_containers(&pod(&id, "busybox"), &ctx());
    let hostname = specs[0].hostname.clone().unwrap();
    assert_eq!(hostname, format!("logger-0.25lps.{}", "a".repeat(48)));
    assert_eq!(hostname.len(), 63);
    let specs = pod_containers(&pod(&format!("{}.b", "a".repeat(62)), "busybox"), &ctx());
    assert_eq!(specs[0].hostname.as_deref(), Some("a".repeat(62).as_str()));
    assert_eq!(specs[0].name, format!("{}.b_POD", "a".repeat(62)));
}

#[test]
fn a_pod_is_its_infra_container_then_its_own() {
    let p = pod("web-1", "x; touch /tmp/owned");
    let specs = pod_containers(&p, &ctx());
    assert_eq!(specs.len(), 2);
    let infra = &specs[0];
    assert_eq!(infra.name, "web-1_POD");
    assert_eq!(infra.image, PAUSE_IMAGE);
    assert_eq!(infra.network, POD_NETWORK);
    assert_eq!(infra.hostname.as_deref(), Some("web-1"));
    assert_eq!(infra.restart, RestartKind::Always);
    assert_eq!(
        infra.published,
        [Published {
            host_port: 80,
            container_port: 8080,
            protocol: "tcp"
        }]
    );
    let app = &specs[1];
    assert_eq!(app.name, "web-1_web");
    assert_eq!(app.network, "container:web-1_POD");
    // Values are data: the image and command stay whole, never a shell's.
    assert_eq!(app.image, "x; touch /tmp/owned");
    assert_eq!(app.command, ["serve", "--port=8080"]);
    // The image's own entrypoint stays, unless the pod replaces it.
    let body = crate::docker_api::create_body(app);
    assert_eq!(body.entrypoint, None);
    assert_eq!(body.cmd.unwrap(), ["serve", "--port=8080"]);
    let mut replaced = p.clone();
    replaced.pod.spec.containers[0].entrypoint = vec!["/bin/sh".into(), "-c".into()];
    let body = crate::docker_api::create_body(&pod_containers(&replaced, &ctx())[1]);
    assert_eq!(body.entrypoint.unwrap(), ["/bin/sh", "-c"]);
    // A service's variable first, the container's own after (and winning).
    assert_eq!(
        app.env,
        ["WEB_SERVICE_HOST=10.0.0.1", "GREETING=hello; rm -rf /"]
    );
    assert_eq!(app.restart, RestartKind::OnFailure);
    assert_eq!(app.working_dir.as_deref(), Some("/srv"));
    assert_eq!(app.memory_bytes, Some(64 << 20));
    assert_eq!(app.cpu_shares, Some(512));
    assert!(app.published.is_empty());
    assert_eq!(app.labels["io.kctl.pod"], "web-1");
    assert_eq!(app.labels["io.kctl.cluster"], "c1");
    assert_eq!(app.labels["io.kctl.container"], "web");
    assert_eq!(app.labels["io.kctl.spec"], p.spec_hash());
}

#[test]
fn nothing_to_do_when_pod_runs() {
    let p = pod("web-1", "img");
    let obs = vec![
        observed(&p, INFRA_CONTAINER, true),
        observed(&p, "web", true),
    ];
    assert!(steps(std::slice::from_ref(&p), &obs).is_empty());
    let st = &statuses(std::slice::from_ref(&p), &obs, &Supervisor::default())["web-1"];
    assert_eq!(st.phase, PodPhase::Running);
    assert_eq!(st.pod_ip, Some("10.101.1.2".parse().unwrap()));
    assert_eq!(st.containers[0].container_id, "web-1-web");
}

#[test]
fn missing_pod_is_started_and_orphans_removed() {
    let p = pod("web-1", "img");
    let gone = pod("old", "img");
    let obs = vec![
        observed(&gone, INFRA_CONTAINER, true),
        observed(&gone, "web", true),
    ];
    let s = steps(std::slice::from_ref(&p), &obs);
    assert_eq!(s.len(), 2);
    match &s[0] {
        Step::Remove { ids, why } => {
            assert_eq!(ids, &["old-POD", "old-web"]);
            assert!(why.contains("pod old is gone"));
        }
        other => panic!("expected remove, got {other:?}"),
    }
    assert_eq!(s[1], Step::Start(p));
}

#[test]
fn changed_spec_replaces_containers() {
    let old = pod("web-1", "img:1");
    let new = pod("web-1", "img:2");
    let obs = vec![
        observed(&old, INFRA_CONTAINER, true),
        observed(&old, "web", true),
    ];
    let s = steps(std::slice::from_ref(&new), &obs);
    assert!(matches!(&s[0], Step::Remove { ids, .. } if ids.len() == 2));
    assert_eq!(s[1], Step::Start(new));
}

#[test]
fn half_started_pod_is_restarted_whole() {
    let p = pod("web-1", "img");
    let obs = vec![observed(&p, INFRA_CONTAINER, true)];
    let s = steps(std::slice::from_ref(&p), &obs);
    assert!(matches!(&s[0], Step::Remove { ids, .. } if ids == &["web-1-POD"]));
    assert_eq!(s[1], Step::Start(p.clone()));
    assert_eq!(
        statuses(&[p], &obs, &Supervisor::default())["web-1"].phase,
        PodPhase::Waiting
    );
}

#[test]
fn exited_container_follows_the_restart_policy() {
    // onFailure, exit 1: started again.
    let p = pod("web-1", "img");
    let obs = vec![
        observed(&p, INFRA_CONTAINER, true),
        observed(&p, "web", false),
    ];
    assert_eq!(
        steps(std::slice::from_ref(&p), &obs),
        [Step::Restart {
            id: "web-1-web".into(),
            pod: "web-1".into()
        }]
    );
    // onFailure, exit 0: done.
    let mut clean = obs.clone();
    clean[1].exit_code = 0;
    assert!(steps(std::slice::from_ref(&p), &clean).is_empty());
    // never: left alone, and shown as Terminated with why.
    let mut never = p.clone();
    never.pod.spec.restart_policy = RestartPolicy::Never;
    let obs = vec![
        observed(&never, INFRA_CONTAINER, true),
        observed(&never, "web", false),
    ];
    assert!(steps(std::slice::from_ref(&never), &obs).is_empty());
    let st = &statuses(&[never], &obs, &Supervisor::default())["web-1"];
    assert_eq!(st.phase, PodPhase::Terminated);
    assert_eq!(st.message.as_deref(), Some("web exited with 1"));
}

#[test]
fn restart_count_adds_the_helpers_restarts() {
    let p = pod("web-1", "img");
    let obs = vec![
        observed(&p, INFRA_CONTAINER, true),
        observed(&p, "web", true),
    ];
    let mut supervisor = Supervisor::default();
    supervisor.restarted("web-1-web", std::time::Instant::now());
    supervisor.set_health("web-1-web", false);
    let st = &statuses(std::slice::from_ref(&p), &obs, &supervisor)["web-1"];
    assert_eq!(st.containers[0].restart_count, 1);
    assert_eq!(st.containers[0].healthy, Some(false));
}

#[tokio::test]
async fn converge_asks_docker_in_order() {
    let p = pod("web-1", "img");
    let (engine, exec) = (RecordingEngine::default(), RecordingExec::default());
    let (report, _) = converge_with(&engine, &exec, std::slice::from_ref(&p)).await;
    assert_eq!(report.started, ["web-1"]);
    assert_eq!(
        engine.requests(),
        [
            "observe",
            "remove_volumes_except ",
            "has_image img",
            "has_image kctl/pause:0.1",
            "run web-1_POD",
            "run web-1_web",
            "observe"
        ]
    );
    assert_eq!(engine.runs(), pod_containers(&p, &ctx()));
    // Hairpin mode is looked at once, after the starts.
    let calls = exec.calls();
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0][..2], ["ip", "-d"]);
}

#[test]
fn ports_without_hairpin_are_found() {
    let text = "7: vethab12@if6: <BROADCAST,MULTICAST,UP,LOWER_UP> mtu 1500 qdisc noqueue master kctl0 state UP mode DEFAULT group default \\    link/ether 4a:1b brd ff:ff:ff:ff:ff:ff link-netnsid 0 promiscuity 1 \\    veth \\    bridge_slave state forwarding priority 32 cost 2 hairpin off guard off\n\
9: vethcd34@if8: <BROADCAST> mtu 1500 master kctl0 \\    bridge_slave state forwarding priority 32 cost 2 hairpin on guard off\n";
    assert_eq!(super::ports_without_hairpin(text), ["vethab12"]);
}

async fn converge_with(
    engine: &RecordingEngine,
    exec: &RecordingExec,
    desired: &[PodRecord],
) -> (MinionReport, Vec<ConvergeEvent>) {
    let events = EventLog::default();
    let report = converge_minion(
        engine,
        exec,
        &ctx(),
        desired,
        Duration::ZERO,
        &mut Supervisor::default(),
        &events,
    )
    .await
    .unwrap();
    (report, events.take())
}

#[tokio::test]
async fn two_pods_start_each_in_order_with_an_event_each() {
    let (a, b) = (pod("web-1", "img"), pod("web-2", "img"));
    let (engine, exec) = (RecordingEngine::default(), RecordingExec::default());
    let (report, events) = converge_with(&engine, &exec, &[a.clone(), b.clone()]).await;
    assert_eq!(report.started, ["web-1", "web-2"]);
    assert!(report.failures.is_empty());
    let runs = engine.runs();
    let of = |pod: &str| -> Vec<ContainerSpec> {
        runs.iter()
            .filter(|s| s.labels["io.kctl.pod"] == pod)
            .cloned()
            .collect()
    };
    assert_eq!(of("web-1"), pod_containers(&a, &ctx()));
    assert_eq!(of("web-2"), pod_containers(&b, &ctx()));
    // Each image is looked for once, whatever the number of pods.
    let looked: Vec<String> = engine
        .requests()
        .into_iter()
        .filter(|r| r.starts_with("has_image"))
        .collect();
    assert_eq!(looked, ["has_image img", "has_image kctl/pause:0.1"]);
    let mut started: Vec<ConvergeEvent> = events
        .into_iter()
        .filter(|e| matches!(e, ConvergeEvent::PodStarted { .. }))
        .collect();
    started.sort_by_key(|e| e.to_string());
    assert_eq!(
        started,
        [
            ConvergeEvent::PodStarted {
                minion: "recording".into(),
                pod: "web-1".into()
            },
            ConvergeEvent::PodStarted {
                minion: "recording".into(),
                pod: "web-2".into()
            },
        ]
    );
}

#[tokio::test]
async fn pods_start_side_by_side_up_to_the_bound() {
    let pods: Vec<PodRecord> = (0..40).map(|i| pod(&format!("web-{i}"), "img")).collect();
    let engine = RecordingEngine {
        run_delay: Duration::from_millis(20),
        ..Default::default()
    };
    let exec = RecordingExec::default();
    let (report, _) = converge_with(&engine, &exec, &pods).await;
    assert_eq!(report.started.len(), 40);
    let most = engine
        .most_in_flight
        .load(std::sync::atomic::Ordering::SeqCst);
    assert_eq!(most, 6, "starts overlap, within the bound");
    // Within each pod, the infra container still comes first.
    let runs: Vec<String> = engine.runs().into_iter().map(|s| s.name).collect();
    for p in &pods {
        let infra = runs.iter().position(|n| *n == format!("{}_POD", p.pod.id));
        let app = runs.iter().position(|n| *n == format!("{}_web", p.pod.id));
        assert!(infra < app, "{}: {runs:?}", p.pod.id);
    }
}

/// A minion whose Docker has `pod`: its infra container c1 running, its
/// app container c2 running or exited with `exit_code`.
fn minion_running(pod: &PodRecord, running: bool, exit_code: i64) -> RecordingEngine {
    let mut infra = observed(pod, INFRA_CONTAINER, true);
    infra.id = "c1".into();
    let mut app = observed(pod, "web", running);
    app.id = "c2".into();
    app.exit_code = exit_code;
    RecordingEngine {
        containers: vec![infra, app],
        ..Default::default()
    }
}

#[tokio::test]
async fn containers_of_a_gone_pod_are_removed() {
    let gone = pod("old", "img");
    let engine = minion_running(&gone, true, 0);
    let (report, events) = converge_with(&engine, &RecordingExec::default(), &[]).await;
    assert_eq!(report.removed, 2);
    assert!(engine.requests().contains(&"remove c1 c2".to_string()));
    assert_eq!(
        events,
        [ConvergeEvent::ContainersRemoved {
            minion: "recording".into(),
            ids: vec!["c1".into(), "c2".into()],
            why: "pod old is gone".into(),
        }]
    );
}

#[tokio::test]
async fn an_exited_container_is_restarted() {
    let p = pod("web-1", "img");
    let engine = minion_running(&p, false, 1);
    let exec = RecordingExec::default();
    let (report, events) = converge_with(&engine, &exec, std::slice::from_ref(&p)).await;
    assert_eq!(report.restarted, ["web-1"]);
    assert!(report.started.is_empty());
    assert!(engine.requests().contains(&"start c2".to_string()));
    assert_eq!(
        events,
        [ConvergeEvent::ContainerRestarted {
            minion: "recording".into(),
            pod: "web-1".into(),
            container: "c2".into(),
        }]
    );
}

#[tokio::test]
async fn a_failed_start_is_the_pods_own() {
    let (good, bad) = (pod("good", "img"), pod("bad", "img"));
    let engine = RecordingEngine {
        refuse: [(
            "bad_POD".to_string(),
            "No such image: kctl/pause:0.1".to_string(),
        )]
        .into(),
        ..Default::default()
    };
    let (report, events) =
        converge_with(&engine, &RecordingExec::default(), &[good.clone(), bad]).await;
    assert_eq!(report.started, ["good"]);
    assert_eq!(
        report.failures,
        [(
            "bad".to_string(),
            "No such image: kctl/pause:0.1".to_string()
        )]
    );
    // The failed pod stops at its infra container; the other starts whole.
    let runs: Vec<String> = engine.runs().into_iter().map(|s| s.name).collect();
    assert!(runs.contains(&"bad_POD".to_string()) && !runs.contains(&"bad_web".to_string()));
    assert!(runs.contains(&"good_POD".to_string()) && runs.contains(&"good_web".to_string()));
    assert!(events.contains(&ConvergeEvent::PodFailed {
        minion: "recording".into(),
        pod: "bad".into(),
        message: "No such image: kctl/pause:0.1".into(),
    }));
    assert!(events.contains(&ConvergeEvent::PodStarted {
        minion: "recording".into(),
        pod: "good".into(),
    }));
}

#[tokio::test]
async fn a_missing_image_fails_its_pods_or_is_pulled_once() {
    let (a, b, c) = (pod("a", "absent:1"), pod("b", "absent:1"), pod("c", "here"));
    let images = Some(vec!["here".to_string(), PAUSE_IMAGE.to_string()]);
    // Minions that cannot pull: the pods that need it fail, with a hint,
    // and nothing of theirs is created.
    let offline = RecordingEngine {
        images: images.clone(),
        ..Default::default()
    };
    let exec = RecordingExec::default();
    let (report, _) = converge_with(&offline, &exec, &[a.clone(), b.clone(), c.clone()]).await;
    assert_eq!(report.started, ["c"]);
    assert_eq!(report.failures.len(), 2);
    assert!(
        report.failures[0]
            .1
            .contains("image absent:1 is not on minion recording")
            && report.failures[0].1.contains("kctl image load absent:1"),
        "{:?}",
        report.failures
    );
    assert!(!exec.calls().iter().any(|c| c[..2] == ["docker", "pull"]));
    assert!(!offline.runs().iter().any(|s| s.name.starts_with("a_")));
    // Minions that can: pulled once for both pods, then started.
    let online = RecordingEngine {
        images,
        ..Default::default()
    };
    let events = EventLog::default();
    let ctx = RunContext {
        offline_images: false,
        ..ctx()
    };
    let report = converge_minion(
        &online,
        &exec,
        &ctx,
        &[a, b, c],
        Duration::ZERO,
        &mut Supervisor::default(),
        &events,
    )
    .await
    .unwrap();
    assert_eq!(report.started, ["a", "b", "c"]);
    // Through the docker CLI, which brings the login's registry
    // credentials; once for both pods.
    let pulls: Vec<Vec<String>> = exec
        .calls()
        .into_iter()
        .filter(|c| c[..2] == ["docker", "pull"])
        .collect();
    assert_eq!(
        pulls,
        [argv!["docker", "pull", "--quiet", "--", "absent:1"]]
    );
}

#[test]
fn hairpin_is_one_batch() {
    assert_eq!(
        hairpin_batch(&["veth1".into(), "veth2".into()]),
        "link set dev veth1 type bridge_slave hairpin on\n\
         link set dev veth2 type bridge_slave hairpin on\n"
    );
}

#[test]
fn the_helper_starts_a_pod_per_cpu_within_bounds() {
    assert_eq!(pod_starts_for_cpus(1), 2);
    assert_eq!(pod_starts_for_cpus(8), 8);
    assert_eq!(pod_starts_for_cpus(64), 16);
}

#[test]
fn an_idle_minion_is_settled_and_any_work_or_new_status_is_not() {
    let p = pod("web-1", "img");
    let running = vec![
        observed(&p, INFRA_CONTAINER, true),
        observed(&p, "web", true),
    ];
    let supervisor = Supervisor::default();
    let mut state = crate::state::ClusterState::default();
    state.pods.insert("web-1".into(), p.clone());
    // Runs, but its status is not recorded yet: a converge has that to do.
    assert!(settled_report(&state, "minion-1", &running, &supervisor).is_none());
    let status = statuses(std::slice::from_ref(&p), &running, &supervisor)["web-1"].clone();
    state.statuses.insert("web-1".into(), status.clone());
    let report = settled_report(&state, "minion-1", &running, &supervisor).unwrap();
    assert_eq!(report.statuses["web-1"], status);
    assert_eq!(report.desired, std::slice::from_ref(&p));
    assert!(report.started.is_empty() && report.removed == 0);
    // Another minion's view of it is not this one's business.
    assert!(settled_report(&state, "minion-2", &[], &supervisor).is_some());
    // Work: its app exited, or a container etcd does not want.
    let exited = vec![
        observed(&p, INFRA_CONTAINER, true),
        observed(&p, "web", false),
    ];
    assert!(settled_report(&state, "minion-1", &exited, &supervisor).is_none());
    let mut stray = running.clone();
    stray.push(observed(&pod("gone-1", "img"), "web", true));
    assert!(settled_report(&state, "minion-1", &stray, &supervisor).is_none());
    // A restart count a probe recorded (the helper's own is not lower).
    let mut counted = status;
    counted.containers[0].restart_count = 3;
    state.statuses.insert("web-1".into(), counted);
    assert!(settled_report(&state, "minion-1", &running, &supervisor).is_some());
}

#[tokio::test]
async fn a_pod_that_leaves_takes_its_volumes_and_only_its_own() {
    let gone = pod("old", "img");
    let staying = pod("web-1", "img");
    let mut engine = minion_running(&gone, true, 0);
    engine.volumes_of = vec!["old".into(), "web-1".into()];
    let (_, events) = converge_with(&engine, &RecordingExec::default(), &[staying]).await;
    let requests = engine.requests();
    let removed_containers = requests.iter().position(|r| r == "remove c1 c2").unwrap();
    let removed_volumes = requests
        .iter()
        .position(|r| r == "remove_volumes_except old")
        .unwrap_or_else(|| panic!("{requests:?}"));
    // Containers first: they hold the volumes.
    assert!(removed_containers < removed_volumes);
    assert!(events.contains(&ConvergeEvent::VolumesRemoved {
        minion: "recording".into(),
        names: vec!["old".into()],
    }));
    // A volume left by an earlier round (still held then) goes in a
    // round that removes nothing.
    let mut engine = minion_running(&pod("web-1", "img"), true, 0);
    engine.volumes_of = vec!["left-over".into(), "web-1".into()];
    converge_with(&engine, &RecordingExec::default(), &[pod("web-1", "img")]).await;
    assert!(engine
        .requests()
        .contains(&"remove_volumes_except left-over".to_string()));
}

#[test]
fn volumes_are_docker_volumes_of_the_pod_and_host_dirs_binds() {
    use crate::converge::engine::MountSpec;
    use crate::model::{Volume, VolumeMount, VolumeSource};
    let mut p = pod("redis-1", "redis");
    p.pod.spec.volumes = vec![
        Volume {
            name: "data".into(),
            source: VolumeSource::EmptyDir,
        },
        Volume {
            name: "logs".into(),
            source: VolumeSource::HostDir {
                path: "/srv/logs".into(),
            },
        },
    ];
    p.pod.spec.containers[0].volume_mounts = vec![
        VolumeMount {
            name: "data".into(),
            mount_path: "/data".into(),
            read_only: false,
        },
        VolumeMount {
            name: "logs".into(),
            mount_path: "/var/log/redis".into(),
            read_only: true,
        },
    ];
    let specs = pod_containers(&p, &ctx());
    // The infra container mounts nothing.
    assert!(specs[0].mounts.is_empty());
    assert_eq!(
        specs[1].mounts,
        [
            MountSpec::Volume {
                name: "kctl_c1_redis-1_data".into(),
                labels: [
                    (LABEL_CLUSTER.to_string(), "c1".to_string()),
                    (LABEL_POD.to_string(), "redis-1".to_string())
                ]
                .into(),
                device_options: Default::default(),
                target: "/data".into(),
                read_only: false,
            },
            MountSpec::Bind {
                source: "/srv/logs".into(),
                target: "/var/log/redis".into(),
                read_only: true,
            }
        ]
    );
    let body = crate::docker_api::create_body(&specs[1]);
    let host = body.host_config.unwrap();
    assert_eq!(host.binds.unwrap(), ["/srv/logs:/var/log/redis:ro"]);
    let mounts = host.mounts.unwrap();
    assert_eq!(mounts[0].source.as_deref(), Some("kctl_c1_redis-1_data"));
    assert_eq!(mounts[0].target.as_deref(), Some("/data"));
    let labels = mounts[0]
        .volume_options
        .as_ref()
        .unwrap()
        .labels
        .as_ref()
        .unwrap();
    assert_eq!(labels.get(LABEL_POD).map(String::as_str), Some("redis-1"));
}

#[test]
fn a_security_context_is_docker_host_config() {
    let mut p = pod("web-1", "img");
    p.pod.spec.containers[0].security = crate::model::SecurityContext {
        privileged: true,
        run_as_user: Some(1000),
        read_only_root_filesystem: true,
        capabilities_add: vec!["NET_ADMIN".into()],
        capabilities_drop: vec!["ALL".into()],
        allow_privilege_escalation: Some(false),
        ..Default::default()
    };
    let specs = pod_containers(&p, &ctx());
    // The infra container keeps Docker's defaults.
    let infra = crate::docker_api::create_body(&specs[0]);
    assert_eq!(infra.host_config.as_ref().unwrap().privileged, None);
    let body = crate::docker_api::create_body(&specs[1]);
    assert_eq!(body.user.as_deref(), Some("1000"));
    let host = body.host_config.unwrap();
    assert_eq!(host.privileged, Some(true));
    assert_eq!(host.readonly_rootfs, Some(true));
    assert_eq!(host.cap_add.unwrap(), ["NET_ADMIN"]);
    assert_eq!(host.cap_drop.unwrap(), ["ALL"]);
    assert_eq!(host.security_opt.unwrap(), ["no-new-privileges"]);
}

#[test]
fn containers_lose_raw_sockets_and_privilege_gain_and_have_a_process_limit() {
    let mut p = pod("web-1", "img");
    let specs = pod_containers(&p, &ctx());
    let infra = crate::docker_api::create_body(&specs[0])
        .host_config
        .unwrap();
    assert_eq!(infra.cap_drop.unwrap(), ["ALL"]);
    assert_eq!(infra.security_opt.unwrap(), ["no-new-privileges"]);
    let host = crate::docker_api::create_body(&specs[1])
        .host_config
        .unwrap();
    assert_eq!(host.cap_drop.unwrap(), ["NET_RAW"]);
    assert_eq!(host.cap_add, None);
    assert_eq!(host.security_opt.unwrap(), ["no-new-privileges"]);
    for spec in &specs {
        assert_eq!(spec.pids_limit, Some(PIDS_PER_CONTAINER));
    }

    // What the manifest asks for wins: raw sockets added back, privilege
    // gain allowed, a privileged container left as asked.
    p.pod.spec.containers[0].security = crate::model::SecurityContext {
        capabilities_add: vec!["NET_RAW".into()],
        allow_privilege_escalation: Some(true),
        ..Default::default()
    };
    let host = crate::docker_api::create_body(&pod_containers(&p, &ctx())[1])
        .host_config
        .unwrap();
    assert_eq!((host.cap_drop, host.security_opt), (None, None));
    assert_eq!(host.cap_add.unwrap(), ["NET_RAW"]);
    p.pod.spec.containers[0].security = crate::model::SecurityContext {
        privileged: true,
        ..Default::default()
    };
    let host = crate::docker_api::create_body(&pod_containers(&p, &ctx())[1])
        .host_config
        .unwrap();
    assert_eq!((host.cap_drop, host.security_opt), (None, None));
}

#[tokio::test]
async fn a_post_start_hook_runs_after_its_container_and_its_failure_fails_the_start() {
    let mut p = pod("web-1", "img");
    p.pod.spec.containers[0].post_start = Some(Hook::Exec(vec!["touch".into(), "/tmp/up".into()]));
    let engine = RecordingEngine::default();
    let (report, _) =
        converge_with(&engine, &RecordingExec::default(), std::slice::from_ref(&p)).await;
    assert_eq!(report.started, ["web-1"]);
    let requests = engine.requests();
    let run = requests.iter().position(|r| r == "run web-1_web").unwrap();
    let hook = requests
        .iter()
        .position(|r| r == "exec web-1_web touch /tmp/up")
        .unwrap_or_else(|| panic!("{requests:?}"));
    assert!(run < hook);
    let failing = RecordingEngine {
        exec_exit_code: 2,
        ..Default::default()
    };
    let (report, _) = converge_with(&failing, &RecordingExec::default(), &[p]).await;
    assert!(report.started.is_empty());
    assert_eq!(report.failures.len(), 1);
    assert!(
        report.failures[0]
            .1
            .contains("postStart hook of container web exited 2"),
        "{:?}",
        report.failures
    );
}

#[tokio::test]
async fn a_pre_stop_hook_runs_before_its_container_is_removed() {
    let gone = pod("old", "img");
    let mut engine = minion_running(&gone, true, 0);
    engine.containers[1].pre_stop = Some(Hook::Exec(vec![
        "sh".into(),
        "-c".into(),
        "nginx -s quit".into(),
    ]));
    let (_, events) = converge_with(&engine, &RecordingExec::default(), &[]).await;
    let requests = engine.requests();
    let hook = requests
        .iter()
        .position(|r| r == "exec c2 sh -c nginx -s quit")
        .unwrap_or_else(|| panic!("{requests:?}"));
    let removed = requests.iter().position(|r| r == "remove c1 c2").unwrap();
    assert!(hook < removed);
    assert!(!events
        .iter()
        .any(|e| matches!(e, ConvergeEvent::PreStopFailed { .. })));
    // A failing hook is an event; the container goes anyway.
    let mut engine = minion_running(&gone, true, 0);
    engine.containers[1].pre_stop = Some(Hook::Exec(vec!["false".into()]));
    engine.exec_exit_code = 1;
    let (_, events) = converge_with(&engine, &RecordingExec::default(), &[]).await;
    assert!(engine.requests().contains(&"remove c1 c2".to_string()));
    assert!(events.contains(&ConvergeEvent::PreStopFailed {
        minion: "recording".into(),
        pod: "old".into(),
        container: "web".into(),
        message: "exited 1".into(),
    }));
}

#[test]
fn the_pre_stop_command_travels_in_a_label_read_back_with_care() {
    let mut p = pod("web-1", "img");
    p.pod.spec.containers[0].pre_stop = Some(Hook::Exec(vec![
        "sh".into(),
        "-c".into(),
        "echo bye; exit 0".into(),
    ]));
    let specs = pod_containers(&p, &ctx());
    let label = specs[1].labels.get(LABEL_PRE_STOP);
    // A command is the bare list, as labels held it before GET hooks.
    assert_eq!(label.unwrap(), r#"["sh","-c","echo bye; exit 0"]"#);
    assert_eq!(pre_stop_of(label), p.pod.spec.containers[0].pre_stop);
    assert!(!specs[0].labels.contains_key(LABEL_PRE_STOP));
    // A GET travels with its port as a number: the label has no spec to
    // look a name up in.
    p.pod.spec.containers[0].ports[0].name = Some("http".into());
    p.pod.spec.containers[0].pre_stop = Some(Hook::HttpGet(HttpGetHook {
        path: "/quit".into(),
        port: PortRef::Name("http".into()),
        host: None,
    }));
    let specs = pod_containers(&p, &ctx());
    let label = specs[1].labels.get(LABEL_PRE_STOP);
    assert_eq!(
        pre_stop_of(label),
        Some(Hook::HttpGet(HttpGetHook {
            path: "/quit".into(),
            port: PortRef::Number(8080),
            host: None,
        }))
    );
    // Docker's answer is untrusted: junk, too much, or a request that
    // would add lines of its own is no hook.
    for junk in [
        "rm -rf /",
        "{\"a\": 1}",
        "[1, 2]",
        "[]",
        r#"{"path": "/x HTTP/1.0\r\nX: y", "port": 80}"#,
        r#"{"path": "/x", "port": 80, "host": "example.com"}"#,
    ] {
        assert_eq!(pre_stop_of(Some(&junk.to_string())), None, "{junk}");
    }
    let many = serde_json::to_string(&vec!["x"; 65]).unwrap();
    assert_eq!(pre_stop_of(Some(&many)), None);
}

#[tokio::test]
async fn get_hooks_go_from_the_minion_to_the_pod_and_their_status_decides() {
    // preStop: to the pod's address, which its infra container has.
    let gone = pod("old", "img");
    let mut engine = minion_running(&gone, true, 0);
    engine.containers[1].pre_stop = Some(Hook::HttpGet(HttpGetHook {
        path: "/quit".into(),
        port: PortRef::Number(8080),
        host: None,
    }));
    let exec = RecordingExec::default();
    let (_, events) = converge_with(&engine, &exec, &[]).await;
    assert!(
        exec.calls()
            .contains(&argv!["GET", "10.101.1.2:8080", "/quit"]),
        "{:?}",
        exec.calls()
    );
    assert!(engine.requests().contains(&"remove c1 c2".to_string()));
    assert!(!events
        .iter()
        .any(|e| matches!(e, ConvergeEvent::PreStopFailed { .. })));
    // An answer of 500 is a failed hook: an event, and the container goes.
    let exec = RecordingExec {
        http_answers: [("10.101.1.2:8080 /quit".to_string(), 500)].into(),
        ..Default::default()
    };
    let (_, events) = converge_with(&engine, &exec, &[]).await;
    assert!(events.contains(&ConvergeEvent::PreStopFailed {
        minion: "recording".into(),
        pod: "old".into(),
        container: "web".into(),
        message: "got HTTP 500 from GET 10.101.1.2:8080/quit".into(),
    }));
    // postStart to a host it names; a failure fails the start.
    let mut p = pod("web-1", "img");
    p.pod.spec.containers[0].post_start = Some(Hook::HttpGet(HttpGetHook {
        path: "/warm".into(),
        port: PortRef::Number(8080),
        host: Some("10.101.1.9".into()),
    }));
    let exec = RecordingExec {
        http_answers: [("10.101.1.9:8080 /warm".to_string(), 404)].into(),
        ..Default::default()
    };
    let engine = RecordingEngine::default();
    let (report, _) = converge_with(&engine, &exec, std::slice::from_ref(&p)).await;
    assert!(
        report.failures[0]
            .1
            .contains("postStart hook of container web got HTTP 404 from GET 10.101.1.9:8080/warm"),
        "{:?}",
        report.failures
    );
    assert!(
        engine
            .requests()
            .contains(&"remove web-1_POD web-1_web".to_string()),
        "{:?}",
        engine.requests()
    );
    // Without a host and with no address for the pod: it says so.
    p.pod.spec.containers[0].post_start = Some(Hook::HttpGet(HttpGetHook {
        path: "/warm".into(),
        port: PortRef::Number(8080),
        host: None,
    }));
    let (report, _) =
        converge_with(&RecordingEngine::default(), &RecordingExec::default(), &[p]).await;
    assert!(
        report.failures[0]
            .1
            .contains("found the pod without an IP address"),
        "{:?}",
        report.failures
    );
}

#[tokio::test]
async fn images_are_pulled_as_their_policy_says() {
    use crate::model::PullPolicy;
    let online = RunContext {
        offline_images: false,
        ..ctx()
    };
    let with = |policy: Option<PullPolicy>| {
        let mut p = pod("web-1", "registry.example/web:1");
        p.pod.spec.containers[0].image_pull_policy = policy;
        p
    };
    let pulls = |exec: &RecordingExec| {
        exec.calls()
            .iter()
            .filter(|argv| argv.get(1).map(String::as_str) == Some("pull"))
            .count()
    };
    let converge = |ctx: RunContext, engine: RecordingEngine, p: PodRecord| async move {
        let exec = RecordingExec::default();
        let report = converge_minion(
            &engine,
            &exec,
            &ctx,
            &[p],
            Duration::ZERO,
            &mut Supervisor::default(),
            &EventLog::default(),
        )
        .await
        .unwrap();
        (report, exec)
    };
    // Present: Always pulls anyway, IfNotPresent (the default) does not.
    let (_, exec) = converge(
        online.clone(),
        RecordingEngine::default(),
        with(Some(PullPolicy::Always)),
    )
    .await;
    assert_eq!(pulls(&exec), 1);
    let (_, exec) = converge(online.clone(), RecordingEngine::default(), with(None)).await;
    assert_eq!(pulls(&exec), 0);
    // Missing: IfNotPresent pulls, Never fails the pod saying why.
    let missing = || RecordingEngine {
        images: Some(vec![PAUSE_IMAGE.to_string()]),
        ..Default::default()
    };
    let (_, exec) = converge(online.clone(), missing(), with(None)).await;
    assert_eq!(pulls(&exec), 1);
    let (report, exec) = converge(online.clone(), missing(), with(Some(PullPolicy::Never))).await;
    assert_eq!(pulls(&exec), 0);
    assert!(
        report.failures[0].1.contains("imagePullPolicy is Never"),
        "{:?}",
        report.failures
    );
    // Minions that cannot pull run the image they have, whatever the policy.
    let (report, exec) = converge(
        ctx(),
        RecordingEngine::default(),
        with(Some(PullPolicy::Always)),
    )
    .await;
    assert_eq!(pulls(&exec), 0);
    assert_eq!(report.started, ["web-1"]);
}

#[tokio::test]
async fn a_host_directory_is_bound_only_by_its_real_path() {
    use crate::model::{Volume, VolumeMount, VolumeSource};
    let mut p = pod("web-1", "img");
    p.pod.spec.volumes = vec![Volume {
        name: "site".into(),
        source: VolumeSource::HostDir {
            path: "/srv/a/r".into(),
        },
    }];
    p.pod.spec.containers[0].volume_mounts = vec![VolumeMount {
        name: "site".into(),
        mount_path: "/site".into(),
        read_only: false,
    }];
    let answer = |real: &str| crate::exec::Output {
        code: Some(0),
        stdout: format!("{real}\n").into_bytes(),
        stderr: vec![],
    };
    // Another pod made /srv/a/r a link to `/`: refused, with the reason.
    let mut exec = RecordingExec::default();
    exec.answers.insert("realpath".into(), answer("/"));
    let engine = RecordingEngine::default();
    let (report, _) = converge_with(&engine, &exec, std::slice::from_ref(&p)).await;
    assert!(report.started.is_empty());
    assert!(
        report.failures[0]
            .1
            .contains("leads to /: kctl binds a host directory by its real path only"),
        "{:?}",
        report.failures
    );
    assert!(!engine.requests().iter().any(|r| r.starts_with("run ")));
    assert!(exec
        .calls()
        .contains(&argv!["realpath", "-m", "--", "/srv/a/r"]));
    // Its own real path: bound.
    let mut exec = RecordingExec::default();
    exec.answers.insert("realpath".into(), answer("/srv/a/r"));
    let (report, _) = converge_with(&RecordingEngine::default(), &exec, &[p]).await;
    assert_eq!(report.started, ["web-1"]);
}

#[tokio::test]
async fn the_host_directories_of_every_pod_to_start_are_read_in_one_round_trip() {
    use crate::model::{Volume, VolumeSource};
    let with_dir = |id: &str, path: &str| {
        let mut p = pod(id, "img");
        p.pod.spec.volumes = vec![Volume {
            name: "site".into(),
            source: VolumeSource::HostDir { path: path.into() },
        }];
        p
    };
    let mut exec = RecordingExec::default();
    exec.answers.insert(
        "realpath".into(),
        crate::exec::Output {
            code: Some(0),
            stdout: b"/srv/a\n/etc\n".to_vec(),
            stderr: vec![],
        },
    );
    let pods = [with_dir("a-1", "/srv/a/"), with_dir("b-1", "/srv/b")];
    let (report, _) = converge_with(&RecordingEngine::default(), &exec, &pods).await;
    let asked: Vec<Vec<String>> = exec
        .calls()
        .into_iter()
        .filter(|argv| argv[0] == "realpath")
        .collect();
    assert_eq!(asked, [argv!["realpath", "-m", "--", "/srv/a/", "/srv/b"]]);
    assert_eq!(report.started, ["a-1"]);
    assert_eq!(report.failures.len(), 1);
    assert!(report.failures[0]
        .1
        .contains("/srv/b of volume site leads to /etc"));
}
