//! The SSH transport: the system OpenSSH client through the `openssh` crate,
//! one multiplexed master connection per minion per kctl invocation. Host
//! keys are checked strictly against the cluster's own known_hosts; the
//! user's `~/.ssh` is never read or written (`-F /dev/null`).

use crate::exec::{Exec, ExecError, Output};
use openssh::{KnownHosts, Session, SessionBuilder, Stdio};
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::sync::Semaphore;

/// sshd's default `MaxSessions` is 10; stay well below it so a burst of
/// parallel commands on one minion never hits "session open refused".
const MAX_PARALLEL_SESSIONS: usize = 6;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SshTarget {
    pub name: String,
    pub host: String,
    pub port: u16,
    pub user: String,
}

/// The cluster's credentials.
#[derive(Debug, Clone)]
pub struct SshAuth {
    /// None: ssh's own defaults (the agent, ~/.ssh/id_*).
    pub identity: Option<PathBuf>,
    pub known_hosts: PathBuf,
}

pub struct SshExec {
    name: String,
    session: Session,
    sessions: Semaphore,
    /// Log-ins other than root run every command through `sudo -n`.
    sudo: bool,
    forwards: ForwardDirs,
}

/// The private directories holding this connection's forwarded sockets,
/// removed when it is dropped.
#[derive(Default)]
struct ForwardDirs(std::sync::Mutex<Vec<tempfile::TempDir>>);

/// How often a login that sshd dropped before the key exchange is tried.
const CONNECT_ATTEMPTS: u32 = 6;

/// Whether ssh's error says the server closed the connection before the
/// login began: sshd's MaxStartups at work, not a wrong key or host.
pub fn dropped_before_login(text: &str) -> bool {
    text.contains("kex_exchange_identification")
        || text.contains("Connection reset by peer")
        || text.contains("Connection closed by remote host")
}

impl SshExec {
    pub async fn connect(target: &SshTarget, auth: &SshAuth) -> Result<SshExec, ExecError> {
        let config = cluster_ssh_config(auth).map_err(|e| ExecError::Transport {
            target: target.name.clone(),
            message: format!("ssh config beside {}: {e}", auth.known_hosts.display()),
        })?;
        let mut builder = SessionBuilder::default();
        builder
            .user(target.user.clone())
            .port(target.port)
            .known_hosts_check(KnownHosts::Strict)
            .user_known_hosts_file(&auth.known_hosts)
            .config_file(&config)
            .connect_timeout(Duration::from_secs(10))
            .server_alive_interval(Duration::from_secs(5))
            .control_directory(std::env::temp_dir())
            // A kctl killed before it closes its sessions must not leave
            // SSH masters (and the tunnel to etcd) behind for long.
            .control_persist(openssh::ControlPersist::IdleFor(
                std::num::NonZeroUsize::new(300).unwrap_or(std::num::NonZeroUsize::MIN),
            ));
        if let Some(identity) = &auth.identity {
            builder.keyfile(identity);
        }
        // sshd drops logins beyond its MaxStartups (10 at once by default)
        // before the key exchange; many kctl processes at once meet that.
        // Such a drop is tried again after a short random pause.
        let mut attempt = 0;
        let session = loop {
            match builder.connect_mux(&target.host).await {
                Ok(session) => break session,
                Err(e) => {
                    let text = error_chain(&e);
                    attempt += 1;
                    if attempt < CONNECT_ATTEMPTS && dropped_before_login(&text) {
                        let most = 100u64 << attempt.min(4);
                        let pause = rand::random_range(most / 2..=most);
                        tokio::time::sleep(Duration::from_millis(pause)).await;
                        continue;
                    }
                    return Err(ExecError::Transport {
                        target: target.name.clone(),
                        message: format!(
                            "ssh to {}@{}:{} failed: {text}",
                            target.user, target.host, target.port,
                        ),
                    });
                }
            }
        };
        Ok(SshExec {
            name: target.name.clone(),
            session,
            sessions: Semaphore::new(MAX_PARALLEL_SESSIONS),
            sudo: target.user != "root",
            forwards: ForwardDirs::default(),
        })
    }

    /// Forwards a free port on this machine's loopback to `remote_port` on
    /// the remote machine's loopback, for as long as the session lives.
    /// Returns the local port.
    pub async fn forward_local_port(&self, remote_port: u16) -> Result<u16, ExecError> {
        self.forward_tcp(None, "127.0.0.1", remote_port).await
    }

