//! Real Debian 12 machines booted with systemd, on this machine: stand-ins
//! for GCE VMs and for "existing SSH hosts" in kctl's integration tests.
//!
//! Each VM is a network namespace with one veth on the set's bridge, and
//! systemd as PID 1 of its own PID, mount, UTS, IPC and cgroup namespaces,
//! on a copy-on-write root: overlayfs over a Debian base made once with
//! debootstrap and cached in `/var/cache/kctl-test/debian-12-<hash>` (the
//! hash covers the package list and the recipe, `vm_base.sh`). The base is
//! a minimal GCE-like image: systemd, dbus, sshd, sudo, curl, iproute2 —
//! no Docker, etcd, iptables or nftables; those come over apt.
//!
//! A set claims a free `10.X.0.0/16` (X in 200..=219) with an
//! `unreachable` route, as `hosts::PlainHosts` does with 150..=199. The
//! bridge `ktv<X>` has 10.X.0.1/24; VM N (1-based) is 10.X.0.(10+N) on
//! `eth0` in namespace `ktv-<tag>-vN`, hostname `vmN` unless named. The VMs
//! have no default route. apt in the VMs goes through a caching proxy
//! (`apt_proxy.py`) that the set runs on 10.X.0.1:3142; it forwards only to
//! Debian's mirror hosts and keeps .deb files in `/var/cache/kctl-test/apt`
//! across tests and runs.
//!
//! Per VM, in `$HOME/.kctl-test/vms-<tag>/vN/`: the overlay's `upper` and
//! `work`, `data` (bound over /var/lib/docker and /var/lib/containerd:
//! overlay2 refuses an overlayfs backing filesystem), `serial.log` (the
//! VM's /dev/console and /dev/ttyS0), `boot.log`. The VM's cgroups are
//! `kctl-tv-<tag>-vN` under every hierarchy. All mounts of a VM live in its
//! own mount namespace and vanish with it.
//!
//! A VM's root is this machine's root, fenced as systemd-nspawn fences a
//! container: /sys and /proc/sys read-only (but /proc/sys/net, which is the
//! VM's own), a /dev of its own, and a devices cgroup that lets it make
//! device nodes but open only harmless ones. A reboot or poweroff from
//! inside stops the VM (`boot_vm` starts it again). A power cut
//! (`kill_vm`) deletes the VM's namespace and link as well: peers meet
//! silence, and the next boot starts with a fresh kernel network state.
//!
//! Figures on this 2-core machine: the base takes 40-80 s to build; a set
//! of 2 VMs is booted ("running") in 0.7 s, 8 VMs in two sets at once in
//! 2 s; a VM boots again in 0.3-0.5 s; `apt-get install docker.io` through
//! the proxy takes 5-11 s.
//!
//! Written as test code, independently of kctl.

use super::sys::*;
use std::io::Write;
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const FIRST_OCTET: u8 = 200;
const LAST_OCTET: u8 = 219;
const MAX_VMS: usize = 40;
const CACHE_ROOT: &str = "/var/cache/kctl-test";
const MIRROR: &str = "http://deb.debian.org/debian";
const PROXY_PORT: u16 = 3142;
/// What the base image has (besides debootstrap's minbase): what matters of
/// a GCE Debian 12 image.
const BASE_PACKAGES: &[&str] = &[
    "systemd",
    "systemd-sysv",
    "dbus",
    "libpam-systemd",
    "openssh-server",
    "iproute2",
    "sudo",
    "ca-certificates",
    "procps",
    "curl",
    "kmod",
    "iputils-ping",
    "netbase",
    "less",
];
const BASE_SCRIPT: &str = include_str!("vm_base.sh");
const PROXY_SCRIPT: &str = include_str!("apt_proxy.py");
/// PATH and environment of commands run inside a VM.
const VM_ENV: &[&str] = &[
    "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "HOME=/root",
    "LANG=C.UTF-8",
];

/// A set of booted Debian 12 VMs that exists for the life of the value.
pub struct DebianVms {
    tag: String,
    octet: u8,
    claimed: bool,
    bridge: String,
    base: PathBuf,
    dir: PathBuf,
    vms: Vec<DebianVm>,
    running: Vec<Option<Running>>,
    proxy: Option<Child>,
}

/// One VM.
#[derive(Debug, Clone)]
pub struct DebianVm {
    /// Its hostname: "vm1", "vm2", ... unless named.
    pub name: String,
    /// The network namespace, `/run/netns/<netns>`.
    pub netns: String,
    pub ip: Ipv4Addr,
    /// The public host key, "ssh-ed25519 AAAA...".
    pub host_key: String,
    /// Its directory on this machine (disk, serial log).
    pub dir: PathBuf,
}

/// A booted VM: `unshare` (our child, in the host's PID namespace) and the
/// VM's PID 1 (systemd) as seen from here.
struct Running {
    unshare: Child,
    pid1: u32,
}

impl DebianVms {
    /// Boots `count` VMs named vm1, vm2, ...; see `create_named`.
    pub fn create(tag: &str, count: usize) -> DebianVms {
        let names: Vec<String> = (1..=count).map(|n| format!("vm{n}")).collect();
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        DebianVms::create_named(tag, &names)
    }

    /// Boots one VM per name (its hostname, also in every VM's /etc/hosts,
    /// as GCE's internal DNS would answer). Panics (after cleaning up what
    /// it made) on failure. `tag` names the set (1 to 16 of a-z, 0-9, '-')
    /// and must be unique among tests running at once; whatever an aborted
    /// earlier run with the same tag left is removed first. The first call
    /// on a machine builds the base image (about a minute).
    pub fn create_named(tag: &str, names: &[&str]) -> DebianVms {
        assert!(
            !tag.is_empty()
                && tag.len() <= 16
                && tag
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'),
            "DebianVms tag {tag:?}: use 1 to 16 of a-z, 0-9, '-'"
        );
        assert!(
            (1..=MAX_VMS).contains(&names.len()),
            "DebianVms: 1 to {MAX_VMS} VMs"
        );
        for name in names {
            assert!(
                !name.is_empty()
                    && name.len() <= 63
                    && name
                        .chars()
                        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'),
                "DebianVms: VM name {name:?} is not a hostname"
            );
        }
        let dir = test_home().join(format!("vms-{tag}"));
        let old_octet = std::fs::read_to_string(dir.join("octet"))
            .ok()
            .and_then(|s| s.trim().parse::<u8>().ok());
        teardown(tag, &dir, old_octet, Vec::new());

        let base = match ensure_base() {
            Ok(base) => base,
            Err(e) => panic!("DebianVms: base image: {e}"),
        };
        let mut set = DebianVms {
            tag: tag.to_string(),
            octet: 0,
            claimed: false,
            bridge: String::new(),
            base,
            dir,
            vms: Vec::new(),
            running: Vec::new(),
            proxy: None,
        };
        if let Err(e) = set.build(names) {
            let logs = set.log_tails();
            drop(set);
            panic!("DebianVms::create({tag:?}, {names:?}) failed: {e}\n{logs}");
        }
        set
    }

