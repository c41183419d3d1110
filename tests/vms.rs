//! The test-made Debian VMs (`common::vms`): booted with systemd, reachable
//! over SSH, apt through the harness's proxy, Docker inside, GCE's startup
//! scripts and guest users, power cuts, and nothing left after the set is
//! dropped.

mod common;

use common::vms::DebianVms;
use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

fn text(out: &Output) -> String {
    format!(
        "exit {:?}\n--- stdout\n{}\n--- stderr\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Installs `packages` in VM `i` as kctl does (update, then install without
/// recommends); returns how long it took.
fn apt_install(vms: &DebianVms, i: usize, packages: &str) -> Duration {
    let started = Instant::now();
    vms.sh(
        i,
        &format!(
            "export DEBIAN_FRONTEND=noninteractive
             apt-get update -q
             apt-get install -y -q --no-install-recommends {packages}"
        ),
    );
    started.elapsed()
}

#[test]
fn debian_vms_boot_serve_install_and_leave_nothing() {
    let started = Instant::now();
    let mut vms = DebianVms::create("vmtest", 2);
    let created = started.elapsed();
    eprintln!("create (2 VMs, base cached or built): {created:.1?}");
    assert_eq!(vms.hosts().len(), 2);

    // Booted: systemd is PID 1 and the boot finished cleanly.
    for i in 0..2 {
        let state = vms.wait_booted(i, Duration::from_secs(60));
        let failed = vms.run_in_stdout(i, &["systemctl", "--failed", "--no-legend"]);
        assert_eq!(
            state,
            "running",
            "{}: failed units:\n{failed}",
            vms.hosts()[i].name
        );
        assert_eq!(
            vms.run_in_stdout(i, &["cat", "/proc/1/comm"]).trim(),
            "systemd"
        );
        assert_eq!(
            vms.run_in_stdout(i, &["hostname"]).trim(),
            vms.hosts()[i].name
        );
        // A GCE-like image: no Docker, etcd, iptables or nftables yet.
        for missing in ["docker.io", "etcd-server", "iptables", "nftables"] {
            let (code, _) = vms.run_in_code(i, &["dpkg-query", "-W", missing]);
            assert_ne!(code, Some(0), "{missing} is in the base image");
        }
    }
    assert_ne!(vms.hosts()[0].host_key, vms.hosts()[1].host_key);
    // Root in a VM is not root of this machine: it can make device nodes
    // but not read this machine's disks, nor change its kernel settings.
    let root_dev = std::fs::metadata("/").map(|m| {
        use std::os::unix::fs::MetadataExt;
        m.dev()
    });
    let dev = root_dev.unwrap();
    let (major, minor) = ((dev >> 8) & 0xfff, (dev & 0xff) | ((dev >> 12) & 0xfff00));
    let out = vms.run_in(
        0,
        &[
            "sh",
            "-c",
            &format!("mknod /tmp/disk b {major} {minor} && head -c 1 /tmp/disk"),
        ],
    );
    assert!(
        !out.status.success(),
        "a VM reads this machine's disk: {}",
        text(&out)
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("Operation not permitted"),
        "{}",
        text(&out)
    );
    let out = vms.run_in(0, &["sysctl", "-w", "vm.swappiness=61"]);
    assert!(
        !out.status.success(),
        "a VM changes this machine's sysctls: {}",
        text(&out)
    );
    // Before any login (a login leaves user@.service running a while).
    let vm2_before = vms.snapshot(1);

    // SSH from this machine, with strict host key checking.
    for i in 0..2 {
        let out = vms.ssh_command(i, "hostname").output().unwrap();
        assert!(
            out.status.success(),
            "ssh {}: {}",
            vms.hosts()[i].name,
            text(&out)
        );
        assert_eq!(stdout(&out), vms.hosts()[i].name);
    }
    // VM 1 reaches VM 2's sshd: a key made in VM 1, authorized everywhere.
    vms.sh(0, "ssh-keygen -q -t ed25519 -N '' -f /root/.ssh/id_ed25519");
    let vm1_key = vms.run_in_stdout(0, &["cat", "/root/.ssh/id_ed25519.pub"]);
    vms.authorize("root", &vm1_key);
    let vm2 = vms.hosts()[1].clone();
    vms.write_file(
        0,
        "/root/.ssh/known_hosts",
        format!("{} {}\n", vm2.ip, vm2.host_key).as_bytes(),
        0o600,
    );
    let out = vms.run_in(
        0,
        &[
            "ssh",
            "-o",
            "BatchMode=yes",
            "-o",
            "StrictHostKeyChecking=yes",
            &format!("root@{}", vm2.ip),
            "hostname",
        ],
    );
    assert!(out.status.success(), "ssh vm1 -> vm2: {}", text(&out));
    assert_eq!(stdout(&out), vm2.name);

    // A guest user as GCE's agent makes it: key login and passwordless sudo.
    let user_key = vms.dir().join("alice_key");
    let key_path = user_key.display().to_string();
    let keygen = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f", &key_path])
        .output()
        .unwrap();
    assert!(keygen.status.success(), "{}", text(&keygen));
    let alice_pub = std::fs::read_to_string(user_key.with_extension("pub")).unwrap();
    vms.add_guest_user(1, "alice", &alice_pub);
    let out = vms
        .ssh_command_as(1, "alice", &user_key, "id -un; sudo -n id -un")
        .output()
        .unwrap();
    assert!(out.status.success(), "ssh alice: {}", text(&out));
    assert_eq!(stdout(&out), "alice\nroot");

    // apt through the harness's proxy.
    let nft_time = apt_install(&vms, 0, "nftables");
    eprintln!("apt-get update + install nftables in vm1: {nft_time:.1?}");
    assert!(vms.run_in(0, &["nft", "list", "ruleset"]).status.success());
    let nft_time2 = apt_install(&vms, 1, "nftables");
    eprintln!("the same in vm2: {nft_time2:.1?}");
    let log = vms.proxy_log();
    let nft_debs: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("/nftables_") && l.ends_with(".deb"))
        .collect();
    assert_eq!(nft_debs.len(), 2, "proxy log:\n{log}");
    assert!(
        nft_debs[1].starts_with("HIT "),
        "second download not from the cache: {nft_debs:?}"
    );
    assert!(
        !log.lines().any(|l| l.starts_with("FAIL")),
        "proxy log:\n{log}"
    );

    // The proxy is the VMs' only way out, and only to Debian's mirror.
    let routes = vms.run_in_stdout(0, &["ip", "-4", "route"]);
    assert!(!routes.contains("default"), "{routes}");
    let proxy = vms.apt_proxy();
    let denied = vms.run_in_stdout(
        0,
        &[
            "curl",
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "-x",
            &proxy,
            "http://example.com/",
        ],
    );
    assert_eq!(denied, "403");

    // Docker inside a VM: installed over apt, runs a tiny image.
    let docker_time = apt_install(&vms, 0, "docker.io");
    eprintln!("apt-get update + install docker.io in vm1: {docker_time:.1?}");
    let image = vms.dir().join("tiny.tar");
    let build = Command::new("bash")
        .arg(common::repo().join("cluster/demo-image/build.sh"))
        .arg(&image)
        .arg("kctl-test/tiny:1")
        .output()
        .unwrap();
    assert!(build.status.success(), "build image: {}", text(&build));
    vms.write_file(0, "/tmp/tiny.tar", &std::fs::read(&image).unwrap(), 0o644);
    vms.sh(0, "docker load -i /tmp/tiny.tar >/dev/null");
    let out = vms.run_in(
        0,
        &[
            "docker",
            "run",
            "--rm",
            "kctl-test/tiny:1",
            "/bin/echo",
            "hello from a container",
        ],
    );
    assert!(out.status.success(), "docker run: {}", text(&out));
    assert_eq!(stdout(&out), "hello from a container");
    let driver = vms.run_in_stdout(0, &["docker", "info", "--format", "{{.Driver}}"]);
    assert_eq!(driver.trim(), "overlay2");

    // systemd restarts a unit whose process is killed.
    vms.write_file(
        0,
        "/etc/systemd/system/kctl-test-sleeper.service",
        b"[Unit]\nDescription=restarted on failure\n\n[Service]\nExecStart=/bin/sleep infinity\nRestart=on-failure\nRestartSec=1\n",
        0o644,
    );
    vms.sh(
        0,
        "systemctl daemon-reload && systemctl start kctl-test-sleeper",
    );
    let main_pid = |vms: &DebianVms| {
        vms.run_in_stdout(
            0,
            &["systemctl", "show", "-P", "MainPID", "kctl-test-sleeper"],
        )
        .trim()
        .to_string()
    };
    let first = main_pid(&vms);
    assert_ne!(first, "0");
    vms.sh(0, &format!("kill -KILL {first}"));
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let now = main_pid(&vms);
        if now != first && now != "0" {
            break;
        }
        assert!(Instant::now() < deadline, "kctl-test-sleeper not restarted");
        std::thread::sleep(Duration::from_millis(200));
    }
    let restarts = vms.run_in_stdout(
        0,
        &["systemctl", "show", "-P", "NRestarts", "kctl-test-sleeper"],
    );
    assert_eq!(restarts.trim(), "1");

    // A startup script runs at delivery; its output is in the serial
    // console and the journal.
    let out = vms.run_startup_script(
        1,
        "#!/bin/bash\necho \"hello from the startup script on $(hostname)\"\nid -un\n",
    );
    assert!(out.status.success(), "startup script: {}", text(&out));
    let serial = vms.serial_console(1);
    assert!(
        serial.contains("startup-script: hello from the startup script on vm2"),
        "serial console:\n{serial}"
    );
    assert!(
        serial.contains("startup-script: root"),
        "serial console:\n{serial}"
    );
    assert!(
        serial.contains("startup-script exit status 0"),
        "serial console:\n{serial}"
    );
    let journal = vms.run_in_stdout(
        1,
        &[
            "journalctl",
            "-u",
            "google-startup-scripts",
            "--no-pager",
            "-o",
            "cat",
        ],
    );
    assert!(
        journal.contains("startup-script: hello from the startup script on vm2"),
        "journal:\n{journal}"
    );

    // Power cut and boot with the same disk: what was installed stays; the
    // startup script runs again at boot; the kernel's network state (a
    // route, a TCP setting) does not, as on a machine.
    let unplugged = "10.99.0.0/24";
    let bridge = vms.bridge_ip().to_string();
    for argv in [
        &["ip", "route", "add", unplugged, "via", &bridge][..],
        &["sysctl", "-qw", "net.ipv4.tcp_fin_timeout=33"][..],
    ] {
        let out = vms.run_in(1, argv);
        assert!(out.status.success(), "{argv:?}: {}", text(&out));
    }
    let old_pid1 = vms.pid1(1).unwrap();
    vms.kill_vm(1);
    assert!(!vms.is_running(1));
    assert!(
        !Path::new(&format!("/proc/{old_pid1}")).exists(),
        "the old PID 1 is still there"
    );
    let boot_started = Instant::now();
    vms.boot_vm(1);
    let boot_ssh = boot_started.elapsed();
    let state = vms.wait_booted(1, Duration::from_secs(60));
    let booted = boot_started.elapsed();
    eprintln!("boot vm2 again: sshd after {boot_ssh:.1?}, boot finished after {booted:.1?}");
    assert_eq!(state, "running");
    assert_ne!(vms.pid1(1), Some(old_pid1));
    assert_eq!(
        vms.run_in_stdout(1, &["ip", "route", "show", unplugged]),
        ""
    );
    assert_ne!(
        vms.run_in_stdout(1, &["cat", "/proc/sys/net/ipv4/tcp_fin_timeout"]),
        "33\n"
    );
    // Untouched by what happened in between but for nftables, alice, and the
    // startup script (a oneshot, inactive again): the same state.
    let vm2_after = vms.snapshot(1);
    let diff = vm2_before.diff(&vm2_after);
    assert!(diff.is_empty(), "vm2 changed:\n{diff}");
    assert!(vms.run_in(1, &["nft", "--version"]).status.success());
    let out = vms.ssh_command(1, "hostname").output().unwrap();
    assert!(out.status.success(), "ssh after reboot: {}", text(&out));
    let runs = vms
        .serial_console(1)
        .matches("startup-script: hello from the startup script on vm2")
        .count();
    assert_eq!(runs, 2, "serial console:\n{}", vms.serial_console(1));

    // A shutdown from inside stops the VM (and nothing else); it boots
    // again.
    let out = vms.run_in(1, &["systemctl", "poweroff"]);
    assert!(out.status.success(), "poweroff: {}", text(&out));
    let deadline = Instant::now() + Duration::from_secs(30);
    while vms.is_running(1) {
        assert!(Instant::now() < deadline, "vm2 still runs after poweroff");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(vms.is_running(0));
    vms.boot_vm(1);
    let out = vms.ssh_command(1, "hostname").output().unwrap();
    assert!(
        out.status.success(),
        "ssh after poweroff and boot: {}",
        text(&out)
    );

    // Drop, and nothing is left.
    let tag = vms.tag().to_string();
    let octet = vms.octet();
    let dir = vms.dir().to_path_buf();
    let bridge = vms.bridge().to_string();
    let netns: Vec<String> = vms.hosts().iter().map(|h| h.netns.clone()).collect();
    let cgroups: Vec<String> = (0..2).map(|i| vms.cgroup(i)).collect();
    let pid1s: Vec<u32> = (0..2).filter_map(|i| vms.pid1(i)).collect();
    let dropped = Instant::now();
    drop(vms);
    eprintln!("teardown: {:.1?}", dropped.elapsed());
    assert_nothing_left(&tag, octet, &dir, &bridge, &netns, &cgroups, &pid1s);
    eprintln!("test total: {:.1?}", started.elapsed());
}

fn assert_nothing_left(
    tag: &str,
    octet: u8,
    dir: &Path,
    bridge: &str,
    netns: &[String],
    cgroups: &[String],
    pid1s: &[u32],
) {
    for ns in netns {
        assert!(
            !Path::new("/run/netns").join(ns).exists(),
            "namespace {ns} left"
        );
    }
    let names = std::fs::read_dir("/run/netns")
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect::<Vec<_>>()
        })
        .unwrap_or_default();
    assert!(
        !names.iter().any(|n| n.starts_with(&format!("ktv-{tag}-"))),
        "namespaces left: {names:?}"
    );
    let links = Command::new("ip")
        .args(["-o", "link", "show"])
        .output()
        .unwrap();
    let links = String::from_utf8_lossy(&links.stdout);
    assert!(
        !links
            .lines()
            .any(|l| l.contains(&format!(" {bridge}:")) || l.contains(&format!(" {bridge}v"))),
        "links left:\n{links}"
    );
    let routes = Command::new("ip")
        .args(["-4", "route", "show", "table", "all"])
        .output()
        .unwrap();
    let routes = String::from_utf8_lossy(&routes.stdout);
    assert!(
        !routes.contains(&format!("10.{octet}.")),
        "routes left:\n{routes}"
    );
    // The VMs' mounts were in their own mount namespaces: look in every
    // process's, not only this one's.
    let dir_text = dir.display().to_string();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        if !entry
            .file_name()
            .to_string_lossy()
            .chars()
            .all(|c| c.is_ascii_digit())
        {
            continue;
        }
        let Ok(mounts) = std::fs::read_to_string(entry.path().join("mountinfo")) else {
            continue;
        };
        let left: Vec<&str> = mounts.lines().filter(|l| l.contains(&dir_text)).collect();
        assert!(
            left.is_empty(),
            "mounts left in the mount namespace of {:?}: {left:#?}",
            entry.path()
        );
    }
    for &pid in pid1s {
        let alive = std::fs::read_to_string(format!("/proc/{pid}/cmdline"))
            .is_ok_and(|c| c.contains("systemd"));
        assert!(!alive, "PID 1 of a VM ({pid}) still runs");
    }
    let leftovers = common::processes_naming(&[&format!("{dir_text}/")]);
    assert!(leftovers.is_empty(), "processes left: {leftovers:?}");
    for cg in cgroups {
        for hierarchy in std::fs::read_dir("/sys/fs/cgroup").unwrap().flatten() {
            let path = hierarchy.path().join(cg);
            assert!(!path.exists(), "cgroup {} left", path.display());
        }
    }
    assert!(!dir.exists(), "directory {} left", dir.display());
}
