//! The etcd store against a real etcd on loopback: guarded transactions make
//! concurrent writers conflict instead of overwriting each other.

use kctl::bootstrap::etcd::tls_flags;
use kctl::model::{Labels, Protocol, Service};
use kctl::pki::{ClusterPki, Credentials};
use kctl::plan::Op;
use kctl::state::{PodPhase, PodStatus, ServiceRecord};
use kctl::store::{Store, StoreError};
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long a just-started etcd may take to serve.
const WAIT: Duration = Duration::from_secs(20);

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// etcd members on 127.0.0.1, serving TLS to clients and peers with
/// certificates of their own CA as kctl's etcd does, each killable on its
/// own, with the short raft timers of one machine (a leader is elected
/// again within a second). Killed and removed on drop.
struct Etcd {
    members: Vec<Option<Child>>,
    argv: Vec<Vec<String>>,
    dir: std::path::PathBuf,
    endpoints: Vec<String>,
    client: Credentials,
}

impl Etcd {
    /// One member.
    fn start(name: &str) -> Etcd {
        Etcd::start_members(name, 1)
    }

    fn start_members(name: &str, count: usize) -> Etcd {
        let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("etcd-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let pki = ClusterPki::new(dir.join("pki"));
        let members: Vec<kctl::pki::EtcdMember> = (0..count)
            .map(|i| kctl::pki::EtcdMember {
                name: format!("m{i}"),
                ips: vec![std::net::IpAddr::from([127, 0, 0, 1])],
            })
            .collect();
        pki.ensure(name, &members, &[], time::OffsetDateTime::now_utc())
            .unwrap();
        let path = |p: std::path::PathBuf| p.display().to_string();
        let ports: Vec<(u16, u16)> = (0..count).map(|_| (free_port(), free_port())).collect();
        let initial = ports
            .iter()
            .enumerate()
            .map(|(i, (_, peer))| format!("m{i}=https://127.0.0.1:{peer}"))
            .collect::<Vec<_>>()
            .join(",");
        let mut argv = Vec::new();
        let mut endpoints = Vec::new();
        for (i, (client, peer)) in ports.iter().enumerate() {
            let endpoint = format!("https://127.0.0.1:{client}");
            let peer_url = format!("https://127.0.0.1:{peer}");
            let files = kctl::bootstrap::etcd::MemberFiles::in_pki(&pki, &members[i]);
            let mut args: Vec<String> =
                tls_flags(&path(pki.ca_file()), &files, &path(pki.crl_file()));
            args.extend(
                [
                    "--name",
                    &format!("m{i}"),
                    "--data-dir",
                    &path(dir.join(format!("m{i}"))),
                    "--listen-client-urls",
                    &endpoint,
                    "--advertise-client-urls",
                    &endpoint,
                    "--listen-peer-urls",
                    &peer_url,
                    "--initial-advertise-peer-urls",
                    &peer_url,
                    "--initial-cluster",
                    &initial,
                    "--heartbeat-interval",
                    "50",
                    "--election-timeout",
                    "500",
                    "--log-level",
                    "error",
                ]
                .map(str::to_string),
            );
            argv.push(args);
            endpoints.push(endpoint);
        }
        let mut etcd = Etcd {
            members: vec![],
            argv,
            dir,
            endpoints,
            client: pki.workstation().unwrap(),
        };
        for i in 0..count {
            let child = etcd.spawn(i);
            etcd.members.push(Some(child));
        }
        etcd
    }

    /// The first member's endpoint.
    fn endpoint(&self) -> &str {
        &self.endpoints[0]
    }

    /// A store of `cluster`, through every member, with the workstation's
    /// certificate.
    async fn store(&self, cluster: &str) -> Store {
        Store::connect_waiting(&self.endpoints, cluster, Some(&self.client), WAIT)
            .await
            .unwrap()
    }

    fn spawn(&self, member: usize) -> Child {
        Command::new("etcd")
            .args(&self.argv[member])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("etcd (apt-get install etcd-server)")
    }

    /// A power cut: SIGKILL.
    fn kill(&mut self, member: usize) {
        if let Some(mut child) = self.members[member].take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Started again on its own data.
    fn restart(&mut self, member: usize) {
        self.kill(member);
        self.members[member] = Some(self.spawn(member));
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        for member in 0..self.members.len() {
            self.kill(member);
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn service(id: &str, port: u16) -> ServiceRecord {
    ServiceRecord {
        service: Service {
            id: id.into(),
            labels: Labels::new(),
            selector: Labels::from([("name".to_string(), id.to_string())]),
            port,
            container_port: None,
            protocol: Protocol::Tcp,
            portal_ip: None,
            external: false,
            public_ips: vec![],
            node_port: None,
        },
        portal_ip: std::net::Ipv4Addr::new(10, 0, 0, port as u8),
        node_port: None,
    }
}

#[tokio::test]
async fn stale_snapshot_cannot_overwrite() {
    let etcd = Etcd::start("conflict");
    let mut a = etcd.store("c1").await;
    let mut b = etcd.store("c1").await;

    // Both read the same (empty) state...
    let seen_by_a = a.snapshot().await.unwrap();
    let seen_by_b = b.snapshot().await.unwrap();
    // ...A commits first; B's commit was planned from a stale read.
    a.commit(&seen_by_a, &[Op::PutService(service("web", 80))])
        .await
        .unwrap();
    let err = b
        .commit(&seen_by_b, &[Op::PutService(service("web", 8080))])
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Conflict), "{err}");
    let state = b.snapshot().await.unwrap().state;
    assert_eq!(state.services["web"].service.port, 80, "A's write survives");

    // Re-reading and committing again works.
    let fresh = b.snapshot().await.unwrap();
    b.commit(&fresh, &[Op::PutService(service("api", 81))])
        .await
        .unwrap();
    assert_eq!(a.snapshot().await.unwrap().state.services.len(), 2);

    // Clusters are isolated by prefix.
    let mut other = etcd.store("c2").await;
    assert!(other.snapshot().await.unwrap().state.services.is_empty());
}

/// A rolling update's mark is planned from a snapshot: it is refused
/// if anything landed since, and a change planned before it (a resize
/// racing the update's start) cannot land after it.
#[tokio::test]
async fn a_rollout_mark_is_guarded_by_the_state_it_was_planned_from() {
    let etcd = Etcd::start("rollout");
    let mut updater = etcd.store("c1").await;
    let mut other = etcd.store("c1").await;
    let rollout = kctl::state::Rollout {
        to: kctl::model::PodTemplate {
            labels: Labels::new(),
            spec: Default::default(),
        },
        by: "the test".into(),
        since: 0,
    };

    // A commit lands between the updater's read and its mark: refused.
    let read = updater.snapshot().await.unwrap();
    let fresh = other.snapshot().await.unwrap();
    other
        .commit(&fresh, &[Op::PutService(service("web", 80))])
        .await
        .unwrap();
    let err = updater
        .begin_rollout(&read, "web", &rollout)
        .await
        .err()
        .expect("a mark over a changed state");
    assert!(matches!(err, StoreError::Conflict), "{err}");
    assert!(updater.snapshot().await.unwrap().state.rollouts.is_empty());

    // Read again, the mark is taken; a change planned before it loses.
    let before_mark = other.snapshot().await.unwrap();
    let read = updater.snapshot().await.unwrap();
    let mark = updater.begin_rollout(&read, "web", &rollout).await.unwrap();
    let err = other
        .commit(&before_mark, &[Op::PutService(service("web", 8080))])
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Conflict), "{err}");
    let state = other.snapshot().await.unwrap().state;
    assert_eq!(state.services["web"].service.port, 80);
    assert!(state.rollouts.contains_key("web"));

    // A second update of the same controller is refused by name.
    let now = other.snapshot().await.unwrap();
    let err = other
        .begin_rollout(&now, "web", &rollout)
        .await
        .err()
        .expect("a second mark");
    assert!(
        matches!(&err, StoreError::RolloutBusy { by, .. } if by == "the test"),
        "{err}"
    );
    mark.end().await;
    assert!(other.snapshot().await.unwrap().state.rollouts.is_empty());
}

/// A pod moved off a minion under its id is one transaction that
/// deletes and puts the same key: etcd refuses two ops on one key, so the
/// store keeps the put; the old status goes, the prune owner stays.
#[tokio::test]
async fn a_pod_moved_under_its_id_keeps_its_owner_and_loses_its_old_status() {
    let etcd = Etcd::start("move");
    let mut store = etcd.store("c1").await;
    let record = |host: &str| kctl::state::PodRecord {
        pod: kctl::model::Pod {
            id: "solo".into(),
            labels: Labels::new(),
            spec: Default::default(),
        },
        host: host.into(),
        owner: None,
        draining: false,
    };
    let base = store.snapshot().await.unwrap();
    store
        .commit(&base, &[Op::PutPod(record("minion-3"))])
        .await
        .unwrap();
    store
        .set_owners("files:/m", &[(kctl::model::Kind::Pod, "solo".into())])
        .await
        .unwrap();
    let status = PodStatus {
        host: "minion-3".into(),
        phase: PodPhase::Running,
        spec_hash: "h".into(),
        ..Default::default()
    };
    store.put_status("solo", &status).await.unwrap();

    let base = store.snapshot().await.unwrap();
    store
        .commit(
            &base,
            &[Op::DeletePod("solo".into()), Op::PutPod(record("minion-1"))],
        )
        .await
        .unwrap();
    let state = store.snapshot().await.unwrap().state;
    assert_eq!(state.pods["solo"].host, "minion-1");
    assert!(state.statuses.is_empty(), "{:?}", state.statuses);
    assert_eq!(
        state.owners[&(kctl::model::Kind::Pod, "solo".to_string())],
        "files:/m"
    );
}

/// With three members, losing one changes nothing a client sees, its
/// leased marks included; losing two is a clear error that names every
/// member's problem and changes nothing; the majority back, all works.
#[tokio::test]
async fn a_store_fails_over_between_members_and_says_when_there_is_no_quorum() {
    let mut etcd = Etcd::start_members("trio", 3);
    let mut store = etcd.store("c1").await;
    let base = store.snapshot().await.unwrap();
    store
        .commit(&base, &[Op::PutService(service("web", 80))])
        .await
        .unwrap();
    let cordons = store.cordon(&["minion-3".to_string()]).await.unwrap();
    let heartbeat = store.start_heartbeat("minion-1").await.unwrap();

    // The member in use (the first that serves) goes: the same store
    // reads and commits through another.
    etcd.kill(0);
    let base = store.snapshot().await.unwrap();
    assert_eq!(base.state.services["web"].service.port, 80);
    store
        .commit(&base, &[Op::PutService(service("api", 81))])
        .await
        .unwrap();
    // The cordon's lease outlives its TTL: kept alive through another
    // member.
    tokio::time::sleep(Duration::from_secs(
        kctl::store::MARK_LEASE_SECONDS as u64 + 2,
    ))
    .await;
    assert!(cordons.holds());
    // So does a helper's 4 s heartbeat: its minion never looked gone.
    assert!(!heartbeat.task.is_finished(), "the heartbeat ended");
    let state = store.snapshot().await.unwrap().state;
    assert!(state.heartbeats.contains("minion-1"));
    assert!(
        state.last_seen["minion-1"] + 2 >= kctl::output::unix_now(),
        "beats recorded through the other members"
    );
    assert!(store
        .snapshot()
        .await
        .unwrap()
        .state
        .cordoned
        .contains("minion-3"));

    // A second member goes: no quorum. Every new connection says so and
    // names each member's problem; the old store's commit fails.
    etcd.kill(1);
    let deadline = Instant::now() + Duration::from_secs(15);
    let refused = loop {
        match Store::connect(&etcd.endpoints, "c1", Some(&etcd.client)).await {
            Err(e @ StoreError::NoQuorum { .. }) => break e.to_string(),
            other => {
                assert!(Instant::now() < deadline, "still served: {:?}", other.err());
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    };
    assert!(
        refused.contains("none of its 3 members serves"),
        "{refused}"
    );
    for down in &etcd.endpoints[..2] {
        assert!(refused.contains(&format!("{down}: ")), "{refused}");
    }
    assert!(refused.contains("knows no leader"), "{refused}");
    let stale = store.snapshot().await;
    assert!(stale.is_err(), "a read without quorum");

    // The majority back: everything committed before is there.
    etcd.restart(1);
    let mut store = etcd.store("c1").await;
    let state = store.snapshot().await.unwrap().state;
    assert_eq!(
        state.services.keys().collect::<Vec<_>>(),
        ["api", "web"],
        "nothing lost, nothing added"
    );
    cordons.end().await;
}

/// A helper's store reads a copy of the keys kept by a watch: it sees
/// others' commits, always its own writes, and a plan from a stale copy
/// still cannot overwrite (the generation guard).
#[tokio::test]
async fn a_cached_store_sees_every_commit_and_its_own_writes() {
    let etcd = Etcd::start("cache");
    let mut helper = etcd.store("c1").await.cached();
    let mut other = etcd.store("c1").await;

    // Its own write is in the very next snapshot.
    let base = helper.snapshot().await.unwrap();
    helper
        .commit(&base, &[Op::PutService(service("web", 80))])
        .await
        .unwrap();
    assert!(helper
        .snapshot()
        .await
        .unwrap()
        .state
        .services
        .contains_key("web"));

    // Another writer's commit reaches it through the watch.
    let fresh = other.snapshot().await.unwrap();
    other
        .commit(&fresh, &[Op::PutService(service("api", 81))])
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    let seen = loop {
        let state = helper.snapshot().await.unwrap().state;
        if state.services.contains_key("api") || Instant::now() > deadline {
            break state;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(seen.services.contains_key("api"), "{:?}", seen.services);

    // A plan made from a copy older than the last commit conflicts.
    let stale = helper.snapshot().await.unwrap();
    let now = other.snapshot().await.unwrap();
    other
        .commit(&now, &[Op::DeleteService("api".into())])
        .await
        .unwrap();
    let err = helper
        .commit(&stale, &[Op::PutService(service("api", 9999))])
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Conflict), "{err}");
    assert!(!other
        .snapshot()
        .await
        .unwrap()
        .state
        .services
        .contains_key("api"));
}

#[tokio::test]
async fn status_of_a_deleted_pod_is_not_written() {
    let etcd = Etcd::start("status");
    let mut store = etcd.store("c1").await;
    let status = PodStatus {
        phase: PodPhase::Running,
        spec_hash: "h".into(),
        ..Default::default()
    };
    store.put_status("ghost", &status).await.unwrap();
    assert!(store.snapshot().await.unwrap().state.statuses.is_empty());
}

#[tokio::test]
async fn events_keep_a_bounded_history_per_object_outside_the_state() {
    use kctl::events::{event, Subject, EVENTS_PER_OBJECT};
    let etcd = Etcd::start("events");
    let mut store = etcd.store("c1").await.with_source("kctl-node/minion-1");
    // One batch of 3, then 24 one at a time: 27 events for one pod.
    let batch: Vec<_> = ["first", "second", "third"]
        .iter()
        .map(|m| event(Subject::Pod, "web", "Batch", m.to_string()))
        .collect();
    store.record_events(&batch).await.unwrap();
    for i in 0..24 {
        let e = event(Subject::Pod, "web", "Restarted", format!("restart {i}"));
        store.record_events(&[e]).await.unwrap();
    }
    store
        .record_events(&[event(Subject::Service, "web", "Created", "portal".into())])
        .await
        .unwrap();
    let pod_events = store.events(Some(Subject::Pod), Some("web")).await.unwrap();
    assert_eq!(pod_events.len(), EVENTS_PER_OBJECT);
    // The newest are kept, in the order they were recorded.
    let messages: Vec<&str> = pod_events.iter().map(|e| e.message.as_str()).collect();
    let expected: Vec<String> = (4..24).map(|i| format!("restart {i}")).collect();
    assert_eq!(messages, expected);
    assert!(pod_events
        .iter()
        .all(|e| e.source == "kctl-node/minion-1" && e.time_ms > 0));
    // Another object's events are its own; all events list both.
    assert_eq!(
        store
            .events(Some(Subject::Service), None)
            .await
            .unwrap()
            .len(),
        1
    );
    assert_eq!(
        store.events(None, None).await.unwrap().len(),
        EVENTS_PER_OBJECT + 1
    );
    // A batch keeps its order within one millisecond.
    let mut other = etcd.store("c2").await;
    other.record_events(&batch).await.unwrap();
    let kept: Vec<String> = other
        .events(None, None)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.message)
        .collect();
    assert_eq!(kept, ["first", "second", "third"], "and per cluster");
}

#[tokio::test]
async fn unreachable_etcd_is_a_clear_error() {
    let port = free_port();
    let err = match Store::connect(&[format!("http://127.0.0.1:{port}")], "c1", None).await {
        Ok(_) => panic!("connected to nothing"),
        Err(e) => e,
    };
    assert!(matches!(err, StoreError::Unreachable { .. }), "{err}");
}

/// A helper's watch wakes on a change of desired state (a commit) and on a
/// lost heartbeat, not on writes that are not desired state (a pod's
/// status, a heartbeat that begins), and a change in another cluster does
/// not wake it.
#[tokio::test]
async fn a_commit_wakes_the_desired_state_watch() {
    let etcd = Etcd::start("watch");
    let endpoints = etcd.endpoints.clone();
    let mut store = etcd.store("c1").await;
    let mut other = etcd.store("c2").await;
    let watch = store.watch_desired().await.unwrap();
    let quiet = Duration::from_millis(500);

    let base = other.snapshot().await.unwrap();
    other
        .commit(&base, &[Op::PutService(service("elsewhere", 80))])
        .await
        .unwrap();
    let status = PodStatus {
        phase: PodPhase::Running,
        spec_hash: "h".into(),
        ..Default::default()
    };
    store.put_status("ghost", &status).await.unwrap();
    assert!(
        tokio::time::timeout(quiet, watch.changed()).await.is_err(),
        "woken by something that is not c1's desired state"
    );

    let base = store.snapshot().await.unwrap();
    store
        .commit(&base, &[Op::PutService(service("web", 80))])
        .await
        .unwrap();
    tokio::time::timeout(Duration::from_secs(10), watch.changed())
        .await
        .expect("a commit wakes the watch");

    // A heartbeat that begins (or beats) does not wake it; one that ends
    // (the minion is not ready) does, so the leader moves its pods at once.
    let heartbeat = store.start_heartbeat("minion-1").await.unwrap();
    assert!(
        tokio::time::timeout(quiet, watch.changed()).await.is_err(),
        "woken by a heartbeat"
    );
    // A helper that says its minion cannot run pods wakes it, and the
    // minion reads NotReady with the reason; saying Ready again wakes it too.
    store
        .set_condition(
            "minion-1",
            heartbeat.lease,
            Some("container runtime unreachable"),
        )
        .await
        .unwrap();
    tokio::time::timeout(Duration::from_secs(10), watch.changed())
        .await
        .expect("a NotReady minion wakes the watch");
    let state = store.snapshot().await.unwrap().state;
    assert!(state.heartbeats.contains("minion-1") && !state.ready("minion-1"));
    assert_eq!(
        state.not_ready.get("minion-1").map(String::as_str),
        Some("container runtime unreachable")
    );
    store
        .set_condition("minion-1", heartbeat.lease, None)
        .await
        .unwrap();
    tokio::time::timeout(Duration::from_secs(10), watch.changed())
        .await
        .expect("a Ready again minion wakes the watch");
    assert!(store.snapshot().await.unwrap().state.ready("minion-1"));
    heartbeat.task.abort();
    let tls = etcd_client::TlsOptions::new()
        .ca_certificate(etcd_client::Certificate::from_pem(&etcd.client.ca))
        .identity(etcd_client::Identity::from_pem(
            &etcd.client.own.cert,
            &etcd.client.own.key,
        ));
    let options = etcd_client::ConnectOptions::new().with_tls(tls);
    let mut raw = etcd_client::Client::connect(&endpoints, Some(options))
        .await
        .unwrap();
    raw.lease_revoke(heartbeat.lease).await.unwrap();
    tokio::time::timeout(Duration::from_secs(10), watch.changed())
        .await
        .expect("a lost heartbeat wakes the watch");
}

/// etcd admits only clients with a certificate of the cluster's CA: not
/// one without a certificate, not one whose certificate another CA signed,
/// not plain HTTP.
#[tokio::test]
async fn etcd_refuses_clients_without_the_clusters_certificate() {
    let etcd = Etcd::start("tls");
    let endpoints = etcd.endpoints.clone();
    Store::connect_waiting(&endpoints, "c1", Some(&etcd.client), WAIT)
        .await
        .expect("the cluster's own client certificate is admitted");

    let stranger = ClusterPki::new(etcd.dir.join("other-pki"));
    stranger
        .ensure("other", &[], &[], time::OffsetDateTime::now_utc())
        .unwrap();
    let foreign = Credentials {
        ca: etcd.client.ca.clone(),
        own: stranger.workstation().unwrap().own,
    };
    let refused = Store::connect(&endpoints, "c1", Some(&foreign)).await;
    assert!(
        matches!(refused, Err(StoreError::Unreachable { .. })),
        "a certificate of another CA is refused"
    );

    let port = etcd.endpoint().rsplit(':').next().unwrap();
    let plain = Store::connect(&[format!("http://127.0.0.1:{port}")], "c1", None).await;
    assert!(plain.is_err(), "plain HTTP is refused");

    // With the CA but no certificate of its own (what curl --cacert does).
    let curl = Command::new("curl")
        .args(["-sS", "--max-time", "3", "--cacert"])
        .arg(etcd.dir.join("pki/ca.crt"))
        .arg(format!("{}/version", etcd.endpoint()))
        .output()
        .unwrap();
    assert!(
        !curl.status.success() && !String::from_utf8_lossy(&curl.stdout).contains("etcdserver"),
        "no client certificate: {curl:?}"
    );
    let with = Command::new("curl")
        .args(["-sS", "--max-time", "3", "--cacert"])
        .arg(etcd.dir.join("pki/ca.crt"))
        .arg("--cert")
        .arg(etcd.dir.join("pki/kctl.crt"))
        .arg("--key")
        .arg(etcd.dir.join("pki/kctl.key"))
        .arg(format!("{}/version", etcd.endpoint()))
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&with.stdout).contains("etcdserver"),
        "with the certificate: {with:?}"
    );
}

