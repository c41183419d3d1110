//! A long-running kctl program on a machine (the node helper, etcd): a
//! systemd service where systemd runs, else a daemon supervised through
//! `start-stop-daemon` with a pid file and a log. One shape for both, so
//! what is installed can also be removed exactly.

use crate::argv;
use crate::exec::{Exec, ExecError};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Service {
    /// The systemd unit's name without `.service`, e.g. `kctl-node-demo`.
    pub unit: String,
    pub description: String,
    /// The program's absolute path on the machine.
    pub program: String,
    pub args: Vec<String>,
    /// Pid file and log for the start-stop-daemon form.
    pub pid_file: String,
    pub log_file: String,
    /// Other units of the machine this one starts after (systemd only).
    pub after: Vec<String>,
    /// Commands systemd runs before each start (`ExecStartPre`), and
    /// whether their failure is allowed (systemd only: without it, the
    /// helper on the machine does their work).
    pub pre_start: Vec<(bool, Vec<String>)>,
    /// Where systemd is not, a `kctl-node` that runs the program under
    /// `kctl-node supervise`, which starts it again when it dies (as
    /// systemd's `Restart=always`). None: the program alone.
    pub supervisor: Option<String>,
}

impl Service {
    pub fn unit_file(&self) -> String {
        format!("/etc/systemd/system/{}.service", self.unit)
    }
    fn unit_name(&self) -> String {
        format!("{}.service", self.unit)
    }

    /// The unit text. Every argument kctl passes is a name, an address, a
    /// path or a URL without spaces or quotes, so systemd's own word
    /// splitting keeps them apart.
    pub fn systemd_unit(&self) -> String {
        let after: String = self.after.iter().map(|u| format!(" {u}")).collect();
        let pre: String = self
            .pre_start
            .iter()
            .map(|(may_fail, argv)| {
                format!(
                    "ExecStartPre={}{}\n",
                    if *may_fail { "-" } else { "" },
                    argv.join(" ")
                )
            })
            .collect();
        format!(
            "[Unit]\nDescription={}\nAfter=network-online.target docker.service{after}\n\n\
             [Service]\n{pre}ExecStart={} {}\nRestart=always\nRestartSec=1\n\n\
             [Install]\nWantedBy=multi-user.target\n",
            self.description,
            self.program,
            self.args.join(" ")
        )
    }
}

pub async fn has_systemd<E: Exec>(exec: &E) -> Result<bool, ExecError> {
    Ok(exec
        .run(&argv!["test", "-d", "/run/systemd/system"], None)
        .await?
        .success())
}

/// Stops the service in whichever form it runs; absent is fine.
pub async fn stop<E: Exec>(exec: &E, service: &Service, systemd: bool) -> Result<(), ExecError> {
    if systemd {
        exec.run(&argv!["systemctl", "stop", service.unit_name()], None)
            .await?;
    }
    exec.run(
        &argv![
            "start-stop-daemon",
            "--stop",
            "--quiet",
            "--oknodo",
            "--pidfile",
            service.pid_file.clone(),
            "--retry",
            "TERM/5/KILL/2",
            "--remove-pidfile"
        ],
        None,
    )
    .await?;
    Ok(())
}

/// Makes sure the service runs; `restart` restarts it even if it does (its
/// program changed). Returns true if anything changed.
pub async fn ensure_running<E: Exec>(
    exec: &E,
    service: &Service,
    systemd: bool,
    restart: bool,
) -> Result<bool, ExecError> {
    if systemd {
        let mut changed = restart;
        let unit_file = service.unit_file();
        let text = service.systemd_unit();
        let current = exec.run(&argv!["cat", unit_file.clone()], None).await?;
        if current.stdout != text.as_bytes() {
            let write = argv!["dd", format!("of={unit_file}"), "status=none"];
            exec.run(&write, Some(text.as_bytes()))
                .await?
                .check(exec.target(), &write)?;
            exec.run_ok(&argv!["systemctl", "daemon-reload"]).await?;
            changed = true;
        }
        let active = exec
            .run(
                &argv!["systemctl", "is-active", "--quiet", service.unit_name()],
                None,
            )
            .await?
            .success();
        if changed || !active {
            exec.run_ok(&argv!["systemctl", "enable", service.unit_name()])
                .await?;
            exec.run_ok(&argv!["systemctl", "restart", service.unit_name()])
                .await?;
            changed = true;
        }
        return Ok(changed);
    }
    if restart {
        stop(exec, service, false).await?;
    }
    let status = exec
        .run(
            &argv![
                "start-stop-daemon",
                "--status",
                "--pidfile",
                service.pid_file.clone()
            ],
            None,
        )
        .await?;
    if status.success() {
        // Its arguments changed (a cluster's choices are among them): a
        // running daemon keeps the ones it started with until restarted.
        // One whose command line cannot be read is left as it runs.
        let stale = !restart
            && running_argv(exec, service)
                .await?
                .is_some_and(|running| running != daemon_argv(service));
        if !stale {
            return Ok(restart);
        }
        stop(exec, service, false).await?;
    }
    exec.run_ok(&start_stop_daemon_start(service)).await?;
    Ok(true)
}

