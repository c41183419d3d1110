//! A local cluster whose etcd has three members: losing one changes
//! nothing a user sees, losing two is a clear error that changes nothing
//! while the pods keep running, and `kctl up` brings the members back.

mod common;

use common::{wait_for, TestCluster};
use std::process::{Command, Stdio};
use std::time::Duration;

/// A power cut of etcd member `member`: its supervisor first (it would
/// start etcd again), then etcd itself.
fn kill_member(cluster: &TestCluster, member: usize) {
    let dir = match member {
        1 => cluster.dir().join("etcd"),
        n => cluster.dir().join("etcd").join(format!("member-{n}")),
    };
    let supervisor = std::fs::read_to_string(dir.join("etcd.pid")).unwrap();
    let killed = Command::new("kill")
        .args(["-9", supervisor.trim()])
        .status()
        .unwrap();
    assert!(killed.success());
    // No leading dash: pkill would read the pattern as an option.
    let data = format!("data-dir {}", dir.join("data").display());
    let killed = Command::new("pkill")
        .args(["-9", "-f", &data])
        .status()
        .unwrap();
    assert!(killed.success(), "no etcd of member {member} to kill");
}

fn running(cluster: &TestCluster) -> Vec<serde_json::Value> {
    cluster
        .pods()
        .into_iter()
        .filter(|p| p["currentState"]["status"] == "Running")
        .collect()
}