    /// Forwards `local` (or, if none, a free port) on this machine's
    /// loopback to `host:port` as the remote machine reaches it, for as
    /// long as the session lives. Returns the local port.
    pub async fn forward_tcp(
        &self,
        local: Option<u16>,
        host: &str,
        port: u16,
    ) -> Result<u16, ExecError> {
        let forward = |local: u16| {
            self.session.request_port_forward(
                openssh::ForwardType::Local,
                openssh::Socket::new("127.0.0.1", local),
                openssh::Socket::new(host, port),
            )
        };
        if let Some(local) = local {
            forward(local).await.map_err(|e| self.transport(e))?;
            return Ok(local);
        }
        // Asking the kernel for a free port and releasing it leaves a small
        // window to another process: then try another port.
        let mut last = None;
        for _ in 0..3 {
            let free = std::net::TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .map_err(|e| self.transport(e))?
                .port();
            match forward(free).await {
                Ok(()) => return Ok(free),
                Err(e) => last = Some(self.transport(e)),
            }
        }
        Err(last.unwrap_or_else(|| self.transport(std::io::Error::other("no free port"))))
    }

    /// Whether the master connection still works.
    pub async fn check(&self) -> Result<(), ExecError> {
        self.session.check().await.map_err(|e| self.transport(e))
    }

    /// Forwards a new Unix socket on this machine to the Unix socket
    /// `remote` on the remote machine, for as long as the session lives;
    /// returns the local socket's path. The remote end is opened with the
    /// login user's rights (for Docker's socket: root or the `docker`
    /// group). The local socket sits in a directory only this user can
    /// enter.
    pub async fn forward_unix_socket(&self, remote: &str) -> Result<PathBuf, ExecError> {
        // Made 0700 under an unguessable name.
        let dir = tempfile::Builder::new()
            .prefix("kctl-forward-")
            .tempdir()
            .map_err(|e| self.transport(e))?;
        let local = dir.path().join("docker.sock");
        if let Ok(mut dirs) = self.forwards.0.lock() {
            dirs.push(dir);
        }
        self.session
            .request_port_forward(
                openssh::ForwardType::Local,
                openssh::Socket::UnixSocket {
                    path: local.as_path().into(),
                },
                openssh::Socket::UnixSocket {
                    path: Path::new(remote).into(),
                },
            )
            .await
            .map_err(|e| self.transport(e))?;
        Ok(local)
    }

    fn command_line<'a>(&self, argv: &'a [String]) -> Result<(String, Vec<&'a str>), ExecError> {
        command_line(argv, self.sudo, &self.name)
    }

    /// Closes the master connection; dropping does too, but this reports errors.
    pub async fn close(self) {
        let _ = self.session.close().await;
    }

    /// The remote command's output. openssh (native-mux) turns exit status
    /// 127 into an error and drops the output; for kctl it is an answer
    /// like any other: a root login on a host without `nft` gets 127 from
    /// the remote shell, and the host checks report nft as missing. (Under
    /// sudo a missing program is exit 1, "command not found".)
    fn finished(
        &self,
        out: Result<std::process::Output, openssh::Error>,
    ) -> Result<Output, ExecError> {
        match out {
            Ok(out) => Ok(Output {
                code: out.status.code(),
                stdout: out.stdout,
                stderr: out.stderr,
            }),
            Err(openssh::Error::Remote(e)) if e.kind() == std::io::ErrorKind::NotFound => {
                Ok(Output {
                    code: Some(127),
                    stdout: vec![],
                    stderr: b"exit status 127 (command not found?); openssh keeps the output\n"
                        .to_vec(),
                })
            }
            Err(e) => Err(self.transport(e)),
        }
    }

    fn transport(&self, e: impl std::error::Error) -> ExecError {
        ExecError::Transport {
            target: self.name.clone(),
            message: error_chain(&e),
        }
    }
}

/// The program and arguments to send: `sudo -n --` first where needed
/// (never a password prompt: a missing sudo rule fails at once).
fn command_line<'a>(
    argv: &'a [String],
    sudo: bool,
    target: &str,
) -> Result<(String, Vec<&'a str>), ExecError> {
    let (program, args) = split(argv, target)?;
    if sudo {
        let mut all = vec!["-n", "--", program.as_str()];
        all.extend(args.iter().map(String::as_str));
        Ok(("sudo".into(), all))
    } else {
        Ok((program.clone(), args.iter().map(String::as_str).collect()))
    }
}

/// What ssh reads instead of the user's and the system's configuration:
/// only the cluster's own known_hosts counts, not the machine-wide
/// /etc/ssh/ssh_known_hosts (ssh reads that one even with `-F /dev/null`).
const SSH_CONFIG: &str = "# Written by kctl: host keys come from this cluster's known_hosts only.\nGlobalKnownHostsFile /dev/null\n";