/// The command line the start-stop-daemon form runs under its pid file.
fn daemon_argv(service: &Service) -> Vec<String> {
    let mut argv = match &service.supervisor {
        Some(supervisor) => argv![
            supervisor.clone(),
            "supervise",
            "--",
            service.program.clone()
        ],
        None => argv![service.program.clone()],
    };
    argv.extend(service.args.iter().cloned());
    argv
}

/// The command line of the process the pid file names, if one runs. The
/// pid file is the machine's word: only a number is taken from it.
async fn running_argv<E: Exec>(
    exec: &E,
    service: &Service,
) -> Result<Option<Vec<String>>, ExecError> {
    let pid = exec
        .run(&argv!["cat", service.pid_file.clone()], None)
        .await?;
    let Ok(pid) = pid.stdout_text().trim().parse::<u32>() else {
        return Ok(None);
    };
    let cmdline = exec
        .run(&argv!["cat", format!("/proc/{pid}/cmdline")], None)
        .await?;
    if !cmdline.success() {
        return Ok(None);
    }
    Ok(Some(
        cmdline
            .stdout
            .split(|b| *b == 0)
            .filter(|arg| !arg.is_empty())
            .map(|arg| String::from_utf8_lossy(arg).into_owned())
            .collect(),
    ))
}

/// The command that starts the service without systemd: in the
/// background, its pid file naming the supervisor when there is one.
pub fn start_stop_daemon_start(service: &Service) -> Vec<String> {
    let mut start = argv![
        "start-stop-daemon",
        "--start",
        "--quiet",
        "--background",
        "--make-pidfile",
        "--pidfile",
        service.pid_file.clone(),
        "--output",
        service.log_file.clone(),
        "--exec"
    ];
    match &service.supervisor {
        Some(supervisor) => start.extend(argv![
            supervisor.clone(),
            "--",
            "supervise",
            "--",
            service.program.clone()
        ]),
        None => start.extend(argv![service.program.clone(), "--"]),
    }
    start.extend(service.args.iter().cloned());
    start
}