#[test]
fn three_etcd_members_survive_one_loss_and_refuse_without_a_majority() {
    let cluster = TestCluster::up_with("it-masters", &["--minions", "2", "--masters", "3"]);
    cluster.load_demo_image("tutum/tomcat:latest");
    let slot = cluster.slot();
    let member_ip = |m: u8| format!("10.{}.0.{m}", 100 + u32::from(slot));

    // The peer port admits a member's peer certificate only: not the
    // member's own server certificate, nor a minion's, though all are
    // signed by the same CA; and each member has keys of its own.
    let peer = format!("https://{}:2380/members", member_ip(1));
    let pki = cluster.dir().join("pki");
    let on_peer_port = |stem: &str| {
        let out = Command::new("curl")
            .args(["-sS", "--http1.1", "--max-time", "3", "--cacert"])
            .arg(pki.join("ca.crt"))
            .arg("--cert")
            .arg(pki.join(format!("{stem}.crt")))
            .arg("--key")
            .arg(pki.join(format!("{stem}.key")))
            .arg(&peer)
            .output()
            .unwrap();
        (
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (as_etcd, why) = on_peer_port("etcd-2-peer");
    assert!(as_etcd.contains("peerURLs"), "{as_etcd} {why}");
    let (as_server, why) = on_peer_port("etcd-2");
    assert!(
        !as_server.contains("peerURLs") && !why.contains("refused"),
        "a server certificate on the peer port: {as_server} {why}"
    );
    let keys: std::collections::BTreeSet<String> = (1..=3)
        .flat_map(|m| [format!("etcd-{m}.key"), format!("etcd-{m}-peer.key")])
        .map(|f| std::fs::read_to_string(pki.join(f)).unwrap())
        .collect();
    assert_eq!(keys.len(), 6, "every member and use has a key of its own");
    let tls = cluster.minion_tls_dir(1);
    let as_minion = common::etcd_curl(&tls, &peer, true);
    let as_minion: Vec<&str> = as_minion.iter().map(String::as_str).collect();
    let as_minion = cluster.in_minion(1, &as_minion);
    // Refused by etcd in the handshake, not unreachable.
    assert!(
        !as_minion.ok()
            && !as_minion.stdout.contains("peerURLs")
            && !as_minion.stderr.contains("refused")
            && !as_minion.stderr.contains("timed out"),
        "{as_minion:?}"
    );

    // The first member, the one every client picks first, dies while an
    // apply of 30 pods runs: the apply completes.
    let mut apply = cluster
        .command(&["apply", "-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        let mut stdin = apply.stdin.take().unwrap();
        stdin
            .write_all(common::web_controller("web", 30).as_bytes())
            .unwrap();
    }
    wait_for(
        Duration::from_secs(30),
        "the apply's plan committed",
        || {
            let names = cluster.kctl(&["get", "pods", "-o", "name"]);
            (names.ok() && !names.stdout.is_empty()).then_some(())
        },
    );
    kill_member(&cluster, 1);
    let applied = apply.wait_with_output().unwrap();
    assert!(
        applied.status.success(),
        "apply with a member lost: {}",
        String::from_utf8_lossy(&applied.stderr)
    );
    let pod_ips: Vec<String> = wait_for(Duration::from_secs(90), "30 pods running", || {
        let running = running(&cluster);
        (running.len() == 30).then(|| {
            running
                .iter()
                .filter_map(|p| p["currentState"]["podIP"].as_str().map(str::to_string))
                .collect()
        })
    });
    let minions = cluster.kctl(&["get", "minions"]);
    assert_eq!(minions.stdout.matches(" Ready ").count(), 2, "{minions:?}");

    // A pod reaches no control-plane port on any address of any machine,
    // and nothing at all on the workstation: not etcd's members, not the
    // minions' sshd, not a service of the workstation's own (this
    // listener on every address, which the minions do reach).
    let workstation_service = std::net::TcpListener::bind("0.0.0.0:0").unwrap();
    let service_port = workstation_service.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in workstation_service.incoming() {
            drop(stream);
        }
    });
    let machines = cluster.fence_machines();
    let one_per_minion: std::collections::BTreeMap<usize, String> = cluster
        .pods()
        .iter()
        .map(|pod| {
            (
                common::minion_of(pod),
                pod["id"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(one_per_minion.len(), 2, "{one_per_minion:?}");
    for (minion, id) in &one_per_minion {
        let checked = common::fence::assert_pod_fenced(
            &machines,
            &|script: &str| cluster.in_minion(*minion, &["sh", "-c", script]).stdout,
            &|script: &str| cluster.in_pod(*minion, id, "web", script).stdout,
            id,
        );
        for want in [
            format!("workstation {}:{service_port}", member_ip(1)),
            format!("workstation {}:2379", member_ip(2)),
            format!("workstation {}:2380", member_ip(3)),
            format!("minion-1 10.{}.0.11:22", 100 + u32::from(slot)),
            format!("minion-2 10.{}.0.12:22", 100 + u32::from(slot)),
        ] {
            assert!(checked.contains(&want), "{want} not among {checked:?}");
        }
    }
    drop(machines);

    // A second member dies: no majority. Commands say so, name the
    // members that are down, and change nothing; the pods keep serving.
    kill_member(&cluster, 2);
    let refused = wait_for(Duration::from_secs(15), "the quorum error", || {
        let got = cluster.kctl(&["get", "pods"]);
        got.stderr.contains("no quorum").then_some(got)
    });
    assert_eq!(refused.code, Some(1), "{refused:?}");
    for down in [member_ip(1), member_ip(2)] {
        assert!(
            refused.stderr.contains(&format!("https://{down}:2379: ")),
            "{refused:?}"
        );
    }
    let resize = cluster.kctl(&["resize", "rc", "web", "10"]);
    assert_eq!(resize.code, Some(1), "{resize:?}");
    assert!(resize.stderr.contains("no quorum"), "{resize:?}");
    for ip in pod_ips.iter().take(3) {
        let page = cluster.in_minion(
            1,
            &[
                "curl",
                "-sS",
                "--max-time",
                "5",
                &format!("http://{ip}:8080/hostname"),
            ],
        );
        assert!(page.ok(), "pod {ip} without quorum: {page:?}");
    }

    // `up` brings both members back; the state is as it was.
    let repaired = cluster.kctl(&["up"]);
    assert!(repaired.ok(), "{repaired:?}");
    let rc = cluster.kctl(&["get", "rc", "web", "-o", "json"]);
    assert_eq!(rc.json()["desiredState"]["replicas"], 30, "{rc:?}");
    wait_for(Duration::from_secs(60), "30 pods running again", || {
        (running(&cluster).len() == 30).then_some(())
    });

    // A member's disk is lost: `up` removes it from the membership and a
    // new member of the same address joins. It votes: with the first
    // member gone too, the cluster still has its majority.
    kill_member(&cluster, 3);
    std::fs::remove_dir_all(cluster.dir().join("etcd/member-3/data")).unwrap();
    let replaced = cluster.kctl(&["up"]);
    assert!(replaced.ok(), "{replaced:?}");
    assert!(
        replaced.stderr.contains("replaced by a new member"),
        "{replaced:?}"
    );
    kill_member(&cluster, 1);
    let rc = cluster.kctl(&["get", "rc", "web", "-o", "json"]);
    assert!(rc.ok(), "with members 2 and the new 3: {rc:?}");
    assert_eq!(rc.json()["desiredState"]["replicas"], 30, "{rc:?}");

    cluster.down_and_check();
}

/// The objects of `kind` as `(id, what matters of them)`, sorted.
fn listed(cluster: &TestCluster, kind: &str, fields: &[&str]) -> Vec<String> {
    let run = cluster.kctl(&["get", kind, "-o", "json"]);
    assert!(run.ok(), "{run:?}");
    let mut items: Vec<String> = run.json()["items"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|o| {
            fields
                .iter()
                .map(|f| o.pointer(f).cloned().unwrap_or_default().to_string())
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect();
    items.sort();
    items
}

#[test]
fn a_snapshot_brings_every_object_back_onto_a_fresh_cluster_with_its_portals() {
    let portal_net = "10.231.7.0/24";
    let cluster = TestCluster::adopt("it-snapshot", vec![]);
    let up = ["up", "--minions", "2", "--portal-net", portal_net];
    let made = cluster.kctl(&up);
    assert!(made.ok(), "{made:?}");
    assert!(
        made.stderr.contains("kctl snapshot save FILE"),
        "a single master says how to keep a copy: {made:?}"
    );
    cluster.load_demo_image("tutum/tomcat:latest");
    let service = r#"{"kind": "Service", "apiVersion": "v1beta1", "id": "web",
      "port": 9090, "containerPort": 8080, "selector": {"name": "web"}}"#;
    let solo = r#"{"kind": "Pod", "apiVersion": "v1beta1", "id": "solo",
      "desiredState": {"manifest": {"version": "v1beta1", "id": "solo",
        "containers": [{"name": "web", "image": "tutum/tomcat"}]}},
      "labels": {"name": "solo"}}"#;
    for manifest in [service, &common::web_controller("web", 3), solo] {
        let applied = cluster.kctl_stdin(&["apply", "-f", "-"], manifest);
        assert!(applied.ok(), "{applied:?}");
    }
    let services = listed(&cluster, "services", &["/id", "/port", "/portalIP"]);
    let controllers = listed(&cluster, "rc", &["/id", "/desiredState/replicas"]);
    let pods = listed(&cluster, "pods", &["/id", "/labels/name"]);
    assert_eq!(pods.len(), 4, "{pods:?}");

    let file = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("snapshot-{}.json", std::process::id()));
    let saved = cluster.kctl(&["snapshot", "save", file.to_str().unwrap()]);
    assert!(saved.ok(), "{saved:?}");
    assert!(
        saved
            .stdout
            .contains("1 service(s), 1 replicationController(s), 4 pod(s)"),
        "{saved:?}"
    );

    // The cluster is lost; a new one of the same shape gets it all back.
    let gone = cluster.kctl(&["down"]);
    assert!(gone.ok(), "{gone:?}");
    let remade = cluster.kctl(&up);
    assert!(remade.ok(), "{remade:?}");
    cluster.load_demo_image("tutum/tomcat:latest");
    let restored = cluster.kctl(&["snapshot", "restore", file.to_str().unwrap()]);
    assert!(restored.ok(), "{restored:?}");
    assert_eq!(
        listed(&cluster, "services", &["/id", "/port", "/portalIP"]),
        services
    );
    assert_eq!(
        listed(&cluster, "rc", &["/id", "/desiredState/replicas"]),
        controllers
    );
    assert_eq!(listed(&cluster, "pods", &["/id", "/labels/name"]), pods);
    wait_for(Duration::from_secs(60), "4 pods running", || {
        (running(&cluster).len() == 4).then_some(())
    });
    let portal: serde_json::Value =
        serde_json::from_str(services[0].split(' ').nth(2).unwrap()).unwrap();
    let url = format!("http://{}:9090/hostname", portal.as_str().unwrap());
    let page = wait_for(Duration::from_secs(20), "the portal answering", || {
        let page = cluster.in_minion(1, &["curl", "-sS", "--max-time", "3", &url]);
        (page.ok() && page.stdout.starts_with("web-")).then_some(page)
    });
    assert!(page.stdout.starts_with("web-"), "{page:?}");

    // Onto a cluster that holds objects: refused, nothing changes.
    let again = cluster.kctl(&["snapshot", "restore", file.to_str().unwrap()]);
    assert_eq!(again.code, Some(1), "{again:?}");
    assert!(again.stderr.contains("already holds"), "{again:?}");
    let _ = std::fs::remove_file(&file);
    cluster.down_and_check();
}