    pub fn hosts(&self) -> &[DebianVm] {
        &self.vms
    }

    pub fn tag(&self) -> &str {
        &self.tag
    }

    /// The X of the claimed 10.X.0.0/16.
    pub fn octet(&self) -> u8 {
        self.octet
    }

    /// The /16 this set claimed, e.g. "10.200.0.0/16".
    pub fn cidr(&self) -> String {
        format!("10.{}.0.0/16", self.octet)
    }

    /// The bridge on this machine, e.g. "ktv200".
    pub fn bridge(&self) -> &str {
        &self.bridge
    }

    /// This machine's address on the bridge, 10.X.0.1 (the apt proxy's).
    pub fn bridge_ip(&self) -> Ipv4Addr {
        Ipv4Addr::new(10, self.octet, 0, 1)
    }

    /// The apt proxy's URL as the VMs use it.
    pub fn apt_proxy(&self) -> String {
        format!("http://{}:{PROXY_PORT}/", self.bridge_ip())
    }

    /// A pod range inside the claimed /16: "10.X.128.0/17".
    pub fn pod_net(&self) -> String {
        format!("10.{}.128.0/17", self.octet)
    }

    /// A portal range inside the claimed /16: "10.X.64.0/18".
    pub fn portal_net(&self) -> String {
        format!("10.{}.64.0/18", self.octet)
    }

    /// The base image the VMs' roots are layered on.
    pub fn base(&self) -> &Path {
        &self.base
    }

    /// The set's directory, `$HOME/.kctl-test/vms-<tag>`.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The user's SSH identity (private key) whose public key every VM
    /// authorizes for root: `user_home()/.ssh/id_ed25519`.
    pub fn identity(&self) -> PathBuf {
        self.user_home().join(".ssh").join("id_ed25519")
    }

    /// A directory to use as $HOME for kctl processes: `.ssh/known_hosts`
    /// has every VM's key ("IP ssh-ed25519 ...", also by name), and the
    /// identity is `.ssh/id_ed25519`.
    pub fn user_home(&self) -> PathBuf {
        self.dir.join("home")
    }

    /// The cgroup name of VM `i` (a directory of that name under every
    /// hierarchy in /sys/fs/cgroup).
    pub fn cgroup(&self, i: usize) -> String {
        cgroup_name(&self.tag, i + 1)
    }

    /// The VM's PID 1 (systemd) as seen from this machine, while it runs.
    pub fn pid1(&self, i: usize) -> Option<u32> {
        let running = self.running[i].as_ref()?;
        // Still unshare's live child (not a number since reused).
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", running.pid1)).ok()?;
        let mut fields = stat.rsplit_once(')')?.1.split_whitespace();
        let state = fields.next()?;
        let ppid: u32 = fields.next()?.parse().ok()?;
        (state != "Z" && ppid == running.unshare.id()).then_some(running.pid1)
    }

    /// What the VM wrote to its serial port (/dev/ttyS0, /dev/console),
    /// as GCE's `get-serial-port-output` shows it.
    pub fn serial_console(&self, i: usize) -> String {
        std::fs::read_to_string(self.vms[i].dir.join("serial.log")).unwrap_or_default()
    }

    /// The apt proxy's request log: "HIT|MISS|PASS|DENY|FAIL STATUS URL"
    /// lines, for this set only.
    pub fn proxy_log(&self) -> String {
        std::fs::read_to_string(self.dir.join("apt-proxy.log")).unwrap_or_default()
    }

    /// An `ssh` command that logs in to VM `i` as root with the set's
    /// identity and strict host key checking, followed by `remote`.
    pub fn ssh_command(&self, i: usize, remote: &str) -> Command {
        self.ssh_command_as(i, "root", &self.identity(), remote)
    }

    /// Like `ssh_command`, as `user` with the private key `identity`.
    pub fn ssh_command_as(&self, i: usize, user: &str, identity: &Path, remote: &str) -> Command {
        let mut cmd = Command::new("ssh");
        cmd.arg("-F")
            .arg("/dev/null")
            .arg("-i")
            .arg(identity)
            .arg("-o")
            .arg(format!(
                "UserKnownHostsFile={}",
                self.user_home().join(".ssh/known_hosts").display()
            ))
            .args([
                "-o",
                "StrictHostKeyChecking=yes",
                "-o",
                "BatchMode=yes",
                "-o",
                "IdentitiesOnly=yes",
                "-o",
                "ConnectTimeout=10",
            ])
            .arg(format!("{user}@{}", self.vms[i].ip))
            .arg(remote)
            .stdin(Stdio::null());
        cmd
    }

    /// The command that runs `argv` inside VM `i`: all its namespaces, its
    /// root, a clean environment (PATH, HOME=/root, LANG=C.UTF-8). Panics
    /// if the VM is not running.
    pub fn command_in(&self, i: usize, argv: &[&str]) -> Command {
        let pid1 = self
            .pid1(i)
            .unwrap_or_else(|| panic!("VM {} is not running", self.vms[i].name));
        let mut cmd = Command::new("nsenter");
        cmd.arg("-t")
            .arg(pid1.to_string())
            .args(["-a", "-r", "-w", "--", "env", "-i"])
            .args(VM_ENV)
            .args(argv)
            .env_clear()
            .stdin(Stdio::null());
        cmd
    }

    /// Runs `argv` inside VM `i` (see `command_in`). Panics only if it
    /// cannot be started; the exit status is in the result.
    pub fn run_in(&self, i: usize, argv: &[&str]) -> Output {
        self.command_in(i, argv)
            .output()
            .unwrap_or_else(|e| panic!("run {argv:?} in {}: {e}", self.vms[i].name))
    }

