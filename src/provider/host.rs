//! Small helpers for running things on the workstation itself: commands,
//! daemons with pid files, and the checks that go with them.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

#[derive(Debug, thiserror::Error, miette::Diagnostic)]
#[error("{what}: {message}")]
pub struct HostError {
    pub what: String,
    pub message: String,
}

pub fn host_error(what: impl Into<String>, message: impl ToString) -> HostError {
    HostError {
        what: what.into(),
        message: message.to_string(),
    }
}

/// Runs a command on this machine and returns its stdout; fails with its
/// stderr when it exits non-zero.
pub async fn run(argv: &[&str]) -> Result<String, HostError> {
    let (program, args) = argv
        .split_first()
        .ok_or_else(|| host_error("run", "empty command"))?;
    let out = tokio::process::Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .await
        .map_err(|e| host_error(argv.join(" "), e))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(host_error(
            argv.join(" "),
            String::from_utf8_lossy(&out.stderr).trim(),
        ))
    }
}

/// Generates an ed25519 key pair at `path` unless one is there; true if it
/// made one.
pub async fn ensure_ssh_key(path: &Path, comment: &str) -> Result<bool, HostError> {
    if path.exists() {
        return Ok(false);
    }
    let file = path.display().to_string();
    run(&[
        "ssh-keygen",
        "-q",
        "-t",
        "ed25519",
        "-N",
        "",
        "-C",
        comment,
        "-f",
        &file,
    ])
    .await?;
    Ok(true)
}

/// Like `run`, for clean-up: failure is expected when the thing is gone.
pub async fn run_quiet(argv: &[&str]) -> bool {
    run(argv).await.is_ok()
}

/// Starts a long-running program detached from kctl: its own process group,
/// output to `log`, no stdin. It outlives kctl; its pid file is how we find
/// it again.
pub fn spawn_daemon(argv: &[String], log: &Path) -> Result<u32, HostError> {
    use std::os::unix::process::CommandExt;
    let (program, args) = argv
        .split_first()
        .ok_or_else(|| host_error("spawn", "empty command"))?;
    let log_file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .map_err(|e| host_error(log.display().to_string(), e))?;
    let err_file = log_file
        .try_clone()
        .map_err(|e| host_error(log.display().to_string(), e))?;
    let child = std::process::Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(log_file)
        .stderr(err_file)
        .process_group(0)
        .spawn()
        .map_err(|e| host_error(format!("start {program}"), e))?;
    Ok(child.id())
}

/// The pid in `pid_file`, if that process is alive and its command line
/// contains `expect` (so a recycled pid is never mistaken for ours).
pub fn live_pid(pid_file: &Path, expect: &str) -> Option<u32> {
    let pid: u32 = std::fs::read_to_string(pid_file)
        .ok()?
        .trim()
        .parse()
        .ok()?;
    process_matches(pid, expect).then_some(pid)
}

pub fn process_matches(pid: u32, expect: &str) -> bool {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|c| {
            String::from_utf8_lossy(&c)
                .replace('\0', " ")
                .contains(expect)
        })
        .unwrap_or(false)
}

/// The processes whose arguments (argv, split at NULs) satisfy `matches`.
fn processes_where(matches: impl Fn(&[&[u8]]) -> bool) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return vec![];
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| {
                let args: Vec<&[u8]> = c.split(|b| *b == 0).collect();
                matches(&args)
            })
        })
        .collect()
}

/// The `ssh` processes (SSH masters) whose command line names `text`.
pub fn ssh_processes_naming(text: &str) -> Vec<u32> {
    processes_where(|args| {
        args.first().is_some_and(|a| a.ends_with(b"ssh"))
            && args
                .iter()
                .any(|a| String::from_utf8_lossy(a).contains(text))
    })
}

