use super::docker::*;
use super::*;
use crate::argv;
use crate::exec::{Output, RecordingExec};
use crate::model::{Container, EnvVar, Labels, Pod, PodSpec, Port, Protocol, RestartPolicy};
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
                }],
                restart_policy: RestartPolicy::OnFailure,
            },
        },
        host: "minion-1".into(),
        owner: None,
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
    }
}

#[test]
fn run_argvs_are_one_element_per_argument() {
    let p = pod("web-1", "x; touch /tmp/owned");
    let argvs = run_argvs(&p, &ctx());
    assert_eq!(argvs.len(), 2);
    let infra = &argvs[0];
    assert_eq!(
        &infra[..5],
        ["docker", "run", "--detach", "--name", "web-1_POD"]
    );
    assert!(infra.windows(2).any(|w| w == ["--publish", "80:8080/tcp"]));
    assert!(infra.windows(2).any(|w| w == ["--pull", "never"]));
    assert_eq!(infra.last().unwrap(), PAUSE_IMAGE);
    let app = &argvs[1];
    assert!(app
        .windows(2)
        .any(|w| w == ["--network", "container:web-1_POD"]));
    assert!(app
        .windows(2)
        .any(|w| w == ["--env", "GREETING=hello; rm -rf /"]));
    assert!(app.windows(2).any(|w| w == ["--restart", "on-failure"]));
    assert!(app.windows(2).any(|w| w == ["--workdir", "/srv"]));
    assert!(app.windows(2).any(|w| w == ["--memory", "67108864"]));
    assert!(app.windows(2).any(|w| w == ["--cpu-shares", "512"]));
    assert!(app
        .windows(2)
        .any(|w| w == ["--label", "io.kctl.pod=web-1"]));
    assert!(app
        .windows(2)
        .any(|w| w == ["--label", "io.kctl.cluster=c1"]));
    // The image is one argv element after `--`, the command follows it.
    let dashdash = app.iter().position(|a| a == "--").unwrap();
    assert_eq!(
        &app[dashdash + 1..],
        ["x; touch /tmp/owned", "serve", "--port=8080"]
    );
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

#[test]
fn inspect_output_is_parsed() {
    let json = r#"[{"Id":"abc","RestartCount":2,
        "State":{"Status":"running","Running":true,"ExitCode":0},
        "Config":{"Labels":{"io.kctl.pod":"p","io.kctl.container":"POD","io.kctl.spec":"h"}},
        "NetworkSettings":{"IPAddress":"","Networks":{"bridge":{"IPAddress":"172.17.0.2"},"kctl":{"IPAddress":"10.101.1.5"}}}},
       {"Id":"old","RestartCount":0,
        "State":{"Status":"running","Running":true,"ExitCode":0},
        "Config":{"Labels":{"io.kctl.pod":"q","io.kctl.container":"POD","io.kctl.spec":"h"}},
        "NetworkSettings":{"IPAddress":"10.101.1.6"}},
       {"Id":"def","State":{"Status":"exited","Running":false,"ExitCode":3},
        "Config":{"Labels":null},"NetworkSettings":{"IPAddress":""}}]"#;
    let obs = parse_inspect(json).unwrap();
    assert_eq!(obs.len(), 2, "unlabelled container skipped");
    assert_eq!(obs[0].restart_count, 2);
    assert_eq!(
        obs[0].ip,
        Some("10.101.1.5".parse().unwrap()),
        "the pod network's address, not another network's"
    );
    assert_eq!(obs[1].ip, Some("10.101.1.6".parse().unwrap()));
    assert!(parse_inspect("not json").is_err());
}

#[tokio::test]
async fn converge_runs_docker_in_order() {
    let p = pod("web-1", "img");
    let exec = RecordingExec {
        answers: [(
            "docker ps".to_string(),
            Output {
                code: Some(0),
                stdout: b"".to_vec(),
                stderr: vec![],
            },
        )]
        .into(),
        ..Default::default()
    };
    let mut supervisor = Supervisor::default();
    let report = converge_minion(
        &exec,
        &ctx(),
        std::slice::from_ref(&p),
        Duration::ZERO,
        &mut supervisor,
        &|_| {},
    )
    .await
    .unwrap();
    assert_eq!(report.started, ["web-1"]);
    let calls = exec.calls();
    let firsts: Vec<String> = calls.iter().map(|c| c[..2].join(" ")).collect();
    assert_eq!(
        firsts,
        [
            "docker ps",
            "docker run",
            "docker run",
            "ip -d",
            "docker ps"
        ]
    );
    assert_eq!(calls[1], run_argvs(&p, &ctx())[0]);
}

#[test]
fn ports_without_hairpin_are_found() {
    let text = "7: vethab12@if6: <BROADCAST,MULTICAST,UP,LOWER_UP> mtu 1500 qdisc noqueue master kctl0 state UP mode DEFAULT group default \\    link/ether 4a:1b brd ff:ff:ff:ff:ff:ff link-netnsid 0 promiscuity 1 \\    veth \\    bridge_slave state forwarding priority 32 cost 2 hairpin off guard off\n\
9: vethcd34@if8: <BROADCAST> mtu 1500 master kctl0 \\    bridge_slave state forwarding priority 32 cost 2 hairpin on guard off\n";
    assert_eq!(super::ports_without_hairpin(text), ["vethab12"]);
}

