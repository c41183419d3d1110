//! A smaller cut of the 30-minion scale run (bench/scale.sh), small enough
//! for CI: 8 minions and 3 etcd members. 80 pods are applied and spread
//! evenly; idle helpers take no minion lock at all (they converge without
//! one when nothing is to be done); the minion whose helper leads the
//! others is cut, another helper takes the lead and its pods run elsewhere;
//! `down` leaves nothing.

mod common;

use common::{wait_for, TestCluster};
use std::collections::BTreeMap;
use std::time::Duration;

const MINIONS: usize = 8;
const PODS: usize = 80;

/// The pods, by minion, that run.
fn running_by_minion(cluster: &TestCluster) -> BTreeMap<String, usize> {
    let mut by = BTreeMap::new();
    for p in cluster.pods() {
        if p["currentState"]["status"] == "Running" {
            let host = p["currentState"]["host"].as_str().unwrap_or("").to_string();
            *by.entry(host).or_default() += 1;
        }
    }
    by
}

/// The minion whose helper took the lead last, from the helpers' logs
/// (each line begins with its time).
fn leader(slot: u8) -> Option<String> {
    let mut said: Vec<String> = vec![];
    for i in 1..=MINIONS {
        let log = format!("/run/kctl/{slot}/m{i}/helper/kctl-node.log");
        let text = std::fs::read_to_string(log).unwrap_or_default();
        said.extend(
            text.lines()
                .filter(|l| l.ends_with("leads the cluster now"))
                .map(str::to_string),
        );
    }
    said.sort();
    let last = said.last()?;
    let words: Vec<&str> = last.split_whitespace().collect();
    words.iter().rev().nth(4).map(|w| w.to_string())
}

/// Events under `prefix` that etcd reports in `window`, watched with the
/// workstation's certificate.
fn events_under(cluster: &TestCluster, prefix: &str, window: Duration) -> usize {
    let record = cluster.record();
    let endpoints: Vec<String> = record["etcdEndpoints"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e.as_str().unwrap().to_string())
        .collect();
    let pki = cluster.dir().join("pki");
    let read = |f: &str| std::fs::read_to_string(pki.join(f)).unwrap();
    let tls = etcd_client::TlsOptions::new()
        .ca_certificate(etcd_client::Certificate::from_pem(read("ca.crt")))
        .identity(etcd_client::Identity::from_pem(
            read("kctl.crt"),
            read("kctl.key"),
        ));
    let options = etcd_client::ConnectOptions::new().with_tls(tls);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let mut client = etcd_client::Client::connect(&endpoints[..1], Some(options))
            .await
            .unwrap();
        let watch = etcd_client::WatchOptions::new().with_prefix();
        let mut stream = client.watch(prefix, Some(watch)).await.unwrap();
        let mut seen = 0;
        let deadline = tokio::time::Instant::now() + window;
        while let Ok(Ok(Some(response))) = tokio::time::timeout_at(deadline, stream.message()).await
        {
            seen += response.events().len();
        }
        seen
    })
}

#[test]
fn eighty_pods_on_eight_minions_idle_without_locks_and_survive_the_leaders_loss() {
    let cluster = TestCluster::up_with(
        "it-scale",
        &["--minions", &MINIONS.to_string(), "--masters", "3"],
    );
    let slot = cluster.slot();
    cluster.load_demo_image("tutum/tomcat:latest");
    let run = cluster.kctl_stdin(
        &["apply", "-f", "-"],
        &common::web_controller("web", PODS as u32),
    );
    assert!(run.ok(), "{run:?}");
    // apply returns once every pod runs, spread evenly.
    let by_minion = running_by_minion(&cluster);
    assert_eq!(by_minion.values().sum::<usize>(), PODS, "{by_minion:?}");
    assert_eq!(by_minion.len(), MINIONS, "{by_minion:?}");
    assert!(
        by_minion.values().all(|n| *n == PODS / MINIONS),
        "{by_minion:?}"
    );
    let table = cluster.kctl(&["get", "pods", "--no-headers"]);
    assert!(table.ok(), "{table:?}");
    assert_eq!(table.stdout.lines().count(), PODS);

    // Idle: no helper takes its minion's lock.
    let locks = events_under(&cluster, "/kctl-locks/it-scale/", Duration::from_secs(6));
    assert_eq!(locks, 0, "lock events from idle helpers");

    // The leader's minion is cut: another helper leads, and its pods run
    // on the others.
    let cut = wait_for(Duration::from_secs(10), "a helper that leads", || {
        leader(slot)
    });
    let stop = cluster.kctl(&["minion", "stop", &cut]);
    assert!(stop.ok(), "{stop:?}");
    wait_for(
        Duration::from_secs(120),
        "every replica running again, none on the cut minion",
        || {
            let by = running_by_minion(&cluster);
            (by.values().sum::<usize>() == PODS && !by.contains_key(&cut)).then_some(())
        },
    );
    let now = wait_for(Duration::from_secs(10), "a new leader", || {
        leader(slot).filter(|l| *l != cut)
    });
    assert_ne!(now, cut);

    let dir = cluster.dir();
    drop(cluster);
    common::assert_nothing_left("it-scale", slot, &dir);
}