/// The processes with an argument that names `path` or a path below it
/// (e.g. every etcd and supervisor of a cluster's etcd directory), but
/// not this process.
pub fn processes_under(path: &str) -> Vec<u32> {
    let me = std::process::id();
    let below = format!("{}/", path.trim_end_matches('/'));
    let pids = processes_where(|args| {
        args.iter().skip(1).any(|a| {
            let a = String::from_utf8_lossy(a);
            a == path || a.starts_with(&below)
        })
    });
    pids.into_iter().filter(|pid| *pid != me).collect()
}

/// The processes running `program` (by its file name) with `args` among
/// their arguments, in that order: e.g. the etcd of one data directory.
pub fn pids_running(program: &str, args: &[&str]) -> Vec<u32> {
    processes_where(|argv| {
        let named = argv
            .first()
            .is_some_and(|a| a.rsplit(|b| *b == b'/').next() == Some(program.as_bytes()));
        named
            && argv
                .windows(args.len().max(1))
                .any(|w| w.iter().copied().eq(args.iter().map(|a| a.as_bytes())))
    })
}

pub fn pid_alive(pid: u32) -> bool {
    // A zombie still has /proc/<pid>; its state letter tells.
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rsplit_once(')')
                .map(|(_, rest)| rest.trim_start().to_string())
        })
        .is_some_and(|rest| !rest.starts_with('Z'))
}

pub fn signal(pid: u32, sig: &str) {
    let _ = std::process::Command::new("kill")
        .args([format!("-{sig}"), pid.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// SIGTERM, then SIGKILL for whatever is left after `grace`.
pub async fn terminate(pids: &[u32], grace: Duration) {
    for &pid in pids {
        signal(pid, "TERM");
        // A stopped process acts on TERM only once it runs again.
        signal(pid, "CONT");
    }
    let deadline = Instant::now() + grace;
    while pids.iter().any(|&p| pid_alive(p)) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for &pid in pids.iter().filter(|&&p| pid_alive(p)) {
        signal(pid, "KILL");
    }
}

/// Waits until `ready()` holds or `timeout` passes.
pub async fn wait_for(timeout: Duration, mut ready: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if ready() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

pub fn tcp_open(addr: std::net::SocketAddr) -> bool {
    std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(300)).is_ok()
}

/// The inode that identifies the network namespace of `pid`.
pub fn netns_of_pid(pid: u32) -> Option<u64> {
    let link = std::fs::read_link(format!("/proc/{pid}/ns/net")).ok()?;
    let text = link.to_string_lossy();
    text.strip_prefix("net:[")?.strip_suffix(']')?.parse().ok()
}

/// The inode of a named network namespace (`/run/netns/NAME`).
pub fn netns_of_name(name: &str) -> Option<u64> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(format!("/run/netns/{name}"))
        .ok()
        .map(|m| m.ino())
}

/// Every process whose network namespace is one of `namespaces`.
pub fn pids_in_netns(namespaces: &[u64]) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return vec![];
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| netns_of_pid(pid).is_some_and(|ns| namespaces.contains(&ns)))
        .collect()
}

/// Kills every process in `namespaces`. All are stopped before any is
/// killed, and the namespaces are listed again until they are empty: a
/// supervisor that sees its child die before its own turn forks a new one,
/// which a single listing would miss.
pub async fn kill_all_in_netns(namespaces: &[u64]) {
    for _round in 0..10 {
        let pids: Vec<u32> = pids_in_netns(namespaces)
            .into_iter()
            .filter(|&p| pid_alive(p))
            .collect();
        if pids.is_empty() {
            return;
        }
        signal_all(&pids, "STOP");
        signal_all(&pids, "KILL");
        wait_for(Duration::from_secs(5), || {
            pids.iter().all(|&p| !pid_alive(p))
        })
        .await;
    }
}