    /// Like `run_in`, with `input` on stdin.
    pub fn run_in_input(&self, i: usize, argv: &[&str], input: &[u8]) -> Output {
        let mut child = self
            .command_in(i, argv)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("run {argv:?} in {}: {e}", self.vms[i].name));
        let mut stdin = child.stdin.take().unwrap();
        let input = input.to_vec();
        let writer = std::thread::spawn(move || {
            let _ = stdin.write_all(&input);
        });
        let out = child.wait_with_output().unwrap();
        let _ = writer.join();
        out
    }

    /// Like `run_in`, returning stdout only (whatever the exit code).
    pub fn run_in_stdout(&self, i: usize, argv: &[&str]) -> String {
        String::from_utf8_lossy(&self.run_in(i, argv).stdout).into_owned()
    }

    /// Like `run_in`, returning the exit code (None if killed by a signal)
    /// and stdout.
    pub fn run_in_code(&self, i: usize, argv: &[&str]) -> (Option<i32>, String) {
        let out = self.run_in(i, argv);
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    }

    /// Stdout of `script` run by `sh` as root in VM `i`, whatever its exit.
    pub fn sh_stdout(&self, i: usize, script: &str) -> String {
        self.run_in_stdout(i, &["sh", "-c", script])
    }

    /// Stdout of `script` run by `sh` in Docker container `container` of
    /// VM `i`, whatever its exit.
    pub fn in_container(&self, i: usize, container: &str, script: &str) -> String {
        self.run_in_stdout(i, &["docker", "exec", container, "sh", "-c", script])
    }

    /// VMs `0..count` as the fence check sees them; `runs_pods` tells a
    /// minion from a machine without pods.
    pub fn fence_machines(
        &self,
        count: usize,
        runs_pods: impl Fn(usize) -> bool,
    ) -> Vec<super::fence::Machine<'_>> {
        (0..count)
            .map(|i| super::fence::Machine {
                name: self.vms[i].name.clone(),
                shell: Box::new(move |script: &str| self.sh_stdout(i, script)),
                runs_pods: runs_pods(i),
            })
            .collect()
    }

    /// Runs a shell script inside VM `i` as root; panics with its output
    /// unless it exits 0. Returns stdout.
    pub fn sh(&self, i: usize, script: &str) -> String {
        let out = self.run_in(i, &["/bin/sh", "-ec", script]);
        assert!(
            out.status.success(),
            "in {}: {script}\nexit {:?}\n--- stdout\n{}\n--- stderr\n{}",
            self.vms[i].name,
            out.status.code(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Writes `contents` to `path` inside VM `i` (owned by root, `mode`).
    pub fn write_file(&self, i: usize, path: &str, contents: &[u8], mode: u32) {
        let script = format!(
            "mkdir -p \"$(dirname \"$1\")\" && cat >\"$1.kctl-tmp\" && chmod {mode:o} \"$1.kctl-tmp\" && mv \"$1.kctl-tmp\" \"$1\""
        );
        let out = self.run_in_input(i, &["/bin/sh", "-c", &script, "sh", path], contents);
        assert!(
            out.status.success(),
            "write {path} in {}: {}",
            self.vms[i].name,
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Delivers `script` as the VM's startup script (GCE: instance metadata
    /// `startup-script`) and runs it as GCE's guest environment does:
    /// `google-startup-scripts.service`, a oneshot running it as root after
    /// the network is up, its output to the journal and, line by line, to
    /// the serial console. Returns when it has finished. It also runs at
    /// every later boot, as on GCE.
    pub fn run_startup_script(&self, i: usize, script: &str) -> Output {
        self.deliver_startup_script(i, script);
        self.run_in(
            i,
            &["systemctl", "restart", "google-startup-scripts.service"],
        )
    }

    /// Delivers `script` and starts it as `run_startup_script` does, without
    /// waiting for it (as on GCE, where the script runs while the VM is
    /// already up). `startup_script_done` tells when it has finished.
    pub fn start_startup_script(&self, i: usize, script: &str) {
        self.deliver_startup_script(i, script);
        self.sh(
            i,
            "systemctl restart --no-block google-startup-scripts.service",
        );
    }

    /// Whether the startup script's last run has finished (the unit is no
    /// longer activating).
    pub fn startup_script_done(&self, i: usize) -> bool {
        let state = self.run_in_stdout(
            i,
            &[
                "systemctl",
                "show",
                "-P",
                "ActiveState",
                "google-startup-scripts.service",
            ],
        );
        let state = state.trim();
        state == "inactive" || state == "failed"
    }

    /// Delivers the startup script without running it now (it runs at the
    /// next boot, or with `systemctl start google-startup-scripts`).
    pub fn deliver_startup_script(&self, i: usize, script: &str) {
        self.write_file(
            i,
            "/var/lib/google/startup-script",
            script.as_bytes(),
            0o700,
        );
    }

    /// What GCE's guest agent does with an `ssh-keys` metadata entry: makes
    /// `user` (if missing) in VM `i`, with `public_key` authorized and
    /// passwordless sudo (group google-sudoers).
    pub fn add_guest_user(&self, i: usize, user: &str, public_key: &str) {
        let script = "user=$1; key=$2
            id \"$user\" >/dev/null 2>&1 || useradd -m -s /bin/bash \"$user\"
            for g in adm dip plugdev video docker google-sudoers; do
              getent group $g >/dev/null && usermod -aG $g \"$user\"
            done
            home=$(getent passwd \"$user\" | cut -d: -f6)
            install -d -m 0700 -o \"$user\" -g \"$user\" \"$home/.ssh\"
            printf '%s\\n' \"$key\" >>\"$home/.ssh/authorized_keys\"
            chown \"$user:$user\" \"$home/.ssh/authorized_keys\"
            chmod 0600 \"$home/.ssh/authorized_keys\"";
        let out = self.run_in(
            i,
            &["/bin/sh", "-ec", script, "sh", user, public_key.trim()],
        );
        assert!(
            out.status.success(),
            "add guest user {user} in {}: {}",
            self.vms[i].name,
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Lets `user` log in to every VM of the set with `public_key`; the
    /// account is made (without sudo) where it is missing.
    pub fn authorize(&self, user: &str, public_key: &str) {
        let script = "user=$1; key=$2
            id \"$user\" >/dev/null 2>&1 || useradd -m -s /bin/bash \"$user\"
            home=$(getent passwd \"$user\" | cut -d: -f6)
            group=$(id -gn \"$user\")
            install -d -m 0700 -o \"$user\" -g \"$group\" \"$home/.ssh\"
            printf '%s\\n' \"$key\" >>\"$home/.ssh/authorized_keys\"
            chown \"$user:$group\" \"$home/.ssh/authorized_keys\"
            chmod 0600 \"$home/.ssh/authorized_keys\"";
        for i in 0..self.vms.len() {
            let out = self.run_in(
                i,
                &["/bin/sh", "-ec", script, "sh", user, public_key.trim()],
            );
            assert!(
                out.status.success(),
                "authorize {user} in {}: {}",
                self.vms[i].name,
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }

    /// Lets VM `i` read and write block device `major:minor` (what a disk
    /// attached to a GCE instance is to its guest): allowed in the VM's
    /// devices cgroup and every cgroup the VM made below it (a child's
    /// list is copied at its creation, so dockerd's needs it too).
    pub fn allow_block_device(&self, i: usize, major: u32, minor: u32) {
        let rule = format!("b {major}:{minor} rwm");
        for (hierarchy, _, _) in cgroup_hierarchies() {
            let top = Path::new(&hierarchy).join(self.cgroup(i));
            if !top.join("devices.allow").exists() {
                continue;
            }
            // Parents before children: a child may not allow more.
            let mut queue = vec![top];
            while let Some(dir) = queue.pop() {
                let _ = std::fs::write(dir.join("devices.allow"), &rule);
                if let Ok(entries) = std::fs::read_dir(&dir) {
                    for entry in entries.flatten() {
                        if entry.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                            queue.insert(0, entry.path());
                        }
                    }
                }
            }
        }
    }

    /// Power cut: kills VM `i`'s PID 1, and with it every process of the
    /// VM, and takes its network away (link, rules, routes, sysctls). Its
    /// disk (overlay upper, data) stays; /run and /tmp are lost.
    pub fn kill_vm(&mut self, i: usize) {
        if let Some(mut running) = self.running[i].take() {
            // unshare reaps PID 1 and exits; killing unshare first would
            // leave PID 1 a zombie of this machine's PID 1. Once unshare has
            // exited, PID 1 is reaped and its number may be another's.
            if running.unshare.try_wait().ok().flatten().is_none() {
                signal(running.pid1, "KILL");
                if !wait_until(Duration::from_secs(10), || {
                    running.unshare.try_wait().ok().flatten().is_some()
                }) {
                    let _ = running.unshare.kill();
                }
            }
            let _ = running.unshare.wait();
        }
        let cg = self.cgroup(i);
        for pid in cgroup_pids(&cg) {
            signal(pid, "KILL");
        }
        wait_until(Duration::from_secs(10), || cgroup_pids(&cg).is_empty());
        remove_cgroups_settled(&cg);
        // Its network goes with it, as a machine's kernel state does: the
        // link (peers now meet silence, not a refusal), and every rule,
        // route and sysctl; the next boot starts from none of them.
        quiet(&["ip", "link", "delete", &self.veth(i + 1)]);
        quiet(&["ip", "netns", "delete", &self.vms[i].netns]);
    }

    /// Boots VM `i` again (after `kill_vm`, or after it shut itself down:
    /// a reboot or poweroff from inside stops it) with the same disk;
    /// returns once its sshd answers. Nothing if it runs.
    pub fn boot_vm(&mut self, i: usize) {
        if self.is_running(i) {
            return;
        }
        self.kill_vm(i);
        let result = self
            .start(i)
            .and_then(|()| self.wait_ssh(i, Duration::from_secs(60)));
        if let Err(e) = result {
            panic!("boot {}: {e}\n{}", self.vms[i].name, self.log_tails());
        }
    }

    /// Whether VM `i`'s PID 1 runs.
    pub fn is_running(&self, i: usize) -> bool {
        self.pid1(i).is_some()
    }

    /// Waits for the end of VM `i`'s boot (`systemctl is-system-running
    /// --wait`) and returns its state: "running", "degraded", ...
    pub fn wait_booted(&self, i: usize, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        let secs = timeout.as_secs().max(1).to_string();
        loop {
            let state = self
                .run_in_stdout(
                    i,
                    &["timeout", &secs, "systemctl", "is-system-running", "--wait"],
                )
                .trim()
                .to_string();
            if !state.is_empty() && state != "initializing" && state != "starting"
                || Instant::now() >= deadline
            {
                return state;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Everything about VM `i` that kctl might change, normalised, once it
    /// has settled.
    pub fn snapshot(&self, i: usize) -> HostSnapshot {
        settled_snapshot(|| self.snapshot_once(i))
    }

    /// One read of `snapshot`: a host's state plus its systemd units.
    /// Login sessions are left out: a login's user manager outlives its
    /// SSH session by seconds.
    pub fn snapshot_once(&self, i: usize) -> HostSnapshot {
        let units: Vec<String> = self
            .run_in_stdout(
                i,
                &[
                    "systemctl",
                    "list-units",
                    "--all",
                    "--plain",
                    "--no-legend",
                    "--no-pager",
                    "--state=active,failed",
                ],
            )
            .lines()
            .filter_map(|l| {
                let cols: Vec<&str> = l.split_whitespace().collect();
                Some(format!("{} {}", cols.first()?, cols.get(2)?))
            })
            .filter(|u| !is_login_session(u))
            .collect();
        let mut units = units;
        units.sort();
        let processes = self
            .process_names(i)
            .into_iter()
            .filter(|p| p != "(sd-pam)")
            .collect();
        read_snapshot(|argv| self.run_in_stdout(i, argv), processes, units)
    }

    /// Sorted, de-duplicated command names of VM `i`'s processes (all of
    /// its PID namespace, containers included), read from its own /proc.
    pub fn process_names(&self, i: usize) -> Vec<String> {
        let Some(pid1) = self.pid1(i) else {
            return Vec::new();
        };
        let proc_dir = PathBuf::from(format!("/proc/{pid1}/root/proc"));
        let Ok(entries) = std::fs::read_dir(&proc_dir) else {
            return Vec::new();
        };
        let mut names: Vec<String> = entries
            .flatten()
            .filter(|e| {
                e.file_name()
                    .to_str()
                    .is_some_and(|n| n.parse::<u32>().is_ok())
            })
            .filter_map(|e| {
                let stat = std::fs::read_to_string(e.path().join("stat")).ok()?;
                let state = stat.rsplit_once(')')?.1.trim_start().chars().next()?;
                (state != 'Z').then_some(())?;
                std::fs::read_to_string(e.path().join("comm")).ok()
            })
            .map(|c| c.trim().to_string())
            .collect();
        names.sort();
        names.dedup();
        names
    }

    // --- making the set ---------------------------------------------------

    fn build(&mut self, names: &[&str]) -> Result<(), String> {
        make_private_dir(&self.dir)?;
        self.octet = claim_range(FIRST_OCTET, LAST_OCTET)?;
        self.claimed = true;
        std::fs::write(self.dir.join("octet"), self.octet.to_string())
            .map_err(|e| format!("write octet: {e}"))?;
        let x = self.octet;
        self.bridge = format!("ktv{x}");
        let bridge = self.bridge.clone();
        quiet(&["ip", "link", "delete", &bridge]);
        run(&["ip", "link", "add", &bridge, "type", "bridge"])?;
        run(&[
            "ip",
            "addr",
            "add",
            &format!("10.{x}.0.1/24"),
            "dev",
            &bridge,
        ])?;
        run(&["ip", "link", "set", &bridge, "up"])?;
        self.start_proxy()?;

        let ssh_dir = self.user_home().join(".ssh");
        make_private_dir(&self.user_home())?;
        make_private_dir(&ssh_dir)?;
        keygen(&self.identity(), &format!("kctl-test-{}", self.tag))?;
        let identity_pub = std::fs::read_to_string(self.identity().with_extension("pub"))
            .map_err(|e| format!("read identity: {e}"))?;

        for (k, name) in names.iter().enumerate() {
            let vm = self.make_vm(k + 1, name)?;
            self.vms.push(vm);
            self.running.push(None);
        }
        let etc_hosts = self.etc_hosts();
        for k in 0..self.vms.len() {
            self.seed_disk(k, &identity_pub, &etc_hosts)?;
        }
        // Boot all, then wait for each.
        for k in 0..self.vms.len() {
            self.start(k)?;
        }
        for k in 0..self.vms.len() {
            self.wait_ssh(k, Duration::from_secs(60))?;
            let state = self.wait_booted(k, Duration::from_secs(60));
            if state != "running" && state != "degraded" {
                return Err(format!(
                    "{} did not finish booting: {state:?}",
                    self.vms[k].name
                ));
            }
        }
        let mut known = String::new();
        for vm in &self.vms {
            known.push_str(&format!("{} {}\n", vm.ip, vm.host_key));
            known.push_str(&format!("{} {}\n", vm.name, vm.host_key));
        }
        let known_hosts = ssh_dir.join("known_hosts");
        std::fs::write(&known_hosts, known).map_err(|e| format!("known_hosts: {e}"))?;
        set_mode(&known_hosts, 0o600)?;
        Ok(())
    }

    fn start_proxy(&mut self) -> Result<(), String> {
        let script = self.dir.join("apt_proxy.py");
        std::fs::write(&script, PROXY_SCRIPT).map_err(|e| format!("{script:?}: {e}"))?;
        let cache = Path::new(CACHE_ROOT).join("apt");
        std::fs::create_dir_all(&cache).map_err(|e| format!("{cache:?}: {e}"))?;
        let err = std::fs::File::create(self.dir.join("apt-proxy.err"))
            .map_err(|e| format!("apt proxy log: {e}"))?;
        let listen = SocketAddr::from((self.bridge_ip(), PROXY_PORT));
        let child = Command::new("/usr/bin/python3")
            .arg(&script)
            .arg("--listen")
            .arg(listen.to_string())
            .arg("--cache")
            .arg(&cache)
            .arg("--log")
            .arg(self.dir.join("apt-proxy.log"))
            .env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .stdin(Stdio::null())
            .stdout(err.try_clone().map_err(|e| e.to_string())?)
            .stderr(err)
            .process_group(0)
            .spawn()
            .map_err(|e| format!("start apt proxy: {e}"))?;
        self.proxy = Some(child);
        if !wait_until(Duration::from_secs(10), || {
            TcpStream::connect_timeout(&listen, Duration::from_millis(300)).is_ok()
        }) {
            return Err(format!("apt proxy not listening on {listen}"));
        }
        Ok(())
    }

    /// Namespace, link, address, host key and directories of VM `n`
    /// (1-based).
    /// VM `n`'s network as a machine's is at power-on: a namespace of its
    /// own with a fresh kernel network state (no rules, no routes but its
    /// link's, sysctls at their defaults), and its NIC `eth0` with address
    /// `ip` on the set's bridge.
    fn plug(&self, n: usize, netns: &str, ip: Ipv4Addr) -> Result<(), String> {
        let veth = self.veth(n);
        // A NIC keeps its MAC address across boots: peers' ARP caches stay
        // right.
        let mac = format!("02:6b:74:{:02x}:00:{:02x}", self.octet, n);
        run(&["ip", "netns", "add", netns])?;
        run(&[
            "ip", "link", "add", &veth, "type", "veth", "peer", "name", "eth0", "address", &mac,
            "netns", netns,
        ])?;
        run(&["ip", "link", "set", &veth, "master", &self.bridge, "up"])?;
        run(&[
            "ip",
            "-n",
            netns,
            "addr",
            "add",
            &format!("{ip}/24"),
            "dev",
            "eth0",
        ])?;
        run(&["ip", "-n", netns, "link", "set", "eth0", "up"])?;
        run(&["ip", "-n", netns, "link", "set", "lo", "up"])?;
        Ok(())
    }

    /// The host side of VM `n`'s NIC.
    fn veth(&self, n: usize) -> String {
        format!("ktv{}v{n}", self.octet)
    }

    fn make_vm(&self, n: usize, name: &str) -> Result<DebianVm, String> {
        let netns = netns_name(&self.tag, n);
        let ip = Ipv4Addr::new(10, self.octet, 0, 10 + n as u8);
        self.plug(n, &netns, ip)?;

        let dir = self.dir.join(format!("v{n}"));
        make_private_dir(&dir)?;
        for sub in ["upper", "work", "data/docker", "data/containerd"] {
            std::fs::create_dir_all(dir.join(sub)).map_err(|e| format!("{dir:?}/{sub}: {e}"))?;
        }
        std::fs::write(dir.join("serial.log"), "").map_err(|e| format!("serial log: {e}"))?;
        let key = dir.join("ssh_host_ed25519_key");
        keygen(&key, &format!("root@{name}"))?;
        let public = std::fs::read_to_string(key.with_extension("pub"))
            .map_err(|e| format!("read host key: {e}"))?;
        let host_key = public
            .split_whitespace()
            .take(2)
            .collect::<Vec<_>>()
            .join(" ");
        Ok(DebianVm {
            name: name.to_string(),
            netns,
            ip,
            host_key,
            dir,
        })
    }

    /// /etc/hosts of every VM: itself and the others by name (GCE's
    /// internal DNS answers instance names).
    fn etc_hosts(&self) -> String {
        let mut text = String::from(
            "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n\
             ff02::1\tip6-allnodes\nff02::2\tip6-allrouters\n",
        );
        for vm in &self.vms {
            text.push_str(&format!("{}\t{}\n", vm.ip, vm.name));
        }
        text
    }

    /// Files of VM `k` that differ from the base, written into its overlay
    /// upper directory before the first boot: hostname, machine id, host
    /// key, root's authorized key, /etc/hosts, apt's proxy.
    fn seed_disk(&self, k: usize, identity_pub: &str, etc_hosts: &str) -> Result<(), String> {
        let vm = &self.vms[k];
        let upper = vm.dir.join("upper");
        let key = std::fs::read(vm.dir.join("ssh_host_ed25519_key"))
            .map_err(|e| format!("host key: {e}"))?;
        let machine_id: String = {
            let bytes =
                std::fs::read("/proc/sys/kernel/random/uuid").map_err(|e| format!("uuid: {e}"))?;
            String::from_utf8_lossy(&bytes).trim().replace('-', "")
        };
        let files: Vec<(&str, Vec<u8>, u32)> = vec![
            ("etc/hostname", format!("{}\n", vm.name).into_bytes(), 0o644),
            (
                "etc/machine-id",
                format!("{machine_id}\n").into_bytes(),
                0o444,
            ),
            ("etc/hosts", etc_hosts.as_bytes().to_vec(), 0o644),
            ("etc/ssh/ssh_host_ed25519_key", key, 0o600),
            (
                "etc/ssh/ssh_host_ed25519_key.pub",
                format!("{}\n", vm.host_key).into_bytes(),
                0o644,
            ),
            (
                "etc/apt/apt.conf.d/00kctl-test-proxy",
                format!(
                    "// The test harness's caching proxy: the VMs reach nothing else.\n\
                     Acquire::http::Proxy \"{}\";\n",
                    self.apt_proxy()
                )
                .into_bytes(),
                0o644,
            ),
            (
                "root/.ssh/authorized_keys",
                identity_pub.as_bytes().to_vec(),
                0o600,
            ),
        ];
        for (rel, contents, mode) in files {
            put_in_upper(&self.base, &upper, rel, &contents, mode)?;
        }
        // /root/.ssh is new in the upper layer.
        set_mode(&upper.join("root/.ssh"), 0o700)?;
        Ok(())
    }

    /// Starts VM `i` (index) from its disk.
    fn start(&mut self, i: usize) -> Result<(), String> {
        let n = i + 1;
        let vm = self.vms[i].clone();
        if !Path::new("/run/netns").join(&vm.netns).exists() {
            self.plug(n, &vm.netns, vm.ip)?;
        }
        let cg = cgroup_name(&self.tag, n);
        make_cgroups(&cg)?;
        let stage2 = vm.dir.join("stage2.sh");
        std::fs::write(&stage2, stage2_script(&self.base, &vm))
            .map_err(|e| format!("{stage2:?}: {e}"))?;
        let boot = vm.dir.join("boot.sh");
        std::fs::write(
            &boot,
            format!(
                "#!/bin/sh\n\
                 # Boots VM {name} of test set {tag}: joins its cgroups, then\n\
                 # its network namespace and new PID, mount, UTS, IPC and\n\
                 # cgroup namespaces (tests/common/vms.rs).\n\
                 set -e\n\
                 for f in /sys/fs/cgroup/*/{cg}/cgroup.procs; do echo $$ >\"$f\"; done\n\
                 exec nsenter --net=/run/netns/{netns} unshare --pid --fork --kill-child \\\n\
                 \x20 --mount --uts --ipc --cgroup --propagation private /bin/sh {stage2}\n",
                name = vm.name,
                tag = self.tag,
                netns = vm.netns,
                stage2 = stage2.display(),
            ),
        )
        .map_err(|e| format!("{boot:?}: {e}"))?;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(vm.dir.join("boot.log"))
            .map_err(|e| format!("boot log: {e}"))?;
        let err = log.try_clone().map_err(|e| e.to_string())?;
        let mut unshare = Command::new("/bin/sh")
            .arg(&boot)
            .env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(err)
            .process_group(0)
            .spawn()
            .map_err(|e| format!("boot {}: {e}", vm.name))?;
        // PID 1 is unshare's only child; it execs systemd at the end of
        // stage 2.
        let child_pid = unshare.id();
        let mut pid1 = None;
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = unshare.try_wait() {
                return Err(format!("{} stopped while booting: {status}", vm.name));
            }
            let children =
                std::fs::read_to_string(format!("/proc/{child_pid}/task/{child_pid}/children"))
                    .unwrap_or_default();
            if let Some(pid) = children
                .split_whitespace()
                .next()
                .and_then(|p| p.parse::<u32>().ok())
            {
                if std::fs::read_to_string(format!("/proc/{pid}/comm"))
                    .is_ok_and(|c| c.trim() == "systemd")
                {
                    pid1 = Some(pid);
                    break;
                }
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let Some(pid1) = pid1 else {
            let _ = unshare.kill();
            let _ = unshare.wait();
            return Err(format!("{}: systemd did not start", vm.name));
        };
        self.running[i] = Some(Running { unshare, pid1 });
        Ok(())
    }

    fn wait_ssh(&self, i: usize, timeout: Duration) -> Result<(), String> {
        let addr = SocketAddr::from((self.vms[i].ip, 22));
        if wait_until(timeout, || {
            TcpStream::connect_timeout(&addr, Duration::from_millis(300)).is_ok()
        }) {
            Ok(())
        } else {
            Err(format!(
                "sshd of {} not listening on {addr}",
                self.vms[i].name
            ))
        }
    }

    /// The last lines of every VM's boot log and the proxy's errors.
    fn log_tails(&self) -> String {
        let mut out = String::new();
        let mut files = vec![self.dir.join("apt-proxy.err")];
        for vm in &self.vms {
            files.push(vm.dir.join("boot.log"));
            files.push(vm.dir.join("serial.log"));
        }
        for path in files {
            if let Ok(text) = std::fs::read_to_string(&path) {
                let lines: Vec<&str> = text.lines().collect();
                let tail = &lines[lines.len().saturating_sub(15)..];
                out.push_str(&format!("--- {}\n{}\n", path.display(), tail.join("\n")));
            }
        }
        out
    }
}

impl Drop for DebianVms {
    fn drop(&mut self) {
        let octet = self.claimed.then_some(self.octet);
        let (tag, dir) = (self.tag.clone(), self.dir.clone());
        let mut children: Vec<Child> = self
            .running
            .iter_mut()
            .filter_map(Option::take)
            .map(|r| r.unshare)
            .collect();
        children.extend(self.proxy.take());
        // Never panic in drop (a panic while unwinding aborts the tests).
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            teardown(&tag, &dir, octet, children)
        }));
        if result.is_err() {
            eprintln!("DebianVms {tag}: clean-up panicked; some parts may be left");
        }
    }
}

/// Removes everything of the set `tag`: every process of its VMs (by
/// cgroup, network namespace, and command line naming the set's
/// directory), the proxy, cgroups, mounts, namespaces, links, bridge,
/// claimed route and directory. Tolerates any part being missing.
fn teardown(tag: &str, dir: &Path, octet: Option<u8>, mut children: Vec<Child>) {
    let numbers = vm_numbers(tag, dir);
    let own = netns_of_pid(std::process::id());
    let namespaces: Vec<u64> = numbers
        .iter()
        .filter_map(|&n| netns_inode(&netns_name(tag, n)))
        .filter(|ns| Some(*ns) != own)
        .collect();
    let me = std::process::id();
    // Killing a VM's PID 1 kills its PID namespace; the rest are whatever
    // runs in its network namespace or cgroups from elsewhere, and the
    // proxy (its command line names the set's directory).
    for _round in 0..3 {
        let mut pids = pids_in_netns(&namespaces);
        pids.extend(pids_mentioning(&[format!("{}/", dir.display())]));
        for &n in &numbers {
            pids.extend(cgroup_pids(&cgroup_name(tag, n)));
        }
        pids.retain(|&p| p != me);
        pids.sort_unstable();
        pids.dedup();
        if pids.is_empty() {
            break;
        }
        for &pid in &pids {
            signal(pid, "KILL");
        }
        wait_until(Duration::from_secs(10), || {
            pids.iter().all(|&p| !pid_alive(p))
        });
    }
    for child in children.iter_mut() {
        let _ = child.kill();
        let _ = child.wait();
    }
    for &n in &numbers {
        remove_cgroups_settled(&cgroup_name(tag, n));
    }
    for mount in mounts_under(dir) {
        quiet(&["umount", "--lazy", &mount.display().to_string()]);
    }
    for &n in &numbers {
        if let Some(x) = octet {
            quiet(&["ip", "link", "delete", &format!("ktv{x}v{n}")]);
        }
        quiet(&["ip", "netns", "delete", &netns_name(tag, n)]);
    }
    if let Some(x) = octet {
        quiet(&["ip", "link", "delete", &format!("ktv{x}")]);
        quiet(&[
            "ip",
            "route",
            "delete",
            "unreachable",
            &format!("10.{x}.0.0/16"),
        ]);
    }
    let _ = std::fs::remove_dir_all(dir);
}

/// The numbers N of the set's VMs that may exist: namespaces
/// `ktv-<tag>-vN`, directories `vN`, cgroups `kctl-tv-<tag>-vN`.
fn vm_numbers(tag: &str, dir: &Path) -> Vec<usize> {
    let mut found: Vec<usize> = Vec::new();
    let mut scan = |path: &Path, prefix: &str| {
        if let Ok(entries) = std::fs::read_dir(path) {
            found.extend(entries.flatten().filter_map(|e| {
                e.file_name()
                    .to_str()?
                    .strip_prefix(prefix)?
                    .parse::<usize>()
                    .ok()
            }));
        }
    };
    scan(Path::new("/run/netns"), &format!("ktv-{tag}-v"));
    scan(dir, "v");
    scan(
        Path::new("/sys/fs/cgroup/systemd"),
        &format!("kctl-tv-{tag}-v"),
    );
    found.sort_unstable();
    found.dedup();
    found
}

fn netns_name(tag: &str, n: usize) -> String {
    format!("ktv-{tag}-v{n}")
}

fn cgroup_name(tag: &str, n: usize) -> String {
    format!("kctl-tv-{tag}-v{n}")
}

/// Removes the cgroups `name` (and what the VM made below them), retrying
/// while the kernel still counts exiting processes in them.
fn remove_cgroups_settled(name: &str) {
    wait_until(Duration::from_secs(10), || {
        remove_cgroups(name);
        cgroup_dirs(name).is_empty()
    });
}

/// Devices a VM may use (cgroup v1 `devices`, as systemd-nspawn allows):
/// make any node, read and write only the harmless ones and terminals —
/// not this machine's disks. Docker's defaults for containers fit in.
const VM_DEVICES: &[&str] = &[
    "c *:* m",
    "b *:* m", // mknod
    "c 1:3 rwm",
    "c 1:5 rwm",
    "c 1:7 rwm",
    "c 1:8 rwm",
    "c 1:9 rwm", // null zero full random urandom
    "c 5:0 rwm",
    "c 5:1 rwm",
    "c 5:2 rwm",
    "c 136:* rwm", // tty console ptmx pts
    "c 10:200 rwm",
    "c 10:229 rwm", // tun fuse
];

/// Makes the cgroup `name` under every hierarchy of /sys/fs/cgroup (v1
/// controllers, name=systemd, the v2 one); cpuset gets its parent's CPUs
/// and memory nodes, without which no process may join it; devices allows
/// only `VM_DEVICES`.
fn make_cgroups(name: &str) -> Result<(), String> {
    for (hierarchy, _, _) in cgroup_hierarchies() {
        let dir = Path::new(&hierarchy).join(name);
        if !dir.is_dir() {
            std::fs::create_dir(&dir).map_err(|e| format!("{dir:?}: {e}"))?;
        }
        let write = |file: &str, value: &str| {
            std::fs::write(dir.join(file), value)
                .map_err(|e| format!("{:?} <- {value:?}: {e}", dir.join(file)))
        };
        for file in ["cpuset.cpus", "cpuset.mems"] {
            let parent = Path::new(&hierarchy).join(file);
            if let Ok(value) = std::fs::read_to_string(&parent) {
                write(file, value.trim())?;
            }
        }
        if dir.join("devices.deny").exists() {
            write("devices.deny", "a")?;
            for rule in VM_DEVICES {
                write("devices.allow", rule)?;
            }
        }
    }
    Ok(())
}

/// The cgroup hierarchies mounted under /sys/fs/cgroup as (mount point,
/// filesystem type, mount options to mount it again: "cpu",
/// "none,name=systemd", ...).
fn cgroup_hierarchies() -> Vec<(String, String, String)> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    info.lines()
        .filter_map(|l| {
            let (head, tail) = l.split_once(" - ")?;
            let point = head.split(' ').nth(4)?;
            let mut t = tail.split(' ');
            let fstype = t.next()?;
            let _source = t.next()?;
            let options = t.next().unwrap_or("");
            if !point.starts_with("/sys/fs/cgroup/") || !fstype.starts_with("cgroup") {
                return None;
            }
            let mut opts: Vec<&str> = options
                .split(',')
                .filter(|o| *o != "rw" && *o != "ro")
                .collect();
            if opts.iter().any(|o| o.starts_with("name=")) && !opts.contains(&"none") {
                opts.insert(0, "none");
            }
            Some((point.to_string(), fstype.to_string(), opts.join(",")))
        })
        .collect()
}

/// Stage 2 of a boot, run as PID 1 of the VM's new namespaces: mounts the
/// root (overlay over the base), its data directory, /proc (with /proc/sys
/// read-only but for net), a read-only /sys with the VM's own cgroup
/// hierarchies, a small /dev, /run and /tmp; then pivots into the root and
/// execs systemd.
fn stage2_script(base: &Path, vm: &DebianVm) -> String {
    let v = vm.dir.display();
    let mut cgroups = String::new();
    for (point, fstype, opts) in cgroup_hierarchies() {
        let sub = point.trim_start_matches("/sys/fs/cgroup/");
        let o = if opts.is_empty() {
            String::new()
        } else {
            format!(" -o {opts}")
        };
        cgroups.push_str(&format!(
            "mkdir -p \"$R/sys/fs/cgroup/{sub}\"\nmount -t {fstype}{o} cgroup \"$R/sys/fs/cgroup/{sub}\"\n"
        ));
    }
    format!(
        r#"#!/bin/sh
# Stage 2 of booting VM {name} (tests/common/vms.rs), as PID 1 of its
# namespaces.
set -eu
V={v}
R=$V/root
mkdir -p "$R"
mount -t overlay overlay -o "lowerdir={base},upperdir=$V/upper,workdir=$V/work" "$R"
mount --bind "$V/data/docker" "$R/var/lib/docker"
mount --bind "$V/data/containerd" "$R/var/lib/containerd"
mount -t proc proc "$R/proc"
mount --bind "$R/proc/sys" "$R/proc/sys"
mount --bind "$R/proc/sys/net" "$R/proc/sys/net"
mount -o remount,bind,ro "$R/proc/sys"
if [ -e "$R/proc/sysrq-trigger" ]; then
  mount --bind "$R/proc/sysrq-trigger" "$R/proc/sysrq-trigger"
  mount -o remount,bind,ro "$R/proc/sysrq-trigger"
fi
mount -t sysfs -o ro sysfs "$R/sys"
mount -t tmpfs -o mode=755 cgroup "$R/sys/fs/cgroup"
{cgroups}mount -o remount,ro,bind "$R/sys/fs/cgroup"
mount -t tmpfs -o mode=755,size=16m dev "$R/dev"
for d in null zero full random urandom tty; do
  touch "$R/dev/$d"
  mount --bind "/dev/$d" "$R/dev/$d"
done
mkdir "$R/dev/pts" "$R/dev/shm" "$R/dev/mqueue"
mount -t devpts -o newinstance,ptmxmode=0666,mode=620,gid=5 devpts "$R/dev/pts"
mount -t mqueue mqueue "$R/dev/mqueue"
mount -t tmpfs -o mode=1777 shm "$R/dev/shm"
ln -s pts/ptmx "$R/dev/ptmx"
ln -s /proc/self/fd "$R/dev/fd"
ln -s /proc/self/fd/0 "$R/dev/stdin"
ln -s /proc/self/fd/1 "$R/dev/stdout"
ln -s /proc/self/fd/2 "$R/dev/stderr"
touch "$R/dev/console" "$R/dev/ttyS0"
mount --bind "$V/serial.log" "$R/dev/console"
mount --bind "$V/serial.log" "$R/dev/ttyS0"
mount -t tmpfs -o mode=755 run "$R/run"
mount -t tmpfs -o mode=1777 tmp "$R/tmp"
hostname {name}
mkdir "$R/run/host-root"
cd "$R"
pivot_root . run/host-root
cd /
umount -l /run/host-root
rmdir /run/host-root
exec env -i container=kctl-test-vm /lib/systemd/systemd --system </dev/null >>/dev/console 2>&1
"#,
        name = vm.name,
        base = base.display(),
    )
}

/// Writes `rel` into an overlay upper directory (not mounted), making
/// missing parent directories with the base's modes and owners.
fn put_in_upper(
    base: &Path,
    upper: &Path,
    rel: &str,
    contents: &[u8],
    mode: u32,
) -> Result<(), String> {
    let path = upper.join(rel);
    let mut so_far = PathBuf::new();
    if let Some(parent) = Path::new(rel).parent() {
        for part in parent.components() {
            so_far.push(part);
            let dir = upper.join(&so_far);
            if dir.is_dir() {
                continue;
            }
            let (mode, uid, gid) = std::fs::metadata(base.join(&so_far))
                .map(|m| (m.mode() & 0o7777, m.uid(), m.gid()))
                .unwrap_or((0o755, 0, 0));
            std::fs::DirBuilder::new()
                .mode(mode)
                .create(&dir)
                .map_err(|e| format!("{dir:?}: {e}"))?;
            set_mode(&dir, mode)?;
            std::os::unix::fs::chown(&dir, Some(uid), Some(gid))
                .map_err(|e| format!("chown {dir:?}: {e}"))?;
        }
    }
    std::fs::write(&path, contents).map_err(|e| format!("{path:?}: {e}"))?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode))
        .map_err(|e| format!("chmod {path:?}: {e}"))
}

/// The cached base image, built first if missing (under a lock, so that
/// parallel tests wait for one build).
fn ensure_base() -> Result<PathBuf, String> {
    use sha2::{Digest, Sha256};
    let packages = BASE_PACKAGES.join(",");
    let mut hasher = Sha256::new();
    hasher.update(BASE_SCRIPT.as_bytes());
    hasher.update(b"\0");
    hasher.update(packages.as_bytes());
    hasher.update(b"\0");
    hasher.update(MIRROR.as_bytes());
    let hash: String = hasher
        .finalize()
        .iter()
        .take(6)
        .map(|b| format!("{b:02x}"))
        .collect();
    let root = Path::new(CACHE_ROOT);
    std::fs::create_dir_all(root).map_err(|e| format!("{root:?}: {e}"))?;
    let base = root.join(format!("debian-12-{hash}"));
    if base.is_dir() {
        return Ok(base);
    }
    let script = root.join(format!("debian-12-{hash}.sh"));
    std::fs::write(&script, BASE_SCRIPT).map_err(|e| format!("{script:?}: {e}"))?;
    let log_path = root.join(format!("debian-12-{hash}.log"));
    let log = std::fs::File::create(&log_path).map_err(|e| format!("{log_path:?}: {e}"))?;
    let lock = root.join(format!("debian-12-{hash}.lock"));
    let started = Instant::now();
    let status = Command::new("flock")
        .arg(&lock)
        .arg("/bin/sh")
        .arg(&script)
        .arg(&base)
        .arg(&packages)
        .arg(MIRROR)
        .env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .env("LANG", "C.UTF-8")
        .stdin(Stdio::null())
        .stdout(log.try_clone().map_err(|e| e.to_string())?)
        .stderr(log)
        .status()
        .map_err(|e| format!("run {script:?}: {e}"))?;
    if !status.success() || !base.is_dir() {
        let text = std::fs::read_to_string(&log_path).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        return Err(format!(
            "building {} failed ({status}); see {}:\n{}",
            base.display(),
            log_path.display(),
            lines[lines.len().saturating_sub(20)..].join("\n")
        ));
    }
    eprintln!(
        "DebianVms: base image {} ready after {:.0?}",
        base.display(),
        started.elapsed()
    );
    prune_old_bases(&base);
    Ok(base)
}

/// Removes base images of other recipes that no VM uses (no mount
/// namespace on the machine has them as an overlay's lower layer).
fn prune_old_bases(keep: &Path) {
    let Ok(entries) = std::fs::read_dir(CACHE_ROOT) else {
        return;
    };
    let mut in_use = String::new();
    for pid in all_pids() {
        if let Ok(text) = std::fs::read_to_string(format!("/proc/{pid}/mountinfo")) {
            in_use.extend(
                text.lines()
                    .filter(|l| l.contains("lowerdir="))
                    .map(|l| format!("{l}\n")),
            );
        }
    }
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        if path == keep
            || !name.starts_with("debian-12-")
            || !path.is_dir()
            || name.ends_with(".tmp")
            || in_use.contains(&format!("lowerdir={}", path.display()))
        {
            continue;
        }
        eprintln!(
            "DebianVms: removing the unused base image {}",
            path.display()
        );
        let _ = std::fs::remove_dir_all(&path);
        for ext in ["sh", "log", "lock"] {
            let _ = std::fs::remove_file(path.with_extension(ext));
        }
    }
}

/// Units that a login (the harness's or kctl's SSH session) brings and
/// logind takes away seconds after it ends: not the machine's state.
fn is_login_session(unit: &str) -> bool {
    let name = unit.split_whitespace().next().unwrap_or("");
    name.starts_with("user@")
        || name.starts_with("user-runtime-dir@")
        || (name.starts_with("user-") && name.ends_with(".slice"))
        || name.starts_with("run-user-")
        || name.starts_with("session-")
}
