//! `kctl up --provider ssh` against booted Debian 12 machines that the test
//! makes itself (systemd as PID 1, sshd, nothing of kctl's: see
//! common/vms.rs): `--install` brings Docker, the packet filters and etcd
//! over apt, kctl-node and etcd run as systemd units and come back when
//! killed, the tomcat controller and service work, `down` leaves the
//! machines exactly as they were before kctl's own parts came, and bad
//! hosts are refused before anything changes.

mod common;

use common::vms::DebianVms;
use common::{manifest, web_controller, TestCluster};
use std::collections::BTreeSet;
use std::time::{Duration, Instant};

fn host_args(hosts: &DebianVms) -> Vec<String> {
    let mut args = vec![
        "up".to_string(),
        "--provider".into(),
        "ssh".into(),
        "--identity".into(),
        hosts.identity().display().to_string(),
        "--pod-net".into(),
        hosts.pod_net(),
        "--portal-net".into(),
        hosts.portal_net(),
    ];
    for h in hosts.hosts() {
        args.push("--host".into());
        args.push(format!("root@{}", h.ip));
    }
    args
}

fn cluster_on(name: &str, hosts: &DebianVms) -> TestCluster {
    TestCluster::adopt(
        name,
        vec![("HOME".into(), hosts.user_home().display().to_string())],
    )
}

/// The main PID systemd has for `unit` in VM `i` (0 when not running).
fn main_pid(hosts: &DebianVms, i: usize, unit: &str) -> u32 {
    hosts
        .run_in_stdout(
            i,
            &["systemctl", "show", "--value", "--property=MainPID", unit],
        )
        .trim()
        .parse()
        .unwrap_or(0)
}

/// The pods that answer 24 requests to the portal, made with wget from
/// inside `container` on host `i`.
fn portal_answers(hosts: &DebianVms, i: usize, container: &str, portal: &str) -> BTreeSet<String> {
    let (seen, failed) = portal_answers_now(hosts, i, container, portal);
    assert!(failed.is_none(), "wget from {container}: {failed:?}");
    seen
}

/// The same, and what went wrong if any request failed: for waiting until
/// the portal reaches every pod.
fn portal_answers_now(
    hosts: &DebianVms,
    i: usize,
    container: &str,
    portal: &str,
) -> (BTreeSet<String>, Option<String>) {
    let script = format!("for i in $(seq 24); do wget -q -O - http://{portal}:8080/; done");
    let out = hosts.run_in(i, &["docker", "exec", container, "sh", "-c", &script]);
    let failed = (!out.status.success()).then(|| format!("{out:?}"));
    let seen = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let rest = l.split_once("<p>pod ")?.1;
            Some(rest.split_once("</p>")?.0.to_string())
        })
        .collect();
    (seen, failed)
}

/// A snapshot without what a reboot changes by itself: the order in which
/// Docker's nftables chains come to be listed, and the loopback port that
/// containerd picks anew at each start.
fn settled(mut snapshot: common::sys::HostSnapshot) -> common::sys::HostSnapshot {
    snapshot.nft.sort();
    snapshot.listening.retain(|l| {
        let ephemeral = l
            .strip_prefix("tcp 127.0.0.1:")
            .and_then(|port| port.parse::<u16>().ok())
            .is_some_and(|port| port >= 32768);
        !ephemeral
    });
    snapshot
}

