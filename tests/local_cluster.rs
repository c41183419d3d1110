//! End to end on a real local cluster: etcd, sshd and dockerd in network
//! namespaces on this machine. Needs root and the packages `.ci/run`
//! installs. Each test makes its own cluster and removes it, also on failure.

mod common;

use common::{http_get, manifest, web_controller, TestCluster};
use serde_json::Value;
use std::collections::BTreeSet;

fn running_pods(pods: &[Value]) -> Vec<&Value> {
    pods.iter()
        .filter(|p| p["currentState"]["status"] == "Running")
        .collect()
}

fn hosts(pods: &[Value]) -> Vec<String> {
    let mut h: Vec<String> = pods
        .iter()
        .map(|p| p["currentState"]["host"].as_str().unwrap().to_string())
        .collect();
    h.sort();
    h
}

#[test]
fn tomcat_controller_lifecycle() {
    let cluster = TestCluster::up("it-tomcat", 2);

    // `up` again on a healthy cluster changes nothing.
    let again = cluster.kctl(&["up"]);
    assert!(again.ok(), "{again:?}");
    assert!(again.stdout.contains("nothing changed"), "{again:?}");

    // Every minion runs the kctl-node this kctl installs, and says so.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let version = cluster.kctl(&["version"]);
        assert!(version.ok(), "{version:?}");
        assert!(version.stdout.starts_with("kctl "), "{version:?}");
        let same = version.stdout.matches("same as this kctl's").count();
        if same == 2 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{version:?}");
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    // The workstation's clusters, this one among them, up.
    let clusters = cluster.kctl(&["clusters"]);
    assert!(clusters.ok(), "{clusters:?}");
    let row: Vec<&str> = clusters
        .stdout
        .lines()
        .find(|l| l.starts_with("it-tomcat "))
        .unwrap_or_else(|| panic!("{clusters:?}"))
        .split_whitespace()
        .collect();
    assert_eq!(row[..4], ["it-tomcat", "local", "2", "up,"], "{clusters:?}");
    assert!(
        clusters.stdout.contains("2 of 2 minions Ready"),
        "{clusters:?}"
    );
    // For scripts: `-o name` and tables without their header.
    let names = cluster.kctl(&["get", "minions", "-o", "name"]);
    assert_eq!(
        names.stdout, "minion/minion-1\nminion/minion-2\n",
        "{names:?}"
    );
    let rows = cluster.kctl(&["get", "minions", "--no-headers"]);
    assert_eq!(rows.stdout.lines().count(), 2, "{rows:?}");
    assert!(rows.stdout.starts_with("minion-1 "), "{rows:?}");
    // `down --dry-run` says what would go, and nothing goes.
    let dry = cluster.kctl(&["down", "--dry-run"]);
    assert!(dry.ok(), "{dry:?}");
    assert!(
        dry.stdout.contains("namespace kctl-it-tomcat-minion-2")
            && dry.stdout.contains("etcd at https://"),
        "{dry:?}"
    );
    assert!(cluster.kctl(&["get", "minions"]).ok());

    let minions = cluster.kctl(&["get", "minions", "-o", "json"]).json();
    let items = minions["items"].as_array().unwrap();
    assert_eq!(items.len(), 2);
    assert!(items.iter().all(|m| m["status"] == "Ready"), "{minions}");

    cluster.load_demo_image("tutum/tomcat:latest");

    // The classic controller and service, unchanged.
    let rc = manifest("tomcat-controller.json");
    let svc = manifest("tomcat-service.json");
    let applied = cluster.kctl(&["apply", "-f", &rc, "-f", &svc]);
    assert!(applied.ok(), "{applied:?}");
    assert!(applied
        .stdout
        .contains("+ replicationController tomcatController"));
    assert!(applied
        .stdout
        .contains("Plan: 4 to add, 0 to change, 0 to destroy."));

    let pods = cluster.pods();
    assert_eq!(running_pods(&pods).len(), 2, "{pods:?}");
    assert_eq!(
        hosts(&pods),
        ["minion-1", "minion-2"],
        "one replica per minion"
    );
    for pod in &pods {
        let id = pod["id"].as_str().unwrap();
        let pod_ip = pod["currentState"]["podIP"].as_str().unwrap();
        let host_ip = pod["currentState"]["hostIP"].as_str().unwrap();
        let page = http_get(&format!("{pod_ip}:8080"), "/hostname")
            .unwrap_or_else(|| panic!("no answer from pod {id} at {pod_ip}:8080"));
        assert_eq!(page.trim(), id);
        // hostPort 80 on the minion reaches the same pod.
        let page = http_get(&format!("{host_ip}:80"), "/hostname").unwrap();
        assert_eq!(page.trim(), id);
    }
    // Pods reach each other across minions by pod IP.
    let other_ip = pods[1]["currentState"]["podIP"].as_str().unwrap();
    let from_minion = cluster.in_minion(
        1,
        &[
            "curl",
            "-s",
            "--max-time",
            "3",
            &format!("http://{other_ip}:8080/hostname"),
        ],
    );
    assert_eq!(
        from_minion.stdout.trim(),
        pods[1]["id"].as_str().unwrap(),
        "{from_minion:?}"
    );

    // Re-applying unchanged manifests plans nothing and opens no SSH connection.
    let logins = cluster.ssh_logins();
    assert!(logins > 0, "sshd logs no logins: cannot count them");
    let again = cluster.kctl(&["apply", "-f", &rc, "-f", &svc]);
    assert!(again.ok(), "{again:?}");
    assert!(
        again
            .stdout
            .contains("No changes. 2 objects are up to date."),
        "{again:?}"
    );
    assert_eq!(
        cluster.ssh_logins(),
        logins,
        "a no-op apply connected to a minion"
    );

    // Three replicas with hostPort 80 do not fit on two minions: a clear
    // error, and nothing changes.
    let three = std::fs::read_to_string(&rc)
        .unwrap()
        .replace("\"replicas\": 2", "\"replicas\": 3");
    let refused = cluster.kctl_stdin(&["apply", "-f", "-"], &three);
    assert_eq!(refused.code, Some(1), "{refused:?}");
    assert!(refused.stderr.contains("fits on no minion"), "{refused:?}");
    assert!(
        refused.stderr.contains("hostPort 80/TCP is taken"),
        "{refused:?}"
    );
    let ids = |pods: &[Value]| -> BTreeSet<String> {
        pods.iter()
            .map(|p| p["id"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(ids(&cluster.pods()), ids(&pods));

    // Without host ports, scale to 3 and back to 1.
    let scaled = cluster.kctl_stdin(&["apply", "-f", "-"], &web_controller("web", 3));
    assert!(scaled.ok(), "{scaled:?}");
    let web: Vec<Value> = cluster
        .pods()
        .into_iter()
        .filter(|p| p["labels"]["name"] == "web")
        .collect();
    assert_eq!(running_pods(&web).len(), 3, "{web:?}");
    let web_hosts: BTreeSet<String> = hosts(&web).into_iter().collect();
    assert_eq!(web_hosts.len(), 2, "replicas spread over both minions");
    let down = cluster.kctl_stdin(&["apply", "-f", "-"], &web_controller("web", 1));
    assert!(down.ok(), "{down:?}");
    assert!(down.stdout.contains("replicas 3 → 1"), "{down:?}");
    let web: Vec<Value> = cluster
        .pods()
        .into_iter()
        .filter(|p| p["labels"]["name"] == "web")
        .collect();
    assert_eq!(web.len(), 1);
    // The minions run what the records say: one web container, of that
    // pod, on its minion (the others were removed, not only forgotten).
    let running: Vec<(usize, String)> = (1..=2)
        .flat_map(|m| {
            cluster
                .running_containers(m)
                .into_iter()
                .filter(|name| name.starts_with("web-") && name.ends_with("_web"))
                .map(move |name| (m, name))
        })
        .collect();
    let kept = &web[0];
    assert_eq!(
        running,
        [(
            common::minion_of(kept),
            format!("{}_web", kept["id"].as_str().unwrap())
        )]
    );

    // Resize both ways (`scale` is the same command).
    let web_pods = || {
        cluster
            .pods()
            .into_iter()
            .filter(|p| p["labels"]["name"] == "web")
            .filter(|p| p["currentState"]["status"] == "Running")
            .count()
    };
    let up3 = cluster.kctl(&["resize", "rc", "web", "3"]);
    assert!(up3.ok(), "{up3:?}");
    assert_eq!(web_pods(), 3, "{up3:?}");
    let down1 = cluster.kctl(&["scale", "rc", "web", "1"]);
    assert!(down1.ok(), "{down1:?}");
    assert_eq!(web_pods(), 1, "{down1:?}");
    let missing = cluster.kctl(&["resize", "rc", "nosuch", "2"]);
    assert_eq!(missing.code, Some(1), "{missing:?}");
    let wrong = cluster.kctl(&["resize", "pod", "web", "2"]);
    assert_eq!(wrong.code, Some(2), "{wrong:?}");

    // Selectors: `!=` and sets pick what `=` does not.
    let ids = |selector: &str| -> Vec<String> {
        let run = cluster.kctl(&["get", "rc", "-l", selector, "-o", "json"]);
        assert!(run.ok(), "{run:?}");
        run.json()["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["id"].as_str().unwrap().to_string())
            .collect()
    };
    let all = ids("");
    assert!(
        all.len() == 2 && all.contains(&"web".to_string()),
        "{all:?}"
    );
    let others = ids("name!=web");
    assert_eq!(others.len(), 1);
    assert!(!others.contains(&"web".to_string()));
    assert_eq!(ids("name in (web, nothing)"), ["web"]);
    assert_eq!(ids("name notin (web)"), others);

    // Delete the controllers (one by its labels): their pods and
    // containers go too.
    let deleted = cluster.kctl(&["delete", "rc", "-l", "name=web"]);
    assert!(deleted.ok(), "{deleted:?}");
    assert_eq!(ids(""), others);
    let deleted = cluster.kctl(&["delete", "-f", &rc]);
    assert!(deleted.ok(), "{deleted:?}");
    assert!(cluster.pods().is_empty());
    for index in 1..=2 {
        let sock = format!("unix:///run/kctl/{}/m{index}/docker.sock", cluster.slot());
        let ps = cluster.in_minion(
            index,
            &[
                "docker",
                "-H",
                &sock,
                "ps",
                "-aq",
                "--filter",
                "label=io.kctl.pod",
            ],
        );
        assert!(
            ps.ok() && ps.stdout.trim().is_empty(),
            "containers left on minion-{index}: {ps:?}"
        );
    }
    let missing = cluster.kctl(&["delete", "rc", "web"]);
    assert_eq!(missing.code, Some(1));
    assert!(cluster
        .kctl(&["delete", "rc", "web", "--ignore-not-found"])
        .ok());

    cluster.down_and_check();
}

#[test]
fn hostile_values_never_run_as_shell() {
    let cluster = TestCluster::up("it-quoting", 1);
    let marker = std::env::temp_dir().join(format!("kctl-owned-{}", std::process::id()));
    let _ = std::fs::remove_file(&marker);
    let m = marker.display();
    let pod = format!(
        r#"{{"id": "evil", "kind": "Pod", "apiVersion": "v1beta1",
  "desiredState": {{"manifest": {{"version": "v1beta1", "id": "evil",
    "containers": [{{"name": "evil", "image": "x;touch${{IFS}}{m}",
      "command": ["$(touch {m})", "`touch {m}`", "; touch {m}"],
      "env": [{{"name": "A", "value": "'; touch {m}; '"}}],
      "workingDir": "/tmp$(touch {m})"}}]}}}}}}"#
    );
    let run = cluster.kctl_stdin(&["apply", "-f", "-"], &pod);
    // The image does not exist, so the pod fails to start, saying why.
    assert_eq!(run.code, Some(1), "{run:?}");
    assert!(run.stderr.contains("pod evil"), "{run:?}");
    assert!(!marker.exists(), "a manifest value ran as a shell command");

    // One bad file in a directory means nothing at all is applied.
    let dir = cluster.dir().join("mixed");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("a-good.json"), web_controller("web", 1)).unwrap();
    std::fs::write(
        dir.join("b-bad.yaml"),
        "kind: Service\nid: svc\nport: 80\nselector: {name: web}\ncontainerPort: 99999\n",
    )
    .unwrap();
    let before = cluster.pods().len();
    let run = cluster.kctl(&["apply", "-f", dir.to_str().unwrap()]);
    assert_eq!(run.code, Some(1), "{run:?}");
    assert!(run.stderr.contains("b-bad.yaml"), "{run:?}");
    assert!(
        run.stderr.contains(":5:16"),
        "line and column of the port: {run:?}"
    );
    assert!(run.stderr.contains("nothing was applied"), "{run:?}");
    assert_eq!(cluster.pods().len(), before);
    let rcs = cluster.kctl(&["get", "rc", "-o", "json"]).json();
    assert!(rcs["items"].as_array().unwrap().is_empty());
    // An unknown field is a warning, as v0.5 ignored it; `--strict` makes
    // it an error, and again nothing is applied.
    std::fs::write(
        dir.join("b-bad.yaml"),
        "kind: Service\napiVersion: v1beta1\nid: svc\nport: 80\nselector: {name: web}\nportt: 8080\n",
    )
    .unwrap();
    let run = cluster.kctl(&["apply", "--strict", "-f", dir.to_str().unwrap()]);
    assert_eq!(run.code, Some(1), "{run:?}");
    assert!(
        run.stderr.contains(":6:1") && run.stderr.contains("did you mean `port`?"),
        "{run:?}"
    );
    assert!(run.stderr.contains("nothing was applied"), "{run:?}");
    let rcs = cluster.kctl(&["get", "rc", "-o", "json"]).json();
    assert!(rcs["items"].as_array().unwrap().is_empty());

    cluster.down_and_check();
}

#[test]
fn down_removes_a_half_broken_cluster() {
    let cluster = TestCluster::up("it-broken", 2);
    let slot = cluster.slot();
    // Break it: kill one minion's processes and delete the other's namespace.
    let pids = std::process::Command::new("ip")
        .args(["netns", "pids", "kctl-it-broken-minion-1"])
        .output()
        .unwrap();
    for pid in String::from_utf8_lossy(&pids.stdout).split_whitespace() {
        let _ = std::process::Command::new("kill")
            .args(["-9", pid])
            .status();
    }
    let deleted = std::process::Command::new("ip")
        .args(["netns", "delete", "kctl-it-broken-minion-2"])
        .status()
        .unwrap();
    assert!(deleted.success());
    // `up` repairs it...
    let repaired = cluster.kctl(&["up"]);
    assert!(repaired.ok(), "{repaired:?}");
    assert!(!repaired.stdout.contains("nothing changed"), "{repaired:?}");
    let minions = cluster.kctl(&["get", "minions", "-o", "json"]).json();
    assert!(minions["items"]
        .as_array()
        .unwrap()
        .iter()
        .all(|m| m["status"] == "Ready"));
    // ...and after breaking it again, `down` still removes everything.
    let _ = std::process::Command::new("ip")
        .args(["netns", "delete", "kctl-it-broken-minion-1"])
        .status();
    assert_eq!(cluster.slot(), slot);
    cluster.down_and_check();
}

#[test]
fn concurrent_applies_and_node_converge() {
    let cluster = TestCluster::up("it-concurrent", 2);
    cluster.load_demo_image("tutum/tomcat:latest");

    // `kctl image load IMAGE` copies from the workstation's Docker; here
    // the "workstation's Docker" is minion-1's dockerd, and the copy must
    // reach minion-2.
    let sock = |i: usize| format!("unix:///run/kctl/{}/m{i}/docker.sock", cluster.slot());
    let tagged = cluster.in_minion(
        1,
        &[
            "docker",
            "-H",
            &sock(1),
            "tag",
            "tutum/tomcat:latest",
            "kctl-test/copy:1",
        ],
    );
    assert!(tagged.ok(), "{tagged:?}");
    let load = cluster
        .command(&["image", "load", "kctl-test/copy:1"])
        .env("DOCKER_HOST", sock(1))
        .output()
        .unwrap();
    assert!(
        load.status.success(),
        "{}",
        String::from_utf8_lossy(&load.stderr)
    );
    let copied = cluster.in_minion(
        2,
        &[
            "docker",
            "-H",
            &sock(2),
            "image",
            "inspect",
            "kctl-test/copy:1",
        ],
    );
    assert!(copied.ok(), "image did not reach minion-2: {copied:?}");

    // Two kctl processes apply at the same time: the guarded transaction
    // makes one of them re-plan, and both controllers end up complete.
    let dir = cluster.dir();
    let files: Vec<_> = ["alpha", "beta"]
        .iter()
        .map(|id| {
            let path = dir.join(format!("{id}.json"));
            std::fs::write(&path, web_controller(id, 2)).unwrap();
            path
        })
        .collect();
    let children: Vec<_> = files
        .iter()
        .map(|f| {
            cluster
                .command(&["apply", "-f", f.to_str().unwrap()])
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for child in children {
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let pods = cluster.pods();
    for id in ["alpha", "beta"] {
        let mine: Vec<&Value> = pods.iter().filter(|p| p["labels"]["name"] == id).collect();
        assert_eq!(mine.len(), 2, "{id}: {pods:?}");
        assert!(mine
            .iter()
            .all(|p| p["currentState"]["status"] == "Running"));
    }

    // The node helper on every minion runs the same converge locally:
    // remove a pod's containers behind kctl's back, and it starts them again.
    let victim = pods
        .iter()
        .find(|p| p["currentState"]["host"] == "minion-1")
        .expect("a pod on minion-1");
    let pod_id = victim["id"].as_str().unwrap();
    let container_id = |pod: &Value| -> Value {
        let info = pod["currentState"]["info"]
            .as_object()
            .cloned()
            .unwrap_or_default();
        info.values()
            .next()
            .map(|c| c["containerID"].clone())
            .unwrap_or_default()
    };
    let old_container = container_id(victim);
    let sock = sock(1);
    let label = format!("label=io.kctl.pod={pod_id}");
    let ids = cluster.in_minion(1, &["docker", "-H", &sock, "ps", "-aq", "--filter", &label]);
    let ids: Vec<&str> = ids.stdout.split_whitespace().collect();
    assert_eq!(ids.len(), 2, "infra and app container");
    let mut rm = vec!["docker", "-H", &sock, "rm", "-f"];
    rm.extend(&ids);
    assert!(cluster.in_minion(1, &rm).ok());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let again = loop {
        let pods = cluster.pods();
        let pod = pods.iter().find(|p| p["id"] == pod_id).unwrap().clone();
        let restarted =
            pod["currentState"]["status"] == "Running" && container_id(&pod) != old_container;
        if restarted {
            break pod;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the helper never restarted {pod_id}: {pod}"
        );
        std::thread::sleep(std::time::Duration::from_millis(250));
    };
    let new_ip = again["currentState"]["podIP"].as_str().unwrap();
    let page = http_get(&format!("{new_ip}:8080"), "/hostname").unwrap();
    assert_eq!(page.trim(), pod_id);

    // The one-shot form runs the same routine and finds nothing to start.
    let etcd = format!("https://10.{}.0.1:2379", 100 + cluster.slot() as u32);
    let tls_dir = cluster.minion_tls_dir(1);
    let node = std::process::Command::new("nsenter")
        .arg(format!("--net=/run/netns/kctl-{}-minion-1", cluster.name))
        .arg(env!("CARGO_BIN_EXE_kctl-node"))
        .args([
            "converge",
            "--cluster",
            &cluster.name,
            "--minion",
            "minion-1",
            "--etcd",
            &etcd,
            "--etcd-tls-dir",
            &tls_dir,
            "--offline-images",
            "--docker-socket",
            sock.trim_start_matches("unix://"),
        ])
        .output()
        .unwrap();
    let node_out = String::from_utf8_lossy(&node.stdout);
    assert!(
        node.status.success(),
        "{node_out} {}",
        String::from_utf8_lossy(&node.stderr)
    );
    assert!(node_out.contains(" 0 started"), "{node_out}");

    cluster.down_and_check();
}

/// The certificate a TLS server at `addr` presents, as PEM (openssl).
fn served_certificate(addr: &str, pki: &std::path::Path) -> String {
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!(
            "openssl s_client -connect {addr} -CAfile {p}/ca.crt -cert {p}/kctl.crt -key {p}/kctl.key </dev/null 2>/dev/null | openssl x509",
            p = pki.display()
        ))
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `up` renews certificates well before they expire: etcd's and a
/// helper's, each made to expire in 65 days with the cluster's CA, are
/// made again, etcd serves the new one and the minion's helper has its
/// new one, and the cluster works throughout.
#[test]
fn up_renews_certificates_that_near_their_end() {
    use kctl::pki::{issue, write_private, KeyedCert, Wanted};
    let cluster = TestCluster::up("it-certs", 1);
    let pki = cluster.dir().join("pki");
    let read = |name: &str| std::fs::read_to_string(pki.join(name)).unwrap();
    let ca = KeyedCert {
        cert: read("ca.crt"),
        key: read("ca.key"),
    };
    let bridge = format!("10.{}.0.1", 100 + cluster.slot() as u32);
    let etcd_addr = format!("{bridge}:2379");
    assert_eq!(
        served_certificate(&etcd_addr, &pki).trim(),
        read("etcd-1.crt").trim()
    );

    // Issued 300 days ago for a year: 65 days left, under the 90 `up` keeps.
    let then = time::OffsetDateTime::now_utc() - time::Duration::days(300);
    let old_etcd = issue(&ca, &Wanted::etcd(&[bridge.parse().unwrap()]), then).unwrap();
    let old_node = issue(&ca, &Wanted::client("minion-1"), then).unwrap();
    for (stem, pair) in [("etcd-1", &old_etcd), ("minion-1", &old_node)] {
        write_private(&pki.join(format!("{stem}.key")), &pair.key).unwrap();
        write_private(&pki.join(format!("{stem}.crt")), &pair.cert).unwrap();
    }
    // A changed certificate file does not change a running etcd: `up` has
    // to restart it.
    let up = cluster.kctl(&["up"]);
    assert!(up.ok(), "{up:?}");
    for stem in ["etcd-1", "minion-1"] {
        assert!(
            up.stderr.contains(&format!("{stem} (it expires in 6")),
            "{stem} renewed, and why: {up:?}"
        );
    }
    assert!(!up.stderr.contains("ca ("), "the CA is kept: {up:?}");
    let new_etcd = read("etcd-1.crt");
    assert_ne!(new_etcd, old_etcd.cert);
    assert_eq!(served_certificate(&etcd_addr, &pki).trim(), new_etcd.trim());
    let config: Value = serde_json::from_str(&read("../cluster.json")).unwrap();
    let helper_dir = config["minions"][0]["helperDir"].as_str().unwrap();
    let on_minion = std::fs::read_to_string(format!("{helper_dir}/tls/node.crt")).unwrap();
    assert_eq!(
        on_minion,
        read("minion-1.crt"),
        "the helper has its new certificate"
    );
    assert_ne!(on_minion, old_node.cert);
    // The helper connects with it: the minion heartbeats.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    loop {
        let minions = cluster.kctl(&["get", "minions"]);
        if minions.ok() && minions.stdout.contains(" Ready ") {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{minions:?}");
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    let again = cluster.kctl(&["up"]);
    assert!(again.stdout.contains("nothing changed"), "{again:?}");
    cluster.down_and_check();
}
