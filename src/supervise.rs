//! A small process supervisor, for where systemd is not: the local
//! provider's etcd and dockerd, and the helper and etcd on machines
//! without systemd. It runs one program, starts it again when it exits
//! (as systemd's `Restart=always` would), and on SIGTERM or SIGINT stops it
//! and exits. `kctl supervise` and `kctl-node supervise` run it.
//!
//! The supervisor itself is what pid files name, so stopping a service
//! stops its supervisor first and nothing brings the program back.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};
use tokio::process::Command;
use tokio::signal::unix::{signal, SignalKind};

/// The first restart comes this soon after an exit, well inside the 2 s a
/// crashed etcd or dockerd may be gone; a program that keeps dying waits
/// twice as long each time, up to [`MOST_DELAY`].
pub const FIRST_DELAY: Duration = Duration::from_millis(300);
pub const MOST_DELAY: Duration = Duration::from_secs(5);
/// A run at least this long counts as healthy: the delay starts over.
pub const HEALTHY_RUN: Duration = Duration::from_secs(10);
/// How long the program gets to stop after SIGTERM before SIGKILL. Below
/// the 5 s `start-stop-daemon --retry TERM/5` gives the supervisor.
pub const STOP_GRACE: Duration = Duration::from_secs(4);

#[derive(Debug, Clone, clap::Args)]
pub struct SuperviseArgs {
    /// Write the supervisor's pid here (and remove it on exit).
    #[arg(long)]
    pub pid_file: Option<PathBuf>,
    /// Files to remove before each start: what a killed program leaves and
    /// its next start would refuse (a stale socket or pid file).
    #[arg(long = "remove-before-start", value_name = "PATH")]
    pub stale: Vec<PathBuf>,
    /// Seconds the program gets to stop after SIGTERM, before SIGKILL.
    #[arg(long, default_value_t = STOP_GRACE.as_secs())]
    pub stop_grace: u64,
    /// The program and its arguments.
    #[arg(last = true, required = true, num_args = 1..)]
    pub command: Vec<String>,
}

/// The delay before the next start, given the last one and how long the
/// program ran (pure).
pub fn next_delay(last: Duration, ran: Duration) -> Duration {
    if ran >= HEALTHY_RUN {
        FIRST_DELAY
    } else {
        (last * 2).clamp(FIRST_DELAY, MOST_DELAY)
    }
}

fn log(line: &str) {
    eprintln!("supervise: {line}");
}

/// Runs until SIGTERM or SIGINT. The program's stdout and stderr are the
/// supervisor's (the service's log).
pub async fn supervise(args: SuperviseArgs) -> ExitCode {
    let (program, rest) = match args.command.split_first() {
        Some(split) => split,
        None => return ExitCode::from(2),
    };
    let (mut term, mut int) = match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(t), Ok(i)) => (t, i),
        _ => {
            log("cannot handle signals");
            return ExitCode::FAILURE;
        }
    };
    if let Some(pid_file) = &args.pid_file {
        if let Err(e) = std::fs::write(pid_file, format!("{}\n", std::process::id())) {
            log(&format!("{}: {e}", pid_file.display()));
            return ExitCode::FAILURE;
        }
    }
    let grace = Duration::from_secs(args.stop_grace);
    let mut delay = Duration::ZERO;
    let code = loop {
        for stale in &args.stale {
            let _ = std::fs::remove_file(stale);
        }
        let started = Instant::now();
        let mut child = match Command::new(program).args(rest).spawn() {
            Ok(child) => child,
            Err(e) => {
                log(&format!("cannot start {program}: {e}"));
                break ExitCode::FAILURE;
            }
        };
        let stop = tokio::select! {
            status = child.wait() => {
                let ran = started.elapsed();
                delay = next_delay(delay, ran);
                let how = match status {
                    Ok(s) => s.to_string(),
                    Err(e) => e.to_string(),
                };
                log(&format!(
                    "{program} {how} after {:.1}s; starting it again in {:.1}s",
                    ran.as_secs_f64(),
                    delay.as_secs_f64()
                ));
                tokio::select! {
                    _ = tokio::time::sleep(delay) => false,
                    _ = term.recv() => true,
                    _ = int.recv() => true,
                }
            }
            _ = term.recv() => { stop_child(&mut child, grace).await; true }
            _ = int.recv() => { stop_child(&mut child, grace).await; true }
        };
        if stop {
            break ExitCode::SUCCESS;
        }
    };
    if let Some(pid_file) = &args.pid_file {
        let _ = std::fs::remove_file(pid_file);
    }
    code
}

async fn stop_child(child: &mut tokio::process::Child, grace: Duration) {
    if let Some(pid) = child.id() {
        // kill(1): std can send SIGKILL only.
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status();
    }
    if tokio::time::timeout(grace, child.wait()).await.is_err() {
        let _ = child.kill().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_program_that_keeps_dying_waits_longer_each_time() {
        let quick = Duration::from_millis(100);
        let mut delay = Duration::ZERO;
        let mut seen = vec![];
        for _ in 0..7 {
            delay = next_delay(delay, quick);
            seen.push(delay.as_millis());
        }
        assert_eq!(seen, [300, 600, 1200, 2400, 4800, 5000, 5000]);
        // A long healthy run starts over.
        assert_eq!(next_delay(MOST_DELAY, HEALTHY_RUN), FIRST_DELAY);
    }

    #[tokio::test]
    async fn a_dead_program_is_started_again_and_stopped_with_its_supervisor() {
        let dir = std::env::temp_dir().join(format!("kctl-supervise-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let starts = dir.join("starts");
        let pid_file = dir.join("supervisor.pid");
        // Each start appends a line, then the program lives a moment and dies.
        let script = format!("echo x >> {}; sleep 0.2", starts.display());
        let args = SuperviseArgs {
            pid_file: Some(pid_file.clone()),
            stale: vec![],
            stop_grace: 1,
            command: vec!["sh".into(), "-c".into(), script],
        };
        let run = tokio::spawn(supervise(args));
        let count = || {
            std::fs::read_to_string(&starts)
                .map(|t| t.lines().count())
                .unwrap_or(0)
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while count() < 3 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(count() >= 3, "started {} times", count());
        assert!(pid_file.exists());
        // SIGTERM to ourselves reaches the supervisor's handler.
        let me = std::process::id().to_string();
        std::process::Command::new("kill")
            .args(["-TERM", &me])
            .status()
            .unwrap();
        let code = tokio::time::timeout(Duration::from_secs(10), run)
            .await
            .expect("the supervisor stops on SIGTERM")
            .unwrap();
        assert_eq!(code, ExitCode::SUCCESS);
        assert!(!pid_file.exists(), "its pid file is gone");
        let after = count();
        tokio::time::sleep(Duration::from_millis(800)).await;
        assert_eq!(count(), after, "nothing starts the program again");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