#[test]
fn existing_hosts_become_a_cluster_and_are_left_as_they_were() {
    let mut hosts = DebianVms::create("ssh1", 2);
    let cluster = cluster_on("t-ssh-hosts", &hosts);
    let args = host_args(&hosts);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();

    // Fresh machines: no Docker, no packet filters, no etcd. Without
    // --install that is reported (and nothing changes); with it, apt
    // brings them.
    assert!(!hosts
        .run_in(0, &["sh", "-c", "command -v docker"])
        .status
        .success());
    let run = cluster.kctl(&args);
    assert!(!run.ok(), "{run:?}");
    assert!(flat(&run.stderr).contains("--install adds them"), "{run:?}");
    let mut install = args.clone();
    install.push("--install");
    let run = cluster.kctl(&install);
    assert!(run.ok(), "kctl up --provider ssh --install: {run:?}");
    for i in 0..2 {
        assert_eq!(
            hosts.run_in_stdout(
                i,
                &["systemctl", "is-active", "docker", "kctl-node-t-ssh-hosts"]
            ),
            "active\nactive\n",
            "vm{}",
            i + 1
        );
    }
    assert_eq!(
        hosts.run_in_stdout(0, &["systemctl", "is-active", "kctl-etcd-t-ssh-hosts"]),
        "active\n"
    );
    // down, so that what stays is what --install added: the machines
    // after this are the "before" of the cluster proper.
    let run = cluster.kctl(&["down"]);
    assert!(run.ok(), "{run:?}");
    // That first down left nothing of kctl's: this is the baseline.
    let before: Vec<_> = (0..2).map(|i| settled(hosts.snapshot(i))).collect();
    for (i, b) in before.iter().enumerate() {
        assert!(!b.units.iter().any(|u| u.contains("kctl")), "{:?}", b.units);
        assert!(
            !b.iptables.iter().any(|l| l.contains("KCTL")),
            "{:?}",
            b.iptables
        );
        assert!(!b.nft.iter().any(|l| l.contains("kctl")), "{:?}", b.nft);
        assert!(b.containers.is_empty(), "{:?}", b.containers);
        assert!(!b.networks.iter().any(|n| n == "kctl"), "{:?}", b.networks);
        let (code, _) = hosts.run_in_code(i, &["test", "-e", "/var/lib/kctl/t-ssh-hosts"]);
        assert_ne!(code, Some(0));
    }

    let run = cluster.kctl(&args);
    assert!(run.ok(), "kctl up --provider ssh: {run:?}");
    let again = cluster.kctl(&["up", "--provider", "ssh"]);
    assert!(again.ok(), "{again:?}");
    assert!(again.stdout.contains("nothing changed"), "{again:?}");

    // systemd brings kctl-node and etcd back when they die.
    for (i, unit) in [(1, "kctl-node-t-ssh-hosts"), (0, "kctl-etcd-t-ssh-hosts")] {
        let pid = main_pid(&hosts, i, unit);
        assert!(pid > 0, "{unit} runs");
        let killed = hosts.run_in(i, &["kill", "-9", &pid.to_string()]);
        assert!(killed.status.success(), "{killed:?}");
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let now = main_pid(&hosts, i, unit);
            if now != 0 && now != pid {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{unit} not restarted after kill -9"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    // A helper whose certificate nears its end (65 days left) renews it
    // through the signer beside etcd on vm1, with no kctl running.
    assert_eq!(
        hosts.run_in_stdout(0, &["systemctl", "is-active", "kctl-signer-t-ssh-hosts"]),
        "active\n"
    );
    let tls = cluster.minion_tls_dir(2);
    let ca = kctl::pki::KeyedCert {
        cert: std::fs::read_to_string(cluster.dir().join("pki/ca.crt")).unwrap(),
        key: std::fs::read_to_string(cluster.dir().join("pki/ca.key")).unwrap(),
    };
    let aging = kctl::pki::issue(
        &ca,
        &kctl::pki::Wanted::client("minion-2"),
        time::OffsetDateTime::now_utc() - time::Duration::days(300),
    )
    .unwrap();
    for (file, text) in [("node.key", &aging.key), ("node.crt", &aging.cert)] {
        let put = hosts.run_in_input(
            1,
            &[
                "install",
                "-m",
                "0600",
                "/dev/stdin",
                &format!("{tls}/{file}"),
            ],
            text.as_bytes(),
        );
        assert!(put.status.success(), "{put:?}");
    }
    let restart = hosts.run_in(1, &["systemctl", "restart", "kctl-node-t-ssh-hosts"]);
    assert!(restart.status.success(), "{restart:?}");
    common::wait_for(Duration::from_secs(60), "a renewed certificate", || {
        let cert = hosts.run_in_stdout(1, &["cat", &format!("{tls}/node.crt")]);
        let days = kctl::pki::days_left(&cert, time::OffsetDateTime::now_utc())?;
        (days > 300).then_some(())
    });

    let minions = cluster.kctl(&["get", "minions", "-o", "json"]);
    assert!(minions.ok(), "{minions:?}");
    let ready: Vec<_> = minions.json()["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["status"] == "Ready")
        .map(|m| m["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(ready.len(), 2, "{minions:?}");

    cluster.load_demo_image("tutum/tomcat:latest");
    let run = cluster.kctl(&[
        "apply",
        "-f",
        &manifest("tomcat-service.json"),
        "-f",
        &manifest("tomcat-controller.json"),
    ]);
    assert!(run.ok(), "{run:?}");
    let pods = cluster.pods();
    assert_eq!(pods.len(), 2, "{pods:?}");
    let on: BTreeSet<&str> = pods
        .iter()
        .map(|p| p["currentState"]["host"].as_str().unwrap())
        .collect();
    assert_eq!(on.len(), 2, "one pod on each host: {pods:?}");
    assert!(pods
        .iter()
        .all(|p| p["currentState"]["status"] == "Running"));

    // From a pod on each host, the portal reaches both pods (one on the
    // other host), and the pod's own hairpin works.
    let services = cluster.kctl(&["get", "services", "tomcat", "-o", "json"]);
    assert!(services.ok(), "{services:?}");
    let portal = services.json()["portalIP"].as_str().unwrap().to_string();
    let ids: BTreeSet<String> = pods
        .iter()
        .map(|p| p["id"].as_str().unwrap().to_string())
        .collect();
    for p in &pods {
        let host = p["currentState"]["host"].as_str().unwrap();
        let index: usize = host.trim_start_matches("minion-").parse().unwrap();
        let container = format!("{}_tomcat", p["id"].as_str().unwrap());
        let seen = portal_answers(&hosts, index - 1, &container, &portal);
        assert_eq!(seen, ids, "answers through the portal from {container}");
    }

    // Yet a pod reaches no control-plane port on any address of either
    // machine, IPv4 or IPv6 (Docker 20.10 gives pods a link-local
    // address): not the hosts' sshd on every address (their pod bridges',
    // Docker's), not etcd.
    let machines = hosts.fence_machines(2, |_| true);
    let mut tried_v6 = 0;
    for p in &pods {
        let index = common::minion_of(p);
        let container = format!("{}_tomcat", p["id"].as_str().unwrap());
        // A pod just started may still be checking its link-local address
        // is unique (tentative: unusable for a second or two). Some runs
        // Docker gives the pods no IPv6 address at all (not explained yet;
        // what the pod and its host say is printed): then nothing is
        // reachable over IPv6 from it, and only IPv4 is tried.
        let deadline = Instant::now() + Duration::from_secs(10);
        let has_v6 = loop {
            let table = hosts.in_container(index - 1, &container, "cat /proc/net/if_inet6");
            if common::fence::has_usable_link_local(&table) {
                break true;
            }
            if Instant::now() > deadline {
                let pod = hosts.in_container(
                    index - 1,
                    &container,
                    "cat /proc/sys/net/ipv6/conf/all/disable_ipv6 /proc/sys/net/ipv6/conf/eth0/disable_ipv6; ip -6 addr 2>&1",
                );
                let host = hosts.sh(
                    index - 1,
                    "sysctl net.ipv6.conf.all.disable_ipv6 net.ipv6.conf.default.disable_ipv6; ip -6 addr show dev kctl0",
                );
                eprintln!(
                    "{container} has no usable IPv6 link-local address:\n{table}\npod: {pod}\nhost: {host}"
                );
                break false;
            }
            std::thread::sleep(Duration::from_millis(200));
        };
        let checked = common::fence::assert_pod_fenced(
            &machines,
            &|script: &str| hosts.sh_stdout(index - 1, script),
            &|script: &str| hosts.in_container(index - 1, &container, script),
            &container,
        );
        let vm = |n: usize| hosts.hosts()[n].ip;
        for want in [
            format!("vm1 {}:22", vm(0)),
            format!("vm2 {}:22", vm(1)),
            format!("vm1 {}:4001", vm(0)),
        ] {
            assert!(checked.contains(&want), "{want} not among {checked:?}");
        }
        // The host's own link-local address on the pod bridge, over IPv6.
        if has_v6 {
            assert!(
                checked
                    .iter()
                    .any(|t| t.starts_with(&format!("vm{index} fe80:")) && t.ends_with("%eth0:22")),
                "no IPv6 target on vm{index} among {checked:?}"
            );
            tried_v6 += 1;
        }
    }
    if tried_v6 == 0 {
        eprintln!("no pod had an IPv6 address: the fence was tried over IPv4 only");
    }
    drop(machines);

    // Leaving the cluster (here: to this machine's address on the hosts'
    // bridge), a pod borrows its host's address; the answer finds its way
    // back.
    let listener = std::net::TcpListener::bind((hosts.bridge_ip(), 0)).unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = std::thread::spawn(move || {
        use std::io::{Read, Write};
        let (mut conn, peer) = listener.accept().unwrap();
        let mut buf = [0u8; 1024];
        let _ = conn.read(&mut buf);
        let _ = conn.write_all(b"HTTP/1.0 200 OK\r\n\r\noutside\n");
        peer.ip()
    });
    let pod = &pods[0];
    let index: usize = pod["currentState"]["host"]
        .as_str()
        .unwrap()
        .trim_start_matches("minion-")
        .parse()
        .unwrap();
    let container = format!("{}_tomcat", pod["id"].as_str().unwrap());
    let url = format!("http://{}:{port}/", hosts.bridge_ip());
    let out = hosts.run_in(
        index - 1,
        &["docker", "exec", &container, "wget", "-q", "-O", "-", &url],
    );
    assert!(out.status.success(), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "outside");
    assert_eq!(
        server.join().unwrap(),
        std::net::IpAddr::V4(hosts.hosts()[index - 1].ip),
        "masqueraded to the host's address"
    );

    // A reboot of vm1 (power cut, then a boot with the same disk), which
    // runs etcd and a pod, wipes kctl's nftables table, its iptables
    // chains and jumps and the routes to the other host's pods. The helper
    // puts them back when systemd starts it, etcd's guard too, with no
    // kctl command run: the portal answers again, and etcd refuses hosts
    // that are not minions (this machine, on the hosts' bridge).
    let vm2_pods = cluster.record()["minions"][1]["podCidr"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(!hosts
        .run_in_stdout(0, &["ip", "route", "show", &vm2_pods])
        .trim()
        .is_empty());
    hosts.kill_vm(0);
    // While it is off, vm2 meets silence there, not a refusal.
    let silent = hosts.run_in(
        1,
        &[
            "timeout",
            "3",
            "bash",
            "-c",
            &format!("</dev/tcp/{}/22", hosts.hosts()[0].ip),
        ],
    );
    assert_eq!(silent.status.code(), Some(124), "{silent:?}");
    hosts.boot_vm(0);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let table = hosts.run_in(0, &["nft", "list", "table", "ip", "kctl"]);
        let guard = hosts.run_in(
            0,
            &["iptables", "--check", "DOCKER-USER", "--jump", "KCTL-GUARD"],
        );
        let etcd_guard = hosts.run_in(0, &["iptables", "--check", "INPUT", "--jump", "KCTL-ETCD"]);
        let route = hosts.run_in_stdout(0, &["ip", "route", "show", &vm2_pods]);
        if table.status.success()
            && guard.status.success()
            && etcd_guard.status.success()
            && !route.trim().is_empty()
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "rules not restored after the reboot: {table:?} {guard:?} {etcd_guard:?} route {route:?}"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    // The helper did it, at its start: nobody else ran.
    let log = hosts.run_in_stdout(0, &["journalctl", "-b", "-u", "kctl-node-t-ssh-hosts"]);
    assert!(
        log.contains("restored the minion's routes and rules"),
        "{log}"
    );
    // etcd listens (a minion gets in), so a refusal from here is the guard's.
    let etcd_addr = std::net::SocketAddr::from((hosts.hosts()[0].ip, 4001));
    let deadline = Instant::now() + Duration::from_secs(30);
    while !hosts
        .run_in(
            1,
            &[
                "timeout",
                "3",
                "bash",
                "-c",
                &format!("</dev/tcp/{}/4001", etcd_addr.ip()),
            ],
        )
        .status
        .success()
    {
        assert!(
            Instant::now() < deadline,
            "etcd on vm1 never answered vm2: vm1 {}\nvm2 {}",
            hosts.sh(0, "ss -ltn; iptables -S KCTL-ETCD; ip -br addr"),
            hosts.sh(1, "ip neigh; ip -br addr")
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    let from_here = std::net::TcpStream::connect_timeout(&etcd_addr, Duration::from_secs(3));
    assert!(
        matches!(&from_here, Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused),
        "etcd from a host that is no minion: {from_here:?}"
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    let pods = loop {
        let run = cluster.kctl(&["get", "pods", "-o", "json"]);
        if run.ok() {
            let pods = run.json()["items"].as_array().unwrap().clone();
            if pods.len() == 2
                && pods
                    .iter()
                    .all(|p| p["currentState"]["status"] == "Running")
            {
                break pods;
            }
        }
        assert!(Instant::now() < deadline, "pods after the reboot: {run:?}");
        std::thread::sleep(Duration::from_millis(500));
    };
    // (A power cut longer than the heartbeat lease moves vm1's pod: the
    // ids are those after it.)
    let ids: BTreeSet<String> = pods
        .iter()
        .map(|p| p["id"].as_str().unwrap().to_string())
        .collect();
    for p in &pods {
        let host = p["currentState"]["host"].as_str().unwrap();
        let index: usize = host.trim_start_matches("minion-").parse().unwrap();
        let container = format!("{}_tomcat", p["id"].as_str().unwrap());
        // The endpoints follow the restarted pods within a few rounds
        // (until then a request may meet a pod that is not serving yet).
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let (seen, failed) = portal_answers_now(&hosts, index - 1, &container, &portal);
            if seen == ids && failed.is_none() {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "from {container} after the reboot the portal reaches {seen:?} ({failed:?}); endpoints {}; rules {}",
                cluster.kctl(&["get", "endpoints"]).stdout,
                hosts.sh(index - 1, "hostname; nft list table ip kctl; ip -d link show master kctl0 | grep -o 'hairpin o[nf]*'")
            );
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    // The control plane is out of the pods' reach: etcd (on vm1, port
    // 4001) and both hosts' sshd refuse a pod, though the hosts get in.
    let etcd = (hosts.hosts()[0].ip, 4001);
    let sshds: Vec<_> = hosts.hosts().iter().map(|h| (h.ip, 22)).collect();
    let ask =
        |(ip, port): (std::net::Ipv4Addr, u16)| format!("nc -w 2 {ip} {port} </dev/null 2>&1");
    for (i, _) in hosts.hosts().iter().enumerate() {
        // Each host's helper gets in with its certificate; without one,
        // etcd refuses the TLS handshake.
        let tls = format!("/var/lib/kctl/t-ssh-hosts/minion-{}/tls", i + 1);
        let url = format!("https://{}:{}/version", etcd.0, etcd.1);
        let curl = |with_certificate: bool| {
            let argv = common::etcd_curl(&tls, &url, with_certificate);
            let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
            hosts.run_in(i, &argv)
        };
        let with = curl(true);
        assert!(
            String::from_utf8_lossy(&with.stdout).contains("etcdserver"),
            "etcd from vm{}: {with:?}",
            i + 1
        );
        let without = curl(false);
        assert!(
            !without.status.success(),
            "etcd without a client certificate, from vm{}: {without:?}",
            i + 1
        );
    }
    for p in &pods {
        let host = p["currentState"]["host"].as_str().unwrap();
        let index: usize = host.trim_start_matches("minion-").parse().unwrap();
        let container = format!("{}_tomcat", p["id"].as_str().unwrap());
        for target in std::iter::once(etcd).chain(sshds.iter().copied()) {
            let out = hosts.run_in(
                index - 1,
                &["docker", "exec", &container, "sh", "-c", &ask(target)],
            );
            // etcd speaks only TLS, which busybox cannot: what shows the
            // guard is that the connection itself is refused.
            let text = String::from_utf8_lossy(&out.stdout);
            assert!(
                !text.contains("SSH-") && text.contains("refused"),
                "{container} reached {target:?}: {out:?}"
            );
        }
    }

    // The workstation's SSH connections, the tunnel to etcd among them,
    // drop in the middle of an apply: it fails with one sentence, and
    // nothing is half-done: the controller is there whole or not at all,
    // and the next apply brings exactly its pods.
    let text = web_controller("web", 4);
    let file = cluster.dir().join("web.json");
    std::fs::write(&file, &text).unwrap();
    let mut apply = cluster
        .command(&["apply", "-f", file.to_str().unwrap()])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = apply.stdout.take().unwrap();
    let mut lines = std::io::BufRead::lines(std::io::BufReader::new(stdout));
    assert!(
        lines.any(|l| l.is_ok_and(|l| l.starts_with("Plan:"))),
        "apply ended before its plan"
    );
    let known_hosts = cluster.dir().join("known_hosts");
    let killed = std::process::Command::new("pkill")
        .args(["-KILL", "-f", &format!("^ssh .*{}", known_hosts.display())])
        .status()
        .unwrap();
    assert!(killed.success(), "no SSH master to kill");
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut apply.stderr.take().unwrap(), &mut stderr).unwrap();
    let status = apply.wait().unwrap();
    for dump in ["MetadataMap", "tonic", "Status {"] {
        assert!(
            !stderr.contains(dump),
            "a raw dump, not a sentence: {stderr}"
        );
    }
    let controllers = cluster.kctl(&["get", "rc", "-o", "json"]).json();
    let web = controllers["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["id"] == "web")
        .count();
    let web_pods = || {
        cluster
            .pods()
            .iter()
            .filter(|p| p["labels"]["name"] == "web")
            .count()
    };
    assert!(
        (web == 1 && web_pods() == 4) || (web == 0 && web_pods() == 0),
        "half an apply: {web} controllers, {} pods; apply said {status:?} {stderr}",
        web_pods()
    );
    let again = cluster.kctl_stdin(&["apply", "-f", "-"], &text);
    assert!(again.ok(), "{again:?}");
    assert_eq!(web_pods(), 4);
    let deleted = cluster.kctl(&["delete", "rc", "web"]);
    assert!(deleted.ok(), "{deleted:?}");

    let run = cluster.kctl(&["down"]);
    assert!(run.ok(), "kctl down: {run:?}");
    assert!(
        run.stdout.contains("removed"),
        "down says what it removed: {run:?}"
    );
    assert!(!cluster.dir().exists());
    std::mem::forget(cluster);
    for (i, before) in before.iter().enumerate() {
        assert_eq!(
            &settled(hosts.snapshot(i)),
            before,
            "host {} is not as it was before kctl up",
            i + 1
        );
    }
    for i in 0..2 {
        let (code, _) = hosts.run_in_code(i, &["test", "-e", "/var/lib/kctl/t-ssh-hosts"]);
        assert_ne!(code, Some(0), "kctl's directory on vm{} is gone", i + 1);
    }
}

#[test]
fn bad_hosts_are_refused_before_anything_changes() {
    let hosts = DebianVms::create("ssh2", 2);
    let cluster = cluster_on("t-ssh-bad", &hosts);
    let args = host_args(&hosts);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();

    // The first machine is fresh (no Docker, no etcd) and something
    // already listens on etcd's port there; the second has Docker with a
    // network named kctl that is not kctl's.
    let apt = hosts.sh(
        1,
        "DEBIAN_FRONTEND=noninteractive apt-get -q update >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get -q -y install --no-install-recommends docker.io iptables nftables >/dev/null && echo ok",
    );
    assert_eq!(apt.trim(), "ok", "docker.io on vm2");
    let squatter = std::process::Command::new("nsenter")
        .arg(format!("--net=/run/netns/{}", hosts.hosts()[0].netns))
        .args(["socat", "TCP-LISTEN:4001,fork,reuseaddr", "/dev/null"])
        .spawn()
        .unwrap();
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let _squatter = Kill(squatter);
    let net = hosts.run_in(1, &["docker", "network", "create", "kctl"]);
    assert!(net.status.success(), "{net:?}");
    std::thread::sleep(std::time::Duration::from_millis(300));
    let before: Vec<_> = (0..2).map(|i| hosts.snapshot(i)).collect();

    let run = cluster.kctl(&args);
    assert!(!run.ok(), "{run:?}");
    let text = flat(&run.stderr);
    assert!(
        text.contains("10.") && text.contains("port 4001 (etcd) is already in use"),
        "{run:?}"
    );
    assert!(text.contains("--install adds them"), "{run:?}");
    assert!(
        text.contains("already has a Docker network named kctl"),
        "{run:?}"
    );
    assert!(text.contains("nothing was changed"), "{run:?}");
    assert!(!cluster.dir().exists(), "no record of a cluster never made");
    for (i, before) in before.iter().enumerate() {
        assert_eq!(&hosts.snapshot(i), before, "host {} was changed", i + 1);
    }

    // A host key that is not known stops kctl unless told to accept it.
    let stranger = tempfile_home(&hosts);
    let unknown = TestCluster::adopt(
        "t-ssh-keys",
        vec![("HOME".into(), stranger.display().to_string())],
    );
    let run = unknown.kctl(&args);
    assert!(!run.ok());
    assert!(flat(&run.stderr).contains("is not known"), "{run:?}");
    assert!(
        flat(&run.stderr).contains("--accept-new-host-keys"),
        "{run:?}"
    );

    // Told to, kctl takes the keys the hosts present (and the checks pass
    // once the squatters are gone and --install may add what is missing;
    // --dry-run changes nothing).
    drop(_squatter);
    let net = hosts.run_in(1, &["docker", "network", "rm", "kctl"]);
    assert!(net.status.success(), "{net:?}");
    let mut accept = args.clone();
    accept.extend(["--accept-new-host-keys", "--install", "--dry-run"]);
    let run = unknown.kctl(&accept);
    assert!(run.ok(), "{run:?}");
    assert!(run.stdout.contains("Checks passed"), "{run:?}");
    assert!(!unknown.dir().exists(), "a dry run keeps no record");

    // A changed host key stops kctl with a clear error.
    let known = stranger.join(".ssh/known_hosts");
    let wrong = std::fs::read_to_string(hosts.user_home().join(".ssh/known_hosts"))
        .unwrap()
        .lines()
        .map(|l| {
            let ip = l.split_whitespace().next().unwrap();
            // Another valid ed25519 key: the second host's for the first.
            format!(
                "{ip} {}",
                hosts.hosts()[1 - usize::from(ip != hosts.hosts()[0].ip.to_string())].host_key
            )
        })
        .collect::<Vec<_>>()
        .join("\n");
    std::fs::write(&known, wrong + "\n").unwrap();
    let run = unknown.kctl(&args);
    assert!(!run.ok());
    assert!(flat(&run.stderr).contains("host key"), "{run:?}");
    assert!(!unknown.dir().exists());
    std::fs::remove_dir_all(&stranger).unwrap();
}

/// A $HOME with an empty known_hosts.
fn tempfile_home(hosts: &DebianVms) -> std::path::PathBuf {
    let dir = hosts.user_home().with_file_name("stranger-home");
    std::fs::create_dir_all(dir.join(".ssh")).unwrap();
    std::fs::write(dir.join(".ssh/known_hosts"), "").unwrap();
    dir
}

/// A diagnostic as one line: miette wraps long messages in a box.
fn flat(text: &str) -> String {
    text.replace('│', " ")
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

/// sshd counts a session until its channel is torn down, a moment after
/// its command ends: a burst of short commands can meet "session open
/// refused" below kctl's own bound. Here sshd allows 4 sessions, fewer
/// than kctl keeps in flight, and 40 commands at once all still run.
#[test]
fn a_burst_of_commands_survives_sshds_session_limit() {
    let hosts = DebianVms::create("sshburst", 1);
    hosts.write_file(
        0,
        "/etc/ssh/sshd_config.d/max-sessions.conf",
        b"MaxSessions 4\n",
        0o644,
    );
    // A restart, not a reload: systemctl returns once the new sshd says it
    // is ready (a reload only signals it, and it re-executes meanwhile).
    let restart = hosts.run_in(0, &["systemctl", "restart", "ssh"]);
    assert!(restart.status.success(), "{restart:?}");
    let addr = std::net::SocketAddr::from((hosts.hosts()[0].ip, 22));
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
        assert!(
            Instant::now() < deadline,
            "sshd did not come back after reload"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let target = kctl::ssh::SshTarget {
        name: "vm1".into(),
        host: hosts.hosts()[0].ip.to_string(),
        port: 22,
        user: "root".into(),
    };
    let auth = kctl::ssh::SshAuth {
        identity: Some(hosts.identity()),
        known_hosts: hosts.user_home().join(".ssh/known_hosts"),
    };
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let codes: Vec<Option<i32>> = runtime.block_on(async {
        use kctl::exec::Exec;
        let exec = kctl::ssh::SshExec::connect(&target, &auth).await.unwrap();
        let argv: Vec<String> = vec!["true".into()];
        let runs = (0..40).map(|_| exec.run(&argv, None));
        let results = futures::future::join_all(runs).await;
        exec.close().await;
        results
            .into_iter()
            .map(|r| r.unwrap_or_else(|e| panic!("{e}")).code)
            .collect()
    });
    assert!(codes.iter().all(|c| *c == Some(0)), "{codes:?}");
}

/// `--masters 3` on three hosts: an etcd member on each, meeting on their
/// cluster addresses. A host's power cut (its member and its minion gone)
/// changes nothing a user sees: commands work through the other members'
/// tunnels and its pod moves. A second member down: commands say there is
/// no quorum and name both, and the pods keep running. `up` brings the
/// stopped member back, and replaces a member whose data was wiped with a
/// new member that then votes.
#[test]
fn three_etcd_members_survive_a_lost_host_and_up_replaces_lost_data() {
    let mut hosts = DebianVms::create("ssh3", 3);
    let name = "t-ssh-masters";
    let cluster = cluster_on(name, &hosts);
    let unit = format!("kctl-etcd-{name}");
    let mut args = host_args(&hosts);
    args.extend(["--masters", "3", "--install"].map(String::from));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let run = cluster.kctl(&args);
    assert!(run.ok(), "kctl up --masters 3: {run:?}");
    assert!(
        run.stdout
            .contains("etcd of 3 members on minion-1, minion-2, minion-3"),
        "{run:?}"
    );
    for i in 0..3 {
        assert_eq!(
            hosts.run_in_stdout(i, &["systemctl", "is-active", &unit]),
            "active\n"
        );
    }
    // Peers meet on the cluster addresses, and only members reach the
    // peer port: not this machine, on the hosts' bridge.
    let peer = std::net::SocketAddr::from((hosts.hosts()[1].ip, 7001));
    let from_here = std::net::TcpStream::connect_timeout(&peer, Duration::from_secs(3));
    assert!(
        matches!(&from_here, Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused),
        "etcd's peer port from a host that is no member: {from_here:?}"
    );

    cluster.load_demo_image("tutum/tomcat:latest");
    let run = cluster.kctl_stdin(&["apply", "-f", "-"], &web_controller("web", 2));
    assert!(run.ok(), "{run:?}");

    // vm1's power is cut: its member, its minion and its SSH are gone.
    hosts.kill_vm(0);
    let running_elsewhere = |pods: &[serde_json::Value], count: usize| {
        pods.len() == count
            && pods.iter().all(|p| {
                p["currentState"]["status"] == "Running" && p["currentState"]["host"] != "minion-1"
            })
    };
    common::wait_for(Duration::from_secs(90), "the pods off minion-1", || {
        let run = cluster.kctl(&["get", "pods", "-o", "json"]);
        assert!(run.ok(), "a command with one member lost: {run:?}");
        let pods = run.json()["items"].as_array().cloned().unwrap_or_default();
        running_elsewhere(&pods, 2).then_some(())
    });
    let run = cluster.kctl(&["resize", "rc", "web", "3"]);
    assert!(run.ok(), "resize with one member lost: {run:?}");
    common::wait_for(Duration::from_secs(60), "3 pods running", || {
        running_elsewhere(&cluster.pods(), 3).then_some(())
    });

    // A second member stops: no quorum. Every command says so, names
    // both members and changes nothing; the pods keep running.
    let stop = hosts.run_in(1, &["systemctl", "stop", &unit]);
    assert!(stop.status.success(), "{stop:?}");
    let containers = |i: usize| {
        hosts
            .run_in_stdout(i, &["docker", "ps", "-q", "--filter", "name=_web"])
            .lines()
            .count()
    };
    let before = containers(1) + containers(2);
    for command in [&["get", "pods"][..], &["resize", "rc", "web", "1"]] {
        let run = cluster.kctl(command);
        assert_eq!(run.code, Some(1), "{command:?}: {run:?}");
        let text = flat(&run.stderr);
        assert!(text.contains("etcd has no quorum"), "{text}");
        assert!(text.contains("none of its 3 members serves"), "{text}");
        for member in ["minion-1", "minion-2"] {
            assert!(text.contains(&format!("{member} (")), "{member}: {text}");
        }
    }
    std::thread::sleep(Duration::from_secs(5));
    assert_eq!(containers(1) + containers(2), before, "pods without quorum");

    // `up` repairs: vm1 boots again, and the stopped member starts.
    hosts.boot_vm(0);
    let run = cluster.kctl(&["up"]);
    assert!(run.ok(), "kctl up to repair: {run:?}");
    assert_eq!(
        hosts.run_in_stdout(1, &["systemctl", "is-active", &unit]),
        "active\n"
    );
    let pods = cluster.pods();
    assert_eq!(pods.len(), 3, "{pods:?}");

    // vm3's disk loses etcd's data: `up` replaces its member.
    let wipe = format!("systemctl stop {unit} && rm -rf /var/lib/kctl/{name}/etcd/data");
    let out = hosts.run_in(2, &["sh", "-c", &wipe]);
    assert!(out.status.success(), "{out:?}");
    let run = cluster.kctl(&["up"]);
    assert!(run.ok(), "kctl up to replace a member: {run:?}");
    assert!(
        flat(&run.stderr).contains("minion-3 had lost its data: replaced by a new member"),
        "{run:?}"
    );
    let record = std::fs::read_to_string(cluster.dir().join("cluster.json")).unwrap();
    assert!(record.contains("\"joined\": true"), "{record}");
    // The new member votes: with vm1's member stopped, two of three remain.
    let stop = hosts.run_in(0, &["systemctl", "stop", &unit]);
    assert!(stop.status.success(), "{stop:?}");
    let pods = cluster.pods();
    assert_eq!(pods.len(), 3, "{pods:?}");
    let again = cluster.kctl(&["up"]);
    assert!(again.ok(), "{again:?}");

    let run = cluster.kctl(&["down"]);
    assert!(run.ok(), "{run:?}");
    for i in 0..3 {
        let after = hosts.snapshot(i);
        assert!(
            !after.units.iter().any(|u| u.contains("kctl")),
            "{:?}",
            after.units
        );
        assert!(
            !after.iptables.iter().any(|l| l.contains("KCTL")),
            "{:?}",
            after.iptables
        );
        let (code, _) = hosts.run_in_code(i, &["test", "-e", &format!("/var/lib/kctl/{name}")]);
        assert_ne!(code, Some(0), "vm{}", i + 1);
    }
}
