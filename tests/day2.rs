//! Day-2 operations on real local clusters: looking into pods (logs,
//! exec, ssh), reaching them from the workstation (port-forward), and
//! changing what runs. Needs root and the packages `.ci/run` installs.
//! Each test makes its own cluster and removes it, also on failure.

mod common;

use common::{http_get, wait_for, TestCluster};
use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::time::Duration;

/// A pod of two containers from the demo image: `web` serves pages and
/// logs each request; `ticker` prints a line every 0.2 s and exits 3 on
/// SIGTERM (so a test can make it restart).
const TWO_CONTAINERS: &str = r#"{"kind": "Pod", "apiVersion": "v1beta1", "id": "duo",
  "labels": {"name": "duo"},
  "desiredState": {"manifest": {"version": "v1beta1", "id": "duo", "containers": [
    {"name": "web", "image": "tutum/tomcat", "ports": [{"containerPort": 8080}],
     "env": [{"name": "ROLE", "value": "server"}]},
    {"name": "ticker", "image": "tutum/tomcat", "env": [{"name": "ROLE", "value": "sidekick"}],
     "command": ["sh", "-c", "trap 'exit 3' TERM; echo run begins; for i in $(seq 1 100000); do echo tick $i; sleep 0.2; done"]}]}}}"#;

/// A pod whose liveness probe asks for a page the server does not have.
const SICK: &str = r#"{"kind": "Pod", "apiVersion": "v1beta1", "id": "sick",
  "desiredState": {"manifest": {"version": "v1beta1", "id": "sick", "containers": [
    {"name": "web", "image": "tutum/tomcat", "ports": [{"containerPort": 8080}],
     "livenessProbe": {"httpGet": {"path": "/missing", "port": 8080}, "timeoutSeconds": 1}}]}}}"#;

const DUO_SERVICE: &str = r#"{"kind": "Service", "apiVersion": "v1beta1", "id": "duo",
  "port": 8080, "selector": {"name": "duo"}}"#;

/// Starts `kctl port-forward` and returns it with the local port it
/// reports on its first line.
fn port_forward(cluster: &TestCluster, args: &[&str]) -> (std::process::Child, u16) {
    let mut argv = vec!["port-forward"];
    argv.extend(args);
    let mut child = cluster
        .command(&argv)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    let port = first
        .split_whitespace()
        .nth(2)
        .and_then(|a| a.strip_prefix("127.0.0.1:"))
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("port-forward said {first:?}"));
    (child, port)
}

/// The lines a child prints, as they come; a test waits for one with a
/// timeout instead of blocking for ever on a read.
fn lines_of(out: std::process::ChildStdout) -> std::sync::mpsc::Receiver<String> {
    let (send, receive) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            if send.send(line).is_err() {
                break;
            }
        }
    });
    receive
}

fn next_line(lines: &std::sync::mpsc::Receiver<String>) -> String {
    lines
        .recv_timeout(Duration::from_secs(20))
        .expect("a line within 20 s")
}

fn terminate(child: &mut std::process::Child) -> std::process::ExitStatus {
    let _ = std::process::Command::new("kill")
        .arg(child.id().to_string())
        .status();
    child.wait().unwrap()
}