/// Stops the service and removes its unit; true if there was one to stop.
pub async fn remove<E: Exec>(
    exec: &E,
    service: &Service,
    systemd: bool,
) -> Result<bool, ExecError> {
    let running = exec
        .run(
            &argv![
                "start-stop-daemon",
                "--status",
                "--pidfile",
                service.pid_file.clone()
            ],
            None,
        )
        .await?
        .success();
    let mut had_unit = false;
    if systemd {
        had_unit = exec
            .run(&argv!["test", "-e", service.unit_file()], None)
            .await?
            .success();
        if had_unit {
            exec.run(
                &argv!["systemctl", "disable", "--now", service.unit_name()],
                None,
            )
            .await?;
            exec.run_ok(&argv!["rm", "-f", service.unit_file()]).await?;
            exec.run_ok(&argv!["systemctl", "daemon-reload"]).await?;
        }
    }
    stop(exec, service, false).await?;
    Ok(running || had_unit)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exec::{Output, RecordingExec};

    fn service() -> Service {
        Service {
            unit: "kctl-etcd-c1".into(),
            description: "etcd of kctl cluster c1".into(),
            program: "/usr/bin/etcd".into(),
            args: argv!["--name", "c1", "--data-dir", "/var/lib/kctl/c1/etcd/data"],
            pid_file: "/var/lib/kctl/c1/etcd/etcd.pid".into(),
            log_file: "/var/lib/kctl/c1/etcd/etcd.log".into(),
            after: vec![],
            pre_start: vec![],
            supervisor: None,
        }
    }

    #[test]
    fn without_systemd_a_supervisor_runs_the_program() {
        let supervised = Service {
            supervisor: Some("/var/lib/kctl/c1/etcd/kctl-node".into()),
            ..service()
        };
        let start = start_stop_daemon_start(&supervised);
        let exec_at = start.iter().position(|a| a == "--exec").unwrap();
        assert_eq!(
            &start[exec_at + 1..exec_at + 6],
            [
                "/var/lib/kctl/c1/etcd/kctl-node",
                "--",
                "supervise",
                "--",
                "/usr/bin/etcd"
            ]
        );
        assert_eq!(&start[exec_at + 6..], supervised.args.as_slice());
        assert!(start.contains(&"/var/lib/kctl/c1/etcd/etcd.pid".to_string()));
    }

    fn failing() -> Output {
        Output {
            code: Some(1),
            stdout: vec![],
            stderr: vec![],
        }
    }

    #[test]
    fn unit_runs_the_program_with_its_arguments() {
        let unit = service().systemd_unit();
        assert!(unit
            .contains("ExecStart=/usr/bin/etcd --name c1 --data-dir /var/lib/kctl/c1/etcd/data\n"));
        assert!(unit.contains("Restart=always"));
    }

    #[tokio::test]
    async fn daemon_started_only_when_not_running() {
        let stopped = RecordingExec {
            answers: [("start-stop-daemon --status".to_string(), failing())].into(),
            ..Default::default()
        };
        assert!(ensure_running(&stopped, &service(), false, false)
            .await
            .unwrap());
        let start = stopped
            .calls()
            .into_iter()
            .find(|c| c.contains(&"--start".to_string()))
            .unwrap();
        let dashdash = start.iter().position(|a| a == "--").unwrap();
        assert_eq!(start[dashdash - 1], "/usr/bin/etcd");
        assert_eq!(&start[dashdash + 1..], service().args.as_slice());

        let running = RecordingExec::default();
        assert!(!ensure_running(&running, &service(), false, false)
            .await
            .unwrap());
        assert!(!running
            .calls()
            .iter()
            .any(|c| c.contains(&"--start".to_string())));
    }

    #[tokio::test]
    async fn daemon_restarted_when_its_arguments_changed() {
        let supervised = Service {
            supervisor: Some("/var/lib/kctl/c1/etcd/kctl-node".into()),
            ..service()
        };
        let running = |cmdline: Vec<String>| RecordingExec {
            answers: [
                (
                    "cat /var/lib/kctl/c1/etcd/etcd.pid".to_string(),
                    Output {
                        code: Some(0),
                        stdout: b"4242\n".to_vec(),
                        stderr: vec![],
                    },
                ),
                (
                    "cat /proc/4242/cmdline".to_string(),
                    Output {
                        code: Some(0),
                        stdout: cmdline
                            .iter()
                            .flat_map(|a| [a.as_bytes(), b"\0"])
                            .flatten()
                            .copied()
                            .collect(),
                        stderr: vec![],
                    },
                ),
            ]
            .into(),
            ..Default::default()
        };
        let started = |exec: &RecordingExec| {
            exec.calls()
                .iter()
                .any(|c| c.contains(&"--start".to_string()))
        };

        let same = running(daemon_argv(&supervised));
        assert!(!ensure_running(&same, &supervised, false, false)
            .await
            .unwrap());
        assert!(!started(&same));

        let mut before = daemon_argv(&supervised);
        before.pop();
        let changed = running(before);
        assert!(ensure_running(&changed, &supervised, false, false)
            .await
            .unwrap());
        assert!(changed
            .calls()
            .iter()
            .any(|c| c.contains(&"--stop".to_string())));
        assert!(started(&changed));
    }

    #[tokio::test]
    async fn systemd_unit_written_enabled_and_started() {
        let exec = RecordingExec {
            answers: [("systemctl is-active".to_string(), failing())].into(),
            ..Default::default()
        };
        assert!(ensure_running(&exec, &service(), true, false)
            .await
            .unwrap());
        let calls = exec.calls();
        assert!(calls.contains(&argv![
            "dd",
            "of=/etc/systemd/system/kctl-etcd-c1.service",
            "status=none"
        ]));
        assert!(calls.contains(&argv!["systemctl", "restart", "kctl-etcd-c1.service"]));
        assert!(!calls
            .iter()
            .any(|c| c[0] == "start-stop-daemon" && c.contains(&"--start".to_string())));
    }

    #[tokio::test]
    async fn removal_disables_the_unit_and_deletes_it() {
        let exec = RecordingExec::default();
        assert!(remove(&exec, &service(), true).await.unwrap());
        let calls = exec.calls();
        assert!(calls.contains(&argv![
            "systemctl",
            "disable",
            "--now",
            "kctl-etcd-c1.service"
        ]));
        assert!(calls.contains(&argv![
            "rm",
            "-f",
            "/etc/systemd/system/kctl-etcd-c1.service"
        ]));
    }
}
