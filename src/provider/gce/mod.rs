//! The GCE provider: makes and unmakes a cluster's machines with the
//! `gcloud` CLI, following the layout 2014's `cluster/kube-up.sh` built
//! (network, two firewall rules, a master, n minions, one route per
//! minion's pod range), moved to today's GCE: a custom-mode VPC with one
//! subnet, host keys pinned from guest attributes.
//!
//! Pure core: `spec` (names, validation), `commands` (every argv), `parse`
//! (gcloud's JSON, host keys). Thin edge: `transport` (running gcloud) and
//! `engine` (the order of calls, idempotency, retries, polling).
//! `/work/shared/gce-reference.md` is the reference this follows.

pub mod commands;
pub mod disks;
pub mod engine;
pub mod lb;
pub mod parse;
pub mod spec;
pub mod transport;

#[cfg(test)]
mod tests;

pub use crate::exec::shell_line;
pub use engine::{
    check_quotas, cpu_metric, create, destroy, discover, down_commands, judge, needed_quota,
    planned, policy_enforced, preflight, quota_shortfalls, quotas, remove_minions, serial_tail,
    startup_script, up_commands, write_metadata_files, Destroyed, Discovered, GceCluster,
    Knowledge, PreflightReport, Progress, Quota, BOOT_DONE, BOOT_FAILED, BOOT_FORMAT, BOOT_VERSION,
};
pub use parse::Instance;
pub use spec::{GceSpec, Names, Role, GCE_MTU};
pub use transport::{Gcloud, GcloudOutput, GcloudProcess};

#[derive(Debug, thiserror::Error, miette::Diagnostic)]
pub enum GceError {
    #[error("gcloud not found on PATH (tried to run {program:?})")]
    #[diagnostic(help(
        "install the Google Cloud CLI (https://cloud.google.com/sdk/docs/install), then `gcloud auth login`"
    ))]
    GcloudMissing { program: String },
    #[error("cannot run {program}: {message}")]
    Spawn { program: String, message: String },
    #[error("gcloud is not logged in (no active account in `gcloud auth list`)")]
    #[diagnostic(help("run `gcloud auth login` and try again"))]
    NotLoggedIn,
    #[error("gcloud's credentials do not work: {message}")]
    #[diagnostic(help("run `gcloud auth login` and try again"))]
    Auth { message: String },
    #[error("project {project:?} is not usable for Compute Engine: {message}")]
    #[diagnostic(help(
        "check the project id (`gcloud projects list`) and enable the API: `gcloud services enable compute.googleapis.com --project={project}`"
    ))]
    Project { project: String, message: String },
    #[error("zone {zone:?} is unknown or not usable: {message}")]
    #[diagnostic(help("`gcloud compute zones list --project={project}` lists the zones"))]
    Zone {
        zone: String,
        project: String,
        message: String,
    },
    #[error("machine type {machine_type:?} is not available in zone {zone}: {message}")]
    #[diagnostic(help(
        "`gcloud compute machine-types list --zones={zone}` lists what is offered"
    ))]
    MachineType {
        machine_type: String,
        zone: String,
        message: String,
    },
    #[error("the image family debian-12 (project debian-cloud) does not resolve: {message}")]
    #[diagnostic(help(
        "`gcloud compute images list --filter=family~^debian-` shows the families"
    ))]
    Image { message: String },
    #[error("invalid {what} {value:?}: {why}")]
    #[diagnostic(help("fix the value; nothing was created"))]
    Invalid {
        what: String,
        value: String,
        why: String,
    },
    #[error("`gcloud {}` failed ({}): {}", .argv.join(" "), exit_text(*.code), .stderr.trim())]
    #[diagnostic(help(
        "what was created so far stays; `kctl down` removes it, or run `kctl up` again to continue"
    ))]
    Failed {
        argv: Vec<String>,
        code: Option<i32>,
        stderr: String,
    },
    #[error("`gcloud {}` printed something kctl cannot read: {message}", .argv.join(" "))]
    BadOutput { argv: Vec<String>, message: String },
    #[error("no SSH host key from {instance} after {waited_secs} s (last answer: {last})")]
    #[diagnostic(help(
        "the guest agent publishes host keys on first boot; check the boot with `gcloud compute instances get-serial-port-output {instance}`. kctl does not trust a key it has not seen published"
    ))]
    HostKeyTimeout {
        instance: String,
        waited_secs: u64,
        last: String,
    },
    #[error("{resource} exists but is not what kctl makes: {}", .problems.join("; "))]
    #[diagnostic(help(
        "it may belong to something else, or to an older cluster of this name: `kctl down` deletes this cluster's resources, or choose another cluster name"
    ))]
    Mismatch {
        resource: String,
        problems: Vec<String>,
    },
    #[error("{path}: {message}")]
    Io { path: String, message: String },
    #[error("instances of a cluster named {cluster} exist in another zone than {zone}: {}", .elsewhere.join(", "))]
    #[diagnostic(help(
        "nothing was deleted: routes, firewall rules and the network are named per project, not per zone. If those instances are this cluster's, its record here is wrong: `kctl down --cluster NAME --provider gce --project PROJECT --zone THEIR-ZONE` after moving the record away; if they belong to something else, remove or rename them first"
    ))]
    OtherZone {
        cluster: String,
        zone: String,
        elsewhere: Vec<String>,
    },
    #[error("the quotas of project {project} cannot hold the cluster: {}", .shortfalls.join("; "))]
    #[diagnostic(help(
        "nothing was created. Ask for more quota (Cloud Console, IAM & Admin > Quotas, region {region}), use fewer --minions, or free what is in use"
    ))]
    Quota {
        project: String,
        region: String,
        shortfalls: Vec<String>,
    },
    #[error(
        "the organisation policy {constraint} is enforced on project {project}: {consequence}"
    )]
    #[diagnostic(help(
        "nothing was created. An organisation policy administrator can exempt this project (`gcloud resource-manager org-policies disable-enforce {constraint} --project={project}`), or use another project"
    ))]
    Policy {
        project: String,
        constraint: String,
        consequence: String,
    },
    #[error("still present after teardown: {}", .remaining.join(", "))]
    #[diagnostic(help("run `kctl down` again; if it persists, delete them in the Cloud Console"))]
    Leftovers { remaining: Vec<String> },
}

/// The error of a gcloud call that did not succeed: its argv, exit and
/// what it said.
fn failed(argv: &[String], out: &GcloudOutput) -> GceError {
    GceError::Failed {
        argv: argv.to_vec(),
        code: out.code,
        stderr: out.stderr.clone(),
    }
}

fn exit_text(code: Option<i32>) -> String {
    match code {
        Some(c) => format!("exit {c}"),
        None => "killed by a signal".into(),
    }
}