/// The ssh_config file beside the cluster's known_hosts, written if it is
/// missing or different.
fn cluster_ssh_config(auth: &SshAuth) -> std::io::Result<PathBuf> {
    let path = auth.known_hosts.with_file_name("ssh_config");
    if std::fs::read_to_string(&path).ok().as_deref() != Some(SSH_CONFIG) {
        // Written whole: a connection starting meanwhile reads the old
        // file or the new one, never half of one.
        crate::files::write_private(&path, SSH_CONFIG.as_bytes())?;
    }
    Ok(path)
}

/// The system `ssh` command line for a session whose terminal belongs to
/// the user (a shell, `docker exec -it`, `docker logs -f`): the same host
/// keys, key and port as kctl's own connections, and `remote`, if any,
/// quoted once for the remote shell. `tty` forces a terminal there even
/// when this side has none (`-tt`); otherwise `-T` when a command is given.
pub fn interactive_argv(
    target: &SshTarget,
    auth: &SshAuth,
    tty: bool,
    remote: &[String],
) -> std::io::Result<Vec<String>> {
    let config = cluster_ssh_config(auth)?;
    let mut argv = vec![
        "ssh".to_string(),
        "-F".into(),
        config.display().to_string(),
        "-o".into(),
        format!("UserKnownHostsFile={}", auth.known_hosts.display()),
        "-o".into(),
        "StrictHostKeyChecking=yes".into(),
        "-o".into(),
        "ConnectTimeout=10".into(),
        // Errors only: no "Connection to … closed." after a TTY session.
        "-o".into(),
        "LogLevel=ERROR".into(),
        "-p".into(),
        target.port.to_string(),
    ];
    if let Some(identity) = &auth.identity {
        argv.extend(["-i".into(), identity.display().to_string()]);
    }
    if tty {
        // No escape character: the session carries the user's bytes.
        argv.extend(["-tt".into(), "-e".into(), "none".into()]);
    } else if !remote.is_empty() {
        argv.push("-T".into());
    }
    argv.push(format!("{}@{}", target.user, target.host));
    if !remote.is_empty() {
        argv.push("--".into());
        argv.push(crate::exec::shell_line(remote));
    }
    Ok(argv)
}