fn answer(code: i32, stdout: &str, stderr: &str) -> Output {
    Output {
        code: Some(code),
        stdout: stdout.as_bytes().to_vec(),
        stderr: stderr.as_bytes().to_vec(),
    }
}

/// `docker inspect` output for containers `(id, pod, container, status,
/// exit code)` of pod record `p`.
fn inspect_json(p: &PodRecord, containers: &[(&str, &str, &str, i64)]) -> String {
    let items: Vec<serde_json::Value> = containers
        .iter()
        .map(|(id, container, status, exit)| {
            serde_json::json!({
                "Id": id,
                "RestartCount": 0,
                "State": {"Status": status, "Running": *status == "running", "ExitCode": exit},
                "Config": {"Labels": {
                    "io.kctl.pod": p.pod.id,
                    "io.kctl.container": container,
                    "io.kctl.spec": p.spec_hash(),
                }},
                "NetworkSettings": {"IPAddress": "10.101.1.2"},
            })
        })
        .collect();
    serde_json::Value::Array(items).to_string()
}

/// The executor's argvs of one pod's `docker run`s, in the order they ran.
fn runs_of(calls: &[Vec<String>], pod: &str) -> Vec<Vec<String>> {
    let name = format!("{pod}_");
    calls
        .iter()
        .filter(|c| c[..2] == ["docker", "run"])
        .filter(|c| {
            c.windows(2)
                .any(|w| w[0] == "--name" && w[1].starts_with(&name))
        })
        .cloned()
        .collect()
}

async fn converge_with(
    exec: &RecordingExec,
    desired: &[PodRecord],
) -> (MinionReport, Vec<ConvergeEvent>) {
    let events = EventLog::default();
    let report = converge_minion(
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
    let exec = RecordingExec::default();
    let (report, events) = converge_with(&exec, &[a.clone(), b.clone()]).await;
    assert_eq!(report.started, ["web-1", "web-2"]);
    assert!(report.failures.is_empty());
    let calls = exec.calls();
    assert_eq!(runs_of(&calls, "web-1"), run_argvs(&a, &ctx()));
    assert_eq!(runs_of(&calls, "web-2"), run_argvs(&b, &ctx()));
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
    // Hairpin mode once after the starts, then one last look.
    let firsts: Vec<String> = calls.iter().map(|c| c[..2].join(" ")).collect();
    assert_eq!(firsts[firsts.len() - 2..], ["ip -d", "docker ps"]);
}

/// A minion whose Docker has `pod`: its infra container c1 running, its
/// app container c2 in `state` with `exit_code`.
fn minion_running(pod: &PodRecord, state: &str, exit_code: i64) -> RecordingExec {
    RecordingExec {
        answers: [
            ("docker ps".to_string(), answer(0, "c1 c2\n", "")),
            (
                "docker inspect".to_string(),
                answer(
                    0,
                    &inspect_json(
                        pod,
                        &[
                            ("c1", INFRA_CONTAINER, "running", 0),
                            ("c2", "web", state, exit_code),
                        ],
                    ),
                    "",
                ),
            ),
        ]
        .into(),
        ..Default::default()
    }
}

#[tokio::test]
async fn containers_of_a_gone_pod_are_removed() {
    let gone = pod("old", "img");
    let exec = minion_running(&gone, "running", 0);
    let (report, events) = converge_with(&exec, &[]).await;
    assert_eq!(report.removed, 2);
    assert!(exec
        .calls()
        .contains(&argv!["docker", "rm", "--force", "--volumes", "c1", "c2"]));
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
    let exec = minion_running(&p, "exited", 1);
    let (report, events) = converge_with(&exec, std::slice::from_ref(&p)).await;
    assert_eq!(report.restarted, ["web-1"]);
    assert!(report.started.is_empty());
    assert!(exec.calls().contains(&argv!["docker", "start", "c2"]));
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
    let exec = RecordingExec {
        answers: [(
            "docker run --detach --name bad_POD".to_string(),
            answer(125, "", "Unable to find image 'pause' locally\n"),
        )]
        .into(),
        ..Default::default()
    };
    let (report, events) = converge_with(&exec, &[good.clone(), bad.clone()]).await;
    assert_eq!(report.started, ["good"]);
    assert_eq!(
        report.failures,
        [(
            "bad".to_string(),
            "Unable to find image 'pause' locally".to_string()
        )]
    );
    // The failed pod stops at its infra container; the other starts whole.
    let calls = exec.calls();
    assert_eq!(runs_of(&calls, "bad"), run_argvs(&bad, &ctx())[..1]);
    assert_eq!(runs_of(&calls, "good"), run_argvs(&good, &ctx()));
    assert!(events.contains(&ConvergeEvent::PodFailed {
        minion: "recording".into(),
        pod: "bad".into(),
        message: "Unable to find image 'pause' locally".into(),
    }));
    assert!(events.contains(&ConvergeEvent::PodStarted {
        minion: "recording".into(),
        pod: "good".into(),
    }));
}
