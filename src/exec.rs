//! Running commands on a minion. A command is an argv vector, never a shell
//! string: the SSH transport quotes each element exactly once (the `openssh`
//! crate does it), the local transport passes it to `execve` as is. Converge
//! logic is written against `Exec`, so the same code runs over SSH from the
//! workstation and locally inside `kctl-node`.

use std::future::Future;
use std::net::SocketAddr;
use std::process::Stdio;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Output {
    pub code: Option<i32>,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

impl Output {
    pub fn success(&self) -> bool {
        self.code == Some(0)
    }
    pub fn stdout_text(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }
    pub fn stderr_text(&self) -> String {
        String::from_utf8_lossy(&self.stderr).into_owned()
    }

    /// The output if the command exited 0, else a `Failed` error that
    /// names the target, the command and its stderr.
    pub fn check(self, target: &str, argv: &[String]) -> Result<Output, ExecError> {
        if self.success() {
            Ok(self)
        } else {
            Err(ExecError::Failed {
                target: target.to_string(),
                argv: argv.to_vec(),
                code: self.code,
                stderr: String::from_utf8_lossy(&self.stderr).into_owned(),
            })
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    #[error("{target}: {message}")]
    Transport { target: String, message: String },
    #[error("{target}: `{}` failed ({}): {}", .argv.join(" "), exit_text(*.code), .stderr.trim())]
    Failed {
        target: String,
        argv: Vec<String>,
        code: Option<i32>,
        stderr: String,
    },
}

fn exit_text(code: Option<i32>) -> String {
    match code {
        Some(c) => format!("exit {c}"),
        None => "killed by a signal".into(),
    }
}

/// One argv as a line for a POSIX shell (a user pastes it, or ssh hands
/// it to the remote shell): the one place kctl quotes for a shell: words made only
/// of safe characters stay bare, anything else is single-quoted.
pub fn shell_line(argv: &[String]) -> String {
    argv.iter()
        .map(|w| shell_word(w))
        .collect::<Vec<_>>()
        .join(" ")
}

fn shell_word(word: &str) -> String {
    // `=` first would be zsh's `=cmd` expansion.
    let safe = !word.is_empty()
        && !word.starts_with('=')
        && word
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./=:,@%+".contains(c));
    if safe {
        word.to_string()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

/// Why `GET` got no status code.
#[derive(Debug, thiserror::Error)]
pub enum HttpGetError {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("not an HTTP answer: {0:?}")]
    NotHttp(String),
}

/// Sends `GET path` over `stream` (to `addr`, named in the Host header)
/// and reads the answer's status code. Callers bound it in time. The path
/// goes onto the request line verbatim: callers check it first
/// (the model's `probe_path_problem`).
pub async fn http_status<S>(
    stream: &mut S,
    addr: SocketAddr,
    path: &str,
) -> Result<u16, HttpGetError>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let request = format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\nUser-Agent: kctl-node\r\n\r\n");
    stream.write_all(request.as_bytes()).await?;
    let mut head = vec![0u8; 64];
    let n = stream.read(&mut head).await?;
    let line = String::from_utf8_lossy(&head[..n]);
    line.split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| HttpGetError::NotHttp(line.into_owned()))
}

/// A GET that outlasted its limit, as an error.
pub fn timed_out(limit: std::time::Duration) -> HttpGetError {
    HttpGetError::Io(std::io::Error::new(
        std::io::ErrorKind::TimedOut,
        format!("no answer within {}s", limit.as_secs()),
    ))
}

/// Builds an argv from anything string-like.
#[macro_export]
macro_rules! argv {
    ($($arg:expr),* $(,)?) => {
        ::std::vec::Vec::<::std::string::String>::from([$(::std::string::String::from($arg)),*])
    };
}

/// Run an argv on one machine.
pub trait Exec: Send + Sync {
    /// A name for messages: the minion's id.
    fn target(&self) -> &str;

    /// Runs `argv`, feeding `stdin` if given, and returns its output whatever
    /// its exit status.
    fn run(
        &self,
        argv: &[String],
        stdin: Option<&[u8]>,
    ) -> impl Future<Output = Result<Output, ExecError>> + Send;

    /// Sends `GET path` to `addr` from the machine itself (as a pod's
    /// hook is sent: pod addresses are reachable there, not necessarily
    /// here) and returns the answer's status code.
    /// Bounded by `limit` here, so that whatever it holds open meanwhile
    /// is closed whatever happens.
    fn http_get(
        &self,
        addr: SocketAddr,
        path: &str,
        limit: std::time::Duration,
    ) -> impl Future<Output = Result<u16, ExecError>> + Send;

    /// Runs `argv` with a file as its standard input (an upload, an image).
    fn run_with_file(
        &self,
        argv: &[String],
        file: &std::path::Path,
    ) -> impl Future<Output = Result<Output, ExecError>> + Send {
        async move {
            let data = std::fs::read(file).map_err(|e| ExecError::Transport {
                target: self.target().to_string(),
                message: format!("{}: {e}", file.display()),
            })?;
            self.run(argv, Some(&data)).await
        }
    }

    /// Runs `argv` and fails unless it exits 0; returns stdout as text.
    fn run_ok(&self, argv: &[String]) -> impl Future<Output = Result<String, ExecError>> + Send {
        async move {
            let out = self.run(argv, None).await?;
            Ok(out.check(self.target(), argv)?.stdout_text())
        }
    }
}

/// Runs commands on this machine (what `kctl-node` uses on its minion).
pub struct LocalExec {
    pub name: String,
}

impl LocalExec {
    fn http_error(&self, addr: SocketAddr, e: HttpGetError) -> ExecError {
        ExecError::Transport {
            target: self.name.clone(),
            message: format!("GET from {addr}: {e}"),
        }
    }
}

impl Exec for LocalExec {
    fn target(&self) -> &str {
        &self.name
    }

    async fn http_get(
        &self,
        addr: SocketAddr,
        path: &str,
        limit: std::time::Duration,
    ) -> Result<u16, ExecError> {
        let answer = tokio::time::timeout(limit, async {
            let mut stream = tokio::net::TcpStream::connect(addr).await?;
            http_status(&mut stream, addr, path).await
        })
        .await;
        match answer {
            Ok(answer) => answer.map_err(|e| self.http_error(addr, e)),
            Err(_) => Err(self.http_error(addr, timed_out(limit))),
        }
    }

    async fn run(&self, argv: &[String], stdin: Option<&[u8]>) -> Result<Output, ExecError> {
        use tokio::io::AsyncWriteExt;
        let transport = |e: std::io::Error| ExecError::Transport {
            target: self.name.clone(),
            message: format!("{}: {e}", argv.first().map(String::as_str).unwrap_or("")),
        };
        let (program, args) = argv.split_first().ok_or_else(|| ExecError::Transport {
            target: self.name.clone(),
            message: "empty command".into(),
        })?;
        let mut child = tokio::process::Command::new(program)
            .args(args)
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(transport)?;
        if let (Some(data), Some(mut pipe)) = (stdin, child.stdin.take()) {
            pipe.write_all(data).await.map_err(transport)?;
        }
        let out = child.wait_with_output().await.map_err(transport)?;
        Ok(Output {
            code: out.status.code(),
            stdout: out.stdout,
            stderr: out.stderr,
        })
    }
}

/// Records every argv and answers from a script: for unit tests of logic
/// built on `Exec`.
#[derive(Default)]
pub struct RecordingExec {
    pub calls: std::sync::Mutex<Vec<Vec<String>>>,
    /// What each call was given on stdin (empty if nothing), by call.
    pub inputs: std::sync::Mutex<Vec<Vec<u8>>>,
    /// Answers by argv prefix (e.g. "docker ps"; the longest matching
    /// prefix wins); the default answer is success with empty output.
    pub answers: std::collections::HashMap<String, Output>,
    /// The status code `http_get` answers for `addr path`; 200 if none.
    pub http_answers: std::collections::HashMap<String, u16>,
}

impl RecordingExec {
    pub fn calls(&self) -> Vec<Vec<String>> {
        self.calls.lock().map(|c| c.clone()).unwrap_or_default()
    }

    /// The stdin of the first call whose argv is `argv`, as text.
    pub fn input_of(&self, argv: &[String]) -> Option<String> {
        let at = self.calls().iter().position(|c| c == argv)?;
        let inputs = self.inputs.lock().ok()?;
        Some(String::from_utf8_lossy(inputs.get(at)?).into_owned())
    }
}

impl Exec for RecordingExec {
    fn target(&self) -> &str {
        "recording"
    }

    async fn http_get(
        &self,
        addr: SocketAddr,
        path: &str,
        _limit: std::time::Duration,
    ) -> Result<u16, ExecError> {
        let line = format!("{addr} {path}");
        if let (Ok(mut calls), Ok(mut inputs)) = (self.calls.lock(), self.inputs.lock()) {
            calls.push(vec!["GET".to_string(), addr.to_string(), path.to_string()]);
            inputs.push(vec![]);
        }
        Ok(self.http_answers.get(&line).copied().unwrap_or(200))
    }

    async fn run(&self, argv: &[String], stdin: Option<&[u8]>) -> Result<Output, ExecError> {
        // One lock for both, so calls and inputs stay in step.
        if let (Ok(mut calls), Ok(mut inputs)) = (self.calls.lock(), self.inputs.lock()) {
            calls.push(argv.to_vec());
            inputs.push(stdin.unwrap_or_default().to_vec());
        }
        let line = argv.join(" ");
        let answer = self
            .answers
            .iter()
            .filter(|(prefix, _)| line.starts_with(prefix.as_str()))
            .max_by_key(|(prefix, _)| prefix.len())
            .map(|(_, out)| out.clone());
        Ok(answer.unwrap_or(Output {
            code: Some(0),
            stdout: vec![],
            stderr: vec![],
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn local_exec_passes_argv_without_a_shell() {
        let exec = LocalExec {
            name: "here".into(),
        };
        let out = exec
            .run(&argv!["printf", "%s|", "a b", "$(echo no)", ";true"], None)
            .await
            .unwrap();
        assert_eq!(out.stdout_text(), "a b|$(echo no)|;true|");
    }

    #[tokio::test]
    async fn run_ok_reports_failure_with_stderr() {
        let exec = LocalExec {
            name: "here".into(),
        };
        let err = exec
            .run_ok(&argv!["sh", "-c", "echo boom >&2; exit 3"])
            .await
            .unwrap_err();
        let text = err.to_string();
        assert!(text.contains("exit 3") && text.contains("boom"), "{text}");
    }

    #[tokio::test]
    async fn stdin_is_fed() {
        let exec = LocalExec {
            name: "here".into(),
        };
        let out = exec.run(&argv!["cat"], Some(b"hello")).await.unwrap();
        assert_eq!(out.stdout, b"hello");
    }
}