fn split<'a>(argv: &'a [String], target: &str) -> Result<(&'a String, &'a [String]), ExecError> {
    argv.split_first().ok_or_else(|| ExecError::Transport {
        target: target.to_string(),
        message: "empty command".into(),
    })
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

impl Exec for SshExec {
    fn target(&self) -> &str {
        &self.name
    }

    /// Through a forward of the master connection, so that the TCP
    /// connection starts on the remote machine; the forward is closed
    /// once the answer is read.
    async fn http_get(
        &self,
        addr: std::net::SocketAddr,
        path: &str,
        limit: std::time::Duration,
    ) -> Result<u16, ExecError> {
        let host = addr.ip().to_string();
        let local = self.forward_tcp(None, &host, addr.port()).await?;
        let answer = tokio::time::timeout(limit, async {
            let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", local)).await?;
            crate::exec::http_status(&mut stream, addr, path).await
        })
        .await
        .unwrap_or_else(|_| Err(crate::exec::timed_out(limit)));
        let _ = self
            .session
            .close_port_forward(
                openssh::ForwardType::Local,
                openssh::Socket::new("127.0.0.1", local),
                openssh::Socket::new(&host, addr.port()),
            )
            .await;
        answer.map_err(|e| ExecError::Transport {
            target: self.name.clone(),
            message: format!("GET from {addr}: {e}"),
        })
    }

    /// Streams the file rather than reading it into memory.
    async fn run_with_file(&self, argv: &[String], file: &Path) -> Result<Output, ExecError> {
        let _permit = self
            .sessions
            .acquire()
            .await
            .map_err(|e| self.transport(e))?;
        let (program, args) = self.command_line(argv)?;
        let out = retry_refused(|| async {
            let file = std::fs::File::open(file).map_err(openssh::Error::ChildIo)?;
            self.session
                .command(&program)
                .args(&args)
                .stdin(Stdio::from(std::os::fd::OwnedFd::from(file)))
                .output()
                .await
        })
        .await;
        self.finished(out)
    }

    async fn run(&self, argv: &[String], stdin: Option<&[u8]>) -> Result<Output, ExecError> {
        use tokio::io::AsyncWriteExt;
        let _permit = self
            .sessions
            .acquire()
            .await
            .map_err(|e| self.transport(e))?;
        let (program, args) = self.command_line(argv)?;
        let out = retry_refused(|| async {
            // `command` and `args` shell-escape every element: the one
            // place where kctl's argv become a remote command line.
            let mut command = self.session.command(&program);
            command.args(&args);
            match stdin {
                None => command.output().await,
                Some(data) => {
                    command
                        .stdin(Stdio::piped())
                        .stdout(Stdio::piped())
                        .stderr(Stdio::piped());
                    let mut child = command.spawn().await?;
                    if let Some(mut pipe) = child.stdin().take() {
                        pipe.write_all(data)
                            .await
                            .map_err(openssh::Error::ChildIo)?;
                        pipe.shutdown().await.map_err(openssh::Error::ChildIo)?;
                    }
                    child.wait_with_output().await
                }
            }
        })
        .await;
        self.finished(out)
    }
}

/// Runs `attempt` again while sshd refuses to open the session. sshd
/// counts a session until its channel is torn down, a moment after the
/// command ends, so a burst of short commands can briefly exceed its
/// MaxSessions (10 by default) although kctl keeps fewer in flight. The
/// command never started, so trying again is safe.
async fn retry_refused<F, Fut, T>(mut attempt: F) -> Result<T, openssh::Error>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, openssh::Error>>,
{
    let mut tries: u32 = 1;
    loop {
        match attempt().await {
            Err(e) if tries < 10 && session_refused(&e) => {
                tokio::time::sleep(std::time::Duration::from_millis(50 * u64::from(tries))).await;
                tries += 1;
            }
            result => return result,
        }
    }
}

/// sshd said no to a new session on an open connection.
fn session_refused(e: &openssh::Error) -> bool {
    error_chain(e).contains("Session open refused")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_login_dropped_before_it_began_is_tried_again() {
        assert!(dropped_before_login(
            "failed to connect to the remote host: kex_exchange_identification: Connection closed by remote host"
        ));
        assert!(!dropped_before_login("Permission denied (publickey)."));
        assert!(!dropped_before_login("Host key verification failed."));
        assert!(!dropped_before_login(
            "connect to host 10.0.0.1 port 22: Connection refused"
        ));
    }
    use crate::argv;

    #[test]
    fn users_other_than_root_run_commands_through_sudo() {
        let argv = argv!["ip", "route", "replace", "10.244.2.0/24"];
        let (program, args) = command_line(&argv, false, "m").unwrap();
        assert_eq!(
            (program.as_str(), args),
            ("ip", vec!["route", "replace", "10.244.2.0/24"])
        );
        let (program, args) = command_line(&argv, true, "m").unwrap();
        assert_eq!(program, "sudo");
        assert_eq!(
            args,
            ["-n", "--", "ip", "route", "replace", "10.244.2.0/24"]
        );
        assert!(command_line(&[], true, "m").is_err());
    }

    #[test]
    fn interactive_sessions_pin_the_clusters_host_keys_and_quote_once() {
        let dir = std::env::temp_dir().join(format!("kctl-ssh-argv-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let auth = SshAuth {
            identity: Some(dir.join("id")),
            known_hosts: dir.join("known_hosts"),
        };
        let target = SshTarget {
            name: "minion-1".into(),
            host: "10.1.0.2".into(),
            port: 2222,
            user: "admin".into(),
        };
        let argv = interactive_argv(&target, &auth, false, &argv!["echo", "a b", "$(x)"]).unwrap();
        let line = argv.join(" ");
        assert!(line.contains(&format!(
            "UserKnownHostsFile={}",
            dir.join("known_hosts").display()
        )));
        assert!(line.contains("StrictHostKeyChecking=yes"));
        assert!(line.contains("-p 2222") && line.contains(" -T "), "{line}");
        assert_eq!(
            argv[argv.len() - 3..],
            ["admin@10.1.0.2", "--", "echo 'a b' '$(x)'"]
        );
        let shell = interactive_argv(&target, &auth, true, &[]).unwrap();
        assert!(shell.contains(&"-tt".to_string()));
        assert_eq!(shell.last().unwrap(), "admin@10.1.0.2");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn ssh_reads_only_the_clusters_known_hosts() {
        let dir = std::env::temp_dir().join(format!("kctl-ssh-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let auth = SshAuth {
            identity: None,
            known_hosts: dir.join("known_hosts"),
        };
        let path = cluster_ssh_config(&auth).unwrap();
        assert_eq!(path, dir.join("ssh_config"));
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.lines().any(|l| l == "GlobalKnownHostsFile /dev/null"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
