//! "Existing Linux machines" for tests of `kctl up --provider ssh`: plain
//! hosts that the test makes itself, not kctl. Each host is a network
//! namespace on this machine with its own sshd and dockerd, on a bridge of
//! its own, reachable only from this machine.
//!
//! A set claims a free `10.X.0.0/16` (X in 150..=199) by adding an
//! `unreachable` route for it — `ip route add` fails when the route exists,
//! so two sets (or a set and a kctl local cluster) never share a range. The
//! bridge `kth<X>` has 10.X.0.1/24; host `hN` (N = 1, 2, ...) is
//! 10.X.0.(10+N) on `eth0` in namespace `kth-<tag>-hN`. The namespaces have
//! no default route: nothing leaves the machine.
//!
//! Files live in `$HOME/.kctl-test/hosts-<tag>/` (mode 0700; sshd refuses
//! keys under world-writable directories such as /tmp); sockets and pid
//! files in `/run/kctl-test-hosts/<tag>/hN/` (unix socket paths are short).
//! All namespaces share this machine's filesystem.
//!
//! Written as test code, independently of kctl's own local provider.

use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

const RUN_ROOT: &str = "/run/kctl-test-hosts";
const FIRST_OCTET: u8 = 150;
const LAST_OCTET: u8 = 199;
const MAX_HOSTS: usize = 40;

use super::sys::*;

/// A set of plain hosts that exists for the life of the value.
pub struct PlainHosts {
    tag: String,
    /// The X of 10.X.0.0/16; meaningful once `claimed`.
    octet: u8,
    claimed: bool,
    bridge: String,
    hosts: Vec<PlainHost>,
    dir: PathBuf,
    run_dir: PathBuf,
    /// dockerd processes we started (nsenter execs dockerd, so the child is
    /// dockerd itself); kept to reap them.
    daemons: Vec<Child>,
}

/// One plain host.
#[derive(Debug, Clone)]
pub struct PlainHost {
    /// "h1", "h2", ...
    pub name: String,
    /// The network namespace, `/run/netns/<netns>`.
    pub netns: String,
    pub ip: Ipv4Addr,
    /// The public host key, "ssh-ed25519 AAAA...".
    pub host_key: String,
    /// The host's own dockerd.
    pub docker_socket: PathBuf,
}

impl PlainHost {
    pub fn docker_host(&self) -> String {
        format!("unix://{}", self.docker_socket.display())
    }
}

impl PlainHosts {
    /// Makes `count` hosts; panics (after cleaning up what it made) on
    /// failure. `tag` names the set (lower-case letters, digits and '-', at
    /// most 16 characters) and must be unique among tests running at once;
    /// whatever an aborted earlier run with the same tag left is removed
    /// first.
    pub fn create(tag: &str, count: usize) -> PlainHosts {
        assert!(
            !tag.is_empty()
                && tag.len() <= 16
                && tag
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'),
            "PlainHosts tag {tag:?}: use 1 to 16 of a-z, 0-9, '-'"
        );
        assert!(
            (1..=MAX_HOSTS).contains(&count),
            "PlainHosts: 1 to {MAX_HOSTS} hosts"
        );
        let dir = test_home().join(format!("hosts-{tag}"));
        let run_dir = PathBuf::from(RUN_ROOT).join(tag);
        // Leftovers of an aborted run with this tag.
        let old_octet = std::fs::read_to_string(dir.join("octet"))
            .ok()
            .and_then(|s| s.trim().parse::<u8>().ok());
        teardown(tag, &dir, &run_dir, old_octet, &mut Vec::new());

        let mut set = PlainHosts {
            tag: tag.to_string(),
            octet: 0,
            claimed: false,
            bridge: String::new(),
            hosts: Vec::new(),
            dir,
            run_dir,
            daemons: Vec::new(),
        };
        if let Err(e) = set.build(count) {
            let logs = set.log_tails();
            drop(set);
            panic!("PlainHosts::create({tag:?}, {count}) failed: {e}\n{logs}");
        }
        set
    }

    pub fn hosts(&self) -> &[PlainHost] {
        &self.hosts
    }

    pub fn tag(&self) -> &str {
        &self.tag
    }

    /// The X of the claimed 10.X.0.0/16.
    pub fn octet(&self) -> u8 {
        self.octet
    }

    /// The /16 this set claimed, e.g. "10.150.0.0/16".
    pub fn cidr(&self) -> String {
        format!("10.{}.0.0/16", self.octet)
    }

