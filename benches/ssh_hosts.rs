//! Wall time of the ssh provider on plain SSH hosts this bench makes (two
//! network namespaces with sshd and dockerd, the same as the tests' hosts;
//! needs root):
//!
//!     cargo bench --bench ssh_hosts
//!
//! Per round: `kctl up --provider ssh` on fresh hosts, `up` again (nothing
//! to do), `apply` of the tomcat controller and service (image loaded
//! first, not timed), `down`. Prints each round and the medians.

#[allow(dead_code)]
#[path = "../tests/common/hosts.rs"]
mod hosts;
#[allow(dead_code)]
#[path = "../tests/common/sys.rs"]
mod sys;

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

const KCTL: &str = env!("CARGO_BIN_EXE_kctl");
const CLUSTER: &str = "bench-ssh";
const ROUNDS: usize = 3;
// BENCH_VERBOSE=1 prints kctl's own step timings.

fn kctl(home: &std::path::Path, user_home: &std::path::Path, args: &[&str]) -> Duration {
    let start = Instant::now();
    let out = Command::new(KCTL)
        .args(args)
        .env("KCTL_HOME", home)
        .env("KCTL_CLUSTER", CLUSTER)
        .env("HOME", user_home)
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let took = start.elapsed();
    if std::env::var_os("BENCH_VERBOSE").is_some() {
        eprint!("{}", String::from_utf8_lossy(&out.stderr));
    }
    assert!(
        out.status.success(),
        "kctl {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    took
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn main() {
    let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let home = PathBuf::from(std::env::var_os("HOME").unwrap_or_else(|| "/root".into()))
        .join(".kctl-bench");
    std::fs::create_dir_all(&home).unwrap();
    let image = home.join("bench-ssh-demo.tar");
    let build = Command::new("bash")
        .arg(repo.join("cluster/demo-image/build.sh"))
        .arg(&image)
        .arg("tutum/tomcat:latest")
        .output()
        .unwrap();
    assert!(build.status.success());
    let manifests = |name: &str| repo.join("manifests").join(name).display().to_string();
    let (mut ups, mut again, mut applies, mut downs) = (vec![], vec![], vec![], vec![]);
    for round in 1..=ROUNDS {
        let set = hosts::PlainHosts::create("bench", 2);
        let user_home = set.user_home();
        let mut up = vec![
            "up".to_string(),
            "--provider".into(),
            "ssh".into(),
            "--identity".into(),
            set.identity().display().to_string(),
            "--pod-net".into(),
            set.pod_net(),
            "--portal-net".into(),
            set.portal_net(),
        ];
        for h in set.hosts() {
            up.push("--host".into());
            up.push(format!("root@{}", h.ip));
        }
        let up: Vec<&str> = up.iter().map(String::as_str).collect();
        let t_up = kctl(&home, &user_home, &up);
        let t_again = kctl(&home, &user_home, &["up", "--provider", "ssh"]);
        kctl(
            &home,
            &user_home,
            &["image", "load", "-i", image.to_str().unwrap()],
        );
        let t_apply = kctl(
            &home,
            &user_home,
            &[
                "apply",
                "-f",
                &manifests("tomcat-service.json"),
                "-f",
                &manifests("tomcat-controller.json"),
            ],
        );
        let t_down = kctl(&home, &user_home, &["down"]);
        println!(
            "round {round}: up {:.2}s, up again {:.2}s, apply {:.2}s, down {:.2}s",
            t_up.as_secs_f64(),
            t_again.as_secs_f64(),
            t_apply.as_secs_f64(),
            t_down.as_secs_f64()
        );
        ups.push(t_up);
        again.push(t_again);
        applies.push(t_apply);
        downs.push(t_down);
    }
    let _ = std::fs::remove_file(&image);
    println!(
        "median of {ROUNDS} rounds (2 hosts): up {:.2}s, up again {:.2}s, apply {:.2}s, down {:.2}s",
        median(ups).as_secs_f64(),
        median(again).as_secs_f64(),
        median(applies).as_secs_f64(),
        median(downs).as_secs_f64()
    );
}
