//! How gcloud is run: a trait, so the engine runs the same against the real
//! CLI (in tests: pointed at the mock Compute API in tests/mock-compute), or
//! a script in unit tests.

use super::GceError;
use std::future::Future;
use std::path::PathBuf;
use std::process::Stdio;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GcloudOutput {
    /// None when killed by a signal.
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl GcloudOutput {
    pub fn success(&self) -> bool {
        self.code == Some(0)
    }
    /// gcloud's "absent" answer to a describe or delete: it failed, and
    /// every error it lists is "was not found" (a delete of several names
    /// lists one error per name it could not delete).
    pub fn not_found(&self) -> bool {
        let errors: Vec<&str> = self
            .stderr
            .lines()
            .map(str::trim)
            .filter(|l| l.starts_with("- "))
            .collect();
        !self.success()
            && self.stderr.contains("was not found")
            && errors.iter().all(|l| l.contains("was not found"))
    }
}

pub trait Gcloud: Send + Sync {
    /// Runs gcloud with `argv` (without the leading "gcloud") and returns
    /// its output whatever the exit status. Err only if it could not run.
    fn run(&self, argv: &[String]) -> impl Future<Output = Result<GcloudOutput, GceError>> + Send;
}

/// The real thing: a gcloud program run directly (never through a shell:
/// filters contain `$`, `^` and `~`), stdin closed, prompts disabled.
#[derive(Debug, Clone)]
pub struct GcloudProcess {
    pub program: PathBuf,
    /// Extra environment for the child only (tests point gcloud at their
    /// mock API and throwaway configuration this way).
    pub env: Vec<(String, String)>,
}

impl GcloudProcess {
    /// `gcloud` from PATH.
    pub fn new() -> GcloudProcess {
        GcloudProcess::with_program("gcloud")
    }
    pub fn with_program(program: impl Into<PathBuf>) -> GcloudProcess {
        GcloudProcess {
            program: program.into(),
            env: vec![],
        }
    }
    pub fn env(mut self, key: &str, value: &str) -> GcloudProcess {
        self.env.push((key.to_string(), value.to_string()));
        self
    }
}

impl Default for GcloudProcess {
    fn default() -> Self {
        GcloudProcess::new()
    }
}

impl Gcloud for GcloudProcess {
    async fn run(&self, argv: &[String]) -> Result<GcloudOutput, GceError> {
        let out = tokio::process::Command::new(&self.program)
            .args(argv)
            .env("CLOUDSDK_CORE_DISABLE_PROMPTS", "1")
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .output()
            .await
            .map_err(|e| {
                if e.kind() == std::io::ErrorKind::NotFound {
                    GceError::GcloudMissing {
                        program: self.program.display().to_string(),
                    }
                } else {
                    GceError::Spawn {
                        program: self.program.display().to_string(),
                        message: e.to_string(),
                    }
                }
            })?;
        Ok(GcloudOutput {
            code: out.status.code(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        })
    }
}