    /// The bridge on this machine, e.g. "kth150".
    pub fn bridge(&self) -> &str {
        &self.bridge
    }

    /// The workstation's address on the bridge, 10.X.0.1.
    pub fn bridge_ip(&self) -> Ipv4Addr {
        Ipv4Addr::new(10, self.octet, 0, 1)
    }

    /// A pod range inside the claimed /16: "10.X.128.0/17".
    pub fn pod_net(&self) -> String {
        format!("10.{}.128.0/17", self.octet)
    }

    /// A portal range inside the claimed /16: "10.X.64.0/18".
    pub fn portal_net(&self) -> String {
        format!("10.{}.64.0/18", self.octet)
    }

    /// The user's SSH identity (private key) whose public key every host
    /// authorizes for root. It is `user_home()/.ssh/id_ed25519`.
    pub fn identity(&self) -> PathBuf {
        self.user_home().join(".ssh").join("id_ed25519")
    }

    /// A directory to use as $HOME for kctl processes: has
    /// `.ssh/known_hosts` with every host's key ("IP ssh-ed25519 ...") and
    /// the identity as `.ssh/id_ed25519`. (OpenSSH itself finds `~` through
    /// the password database, not $HOME: pass `-i`/`UserKnownHostsFile`
    /// when running ssh directly.)
    pub fn user_home(&self) -> PathBuf {
        self.dir.join("home")
    }

    /// The set's directory, `$HOME/.kctl-test/hosts-<tag>`.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The set's runtime directory, `/run/kctl-test-hosts/<tag>`.
    pub fn run_dir(&self) -> &Path {
        &self.run_dir
    }

    /// Per-user authorized keys, where users other than root can read
    /// them (the set's own directory is root's alone).
    fn users_dir(&self) -> PathBuf {
        self.run_dir.join("users")
    }

