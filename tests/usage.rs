//! Exit statuses scripts can rely on: 2 for a command line kctl cannot act
//! on (as clap's own usage errors), 1 for a failure. No cluster needed.

use std::process::Command;

fn kctl(args: &[&str]) -> (Option<i32>, String) {
    let home = std::env::temp_dir().join(format!("kctl-usage-{}", std::process::id()));
    let out = Command::new(env!("CARGO_BIN_EXE_kctl"))
        .env("KCTL_HOME", &home)
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn usage_errors_exit_2_and_say_what_works() {
    for (args, says) in [
        (&["get", "deployments"][..], "unknown resource"),
        (&["delete", "pod"][..], "nothing to delete"),
        (&["delete", "minions", "minion-1"][..], "cannot delete"),
        (
            &["get", "pods", "--cluster", "Bad_Name"][..],
            "invalid cluster name",
        ),
        (
            &["get", "pods", "-l", "env in (a"][..],
            "bad label selector",
        ),
        (&["delete", "rc", "-l", "=x"][..], "a key is missing"),
        (&["frobnicate"][..], "unrecognized subcommand"),
    ] {
        let (code, stderr) = kctl(args);
        assert_eq!(code, Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(says), "{args:?}: {stderr}");
    }
    // A cluster that is not there is a failure, not a usage error.
    let (code, stderr) = kctl(&["get", "pods", "--cluster", "nosuch"]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("kctl up --cluster nosuch"), "{stderr}");
}