/// One helper leads (its claim on its heartbeat lease), the others learn
/// who in the same request that tried to claim; when the leader's lease
/// ends, another takes the lead.
#[tokio::test]
async fn one_helper_leads_until_its_heartbeat_ends() {
    let etcd = Etcd::start("lead");
    let mut first = etcd.store("c1").await;
    let mut second = etcd.store("c1").await;
    let one = first.start_heartbeat("minion-1").await.unwrap();
    let two = second.start_heartbeat("minion-2").await.unwrap();
    assert!(first.try_lead("minion-1", one.lease).await.unwrap());
    assert!(!second.try_lead("minion-2", two.lease).await.unwrap());
    assert!(
        first.try_lead("minion-1", one.lease).await.unwrap(),
        "still"
    );
    one.task.abort();
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    while !second.try_lead("minion-2", two.lease).await.unwrap() {
        assert!(
            std::time::Instant::now() < deadline,
            "minion-2 never took the lead"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(!first.try_lead("minion-1", one.lease).await.unwrap());
    two.task.abort();
}

/// A minion's lock passes back and forth between the workstation and the
/// minion's helper, each with its own certificate under etcd's
/// authorization, with never both inside and without a refusal (etcd's
/// Lock RPC refuses a waiter now and then under certificate names:
/// etcd-io/etcd#14850).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_workstation_and_a_helper_take_turns_on_a_minions_lock_under_authorization() {
    use std::sync::atomic::{AtomicBool, Ordering};
    const ROUNDS: usize = 30;
    const HOLD_MS: u64 = 5;
    let etcd = Etcd::start("locks");
    let pki = ClusterPki::new(etcd.dir.join("pki"));
    let member = kctl::pki::EtcdMember {
        name: "m0".into(),
        ips: vec![std::net::IpAddr::from([127, 0, 0, 1])],
    };
    let minion = "minion-1".to_string();
    pki.ensure(
        "locks",
        &[member],
        std::slice::from_ref(&minion),
        time::OffsetDateTime::now_utc(),
    )
    .unwrap();
    let workstation = etcd.store("c1").await;
    workstation
        .ensure_access("c1", std::slice::from_ref(&minion))
        .await
        .unwrap();
    let helper = Store::connect_waiting(
        &etcd.endpoints,
        "c1",
        Some(&pki.minion(&minion).unwrap()),
        WAIT,
    )
    .await
    .unwrap();
    let inside = std::sync::Arc::new(AtomicBool::new(false));
    let turns = |store: Store, who: &'static str| {
        let inside = inside.clone();
        tokio::spawn(async move {
            for round in 0..ROUNDS {
                let lock = store
                    .lock_minion("minion-1")
                    .await
                    .unwrap_or_else(|e| panic!("{who}, round {round}: {e}"));
                assert!(!inside.swap(true, Ordering::SeqCst), "{who} got in too");
                tokio::time::sleep(Duration::from_millis(HOLD_MS)).await;
                inside.store(false, Ordering::SeqCst);
                lock.release().await;
            }
        })
    };
    let one = turns(workstation, "the workstation");
    let two = turns(helper, "the helper");
    one.await.unwrap();
    two.await.unwrap();
}