#[test]
fn logs_exec_ssh_and_port_forward_reach_the_right_container() {
    let cluster = TestCluster::up("it-reach", 1);
    cluster.load_demo_image("tutum/tomcat:latest");
    let applied = cluster.kctl_stdin(
        &["apply", "-f", "-"],
        &format!(r#"{{"kind": "List", "items": [{TWO_CONTAINERS}, {DUO_SERVICE}, {SICK}]}}"#),
    );
    assert!(applied.ok(), "{applied:?}");

    // exec runs in the container named, with its own environment, and
    // passes the command's exit status on.
    for (container, role) in [("web", "server"), ("ticker", "sidekick")] {
        let run = cluster.kctl(&[
            "exec",
            "duo",
            "-c",
            container,
            "--",
            "sh",
            "-c",
            "echo $ROLE",
        ]);
        assert!(run.ok(), "{run:?}");
        assert_eq!(run.stdout.trim(), role, "{run:?}");
    }
    let failed = cluster.kctl(&[
        "exec",
        "duo",
        "-c",
        "web",
        "--",
        "sh",
        "-c",
        "echo to-stderr >&2; exit 7",
    ]);
    assert_eq!(failed.code, Some(7), "{failed:?}");
    assert!(failed.stderr.contains("to-stderr"), "{failed:?}");
    // -i passes standard input; -t gives the command a terminal.
    let echoed = cluster.kctl_stdin(
        &["exec", "-i", "duo", "-c", "web", "--", "cat"],
        "through stdin\n",
    );
    assert_eq!(echoed.stdout, "through stdin\n", "{echoed:?}");
    let tty = cluster.kctl(&[
        "exec",
        "-t",
        "duo",
        "-c",
        "web",
        "--",
        "sh",
        "-c",
        "test -t 0 && test -t 1 && echo terminal",
    ]);
    assert!(tty.ok() && tty.stdout.contains("terminal"), "{tty:?}");
    let plain = cluster.kctl(&["exec", "duo", "-c", "web", "--", "sh", "-c", "test -t 1"]);
    assert_eq!(plain.code, Some(1), "no terminal without -t: {plain:?}");
    // Two containers and none named: a usage error naming both.
    let ambiguous = cluster.kctl(&["exec", "duo", "--", "true"]);
    assert_eq!(ambiguous.code, Some(2), "{ambiguous:?}");
    assert!(ambiguous.stderr.contains("web, ticker"), "{ambiguous:?}");
    let missing = cluster.kctl(&["exec", "nothing", "--", "true"]);
    assert_eq!(missing.code, Some(1), "{missing:?}");
    assert!(missing.stderr.contains("kctl get pods"), "{missing:?}");

    // ssh reaches the minion itself and passes the exit status on.
    let minion_ip = cluster.kctl(&["get", "minions", "-o", "json"]).json()["items"][0]["hostIP"]
        .as_str()
        .unwrap()
        .to_string();
    let addrs = cluster.kctl(&["ssh", "minion-1", "--", "ip", "-o", "-4", "addr", "show"]);
    assert!(
        addrs.ok() && addrs.stdout.contains(&format!("inet {minion_ip}/")),
        "{addrs:?}"
    );
    let status = cluster.kctl(&["ssh", "minion-1", "--", "sh", "-c", "exit 5"]);
    assert_eq!(status.code, Some(5), "{status:?}");

    // port-forward: a loopback port here reaches the service's portal and
    // the pod, and the page served is the pod's.
    let (mut to_service, port) = port_forward(&cluster, &["service/duo", ":8080"]);
    let page = http_get(&format!("127.0.0.1:{port}"), "/hostname");
    assert_eq!(page.as_deref().map(str::trim), Some("duo"));
    // The service's forward holds that port: another fails with the reason.
    let busy = cluster.kctl(&["port-forward", "pod/duo", &format!("{port}:8080")]);
    assert!(busy.stderr.contains("in use"), "{busy:?}");
    assert!(
        terminate(&mut to_service).success(),
        "SIGTERM ends port-forward cleanly"
    );
    let (mut to_pod, pod_port) = port_forward(&cluster, &["pod/duo", ":8080"]);
    let page = http_get(&format!("127.0.0.1:{pod_port}"), "/");
    assert!(page.unwrap_or_default().contains("Hello from kctl"));
    assert!(terminate(&mut to_pod).success());

    // logs: what each container printed, its requests among them.
    let web = cluster.kctl(&["logs", "duo", "-c", "web"]);
    assert!(web.ok(), "{web:?}");
    assert!(web.stdout.contains("pod duo serving on :8080"), "{web:?}");
    assert!(
        web.stderr.contains("response:200"),
        "httpd logs requests on stderr: {web:?}"
    );
    let tail = cluster.kctl(&["logs", "duo", "-c", "ticker", "--tail", "2"]);
    assert_eq!(tail.stdout.lines().count(), 2, "{tail:?}");
    assert!(
        tail.stdout.lines().all(|l| l.starts_with("tick ")),
        "{tail:?}"
    );

    // -f streams: new ticks arrive while it runs.
    let mut follow = cluster
        .command(&["logs", "duo", "-c", "ticker", "-f", "--tail", "1"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let lines = lines_of(follow.stdout.take().unwrap());
    let tick = |line: String| -> u64 {
        line.strip_prefix("tick ")
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("{line:?}"))
    };
    let first = tick(next_line(&lines));
    let later = (0..5).fold(first, |_, _| tick(next_line(&lines)));
    assert!(later >= first + 5, "streamed ticks {first} then {later}");
    terminate(&mut follow);

    // After a restart, logs shows the current run and --previous the one before.
    let none_before = cluster.kctl(&["logs", "duo", "-c", "ticker", "--previous"]);
    assert_eq!(none_before.code, Some(1), "{none_before:?}");
    assert!(
        none_before.stderr.contains("has not restarted"),
        "{none_before:?}"
    );
    let stop = cluster.kctl(&["exec", "duo", "-c", "ticker", "--", "sh", "-c", "kill 1"]);
    assert!(stop.ok(), "{stop:?}");
    wait_for(Duration::from_secs(20), "the ticker's restart", || {
        let pod = cluster.kctl(&["get", "pods", "duo", "-o", "json"]).json();
        let restarts = pod["currentState"]["info"]["ticker"]["restartCount"].as_u64()?;
        (restarts >= 1).then_some(())
    });
    let current = wait_for(Duration::from_secs(10), "the new run's first tick", || {
        let run = cluster.kctl(&["logs", "duo", "-c", "ticker"]);
        run.stdout.contains("tick ").then_some(run)
    });
    assert_eq!(
        current.stdout.matches("run begins").count(),
        1,
        "{current:?}"
    );
    let current_first = current.stdout.lines().nth(1).map(|l| tick(l.to_string()));
    assert_eq!(
        current_first,
        Some(1),
        "the current run starts over: {current:?}"
    );
    let previous = cluster.kctl(&["logs", "duo", "-c", "ticker", "--previous"]);
    assert!(previous.ok(), "{previous:?}");
    assert_eq!(
        previous.stdout.matches("run begins").count(),
        1,
        "{previous:?}"
    );
    assert!(
        previous.stdout.lines().count() > later as usize,
        "{previous:?}"
    );

    // describe: the pod's place, containers and what happened to it.
    let described = cluster.kctl(&["describe", "pod", "duo"]);
    assert!(described.ok(), "{described:?}");
    for line in [
        "Minion:         minion-1/",
        "Services:       duo (",
        "  ticker:",
        "    Env:          ROLE=sidekick",
        "    Restarts:     1",
    ] {
        assert!(described.stdout.contains(line), "{line:?} in {described:?}");
    }
    let events: Vec<&str> = described
        .stdout
        .split_once("Events:\n")
        .map(|(_, e)| e.lines().skip(1).collect())
        .unwrap_or_default();
    let reasons: Vec<&str> = events
        .iter()
        .filter_map(|l| l.split_whitespace().nth(1))
        .collect();
    assert_eq!(
        reasons,
        ["Scheduled", "Started", "Restarted"],
        "{described:?}"
    );
    assert!(
        events[2].contains("container ticker started again"),
        "{described:?}"
    );
    // A probe that fails is an event, and the container restarts for it.
    let sick = wait_for(Duration::from_secs(20), "the failed probe's event", || {
        let run = cluster.kctl(&["describe", "pod", "sick"]);
        run.stdout.contains("Unhealthy").then_some(run)
    });
    assert!(
        sick.stdout
            .contains("liveness probe of container web failed: HTTP 404; restarted it"),
        "{sick:?}"
    );
    let service = cluster.kctl(&["describe", "service", "duo"]);
    assert!(service.stdout.contains("(duo)"), "{service:?}");
    let minion = cluster.kctl(&["describe", "minion", "minion-1"]);
    assert!(minion.stdout.contains("Status:    Ready"), "{minion:?}");
    let unknown = cluster.kctl(&["describe", "pod", "nothing"]);
    assert_eq!(unknown.code, Some(1), "{unknown:?}");
    let wrong_kind = cluster.kctl(&["describe", "deployment", "x"]);
    assert_eq!(wrong_kind.code, Some(2), "{wrong_kind:?}");
    // Every object's events, oldest first; as JSON too.
    let all = cluster.kctl(&["get", "events"]);
    assert!(all.stdout.starts_with("AGE "), "{all:?}");
    for object in ["pod/duo", "pod/sick", "service/duo"] {
        assert!(all.stdout.contains(object), "{object} in {all:?}");
    }
    let json = cluster.kctl(&["get", "events", "-o", "json"]).json();
    let items = json["items"].as_array().unwrap();
    assert!(items
        .iter()
        .any(|e| e["involvedObject"]["id"] == "sick" && e["reason"] == "Unhealthy"));

    cluster.down_and_check();
}

#[test]
fn diff_says_what_apply_would_change_and_what_drifted() {
    let cluster = TestCluster::up("it-diff", 1);
    cluster.load_demo_image("tutum/tomcat:latest");
    let service = r#"{"kind": "Service", "apiVersion": "v1beta1", "id": "web", "port": 8080,
      "selector": {"name": "web"}}"#;
    let web = cluster.write_file(
        "web.json",
        &format!(
            r#"{{"kind": "List", "items": [{}, {service}]}}"#,
            common::web_controller("web", 2)
        ),
    );
    let applied = cluster.kctl(&["apply", "-f", &web]);
    assert!(applied.ok(), "{applied:?}");

    // Nothing to change: exit 0.
    let same = cluster.kctl(&["diff", "-f", &web]);
    assert_eq!(same.code, Some(0), "{same:?}");
    assert!(same.stdout.contains("No changes."), "{same:?}");
    // A change: exit 1, and the fields that change, each on a line.
    let bigger = cluster.write_file(
        "bigger.json",
        &common::web_controller("web", 3).replace("\"tutum/tomcat\"", "\"tutum/tomcat:latest\""),
    );
    let changed = cluster.kctl(&["diff", "-f", &bigger]);
    assert_eq!(changed.code, Some(1), "{changed:?}");
    for line in [
        "~ replicationController web",
        "    ~ replicas: 2 → 3",
        "    ~ template.spec.containers[0].image: \"tutum/tomcat\" → \"tutum/tomcat:latest\"",
        "Plan: 3 to add, 1 to change, 2 to destroy.",
    ] {
        assert!(changed.stdout.contains(line), "{line:?} in {changed:?}");
    }
    assert_eq!(cluster.pods().len(), 2, "diff changes nothing");
    // Trouble: exit 2, whether a bad file or no cluster.
    let bad = cluster.write_file("bad.json", r#"{"kind": "Pod", "id": "x""#);
    assert_eq!(cluster.kctl(&["diff", "-f", &bad]).code, Some(2));
    let elsewhere = cluster.kctl(&["--cluster", "no-such-cluster", "diff", "-f", &web]);
    assert_eq!(elsewhere.code, Some(2), "{elsewhere:?}");

    // --dry-run=client needs no cluster: it checks the files only.
    let checked = cluster.kctl(&[
        "--cluster",
        "no-such-cluster",
        "apply",
        "-f",
        &web,
        "--dry-run=client",
    ]);
    assert!(checked.ok(), "{checked:?}");
    assert!(checked.stdout.contains("2 objects valid"), "{checked:?}");
    let refused = cluster.kctl(&["apply", "-f", &bad, "--dry-run=client"]);
    assert_eq!(refused.code, Some(1), "{refused:?}");
    assert!(refused.stderr.contains("bad.json:1:"), "{refused:?}");

    // --live: a portal's rule removed behind kctl's back is drift; apply
    // --refresh repairs it. (The helper repairs it too, within 10 s: if it wins the
    // race, break the rule again.)
    let live = cluster.kctl(&["diff", "-f", &web, "--live"]);
    assert_eq!(live.code, Some(0), "{live:?}");
    assert!(
        live.stdout.contains("every minion runs what etcd holds"),
        "{live:?}"
    );
    let portal = cluster
        .kctl(&["get", "services", "web", "-o", "json"])
        .json()["portalIP"]
        .as_str()
        .unwrap()
        .to_string();
    let element = format!("{{ {portal} . tcp . 8080 }}");
    let mut repaired = false;
    for _ in 0..5 {
        let broken = cluster.in_minion(
            1,
            &[
                "nft", "delete", "element", "ip", "kctl", "services", &element,
            ],
        );
        assert!(broken.ok(), "{broken:?}");
        let drift = cluster.kctl(&["diff", "-f", &web, "--live"]);
        if drift.code == Some(0) {
            continue;
        }
        assert_eq!(drift.code, Some(1), "{drift:?}");
        let said = format!("~ minion-1: portal {portal} . tcp . 8080 (service web) is missing");
        assert!(drift.stdout.contains(&said), "{said:?} in {drift:?}");
        let apply = cluster.kctl(&["apply", "-f", &web, "--refresh"]);
        assert!(apply.ok(), "{apply:?}");
        if apply.stderr.contains("drift on minion-1: portal") {
            assert!(
                apply.stderr.contains("service rules rewritten on minion-1"),
                "{apply:?}"
            );
            repaired = true;
            break;
        }
    }
    assert!(repaired, "apply never met the drift before the helper did");
    let after = cluster.kctl(&["diff", "-f", &web, "--live"]);
    assert_eq!(after.code, Some(0), "{after:?}");
    let page = cluster.in_minion(
        1,
        &[
            "curl",
            "-sS",
            "--max-time",
            "3",
            &format!("http://{portal}:8080/hostname"),
        ],
    );
    assert!(
        page.ok() && page.stdout.starts_with("web-"),
        "the portal answers again: {page:?}"
    );

    cluster.down_and_check();
}

#[test]
fn run_makes_a_controller_and_its_service_and_get_watches_them() {
    let cluster = TestCluster::up("it-run", 2);
    cluster.load_demo_image("tutum/tomcat:latest");
    // -o yaml prints the manifest and applies nothing.
    let printed = cluster.kctl(&["run", "hello", "--image", "tutum/tomcat", "-o", "yaml"]);
    assert!(printed.ok(), "{printed:?}");
    assert!(
        printed.stdout.contains("kind: ReplicationController"),
        "{printed:?}"
    );
    assert_eq!(cluster.kctl(&["get", "rc", "hello"]).code, Some(1));
    let bad = cluster.kctl(&["run", "hello", "--image", "tutum/tomcat", "-p", "80:x"]);
    assert_eq!(bad.code, Some(2), "{bad:?}");

    let ran = cluster.kctl(&[
        "run",
        "hello",
        "--image",
        "tutum/tomcat",
        "--replicas",
        "2",
        "-p",
        "8080",
        "--service",
        "9090",
    ]);
    assert!(ran.ok(), "{ran:?}");
    assert!(
        ran.stdout
            .contains("+ replicationController hello (2 replicas)"),
        "{ran:?}"
    );
    let wide = cluster.kctl(&["get", "rc", "hello", "-o", "wide"]);
    let row: Vec<&str> = wide
        .stdout
        .lines()
        .nth(1)
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    assert_eq!(
        row,
        [
            "hello",
            "tutum/tomcat",
            "name=hello",
            "2/2",
            "hello",
            "minion-1,minion-2"
        ],
        "{wide:?}"
    );
    let service = cluster
        .kctl(&["get", "services", "hello", "-o", "json"])
        .json();
    assert_eq!(service["port"], 9090);
    let portal = service["portalIP"].as_str().unwrap();
    let page = cluster.in_minion(
        1,
        &[
            "curl",
            "-sS",
            "--max-time",
            "3",
            &format!("http://{portal}:9090/hostname"),
        ],
    );
    assert!(page.ok() && page.stdout.starts_with("hello-"), "{page:?}");

    // -w: the list, then each pod as it changes.
    let mut watch = cluster
        .command(&["get", "pods", "-l", "name=hello", "-w", "-o", "name"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let lines = lines_of(watch.stdout.take().unwrap());
    let next = || next_line(&lines);
    let before: Vec<String> = vec![next(), next()];
    assert!(
        before.iter().all(|l| l.starts_with("pod/hello-")),
        "{before:?}"
    );
    let resized = cluster.kctl(&["resize", "rc", "hello", "3"]);
    assert!(resized.ok(), "{resized:?}");
    let added = wait_for(Duration::from_secs(20), "the new pod in the watch", || {
        let line = next();
        (!before.contains(&line)).then_some(line)
    });
    assert!(
        added.starts_with("pod/hello-") && !added.ends_with("(deleted)"),
        "{added}"
    );
    terminate(&mut watch);

    // -w -o json: each object as a document; a deleted one once more as
    // it last was, with a deletionTimestamp.
    let mut watch = cluster
        .command(&["get", "rc", "-w", "-o", "json"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let lines = lines_of(watch.stdout.take().unwrap());
    let next_object = || {
        let mut text = String::new();
        loop {
            let line = next_line(&lines);
            text.push_str(&line);
            text.push('\n');
            if line == "}" {
                return serde_json::from_str::<serde_json::Value>(&text).unwrap();
            }
        }
    };
    let listed = next_object();
    assert_eq!(listed["id"], "hello", "{listed}");
    assert!(listed.get("deletionTimestamp").is_none(), "{listed}");
    assert!(cluster.kctl(&["delete", "rc", "hello"]).ok());
    // Changes of its status may come first.
    let gone = (0..10)
        .map(|_| next_object())
        .find(|o| o.get("deletionTimestamp").is_some())
        .expect("the deletion in the watch");
    assert_eq!(gone["id"], "hello", "{gone}");
    assert!(gone["deletionTimestamp"].is_string(), "{gone}");
    terminate(&mut watch);

    cluster.down_and_check();
}

/// Requests the portal from inside minion 1 until told to stop; counts
/// answers and failures (with the first few failures' words).
fn hammer(
    cluster: &TestCluster,
    url: String,
) -> (
    std::sync::Arc<std::sync::atomic::AtomicBool>,
    std::thread::JoinHandle<(usize, Vec<String>)>,
) {
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let ns = format!("--net=/run/netns/kctl-{}-minion-1", cluster.name);
    let flag = stop.clone();
    let worker = std::thread::spawn(move || {
        let (mut ok, mut failures) = (0, Vec::new());
        while !flag.load(std::sync::atomic::Ordering::Relaxed) {
            let started = std::time::Instant::now();
            let out = std::process::Command::new("nsenter")
                .args([
                    ns.as_str(),
                    "curl",
                    "-sS",
                    "-f",
                    // A browser's patience, not a probe's: a SYN the
                    // kernel retransmits (1 s, then 3 s) is not a failure
                    // a client sees. Slow answers are counted apart.
                    "--max-time",
                    "10",
                    url.as_str(),
                ])
                .output()
                .unwrap();
            if out.status.success() {
                ok += 1;
                if started.elapsed() > std::time::Duration::from_secs(1) {
                    eprintln!("slow answer: {:.1}s", started.elapsed().as_secs_f64());
                }
            } else {
                failures.push(String::from_utf8_lossy(&out.stderr).trim().to_string());
            }
        }
        (ok, failures)
    });
    (stop, worker)
}

#[test]
fn rolling_update_keeps_the_portal_answering_and_rolls_back_a_broken_image() {
    let cluster = TestCluster::up("it-rolling", 2);
    cluster.load_demo_image("tutum/tomcat:latest");
    cluster.load_demo_image("tutum/tomcat:v2");
    let service = r#"{"kind": "Service", "apiVersion": "v1beta1", "id": "web", "port": 8080,
      "selector": {"name": "web"}}"#;
    let applied = cluster.kctl_stdin(
        &["apply", "-f", "-"],
        &format!(
            r#"{{"kind": "List", "items": [{}, {service}]}}"#,
            common::web_controller("web", 3)
        ),
    );
    assert!(applied.ok(), "{applied:?}");
    let portal = cluster
        .kctl(&["get", "services", "web", "-o", "json"])
        .json()["portalIP"]
        .as_str()
        .unwrap()
        .to_string();
    let images = |cluster: &TestCluster| -> Vec<String> {
        let mut images: Vec<String> = cluster
            .pods()
            .iter()
            .filter(|p| p["labels"]["name"] == "web")
            .map(|p| {
                p["desiredState"]["manifest"]["containers"][0]["image"]
                    .as_str()
                    .unwrap()
                    .to_string()
            })
            .collect();
        images.sort();
        images
    };

    // To a working image: every request through the portal is answered.
    let (stop, worker) = hammer(&cluster, format!("http://{portal}:8080/hostname"));
    std::thread::sleep(Duration::from_millis(500));
    let rolled = cluster.kctl(&[
        "rollingupdate",
        "rc",
        "web",
        "--image",
        "tutum/tomcat:v2",
        "--update-period",
        "1s",
    ]);
    std::thread::sleep(Duration::from_millis(500));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (answered, failures) = worker.join().unwrap();
    assert!(rolled.ok(), "{rolled:?}");
    assert!(rolled.stdout.contains("3 pod(s) replaced"), "{rolled:?}");
    for step in ["[1/3]", "[2/3]", "[3/3]"] {
        assert!(
            rolled.stderr.contains(step),
            "progress {step} in {rolled:?}"
        );
    }
    eprintln!("{answered} requests answered during the rolling update");
    assert!(answered > 20, "the hammer ran: {answered}");
    assert!(
        failures.is_empty(),
        "{} failed requests, e.g. {:?}",
        failures.len(),
        &failures[..failures.len().min(3)]
    );
    assert_eq!(images(&cluster), ["tutum/tomcat:v2"; 3]);
    let rc = cluster.kctl(&["get", "rc", "web", "-o", "json"]).json();
    assert_eq!(
        rc["desiredState"]["podTemplate"]["desiredState"]["manifest"]["containers"][0]["image"],
        "tutum/tomcat:v2"
    );
    assert!(cluster
        .pods()
        .iter()
        .all(|p| p["currentState"]["status"] == "Running"));

    // To an image the minions do not have: the new pod never becomes
    // ready, the update stops, rolls back and says why.
    let broken = cluster.kctl(&[
        "rollingupdate",
        "rc",
        "web",
        "--image",
        "tutum/tomcat:missing",
        "--update-period",
        "1s",
        "--timeout",
        "8s",
    ]);
    assert_eq!(broken.code, Some(1), "{broken:?}");
    assert!(
        broken.stderr.contains("did not become ready within 8s"),
        "{broken:?}"
    );
    assert!(broken.stderr.contains("rolled back"), "{broken:?}");
    assert!(
        broken
            .stderr
            .contains("kctl image load tutum/tomcat:missing"),
        "the minion's reason: {broken:?}"
    );
    assert_eq!(
        images(&cluster),
        ["tutum/tomcat:v2"; 3],
        "every pod of the previous template"
    );
    let rc = cluster.kctl(&["get", "rc", "web", "-o", "json"]).json();
    assert_eq!(
        rc["desiredState"]["podTemplate"]["desiredState"]["manifest"]["containers"][0]["image"],
        "tutum/tomcat:v2"
    );
    let described = cluster.kctl(&["describe", "rc", "web"]);
    assert!(described.stdout.contains("RolledBack"), "{described:?}");
    // The controller is free again: apply works on it.
    let again = cluster.kctl(&["resize", "rc", "web", "2"]);
    assert!(again.ok(), "{again:?}");
    // From a file (v1 here): the controller as it is to be, same id.
    let file = cluster.dir().join("web-v1.yaml");
    std::fs::write(
        &file,
        "apiVersion: v1\nkind: ReplicationController\nmetadata:\n  name: web\n  labels: {name: web}\nspec:\n  replicas: 2\n  template:\n    metadata:\n      labels: {name: web}\n    spec:\n      containers:\n      - name: web\n        image: tutum/tomcat:latest\n        ports:\n        - containerPort: 8080\n",
    )
    .unwrap();
    let from_file = cluster.kctl(&[
        "rollingupdate",
        "rc",
        "web",
        "-f",
        file.to_str().unwrap(),
        "--update-period",
        "0s",
    ]);
    assert!(from_file.ok(), "{from_file:?}");
    assert!(
        from_file.stdout.contains("2 pod(s) replaced"),
        "{from_file:?}"
    );
    assert_eq!(images(&cluster), ["tutum/tomcat:latest"; 2]);

    cluster.down_and_check();
}

#[test]
fn up_grows_and_shrinks_a_running_cluster_without_losing_a_replica() {
    let cluster = TestCluster::up("it-resize", 2);
    cluster.load_demo_image("tutum/tomcat:latest");
    let applied = cluster.kctl_stdin(&["apply", "-f", "-"], &common::web_controller("web", 4));
    assert!(applied.ok(), "{applied:?}");

    // Grow: a third minion joins, with the images the others were given.
    let grown = cluster.kctl(&["up", "--minions", "3"]);
    assert!(grown.ok(), "{grown:?}");
    assert!(
        grown.stdout.contains("up with 3 minions (it had 2)"),
        "{grown:?}"
    );
    assert!(
        grown.stderr.contains("to minion-3"),
        "images copied: {grown:?}"
    );
    let resized = cluster.kctl(&["resize", "rc", "web", "6"]);
    assert!(resized.ok(), "{resized:?}");
    let running_on = |minion: &str| {
        cluster
            .pods()
            .iter()
            .filter(|p| {
                p["currentState"]["host"] == minion && p["currentState"]["status"] == "Running"
            })
            .count()
    };
    wait_for(Duration::from_secs(20), "pods running on minion-3", || {
        (running_on("minion-3") >= 2).then_some(())
    });
    // Bare pods: the least loaded minion takes each, so one of three
    // lands on minion-3 and must move under its own id.
    for n in 1..=3 {
        let pod = format!(
            r#"{{"id": "solo-{n}", "kind": "Pod", "apiVersion": "v1beta1",
  "desiredState": {{"manifest": {{"version": "v1beta1", "id": "solo-{n}",
    "containers": [{{"name": "web", "image": "tutum/tomcat"}}]}}}},
  "labels": {{"name": "solo"}}}}"#
        );
        cluster.kctl_stdin(&["apply", "-f", "-"], &pod).assert_ok();
    }
    let bare_on_3 = cluster
        .pods()
        .iter()
        .find(|p| p["labels"]["name"] == "solo" && p["currentState"]["host"] == "minion-3")
        .map(|p| p["id"].as_str().unwrap().to_string())
        .expect("a bare pod on minion-3");

    // Shrink: minion-3's pods move first, one at a time, each new one
    // running before the old one goes; then minion-3 is removed.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let watcher = {
        let stop = stop.clone();
        let home = common::kctl_home();
        let name = cluster.name.clone();
        std::thread::spawn(move || {
            let (mut fewest, mut fewest_solo) = (usize::MAX, usize::MAX);
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let out = std::process::Command::new(env!("CARGO_BIN_EXE_kctl"))
                    .args(["get", "pods", "-o", "json"])
                    .env("KCTL_HOME", &home)
                    .env("KCTL_CLUSTER", &name)
                    .output()
                    .unwrap();
                if let Ok(list) = serde_json::from_slice::<serde_json::Value>(&out.stdout) {
                    let running = list["items"].as_array().map_or(0, |items| {
                        items
                            .iter()
                            .filter(|p| {
                                p["labels"]["name"] == "web"
                                    && p["currentState"]["status"] == "Running"
                            })
                            .count()
                    });
                    fewest = fewest.min(running);
                    let solo = list["items"].as_array().map_or(0, |items| {
                        items
                            .iter()
                            .filter(|p| p["labels"]["name"] == "solo")
                            .count()
                    });
                    fewest_solo = fewest_solo.min(solo);
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            (fewest, fewest_solo)
        })
    };
    // minion-3's helper certificate, kept aside: it works until the
    // shrink, and etcd refuses it after.
    let kept = cluster.dir().join("minion-3-tls");
    std::fs::create_dir_all(&kept).unwrap();
    for file in ["ca.crt", "node.crt", "node.key"] {
        std::fs::copy(
            format!("{}/{file}", cluster.minion_tls_dir(3)),
            kept.join(file),
        )
        .unwrap();
    }
    let etcd = cluster.record()["etcdEndpoints"][0]
        .as_str()
        .unwrap()
        .to_string();
    let generation = format!("/kctl/{}/generation", cluster.name);
    let as_minion_3 = || {
        common::run_here(&common::etcdctl_as_helper(
            &etcd,
            kept.to_str().unwrap(),
            &["get", &generation],
        ))
    };
    let before = as_minion_3();
    assert!(
        before.ok() && before.stdout.contains(&generation),
        "{before:?}"
    );
    let shrunk = cluster.kctl(&["up", "--minions", "2"]);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (fewest, fewest_solo) = watcher.join().unwrap();
    assert!(shrunk.ok(), "{shrunk:?}");
    assert!(
        shrunk.stdout.contains("up with 2 minions (it had 3)"),
        "{shrunk:?}"
    );
    assert!(shrunk.stderr.contains("moved off minion-3"), "{shrunk:?}");
    let after = as_minion_3();
    assert!(
        !after.ok() && !after.stdout.contains(&generation),
        "minion-3's certificate still reads etcd: {after:?}"
    );
    assert!(fewest >= 6, "at one moment only {fewest} of 6 replicas ran");
    assert_eq!(fewest_solo, 3, "a bare pod was missing while it moved");
    let minions = cluster.kctl(&["get", "minions", "-o", "name"]);
    assert_eq!(
        minions.stdout, "minion/minion-1\nminion/minion-2\n",
        "{minions:?}"
    );
    assert!(!std::path::Path::new("/run/netns/kctl-it-resize-minion-3").exists());
    wait_for(Duration::from_secs(20), "9 running pods", || {
        let pods = cluster.pods();
        let running = pods
            .iter()
            .filter(|p| p["currentState"]["status"] == "Running")
            .count();
        (running == 9 && pods.len() == 9).then_some(())
    });
    // The bare pod kept its id on a minion that stays.
    let moved = cluster.kctl(&["get", "pod", &bare_on_3, "-o", "json"]);
    assert!(moved.ok(), "{moved:?}");
    assert_ne!(
        moved.json()["currentState"]["host"],
        "minion-3",
        "{moved:?}"
    );
    // Not enough room left: nothing moves, nothing is removed.
    let host_port = common::web_controller("pinned", 2).replace(
        r#""containerPort": 8080}"#,
        r#""containerPort": 8080, "hostPort": 8080}"#,
    );
    cluster
        .kctl_stdin(&["apply", "-f", "-"], &host_port)
        .assert_ok();
    let refused = cluster.kctl(&["up", "--minions", "1"]);
    assert_eq!(refused.code, Some(1), "{refused:?}");
    assert!(
        refused.stderr.contains("do not fit on the other minions"),
        "{refused:?}"
    );
    assert_eq!(
        cluster
            .kctl(&["get", "minions", "-o", "name"])
            .stdout
            .lines()
            .count(),
        2
    );

    // While a shrink runs, `get minions` says which minions are leaving;
    // killed half-way, it leaves nothing stuck.
    assert!(cluster.kctl(&["delete", "rc", "pinned"]).ok());
    let mut shrinking = cluster
        .command(&["up", "--minions", "1"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let leaving = || {
        cluster
            .kctl(&["get", "minion", "minion-2", "-o", "json"])
            .json()["leaving"]
            == true
    };
    wait_for(Duration::from_secs(30), "minion-2 leaving", || {
        leaving().then_some(())
    });
    let table = cluster.kctl(&["get", "minions"]);
    assert!(table.stdout.contains("Ready,Leaving"), "{table:?}");
    shrinking.kill().unwrap();
    shrinking.wait().unwrap();
    // The cordon lived on the killed kctl's lease: it goes by itself, and
    // whatever the kill left half-moved serves again.
    wait_for(Duration::from_secs(30), "minion-2 back in service", || {
        (!leaving()).then_some(())
    });
    wait_for(
        Duration::from_secs(60),
        "every pod running, none draining",
        || {
            let pods = cluster.pods();
            let web = pods.iter().filter(|p| p["labels"]["name"] == "web").count();
            let settled = pods.iter().all(|p| {
                p["currentState"]["status"] == "Running" && p["currentState"]["draining"] != true
            });
            (settled && web == 6).then_some(())
        },
    );

    // minion-3 comes back under its old id: with a new key, and the old
    // certificate, though its name has rights again, stays refused (it is
    // on the CA's revocation list, which etcd reads at every handshake).
    let regrown = cluster.kctl(&["up", "--minions", "3"]);
    assert!(regrown.ok(), "{regrown:?}");
    let new_key = std::fs::read(format!("{}/node.key", cluster.minion_tls_dir(3))).unwrap();
    assert_ne!(new_key, std::fs::read(kept.join("node.key")).unwrap());
    let old_certificate = as_minion_3();
    assert!(
        !old_certificate.ok() && !old_certificate.stdout.contains(&generation),
        "minion-3's old certificate reads etcd again: {old_certificate:?}"
    );
    let new_certificate = common::run_here(&common::etcdctl_as_helper(
        &etcd,
        &cluster.minion_tls_dir(3),
        &["get", &generation],
    ));
    assert!(
        new_certificate.ok() && new_certificate.stdout.contains(&generation),
        "{new_certificate:?}"
    );

    cluster.down_and_check();
}

#[test]
fn prune_removes_only_what_its_own_files_applied() {
    let cluster = TestCluster::up("it-prune", 1);
    let service = |id: &str, port: u16| {
        format!(
            r#"{{"kind": "Service", "apiVersion": "v1beta1", "id": "{id}", "port": {port}, "selector": {{"name": "{id}"}}}}"#
        )
    };
    let set_a = cluster.dir().join("set-a");
    let set_b = cluster.dir().join("set-b");
    std::fs::create_dir_all(&set_a).unwrap();
    std::fs::create_dir_all(&set_b).unwrap();
    std::fs::write(set_a.join("keep.json"), service("keep", 81)).unwrap();
    std::fs::write(set_a.join("drop.json"), service("drop", 82)).unwrap();
    std::fs::write(set_b.join("theirs.json"), service("theirs", 83)).unwrap();
    let (a, b) = (set_a.to_str().unwrap(), set_b.to_str().unwrap());
    assert!(cluster.kctl(&["apply", "-f", a]).ok());
    assert!(cluster.kctl(&["apply", "-f", b]).ok());
    assert!(cluster
        .kctl_stdin(&["apply", "-f", "-"], &service("adhoc", 84))
        .ok());

    std::fs::remove_file(set_a.join("drop.json")).unwrap();
    // Without --prune, a missing file deletes nothing.
    let plain = cluster.kctl(&["apply", "-f", a]);
    assert!(plain.stdout.contains("No changes."), "{plain:?}");
    let diff = cluster.kctl(&["diff", "-f", a, "--prune"]);
    assert_eq!(diff.code, Some(1), "{diff:?}");
    assert!(
        diff.stdout
            .contains("- service drop (pruned: no longer in the files)"),
        "{diff:?}"
    );
    let pruned = cluster.kctl(&["apply", "-f", a, "--prune"]);
    assert!(pruned.ok(), "{pruned:?}");
    assert!(
        pruned
            .stdout
            .contains("Plan: 0 to add, 0 to change, 1 to destroy"),
        "{pruned:?}"
    );
    let left = cluster.kctl(&["get", "services", "-o", "name"]);
    assert_eq!(
        left.stdout, "service/adhoc\nservice/keep\nservice/theirs\n",
        "{left:?}"
    );
    // Standard input is no set: --prune refuses it.
    let refused = cluster.kctl_stdin(&["apply", "-f", "-", "--prune"], &service("keep", 81));
    assert_eq!(refused.code, Some(2), "{refused:?}");

    cluster.down_and_check();
}

#[test]
fn v1_and_v1beta1_manifests_mix_and_mean_the_same() {
    let cluster = TestCluster::up("it-v1", 1);
    cluster.load_demo_image("tutum/tomcat:latest");
    let dir = cluster.dir().join("mixed");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("web-controller.json"),
        common::web_controller("web", 2),
    )
    .unwrap();
    std::fs::write(
        dir.join("web-service.yaml"),
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: web\nspec:\n  type: ClusterIP\n  selector: {name: web}\n  ports:\n  - port: 8080\n",
    )
    .unwrap();
    let applied = cluster.kctl(&["apply", "-f", dir.to_str().unwrap()]);
    assert!(applied.ok(), "{applied:?}");
    assert!(
        applied.stdout.contains("+ service web")
            && applied.stdout.contains("+ replicationController web"),
        "{applied:?}"
    );

    // The controller as v1 writes it is the same controller: no changes.
    let v1 = cluster.dir().join("web-v1.yaml");
    std::fs::write(
        &v1,
        "apiVersion: v1\nkind: ReplicationController\nmetadata:\n  name: web\n  labels: {name: web}\nspec:\n  replicas: 2\n  selector: {name: web}\n  template:\n    metadata:\n      labels: {name: web}\n    spec:\n      containers:\n      - name: web\n        image: tutum/tomcat\n        ports:\n        - containerPort: 8080\n",
    )
    .unwrap();
    let same = cluster.kctl(&["diff", "-f", v1.to_str().unwrap()]);
    assert_eq!(same.code, Some(0), "{same:?}");
    // What `get --output-version v1` prints applies again unchanged.
    for (kind, id) in [("rc", "web"), ("services", "web")] {
        let printed = cluster.kctl(&["get", kind, id, "-o", "yaml", "--output-version", "v1"]);
        assert!(
            printed.ok()
                && printed.stdout.contains("apiVersion: v1\n")
                && printed.stdout.contains("metadata:"),
            "{printed:?}"
        );
        let again = cluster.kctl_stdin(&["apply", "-f", "-"], &printed.stdout);
        assert!(again.ok(), "{again:?}");
        assert!(again.stdout.contains("No changes."), "{again:?}");
    }

    // A portal IP asked for: refused at its line when taken, given when free.
    let web = cluster
        .kctl(&["get", "services", "web", "-o", "json"])
        .json();
    let taken: std::net::Ipv4Addr = web["portalIP"].as_str().unwrap().parse().unwrap();
    let free = std::net::Ipv4Addr::from(u32::from(taken) + 40);
    let pinned = |ip: std::net::Ipv4Addr| {
        format!(
            "{{\"kind\": \"Service\", \"apiVersion\": \"v1beta1\", \"id\": \"pinned\",\n \"port\": 9090, \"selector\": {{\"name\": \"web\"}},\n \"portalIP\": \"{ip}\"}}"
        )
    };
    let file = cluster.write_file("pinned.json", &pinned(taken));
    let refused = cluster.kctl(&["apply", "-f", &file]);
    assert_eq!(refused.code, Some(1), "{refused:?}");
    assert!(
        refused.stderr.contains("which web has") && refused.stderr.contains("pinned.json:3:14"),
        "{refused:?}"
    );
    let listed = cluster.kctl(&["get", "services", "-o", "name"]);
    assert!(!listed.stdout.contains("pinned"), "{listed:?}");
    let file = cluster.write_file("pinned.json", &pinned(free));
    let applied = cluster.kctl(&["apply", "-f", &file]);
    assert!(applied.ok(), "{applied:?}");
    let got = cluster
        .kctl(&["get", "services", "pinned", "-o", "json"])
        .json();
    assert_eq!(got["portalIP"], free.to_string());

    cluster.down_and_check();
}

/// A redis-style pod with an emptyDir and a host directory, as v0.5's
/// walkthrough `pod2.yaml` writes them.
fn volume_pod(host_dir: &str) -> String {
    format!(
        r#"kind: Pod
apiVersion: v1beta1
id: store
desiredState:
  manifest:
    version: v1beta1
    containers:
      - name: web
        image: tutum/tomcat
        volumeMounts:
          - name: data
            mountPath: /data
          - name: shared
            mountPath: /shared
    volumes:
      - name: data
        source:
          emptyDir: {{}}
      - name: shared
        source:
          hostDir:
            path: {host_dir}
"#
    )
}

/// An emptyDir outlives the pod's containers (a new one finds the file, a
/// file in the container's own layer is gone) and goes with the pod; a
/// host directory is the minion's own; `/` is refused before anything is
/// applied, unless the cluster was made with `--allow-host-dir`.
#[test]
fn volumes_keep_data_across_containers_and_go_with_the_pod() {
    let cluster = TestCluster::up("it-volumes", 1);
    cluster.load_demo_image("tutum/tomcat:latest");
    let host_dir = std::env::temp_dir().join(format!("kctl-it-volumes-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&host_dir);
    // Removed also when the test fails.
    struct RemoveOnDrop(std::path::PathBuf);
    impl Drop for RemoveOnDrop {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
    let _host_dir_guard = RemoveOnDrop(host_dir.clone());
    let file = cluster.write_file("store.yaml", &volume_pod(host_dir.to_str().unwrap()));

    // A host directory of `/` is refused with its line; nothing applied.
    let root = cluster.write_file("root.yaml", &volume_pod("/"));
    let refused = cluster.kctl(&["apply", "-f", &root]);
    assert_eq!(refused.code, Some(1), "{refused:?}");
    assert!(
        refused.stderr.contains("host directory refused") && refused.stderr.contains("root.yaml:"),
        "{refused:?}"
    );
    assert!(cluster.pods().is_empty());

    let applied = cluster.kctl(&["apply", "-f", &file]);
    assert!(applied.ok(), "{applied:?}");
    let running = || {
        cluster
            .pods()
            .iter()
            .any(|p| p["currentState"]["status"] == "Running")
            .then_some(())
    };
    wait_for(Duration::from_secs(60), "pod store running", running);
    let wrote = cluster.kctl(&[
        "exec",
        "store",
        "--",
        "sh",
        "-c",
        "echo kept > /data/f && echo lost > /tmp/f && echo from-the-pod > /shared/f",
    ]);
    assert!(wrote.ok(), "{wrote:?}");
    // The host directory is this (local) minion's own filesystem.
    assert_eq!(
        std::fs::read_to_string(host_dir.join("f")).unwrap(),
        "from-the-pod\n"
    );

    // The app container removed behind kctl's back: the helper starts the
    // pod again with new containers.
    let sock = format!("unix:///run/kctl/{}/m1/docker.sock", cluster.slot());
    let docker = |args: &[&str]| {
        let mut argv = vec!["docker", "-H", sock.as_str()];
        argv.extend_from_slice(args);
        cluster.in_minion(1, &argv)
    };
    let id_before = docker(&["inspect", "-f", "{{.Id}}", "store_web"]);
    assert!(id_before.ok(), "{id_before:?}");
    assert!(docker(&["rm", "-f", "store_web"]).ok());
    let read = wait_for(
        Duration::from_secs(60),
        "a new container of pod store",
        || {
            let id = docker(&["inspect", "-f", "{{.Id}}", "store_web"]);
            let new = id.ok() && id.stdout != id_before.stdout;
            let read =
                cluster.kctl(&["exec", "store", "--", "sh", "-c", "cat /data/f; cat /tmp/f"]);
            (new && read.stdout.contains("kept")).then_some(read)
        },
    );
    assert_eq!(read.stdout, "kept\n", "{read:?}");
    let described = cluster.kctl(&["describe", "pod", "store"]);
    assert!(
        described.stdout.contains("Volumes:")
            && described.stdout.contains("starts with an empty one"),
        "{described:?}"
    );

    // The pod deleted: its volume goes too; the host directory stays.
    let volume = "kctl_it-volumes_store_data";
    assert!(docker(&["volume", "inspect", volume]).ok());
    let deleted = cluster.kctl(&["delete", "pod", "store"]);
    assert!(deleted.ok(), "{deleted:?}");
    wait_for(Duration::from_secs(30), "the pod's volume removed", || {
        (!docker(&["volume", "inspect", volume]).ok()).then_some(())
    });
    assert!(host_dir.join("f").exists());

    // A privileged container, or one with added capabilities, is refused
    // with its line until the cluster allows it.
    let privileged = cluster.write_file("privileged.json", PRIVILEGED);
    let capable = cluster.write_file("capable.yaml", CAPABLE);
    for (file, says) in [
        (&privileged, "a privileged container is refused"),
        (&capable, "a container with added capabilities is refused"),
    ] {
        let refused = cluster.kctl(&["apply", "-f", file]);
        assert_eq!(refused.code, Some(1), "{refused:?}");
        assert!(
            refused.stderr.contains(says) && refused.stderr.contains(file.as_str()),
            "{refused:?}"
        );
    }

    // Made with --allow-host-dir and --allow-privileged, the cluster takes
    // `/` and a privileged container (dry runs: this sandbox's bounding
    // set lacks CAP_SYS_RESOURCE, which Docker 20.10 gives a privileged
    // container, so runc could not start one here), and runs added
    // capabilities; a locked-down container has none, its own user, no
    // new privileges and a read-only root.
    let allowed = cluster.kctl(&["up", "--allow-host-dir", "--allow-privileged"]);
    assert!(allowed.ok(), "{allowed:?}");
    for (file, says) in [(&root, "+ pod store"), (&privileged, "+ pod root")] {
        let planned = cluster.kctl(&["apply", "--dry-run", "-f", file]);
        assert!(planned.ok() && planned.stdout.contains(says), "{planned:?}");
    }
    let applied = cluster.kctl(&["apply", "-f", &capable]);
    assert!(applied.ok(), "{applied:?}");
    let status = |container: &str| {
        let run = cluster.kctl(&[
            "exec",
            "caps",
            "-c",
            container,
            "--",
            "cat",
            "/proc/self/status",
        ]);
        assert!(run.ok(), "{run:?}");
        let field = |name: &str| {
            run.stdout
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .map(|v| v.split_whitespace().next().unwrap_or_default().to_string())
                .unwrap()
        };
        (
            u64::from_str_radix(&field("CapEff:"), 16).unwrap(),
            field("Uid:"),
            field("NoNewPrivs:"),
        )
    };
    const NET_ADMIN: u64 = 1 << 12;
    let (web_caps, web_uid, _) = status("web");
    assert!(web_caps & NET_ADMIN != 0, "CapEff {web_caps:x}");
    assert_eq!(web_uid, "0");
    let (locked_caps, locked_uid, no_new_privileges) = status("locked");
    assert_eq!(
        (locked_caps, locked_uid.as_str(), no_new_privileges.as_str()),
        (0, "1000", "1")
    );
    let write = cluster.kctl(&[
        "exec",
        "caps",
        "-c",
        "locked",
        "--",
        "sh",
        "-c",
        "echo x > /tmp/x",
    ]);
    assert!(!write.ok(), "{write:?}");
    // An ordinary container has Docker's default set without NET_ADMIN
    // and, hardened, without raw sockets and unable to gain privileges.
    const NET_RAW: u64 = 1 << 13;
    let (plain_caps, _, plain_no_new_privileges) = status("plain");
    assert!(
        plain_caps != 0 && plain_caps & (NET_ADMIN | NET_RAW) == 0,
        "CapEff {plain_caps:x}"
    );
    assert_eq!(plain_no_new_privileges, "1");
    // A fork bomb stops at the container's process limit, and its minion
    // stays Ready (its helper still forks and heartbeats).
    let bomb = cluster.kctl(&[
        "exec",
        "caps",
        "-c",
        "plain",
        "--",
        "sh",
        "-c",
        "i=0; while [ $i -lt 2100 ]; do sleep 120 & i=$((i+1)); done; echo forked $i",
    ]);
    assert!(
        !bomb.ok() && !bomb.stdout.contains("forked 2100") && bomb.stderr.contains("can't fork"),
        "{bomb:?}"
    );
    std::thread::sleep(std::time::Duration::from_secs(8));
    let minions = cluster.kctl(&["get", "minions"]);
    assert!(
        minions.ok() && minions.stdout.contains("Ready") && !minions.stdout.contains("NotReady"),
        "{minions:?}"
    );
    cluster.down_and_check();
}

const PRIVILEGED: &str = r#"{"kind": "Pod", "apiVersion": "v1beta1", "id": "root",
  "desiredState": {"manifest": {"version": "v1beta1", "containers": [
    {"name": "web", "image": "tutum/tomcat", "privileged": true}]}}}"#;

const CAPABLE: &str = "\
apiVersion: v1
kind: Pod
metadata: {name: caps}
spec:
  containers:
  - name: web
    image: tutum/tomcat
    securityContext:
      capabilities: {add: [NET_ADMIN]}
  - name: locked
    image: tutum/tomcat
    command: [sleep, '3600']
    securityContext:
      runAsUser: 1000
      allowPrivilegeEscalation: false
      readOnlyRootFilesystem: true
      capabilities: {drop: [ALL]}
  - name: plain
    image: tutum/tomcat
    command: [sleep, '3600']
";

/// A pod whose probe fails (so the helper restarts its container) with
/// lifecycle hooks: postStart adds a line to a file at every start,
/// preStop writes to the container's own output, where `logs --previous`
/// finds it.
const HOOKED: &str = r#"{"kind": "Pod", "apiVersion": "v1beta1", "id": "hooked",
  "desiredState": {"manifest": {"version": "v1beta1", "containers": [
    {"name": "web", "image": "tutum/tomcat", "ports": [{"containerPort": 8080}],
     "livenessProbe": {"httpGet": {"path": "/missing", "port": 8080}, "timeoutSeconds": 1},
     "lifecycle": {
       "postStart": {"exec": {"command": ["sh", "-c", "echo up >> /tmp/post-start"]}},
       "preStop": {"exec": {"command": ["sh", "-c", "echo pre-stop ran > /proc/1/fd/1"]}}}}]}}}"#;

#[test]
fn lifecycle_hooks_run_after_start_and_before_stop() {
    let cluster = TestCluster::up("it-hooks", 1);
    cluster.load_demo_image("tutum/tomcat:latest");
    let file = cluster.write_file("hooked.json", HOOKED);
    let applied = cluster.kctl(&["apply", "-f", &file]);
    assert!(applied.ok(), "{applied:?}");
    // (The probe restarts the container now and then: ask until it runs.)
    let started = wait_for(Duration::from_secs(30), "postStart's file", || {
        let run = cluster.kctl(&["exec", "hooked", "--", "cat", "/tmp/post-start"]);
        run.ok().then_some(run)
    });
    assert!(started.stdout.starts_with("up\n"), "{started:?}");
    // The failing probe makes the helper restart the container; its
    // preStop hook ran first, in the run that ended.
    let previous = wait_for(Duration::from_secs(90), "a restart after preStop", || {
        let run = cluster.kctl(&["logs", "hooked", "--previous"]);
        run.stdout.contains("pre-stop ran").then_some(run)
    });
    assert!(previous.ok(), "{previous:?}");
    // The container was started again in place (its own /tmp kept): the
    // helper ran postStart once more.
    wait_for(
        Duration::from_secs(30),
        "postStart after the restart",
        || {
            let run = cluster.kctl(&["exec", "hooked", "--", "cat", "/tmp/post-start"]);
            (run.ok() && run.stdout.lines().count() >= 2).then_some(())
        },
    );
    cluster.down_and_check();
}

/// A gitRepo volume, as v0.5 ran one: the minion clones the repository
/// into the pod's volume before its containers start, into the directory
/// git names after it, and checks out the revision; v1's `directory: .`
/// clones into the volume itself. A repository that cannot be cloned
/// fails the pod with git's reason, and the volume goes with the pod.
#[test]
fn git_repo_volumes_are_cloned_before_the_containers_start() {
    let cluster = TestCluster::up("it-gitrepo", 1);
    cluster.load_demo_image("tutum/tomcat:latest");
    // A repository on this machine, which a local minion shares: `v1`
    // says one thing, the branch's head another.
    let repo = cluster.dir().join("site");
    std::fs::create_dir_all(&repo).unwrap();
    let git = |args: &[&str]| {
        let out = std::process::Command::new("git")
            .args([
                "-c",
                "user.name=kctl",
                "-c",
                "user.email=kctl@example.com",
                "-C",
            ])
            .arg(&repo)
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success(), "git {args:?}: {out:?}");
    };
    git(&["init", "--quiet", "--initial-branch=main"]);
    std::fs::write(repo.join("index.html"), "one\n").unwrap();
    git(&["add", "index.html"]);
    git(&["commit", "--quiet", "-m", "one"]);
    git(&["tag", "v1"]);
    std::fs::write(repo.join("index.html"), "two\n").unwrap();
    git(&["commit", "--quiet", "-am", "two"]);
    // Served by git's own daemon in the minion's namespace: kctl clones
    // only from the network, never a path of the minion's.
    let minion_ip = cluster.kctl(&["get", "minions", "-o", "json"]).json()["items"][0]["hostIP"]
        .as_str()
        .unwrap()
        .to_string();
    let ns = "--net=/run/netns/kctl-it-gitrepo-minion-1";
    struct KillOnDrop(std::process::Child);
    impl Drop for KillOnDrop {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let daemon = KillOnDrop(
        std::process::Command::new("nsenter")
            .arg(ns)
            .args(["git", "daemon", "--export-all", "--reuseaddr"])
            .arg(format!("--listen={minion_ip}"))
            .arg("--port=9418")
            .arg(format!("--base-path={}", cluster.dir().display()))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    let address = format!("git://{minion_ip}/site");
    wait_for(Duration::from_secs(10), "git daemon listening", || {
        std::process::Command::new("nsenter")
            .arg(ns)
            .args(["git", "ls-remote", &address])
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|_| ())
    });
    let path = address.as_str();
    let v05 = cluster.write_file("pinned.json",
        &format!(
            r#"{{"kind": "Pod", "apiVersion": "v1beta1", "id": "pinned",
  "desiredState": {{"manifest": {{"version": "v1beta1", "containers": [
    {{"name": "web", "image": "tutum/tomcat", "volumeMounts": [{{"name": "site", "mountPath": "/site"}}]}}],
    "volumes": [{{"name": "site", "source": {{"gitRepo": {{"repository": "{path}", "revision": "v1"}}}}}}]}}}}}}"#
        ),
    );
    let v1 = |id: &str, repository: &str| {
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: {id}}}\nspec:\n  containers:\n  - name: web\n    image: tutum/tomcat\n    volumeMounts: [{{name: site, mountPath: /site}}]\n  volumes:\n  - name: site\n    gitRepo: {{repository: \"{repository}\", directory: .}}\n"
        )
    };
    let head = cluster.write_file("head.yaml", &v1("head", path));
    let applied = cluster.kctl(&["apply", "-f", &v05, "-f", &head]);
    assert!(applied.ok(), "{applied:?}");
    let running = |id: &str| {
        wait_for(
            Duration::from_secs(60),
            &format!("pod {id} running"),
            || {
                cluster
                    .pods()
                    .iter()
                    .any(|p| p["id"] == id && p["currentState"]["status"] == "Running")
                    .then_some(())
            },
        )
    };
    running("pinned");
    running("head");
    let read = |id: &str, file: &str| cluster.kctl(&["exec", id, "--", "cat", file]);
    assert_eq!(read("pinned", "/site/site/index.html").stdout, "one\n");
    assert_eq!(read("head", "/site/index.html").stdout, "two\n");

    // No such repository: the pod does not start, and says why.
    let missing = format!("git://{minion_ip}/no-such-repository");
    let broken = cluster.write_file("broken.yaml", &v1("broken", &missing));
    let applied = cluster.kctl(&["apply", "-f", &broken]);
    assert_eq!(applied.code, Some(1), "{applied:?}");
    assert!(
        applied
            .stderr
            .contains("gitRepo volume site on minion-1: git clone failed")
            && applied.stderr.contains("not exported"),
        "{applied:?}"
    );
    // A path of the minion's is refused at its line, before anything runs.
    let local = cluster.write_file("local.yaml", &v1("local", repo.to_str().unwrap()));
    let refused = cluster.kctl(&["apply", "-f", &local]);
    assert_eq!(refused.code, Some(1), "{refused:?}");
    assert!(
        refused.stderr.contains("is no remote address") && refused.stderr.contains("local.yaml:"),
        "{refused:?}"
    );
    let described = cluster.kctl(&["describe", "pod", "broken"]);
    assert!(
        described.stdout.contains("git clone failed"),
        "{described:?}"
    );

    // The pod deleted: its volume goes too.
    let sock = format!("unix:///run/kctl/{}/m1/docker.sock", cluster.slot());
    let volume_exists = |name: &str| {
        cluster
            .in_minion(1, &["docker", "-H", &sock, "volume", "inspect", name])
            .ok()
    };
    assert!(volume_exists("kctl_it-gitrepo_pinned_site"));
    assert!(!volume_exists("kctl_it-gitrepo_broken_site"));
    let deleted = cluster.kctl(&["delete", "pod", "broken", "pinned"]);
    assert!(deleted.ok(), "{deleted:?}");
    wait_for(Duration::from_secs(30), "the pod's volume removed", || {
        (!volume_exists("kctl_it-gitrepo_pinned_site")).then_some(())
    });
    drop(daemon);
    cluster.down_and_check();
}

/// `httpGet` hooks go from the pod's minion: postStart to the address it
/// names (here another pod, already serving), preStop to the pod itself
/// before the helper restarts it for a failed probe. busybox httpd logs
/// each answer (`response:200`), which is how the pods saw them; an
/// answer of 404 fails the start, with the reason.
#[test]
fn get_hooks_reach_pods_from_their_minion() {
    let cluster = TestCluster::up("it-gethooks", 1);
    cluster.load_demo_image("tutum/tomcat:latest");
    let target = cluster.write_file("target.yaml",
        "apiVersion: v1\nkind: Pod\nmetadata: {name: target}\nspec:\n  containers:\n  - {name: web, image: tutum/tomcat, ports: [{containerPort: 8080}]}\n",
    );
    let applied = cluster.kctl(&["apply", "-f", &target]);
    assert!(applied.ok(), "{applied:?}");
    let target_ip = wait_for(Duration::from_secs(60), "pod target's address", || {
        cluster
            .pods()
            .iter()
            .find(|p| p["id"] == "target" && p["currentState"]["status"] == "Running")
            .and_then(|p| p["currentState"]["podIP"].as_str().map(str::to_string))
    });
    let hooked = |id: &str, path: &str| {
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: {id}}}\nspec:\n  containers:\n  - name: web\n    image: tutum/tomcat\n    ports: [{{name: http, containerPort: 8080}}]\n    livenessProbe: {{httpGet: {{path: /missing, port: 8080}}, timeoutSeconds: 1}}\n    lifecycle:\n      postStart: {{httpGet: {{host: \"{target_ip}\", port: 8080, path: {path}}}}}\n      preStop: {{httpGet: {{port: http, path: /hostname}}}}\n"
        )
    };
    let file = cluster.write_file("hooked.yaml", &hooked("hooked", "/hostname"));
    let applied = cluster.kctl(&["apply", "-f", &file]);
    assert!(applied.ok(), "{applied:?}");
    // postStart's GET reached the other pod...
    let logs = cluster.kctl(&["logs", "target"]);
    assert!(
        logs.stdout.contains("response:200") || logs.stderr.contains("response:200"),
        "{logs:?}"
    );
    // ...and preStop's the pod itself, before the restart the failing
    // probe brings (its probes answer 404).
    let previous = wait_for(Duration::from_secs(90), "a restart after preStop", || {
        let run = cluster.kctl(&["logs", "hooked", "--previous"]);
        let said = format!("{}{}", run.stdout, run.stderr);
        said.contains("response:200").then_some(said)
    });
    assert!(previous.contains("response:404"), "{previous}");

    // A postStart GET answered 404 fails the start, and says so.
    let refused = cluster.write_file("refused.yaml", &hooked("refused", "/missing"));
    let applied = cluster.kctl(&["apply", "-f", &refused]);
    assert_eq!(applied.code, Some(1), "{applied:?}");
    assert!(
        applied.stderr.contains(&format!(
            "postStart hook of container web got HTTP 404 from GET {target_ip}:8080/missing"
        )),
        "{applied:?}"
    );
    let deleted = cluster.kctl(&["delete", "pod", "refused"]);
    assert!(deleted.ok(), "{deleted:?}");
    cluster.down_and_check();
}

/// A helper whose certificate nears its end asks for a new one through
/// etcd and gets it from the signer beside etcd, with no kctl running; a
/// minion's key asks only for itself; and when the minion leaves, the
/// renewed certificate is revoked with the one `up` made.
#[test]
fn a_helper_renews_its_certificate_and_a_leaving_minion_loses_the_renewed_one() {
    let cluster = TestCluster::up("it-renew", 2);
    let tls = cluster.minion_tls_dir(2);
    let pki = cluster.dir().join("pki");
    let ca = kctl::pki::KeyedCert {
        cert: std::fs::read_to_string(pki.join("ca.crt")).unwrap(),
        key: std::fs::read_to_string(pki.join("ca.key")).unwrap(),
    };
    // What `up` made 300 days ago: 65 days left, under the 90 that call
    // for a renewal.
    let now = time::OffsetDateTime::now_utc();
    let aging = kctl::pki::issue(
        &ca,
        &kctl::pki::Wanted::client("minion-2"),
        now - time::Duration::days(300),
    )
    .unwrap();
    kctl::pki::write_private(&std::path::Path::new(&tls).join("node.key"), &aging.key).unwrap();
    kctl::pki::write_private(&std::path::Path::new(&tls).join("node.crt"), &aging.cert).unwrap();
    let etcd = cluster.record()["etcdEndpoints"][0]
        .as_str()
        .unwrap()
        .to_string();
    let record = format!("/kctl/{}/minions/minion-1", cluster.name);
    let reads_etcd = |dir: &str| {
        let run = common::run_here(&common::etcdctl_as_helper(&etcd, dir, &["get", &record]));
        run.ok() && run.stdout.contains(&record)
    };
    assert!(reads_etcd(&tls), "the aging certificate is good still");
    // Its minion's key asks for no other minion.
    let for_minion_1 = format!("/kctl-certs/{}/requests/minion-1", cluster.name);
    let refused = common::run_here(&common::etcdctl_as_helper(
        &etcd,
        &tls,
        &["put", &for_minion_1, "request"],
    ));
    assert!(!refused.ok(), "{refused:?}");

    // The helper looks at its certificate when it starts (and hourly):
    // stopped, its supervisor starts it again. No kctl runs from here on.
    // (The helper itself, not its supervisor, whose command line holds
    // the helper's.)
    let helper = format!(
        "^[^ ]*kctl-node run --cluster {} --minion minion-2 ",
        cluster.name
    );
    let killed = std::process::Command::new("pkill")
        .args(["-f", &helper])
        .status()
        .unwrap();
    assert!(killed.success(), "no helper of minion-2 to stop");
    let renewed = wait_for(Duration::from_secs(60), "a renewed certificate", || {
        let cert = std::fs::read_to_string(format!("{tls}/node.crt")).ok()?;
        let days = kctl::pki::days_left(&cert, time::OffsetDateTime::now_utc())?;
        (days > 300).then_some(cert)
    });
    let key = std::fs::read_to_string(format!("{tls}/node.key")).unwrap();
    assert_ne!(key, aging.key, "a new key, made on the minion");
    assert!(kctl::pki::certifies_key(&renewed, &key));
    assert!(reads_etcd(&tls), "etcd admits the renewed certificate");
    wait_for(Duration::from_secs(20), "both minions Ready", || {
        let table = cluster.kctl(&["get", "minions"]).stdout;
        (table.matches(" Ready ").count() == 2).then_some(())
    });

    // The renewed certificate, kept aside, is refused once minion-2
    // leaves, and stays refused when a minion-2 comes back.
    let kept = cluster.dir().join("minion-2-tls");
    std::fs::create_dir_all(&kept).unwrap();
    for file in ["ca.crt", "node.crt", "node.key"] {
        std::fs::copy(format!("{tls}/{file}"), kept.join(file)).unwrap();
    }
    cluster.kctl(&["up", "--minions", "1"]).assert_ok();
    cluster.kctl(&["up", "--minions", "2"]).assert_ok();
    assert!(reads_etcd(&cluster.minion_tls_dir(2)), "the new minion-2's");
    assert!(
        !reads_etcd(kept.to_str().unwrap()),
        "the renewed certificate of the minion-2 that left reads etcd"
    );
    cluster.down_and_check();
}