/// One `kill` for many processes: a process spawned per pid would leave
/// time between the first signal and the last.
pub fn signal_all(pids: &[u32], sig: &str) {
    if pids.is_empty() {
        return;
    }
    let _ = std::process::Command::new("kill")
        .arg(format!("-{sig}"))
        .args(pids.iter().map(|p| p.to_string()))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// Every mount point at or below `dir`, deepest first.
pub fn mounts_under(dir: &Path) -> Vec<PathBuf> {
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return vec![];
    };
    let mut found: Vec<PathBuf> = info
        .lines()
        .filter_map(|line| line.split(' ').nth(4))
        .map(unescape_mount_path)
        .map(PathBuf::from)
        .filter(|p| p.starts_with(dir))
        .collect();
    found.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    found.dedup();
    found
}

/// mountinfo escapes space, tab, newline and backslash as octal.
fn unescape_mount_path(raw: &str) -> String {
    let mut out = String::new();
    let mut chars = raw.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\\' {
            let code: String = chars.by_ref().take(3).collect();
            if let Ok(v) = u8::from_str_radix(&code, 8) {
                out.push(v as char);
                continue;
            }
            out.push('\\');
            out.push_str(&code);
        } else {
            out.push(c);
        }
    }
    out
}

/// Unmounts everything below `dir` (lazily, so busy mounts go too).
pub async fn unmount_all_under(dir: &Path) {
    for mount in mounts_under(dir) {
        let path = mount.display().to_string();
        run_quiet(&["umount", "--lazy", &path]).await;
    }
}

/// Kills every process in the cgroups named `name` (any controller, v1 or
/// v2) and removes those cgroups: container processes live there, outside
/// the minion's network namespace.
pub async fn kill_cgroup_tree(name: &str) {
    let mut dirs = Vec::new();
    let root = Path::new("/sys/fs/cgroup");
    let mut tops = vec![root.join(name)];
    if let Ok(entries) = std::fs::read_dir(root) {
        tops.extend(entries.flatten().map(|e| e.path().join(name)));
    }
    for top in tops.into_iter().filter(|p| p.is_dir()) {
        collect_dirs(&top, &mut dirs);
    }
    let mut pids = Vec::new();
    for dir in &dirs {
        if let Ok(procs) = std::fs::read_to_string(dir.join("cgroup.procs")) {
            pids.extend(procs.lines().filter_map(|l| l.trim().parse::<u32>().ok()));
        }
    }
    pids.sort_unstable();
    pids.dedup();
    signal_all(&pids, "STOP");
    signal_all(&pids, "KILL");
    wait_for(Duration::from_secs(3), || {
        pids.iter().all(|&p| !pid_alive(p))
    })
    .await;
    // Deepest first: a cgroup can only be removed once its children are.
    dirs.sort_by_key(|d| std::cmp::Reverse(d.components().count()));
    for dir in dirs {
        let _ = std::fs::remove_dir(dir);
    }
}

fn collect_dirs(dir: &Path, out: &mut Vec<PathBuf>) {
    out.push(dir.to_path_buf());
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                collect_dirs(&e.path(), out);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mount_paths_unescape() {
        assert_eq!(unescape_mount_path(r"/a\040b"), "/a b");
        assert_eq!(unescape_mount_path(r"/plain"), "/plain");
    }

    #[tokio::test]
    async fn run_reports_stderr() {
        let err = run(&["sh", "-c", "echo nope >&2; exit 1"])
            .await
            .unwrap_err();
        assert!(err.to_string().contains("nope"));
        assert_eq!(run(&["echo", "hi"]).await.unwrap(), "hi\n");
    }

    #[test]
    fn live_pid_checks_command_line() {
        let dir = std::env::temp_dir().join(format!("kctl-pid-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("p.pid");
        std::fs::write(&file, std::process::id().to_string()).unwrap();
        let me = std::fs::read(format!("/proc/{}/cmdline", std::process::id())).unwrap();
        let first = String::from_utf8_lossy(&me)
            .split('\0')
            .next()
            .unwrap()
            .to_string();
        assert_eq!(live_pid(&file, &first), Some(std::process::id()));
        assert_eq!(live_pid(&file, "surely-not-this-process"), None);
        std::fs::write(&file, "garbage").unwrap();
        assert_eq!(live_pid(&file, &first), None);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