    /// Lets `user` (an account on this machine) log in to every host of
    /// the set with `public_key`.
    pub fn authorize(&self, user: &str, public_key: &str) {
        use std::io::Write;
        let dir = self.users_dir();
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join(user))
            .unwrap();
        writeln!(file, "{}", public_key.trim()).unwrap();
        std::fs::set_permissions(dir.join(user), std::fs::Permissions::from_mode(0o644)).unwrap();
    }

    /// An `ssh` command that logs in to host `i` as root with the
    /// set's identity and strict host key checking, followed by `remote`.
    pub fn ssh_command(&self, i: usize, remote: &str) -> Command {
        let mut cmd = Command::new("ssh");
        cmd.arg("-F")
            .arg("/dev/null")
            .arg("-i")
            .arg(self.identity())
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
                "ConnectTimeout=10",
            ])
            .arg(format!("root@{}", self.hosts[i].ip))
            .arg(remote)
            .stdin(Stdio::null());
        cmd
    }

    /// Runs `argv` inside host `i`'s network namespace (index into
    /// `hosts()`), with DOCKER_HOST pointing at its dockerd. Panics only if
    /// it cannot be started; the exit status is in the result.
    pub fn run_in(&self, i: usize, argv: &[&str]) -> Output {
        let host = &self.hosts[i];
        Command::new("nsenter")
            .arg(format!("--net=/run/netns/{}", host.netns))
            .arg("--")
            .args(argv)
            .env("DOCKER_HOST", host.docker_host())
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("run {argv:?} in {}: {e}", host.name))
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

    /// Everything about host `i` that kctl might change, normalised, once
    /// it has settled.
    pub fn snapshot(&self, i: usize) -> HostSnapshot {
        settled_snapshot(|| self.snapshot_once(i))
    }

    /// One read of `snapshot`, without waiting for things to settle.
    pub fn snapshot_once(&self, i: usize) -> HostSnapshot {
        read_snapshot(
            |argv| self.run_in_stdout(i, argv),
            self.process_names(i),
            Vec::new(),
        )
    }

    /// Sorted, de-duplicated command names of host `i`'s processes.
    pub fn process_names(&self, i: usize) -> Vec<String> {
        let Some(ns) = netns_inode(&self.hosts[i].netns) else {
            return Vec::new();
        };
        let mut names: Vec<String> = pids_in_netns(&[ns])
            .into_iter()
            .filter(|&p| pid_alive(p))
            .filter_map(|p| std::fs::read_to_string(format!("/proc/{p}/comm")).ok())
            .map(|c| c.trim().to_string())
            .collect();
        names.sort();
        names.dedup();
        names
    }

    fn build(&mut self, count: usize) -> Result<(), String> {
        make_private_dir(&self.dir)?;
        // Another set's teardown removes the shared root when it is empty,
        // which can fall between making the root and making our directory
        // in it: try again.
        let mut made = std::fs::create_dir_all(&self.run_dir);
        for _ in 0..5 {
            match &made {
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    made = std::fs::create_dir_all(&self.run_dir);
                }
                _ => break,
            }
        }
        made.map_err(|e| format!("{:?}: {e}", self.run_dir))?;
        self.octet = claim_range(FIRST_OCTET, LAST_OCTET)?;
        self.claimed = true;
        std::fs::write(self.dir.join("octet"), self.octet.to_string())
            .map_err(|e| format!("write octet: {e}"))?;
        let x = self.octet;
        self.bridge = format!("kth{x}");
        let bridge = self.bridge.clone();
        // A bridge of this name without its route is a leftover.
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

        // The user's identity, authorized on every host.
        let ssh_dir = self.user_home().join(".ssh");
        make_private_dir(&self.user_home())?;
        make_private_dir(&ssh_dir)?;
        keygen(&self.identity(), &format!("kctl-test-{}", self.tag))?;
        let public = std::fs::read_to_string(self.identity().with_extension("pub"))
            .map_err(|e| format!("read identity: {e}"))?;
        let authorized = self.dir.join("authorized_keys");
        std::fs::write(&authorized, &public).map_err(|e| format!("authorized_keys: {e}"))?;
        set_mode(&authorized, 0o600)?;

        // sshd needs its privilege separation directory.
        std::fs::create_dir_all("/run/sshd").map_err(|e| format!("/run/sshd: {e}"))?;
        let mut hosts = Vec::new();
        for n in 1..=count {
            hosts.push(self.make_host(n, &authorized)?);
        }
        // dockerds start in parallel: start all, then wait for each.
        for (k, host) in hosts.iter().enumerate() {
            let child = self.spawn_dockerd(k + 1, host)?;
            self.daemons.push(child);
        }
        for host in &hosts {
            let addr = SocketAddr::from((host.ip, 22));
            if !wait_until(Duration::from_secs(15), || {
                TcpStream::connect_timeout(&addr, Duration::from_millis(300)).is_ok()
            }) {
                return Err(format!("sshd of {} not listening on {addr}", host.name));
            }
            let sock = host.docker_host();
            if !wait_until(Duration::from_secs(60), || {
                quiet(&["timeout", "10", "docker", "-H", &sock, "version"])
            }) {
                return Err(format!("dockerd of {} not answering on {sock}", host.name));
            }
        }
        let known: String = hosts
            .iter()
            .map(|h| format!("{} {}\n", h.ip, h.host_key))
            .collect();
        let known_hosts = ssh_dir.join("known_hosts");
        std::fs::write(&known_hosts, known).map_err(|e| format!("known_hosts: {e}"))?;
        set_mode(&known_hosts, 0o600)?;
        self.hosts = hosts;
        Ok(())
    }

    /// Namespace, link, addresses, forwarding, host key and sshd of host
    /// `n` (1-based).
    fn make_host(&self, n: usize, authorized: &Path) -> Result<PlainHost, String> {
        let x = self.octet;
        let name = format!("h{n}");
        let netns = netns_name(&self.tag, n);
        let ip = Ipv4Addr::new(10, x, 0, 10 + n as u8);
        let veth = format!("kth{x}h{n}");
        run(&["ip", "netns", "add", &netns])?;
        run(&[
            "ip", "link", "add", &veth, "type", "veth", "peer", "name", "eth0", "netns", &netns,
        ])?;
        run(&["ip", "link", "set", &veth, "master", &self.bridge, "up"])?;
        run(&[
            "ip",
            "-n",
            &netns,
            "addr",
            "add",
            &format!("{ip}/24"),
            "dev",
            "eth0",
        ])?;
        run(&["ip", "-n", &netns, "link", "set", "eth0", "up"])?;
        run(&["ip", "-n", &netns, "link", "set", "lo", "up"])?;
        // Real servers running Docker forward; set before dockerd starts.
        let ns_arg = format!("--net=/run/netns/{netns}");
        run(&[
            "nsenter",
            &ns_arg,
            "--",
            "sysctl",
            "-qw",
            "net.ipv4.ip_forward=1",
        ])?;

        let host_dir = self.dir.join(&name);
        let host_run = self.run_dir.join(&name);
        make_private_dir(&host_dir)?;
        std::fs::create_dir_all(&host_run).map_err(|e| format!("{host_run:?}: {e}"))?;
        let key = host_dir.join("ssh_host_ed25519_key");
        keygen(&key, &netns)?;
        let public = std::fs::read_to_string(key.with_extension("pub"))
            .map_err(|e| format!("read host key: {e}"))?;
        let host_key = public
            .split_whitespace()
            .take(2)
            .collect::<Vec<_>>()
            .join(" ");
        let docker_socket = host_run.join("docker.sock");
        let config = host_dir.join("sshd_config");
        let text = format!(
            "# Plain test host {name} of set {tag}.\n\
             ListenAddress {ip}\n\
             Port 22\n\
             HostKey {key}\n\
             PidFile {pid}\n\
             AuthorizedKeysFile {auth} {users}/%u\n\
             PermitRootLogin prohibit-password\n\
             PasswordAuthentication no\n\
             KbdInteractiveAuthentication no\n\
             UsePAM no\n\
             StrictModes yes\n\
             MaxSessions 32\n\
             MaxStartups 64\n\
             PrintMotd no\n\
             SetEnv DOCKER_HOST=unix://{sock}\n",
            tag = self.tag,
            key = key.display(),
            pid = host_run.join("sshd.pid").display(),
            auth = authorized.display(),
            users = self.users_dir().display(),
            sock = docker_socket.display(),
        );
        std::fs::write(&config, text).map_err(|e| format!("{config:?}: {e}"))?;
        let config_arg = config.display().to_string();
        let log = host_dir.join("sshd.log").display().to_string();
        run(&[
            "nsenter",
            &ns_arg,
            "--",
            "/usr/sbin/sshd",
            "-f",
            &config_arg,
            "-E",
            &log,
        ])?;
        Ok(PlainHost {
            name,
            netns,
            ip,
            host_key,
            docker_socket,
        })
    }

    fn spawn_dockerd(&self, n: usize, host: &PlainHost) -> Result<Child, String> {
        let host_dir = self.dir.join(&host.name);
        let host_run = self.run_dir.join(&host.name);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(host_dir.join("dockerd.log"))
            .map_err(|e| format!("dockerd log: {e}"))?;
        let err = log.try_clone().map_err(|e| format!("dockerd log: {e}"))?;
        Command::new("nsenter")
            .arg(format!("--net=/run/netns/{}", host.netns))
            .arg("--")
            .arg("dockerd")
            .arg("--data-root")
            .arg(host_dir.join("docker"))
            .arg("--exec-root")
            .arg(host_run.join("docker"))
            .arg("--pidfile")
            .arg(host_run.join("docker.pid"))
            .arg("-H")
            .arg(host.docker_host())
            .arg("--cgroup-parent")
            .arg(format!("/{}", cgroup_parent(&self.tag, n)))
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(err)
            .process_group(0)
            .spawn()
            .map_err(|e| format!("start dockerd for {}: {e}", host.name))
    }

    /// The last lines of every daemon log, for failure messages.
    fn log_tails(&self) -> String {
        let mut out = String::new();
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return out;
        };
        let mut dirs: Vec<PathBuf> = entries.flatten().map(|e| e.path()).collect();
        dirs.sort();
        for d in dirs {
            for log in ["sshd.log", "dockerd.log"] {
                let path = d.join(log);
                if let Ok(text) = std::fs::read_to_string(&path) {
                    let lines: Vec<&str> = text.lines().collect();
                    let tail = &lines[lines.len().saturating_sub(15)..];
                    out.push_str(&format!("--- {}\n{}\n", path.display(), tail.join("\n")));
                }
            }
        }
        out
    }
}

