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

/// `kctl completion bash` is a script bash accepts that completes kctl's
/// subcommands; `kctl man` is a roff page `man` can show.
#[test]
fn completion_scripts_and_the_manual_page() {
    let out = Command::new(env!("CARGO_BIN_EXE_kctl"))
        .args(["completion", "bash"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let script = std::env::temp_dir().join(format!("kctl-completion-{}", std::process::id()));
    std::fs::write(&script, &out.stdout).unwrap();
    // Loaded into bash, it completes `kctl ap` to `apply`.
    let completed = Command::new("bash")
        .arg("-c")
        .arg(format!(
            "source {}; COMP_WORDS=(kctl ap); COMP_CWORD=1; _kctl kctl ap kctl; echo \"${{COMPREPLY[@]}}\"",
            script.display()
        ))
        .output()
        .unwrap();
    std::fs::remove_file(&script).unwrap();
    let words = String::from_utf8_lossy(&completed.stdout);
    assert!(
        words.split_whitespace().any(|w| w == "apply"),
        "{completed:?}"
    );
    for shell in ["zsh", "fish"] {
        let out = Command::new(env!("CARGO_BIN_EXE_kctl"))
            .args(["completion", shell])
            .output()
            .unwrap();
        assert!(out.status.success() && String::from_utf8_lossy(&out.stdout).contains("apply"));
    }
    let man = Command::new(env!("CARGO_BIN_EXE_kctl"))
        .arg("man")
        .output()
        .unwrap();
    let page = String::from_utf8_lossy(&man.stdout);
    assert!(
        man.status.success() && page.contains(".TH kctl 1"),
        "{page}"
    );
    assert!(page.contains("apply"), "{page}");
}

/// `kctl validate` checks a set of manifests with no cluster at all: 0 and
/// what they hold when they are good, 1 and where when they are not.
#[test]
fn validate_needs_no_cluster() {
    let manifests = concat!(env!("CARGO_MANIFEST_DIR"), "/manifests");
    let (code, _) = kctl(&["validate", "-f", manifests]);
    assert_eq!(code, Some(0));
    let out = Command::new(env!("CARGO_BIN_EXE_kctl"))
        .env("KCTL_HOME", "/nonexistent")
        .args(["validate", "-f", manifests])
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        said.contains("2 objects valid: replicationController tomcatController, service tomcat"),
        "{said}"
    );
    let bad = std::env::temp_dir().join(format!("kctl-bad-{}.json", std::process::id()));
    std::fs::write(
        &bad,
        "{\"kind\": \"Service\", \"apiVersion\": \"v1beta1\", \"id\": \"s\",\n \"port\": \"eighty\"}\n",
    )
    .unwrap();
    let (code, stderr) = kctl(&["validate", "-f", bad.to_str().unwrap()]);
    std::fs::remove_file(&bad).unwrap();
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains("kctl-bad-") && stderr.contains(":2:"),
        "{stderr}"
    );
}

/// What v0.5 read, `validate` reads with a warning (exit 0); `--strict`
/// makes each warning an error (exit 1); `--kind` gives the kind of a
/// manifest that names none, as `kubecfg -c pod1.yaml create pods` did.
#[test]
fn validate_strict_and_kind() {
    let examples = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/k8s-examples");
    let pod = format!("{examples}/api/examples/pod.json");
    let (code, stderr) = kctl(&["validate", "-f", &pod]);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stderr.contains("`enabled` is the legacy form"), "{stderr}");
    let (code, stderr) = kctl(&["validate", "--strict", "-f", &pod]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains("an error under --strict") && stderr.contains("pod.json:"),
        "{stderr}"
    );
    let kindless = format!("{examples}/examples/walkthrough/pod1.yaml");
    let (code, stderr) = kctl(&["validate", "--strict", "-f", &kindless]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("manifest has no `kind`"), "{stderr}");
    let (code, stderr) = kctl(&["validate", "--strict", "--kind", "pods", "-f", &kindless]);
    assert_eq!(code, Some(0), "{stderr}");
    let (code, stderr) = kctl(&["apply", "--kind", "deployment", "-f", &kindless]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("one of: pod, rc"), "{stderr}");
}