impl Drop for PlainHosts {
    fn drop(&mut self) {
        let octet = self.claimed.then_some(self.octet);
        let (tag, dir, run_dir) = (self.tag.clone(), self.dir.clone(), self.run_dir.clone());
        let mut daemons = std::mem::take(&mut self.daemons);
        // Never panic in drop (a panic while unwinding aborts the tests).
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            teardown(&tag, &dir, &run_dir, octet, &mut daemons)
        }));
        if result.is_err() {
            eprintln!("PlainHosts {tag}: clean-up panicked; some parts may be left");
        }
    }
}

/// Removes everything of the set `tag`: containers, daemons, any process in
/// its namespaces, the namespaces, links, bridge, claimed route, mounts and
/// directories. Tolerates any part being missing; never fails.
fn teardown(tag: &str, dir: &Path, run_dir: &Path, octet: Option<u8>, daemons: &mut [Child]) {
    let host_numbers = host_numbers(tag, run_dir);
    // Containers through Docker first, so it cleans up after them; then
    // dockerd stops on its own terms.
    for &n in &host_numbers {
        let host_run = run_dir.join(format!("h{n}"));
        let socket = host_run.join("docker.sock");
        if std::os::unix::net::UnixStream::connect(&socket).is_ok() {
            let sock = format!("unix://{}", socket.display());
            if let Ok(ids) = run(&["timeout", "20", "docker", "-H", &sock, "ps", "-aq"]) {
                let ids: Vec<&str> = ids.split_whitespace().collect();
                if !ids.is_empty() {
                    let mut argv = vec!["timeout", "30", "docker", "-H", &sock, "rm", "-f"];
                    argv.extend(ids);
                    quiet(&argv);
                }
            }
        }
        let run_text = format!("{}/", host_run.display());
        if let Some(pid) = pid_from_file(&host_run.join("docker.pid"), &run_text) {
            terminate(&[pid], Duration::from_secs(15));
        }
        if let Some(pid) = pid_from_file(&host_run.join("sshd.pid"), "sshd") {
            terminate(&[pid], Duration::from_secs(5));
        }
    }
    // Whatever else runs in the namespaces, or refers to the set's paths
    // (containerd, shims), or sits in the hosts' container cgroups.
    let own = netns_of_pid(std::process::id());
    let namespaces: Vec<u64> = host_numbers
        .iter()
        .filter_map(|&n| netns_inode(&netns_name(tag, n)))
        .filter(|ns| Some(*ns) != own)
        .collect();
    let markers = [
        format!("{}/", dir.display()),
        format!("{}/", run_dir.display()),
    ];
    let mut pids = pids_in_netns(&namespaces);
    pids.extend(pids_mentioning(&markers));
    for &n in &host_numbers {
        pids.extend(cgroup_pids(&cgroup_parent(tag, n)));
    }
    let me = std::process::id();
    pids.retain(|&p| p != me);
    pids.sort_unstable();
    pids.dedup();
    for &pid in &pids {
        signal(pid, "KILL");
    }
    wait_until(Duration::from_secs(5), || {
        pids.iter().all(|&p| !pid_alive(p))
    });
    for child in daemons.iter_mut() {
        let _ = child.kill();
        let _ = child.wait();
    }
    for &n in &host_numbers {
        remove_cgroups(&cgroup_parent(tag, n));
    }
    for path in [dir, run_dir] {
        for mount in mounts_under(path) {
            quiet(&["umount", "--lazy", &mount.display().to_string()]);
        }
    }
    for &n in &host_numbers {
        if let Some(x) = octet {
            quiet(&["ip", "link", "delete", &format!("kth{x}h{n}")]);
        }
        quiet(&["ip", "netns", "delete", &netns_name(tag, n)]);
    }
    if let Some(x) = octet {
        quiet(&["ip", "link", "delete", &format!("kth{x}")]);
        quiet(&[
            "ip",
            "route",
            "delete",
            "unreachable",
            &format!("10.{x}.0.0/16"),
        ]);
    }
    let _ = std::fs::remove_dir_all(dir);
    let _ = std::fs::remove_dir_all(run_dir);
    let _ = std::fs::remove_dir(RUN_ROOT);
}

/// The numbers N of the set's hosts that may exist: namespaces named
/// `kth-<tag>-hN` and runtime directories `hN`.
fn host_numbers(tag: &str, run_dir: &Path) -> Vec<usize> {
    let prefix = format!("kth-{tag}-h");
    let mut found: Vec<usize> = Vec::new();
    if let Ok(entries) = std::fs::read_dir("/run/netns") {
        found.extend(entries.flatten().filter_map(|e| {
            e.file_name()
                .to_str()?
                .strip_prefix(&prefix)?
                .parse::<usize>()
                .ok()
        }));
    }
    if let Ok(entries) = std::fs::read_dir(run_dir) {
        found.extend(entries.flatten().filter_map(|e| {
            e.file_name()
                .to_str()?
                .strip_prefix('h')?
                .parse::<usize>()
                .ok()
        }));
    }
    found.sort_unstable();
    found.dedup();
    found
}

fn netns_name(tag: &str, n: usize) -> String {
    format!("kth-{tag}-h{n}")
}

fn cgroup_parent(tag: &str, n: usize) -> String {
    format!("kctl-th-{tag}-h{n}")
}
