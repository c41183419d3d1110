//! Command-line parsing. Each subcommand calls one function in `ops`.

use crate::cluster::{ProviderKind, DEFAULT_CLUSTER};
use crate::model::Kind;
use crate::ops::{self, apply::DeleteTarget, get::Format, get::Resource};
use crate::ui::Ui;
use clap::{Parser, Subcommand};
use miette::miette;
use std::path::PathBuf;

#[derive(Parser, Debug)]
#[command(
    name = "kctl",
    version,
    about = "The Kubernetes v0.5 workflow as one workstation binary",
    long_about = "kctl makes a cluster (on this machine by default), applies Kubernetes v1beta1 \
manifests of pods, replication controllers and services to it, and tears it down again. \
State lives in etcd; containers run in Docker on the minions, reached over SSH.",
    after_help = "Examples:
  kctl up                          # a local cluster of 3 minions
  kctl image load -i demo.tar      # copy an image to every minion
  kctl apply -f manifests/         # show the plan, then converge
  kctl get pods -o json
  kctl down

Exit status: 0 on success, 1 on any error, 2 on bad usage."
)]
pub struct Cli {
    /// The cluster to work on.
    #[arg(long, global = true, env = "KCTL_CLUSTER", default_value = DEFAULT_CLUSTER)]
    pub cluster: String,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Make a cluster, or repair it; changes nothing on a healthy one.
    #[command(after_help = "Examples:
  kctl up                                    # 3 minions as namespaces on this machine
  kctl up --cluster test --minions 2
  kctl up --cluster ha --masters 3           # etcd of 3 members: losing one changes nothing
  kctl up --provider ssh --host root@192.168.1.10 --host admin@192.168.1.11:2222 --identity ~/.ssh/id_ed25519
  kctl up --provider ssh --host 10.0.0.1 --host 10.0.0.2 --host 10.0.0.3 --host 10.0.0.4 \\
          --masters 3                           # etcd on the first three hosts
  kctl up --provider gce --project my-proj --zone us-central1-b --minions 3
  kctl up --provider gce --project my-proj --machine-type e2-micro \\
          --master-machine-type e2-micro        # today's free-tier VMs
  kctl up --provider gce --project my-proj --ssh-source 203.0.113.7/32 \\
          --dry-run                             # print the gcloud commands only")]
    Up {
        /// Where the machines come from: `local` (network namespaces on this
        /// machine), `ssh` (hosts you have), `gce` (f1-micro VMs made with gcloud).
        /// [default: the cluster's own provider if it exists, else local]
        #[arg(long, value_enum)]
        provider: Option<ProviderArg>,
        /// How many minions [default: 3] (local, gce).
        #[arg(long)]
        minions: Option<usize>,
        /// How many etcd members keep the cluster's state: 1, or 3 to
        /// survive losing one (5: two) [default: 1].
        #[arg(long)]
        masters: Option<usize>,
        /// The range services' portal IPs come from [default: local: the upper
        /// half of the cluster's own 10.x.0.0/16; ssh, gce: 10.0.0.0/16].
        #[arg(long, value_name = "CIDR")]
        portal_net: Option<ipnet::Ipv4Net>,
        /// gce: print the exact gcloud commands and run none; ssh: check the hosts only.
        #[arg(long)]
        dry_run: bool,
        /// Let pods bind any host directory, also `/`, `/etc` or Docker's
        /// socket (refused by default: such a pod owns the machine). Kept
        /// for the cluster's life.
        #[arg(long)]
        allow_host_dir: bool,
        /// Let pods run privileged containers or add capabilities, as
        /// v0.5's --allow_privileged (refused by default: such a container
        /// owns its minion). Kept for the cluster's life.
        #[arg(long)]
        allow_privileged: bool,
        /// ssh: a host to make a minion of, as [user@]HOST[:PORT]; repeatable.
        /// Users other than root need passwordless sudo.
        #[arg(
            long = "host",
            value_name = "[USER@]HOST[:PORT]",
            help_heading = "Provider ssh"
        )]
        hosts: Vec<String>,
        /// ssh: the private key to log in with [default: ssh's own defaults and agent].
        #[arg(long, value_name = "FILE", help_heading = "Provider ssh")]
        identity: Option<PathBuf>,
        /// ssh: a host that runs a member of etcd, one of the --host values;
        /// repeatable (1, 3 or 5 times) [default: the first --masters hosts].
        #[arg(long, value_name = "HOST", help_heading = "Provider ssh")]
        etcd_host: Vec<String>,
        /// ssh: trust host keys not yet in ~/.ssh/known_hosts (they are pinned in
        /// the cluster's own known_hosts; a later change stops kctl).
        #[arg(long, help_heading = "Provider ssh")]
        accept_new_host_keys: bool,
        /// ssh: install missing packages (Docker, iptables, nftables, etcd) with apt.
        #[arg(long, help_heading = "Provider ssh")]
        install: bool,
        /// ssh: the range minions' /24 pod ranges come from [default: 10.244.0.0/16].
        #[arg(long, value_name = "CIDR", help_heading = "Provider ssh")]
        pod_net: Option<ipnet::Ipv4Net>,
        /// gce: the project [default: gcloud's configured project].
        #[arg(long, help_heading = "Provider gce")]
        project: Option<String>,
        /// gce: the zone [default: us-central1-b].
        #[arg(long, help_heading = "Provider gce")]
        zone: Option<String>,
        /// gce: the minions' machine type [default: f1-micro, as in 2014].
        /// `e2-micro` is today's free-tier VM (one a month in us-central1,
        /// us-east1, us-west1) with 1 GB instead of 0.6 GB, for about the same
        /// price.
        #[arg(long, value_name = "TYPE", help_heading = "Provider gce")]
        machine_type: Option<String>,
        /// gce: the master's machine type [default: f1-micro; or e2-micro, see --machine-type].
        #[arg(long, value_name = "TYPE", help_heading = "Provider gce")]
        master_machine_type: Option<String>,
        /// gce: where SSH to the VMs may come from, e.g. your address as a /32;
        /// repeatable [default: 0.0.0.0/0, as kube-up.sh had it].
        #[arg(
            long = "ssh-source",
            value_name = "CIDR",
            help_heading = "Provider gce"
        )]
        ssh_sources: Vec<ipnet::Ipv4Net>,
        /// gce: how long new VMs may take to boot and run their startup script.
        #[arg(
            long,
            value_name = "SECONDS",
            default_value_t = 600,
            help_heading = "Provider gce"
        )]
        boot_timeout: u64,
    },
    /// Remove everything `up` made.
    #[command(after_help = "Examples:
  kctl down
  kctl down --cluster test
  kctl down --provider gce --project my-proj --zone us-central1-b   # record lost: find it in the cloud
  kctl down --dry-run                                                # say what would be deleted")]
    Down {
        /// For a gce cluster whose local record is lost: look for it in the cloud.
        #[arg(long, value_enum)]
        provider: Option<ProviderArg>,
        /// gce: the project to look in (with --provider gce and no record).
        #[arg(long)]
        project: Option<String>,
        /// gce: the zone to look in [default: us-central1-b].
        #[arg(long)]
        zone: Option<String>,
        /// Print what would be deleted (gce: the exact gcloud commands) and delete nothing.
        #[arg(long)]
        dry_run: bool,
        /// Forget the cluster even if some machine could not be cleaned.
        #[arg(long)]
        force: bool,
    },
    /// Diff manifests against the cluster, show the plan, converge.
    #[command(after_help = "Examples:
  kctl apply -f manifests/tomcat-controller.json
  kctl apply -f manifests/            # every .json, .yaml, .yml in it
  cat pod.yaml | kctl apply -f -
  kctl apply -f manifests/ --dry-run  # show the plan only
  kctl apply -f manifests/ --dry-run=client   # check the files, no cluster
  kctl apply -f manifests/ --refresh          # and repair what drifted on the minions
  kctl apply -f manifests/ --prune            # and delete what was removed from manifests/")]
    Apply {
        /// A file, a directory, or - for standard input; repeatable.
        #[arg(short = 'f', long = "filename", required = true)]
        files: Vec<PathBuf>,
        /// Change nothing: `server` (the default) prints the plan against
        /// the cluster; `client` only checks the manifests, with no
        /// cluster (for CI), as `kctl validate` does.
        #[arg(long, value_enum, num_args = 0..=1, default_missing_value = "server", require_equals = true, value_name = "WHERE")]
        dry_run: Option<DryRun>,
        /// Also read back what the minions run (containers of these
        /// objects, every Ready minion's service rules) and repair what
        /// drifted from etcd now. Without it, each minion's helper repairs
        /// drift by itself (containers at once, rules within 10 s), and an
        /// apply with nothing to change opens no connection.
        #[arg(long)]
        refresh: bool,
        /// Also delete the objects that earlier applies of these same files
        /// created and that the files no longer hold. kctl records which
        /// files applied each object last; nothing else is ever pruned.
        #[arg(long)]
        prune: bool,
        #[command(flatten)]
        reading: ReadingArgs,
    },
    /// Show what `apply` would change, field by field. Exit status 0: no
    /// differences; 1: differences; 2: trouble (as diff(1)).
    #[command(after_help = "Examples:
  kctl diff -f manifests/
  kctl diff -f manifests/ --live      # also what the minions really run
  kctl diff -f app.yaml || echo \"apply would change something\"")]
    Diff {
        /// A file, a directory, or - for standard input; repeatable.
        #[arg(short = 'f', long = "filename", required = true)]
        files: Vec<PathBuf>,
        /// Also compare what the minions run (containers, service rules)
        /// with etcd, and report the drift.
        #[arg(long)]
        live: bool,
        /// Also show what `apply --prune` would delete.
        #[arg(long)]
        prune: bool,
        #[command(flatten)]
        reading: ReadingArgs,
    },
    /// List pods, replicationControllers, services, endpoints, minions or events.
    #[command(after_help = "Examples:
  kctl get pods
  kctl get rc tomcatController -o yaml
  kctl get pods -l name=tomcatCluster -o json
  kctl get pods -l 'env in (prod, qa),tier!=front'
  kctl get pods -o wide -w          # more columns; then each change as it happens
  kctl get rc web -o yaml --output-version v1   # today's shape, to apply elsewhere
  kctl get minions")]
    Get {
        /// pods (po), replicationControllers (rc), services (svc), endpoints (ep),
        /// minions or events (ev).
        resource: String,
        /// Show only this object.
        id: Option<String>,
        /// Output format.
        #[arg(short, long, value_enum, default_value = "table")]
        output: Format,
        /// Tables without their header line.
        #[arg(long)]
        no_headers: bool,
        /// Only objects whose labels match: key=value (or ==), key!=value,
        /// key in (a,b), key notin (a,b), key, !key; comma-separated.
        #[arg(short = 'l', long)]
        selector: Option<String>,
        /// After the list, print each object again whenever it changes,
        /// until Ctrl-C.
        #[arg(short = 'w', long)]
        watch: bool,
        /// The shape of `-o json|yaml`: v1beta1 (Kubernetes v0.5's) or v1
        /// (today's); kctl applies both.
        #[arg(long, value_enum, default_value = "v1beta1")]
        output_version: ops::get::OutputVersion,
    },
    /// Show everything known about one object, with its recent events.
    #[command(after_help = "Examples:
  kctl describe pod tomcatcontroller-f62pl
  kctl describe rc tomcatController
  kctl describe service tomcat
  kctl describe minion minion-1
  kctl get events                    # every object's")]
    Describe {
        /// pod (po), rc (replicationController), service (svc) or minion.
        resource: String,
        /// The object's id.
        id: String,
    },
    /// Delete objects named in files, by kind and ids, or by labels.
    #[command(after_help = "Examples:
  kctl delete -f manifests/
  kctl delete rc tomcatController     # and its pods
  kctl delete pod web db --ignore-not-found
  kctl delete service -l 'tier in (test, staging)'
  kctl delete --rejected              # records kctl warned it does not act on")]
    Delete {
        /// Files or directories whose objects to delete.
        #[arg(short = 'f', long = "filename", conflicts_with_all = ["resource", "ids", "selector"])]
        files: Vec<PathBuf>,
        /// The records etcd holds that kctl does not act on (its warnings
        /// name them): written by something else, or another version.
        #[arg(long, conflicts_with_all = ["files", "resource", "ids", "selector"])]
        rejected: bool,
        /// pod, rc or service.
        resource: Option<String>,
        /// The objects' ids.
        #[arg(conflicts_with = "selector")]
        ids: Vec<String>,
        /// Every object of the kind with these labels: key=value, key!=value,
        /// key in (a,b), key notin (a,b), key, !key; comma-separated.
        #[arg(short = 'l', long)]
        selector: Option<String>,
        /// Succeed when the object does not exist.
        #[arg(long)]
        ignore_not_found: bool,
    },
    /// Print what a pod's container wrote to stdout and stderr.
    #[command(after_help = "Examples:
  kctl logs web-1
  kctl logs web-1 -c sidecar --tail 20
  kctl logs web-1 -f                  # follow until Ctrl-C
  kctl logs web-1 --previous          # the runs before the last restart")]
    Logs {
        /// The pod's id (`kctl get pods`).
        pod: String,
        /// The container [default: the pod's only one].
        #[arg(short = 'c', long)]
        container: Option<String>,
        /// Keep printing as the container writes.
        #[arg(short = 'f', long)]
        follow: bool,
        /// Only the last N lines.
        #[arg(long, value_name = "N")]
        tail: Option<u64>,
        /// What the container printed before its last restart.
        #[arg(short = 'p', long)]
        previous: bool,
    },
    /// Run a command in a pod's container; kctl exits with its status.
    #[command(after_help = "Examples:
  kctl exec web-1 -- cat /etc/hostname
  kctl exec -it web-1 -- sh          # an interactive shell
  kctl exec web-1 -c sidecar -- ps")]
    Exec {
        /// The pod's id (`kctl get pods`).
        pod: String,
        /// The container [default: the pod's only one].
        #[arg(short = 'c', long)]
        container: Option<String>,
        /// Pass this terminal's standard input to the command.
        #[arg(short = 'i', long)]
        stdin: bool,
        /// Give the command a terminal.
        #[arg(short = 't', long)]
        tty: bool,
        /// The command and its arguments, after `--`.
        #[arg(last = true, required = true, value_name = "COMMAND")]
        command: Vec<String>,
    },
    /// Open a shell on a minion, or run one command there, over the
    /// cluster's SSH.
    #[command(after_help = "Examples:
  kctl ssh minion-1
  kctl ssh minion-2 -- docker ps")]
    Ssh {
        /// The minion, as `kctl get minions` lists it.
        minion: String,
        /// A command to run instead of a shell, after `--`.
        #[arg(last = true, value_name = "COMMAND")]
        command: Vec<String>,
    },
    /// Forward a port on this machine's loopback to a pod or to a
    /// service's portal, through SSH, until Ctrl-C.
    #[command(after_help = "Examples:
  kctl port-forward service/tomcat 8080      # then open http://127.0.0.1:8080/
  kctl port-forward pod/web-1 18080:80
  kctl port-forward svc/db :5432             # any free local port")]
    PortForward {
        /// pod/NAME or service/NAME (svc/NAME); a bare NAME is a pod.
        target: String,
        /// [LOCAL:]REMOTE: the service's port or the pod's container port.
        #[arg(required = true, value_name = "[LOCAL:]REMOTE")]
        ports: Vec<String>,
    },
    /// Manage images on the minions.
    #[command(subcommand)]
    Image(ImageCommand),
    /// Save the cluster's objects to a file, or restore them onto a cluster.
    #[command(subcommand)]
    Snapshot(SnapshotCommand),
    /// Change how many replicas a replication controller keeps.
    #[command(
        visible_alias = "scale",
        after_help = "Examples:
  kctl resize rc tomcatController 5
  kctl scale rc tomcatController 1"
    )]
    Resize {
        /// rc (replicationController).
        resource: String,
        /// The controller's id.
        id: String,
        /// How many replicas.
        replicas: u32,
    },
    /// Run an image as a replication controller (and a service), with no
    /// manifest to write: kubecfg's `run`.
    #[command(after_help = "Examples:
  kctl run web --image tutum/tomcat --replicas 2 -p 80:8080 --service 8080
  kctl run web --image nginx:1.25 -o yaml > web.yaml   # a manifest to start from")]
    Run {
        /// The controller's id (and its pods' `name` label).
        name: String,
        /// The image to run.
        #[arg(long)]
        image: String,
        /// How many pods.
        #[arg(long, default_value_t = 1)]
        replicas: u32,
        /// A port of the container, as HOSTPORT:CONTAINERPORT or CONTAINERPORT; repeatable.
        #[arg(short = 'p', long = "port", value_name = "[HOSTPORT:]CONTAINERPORT")]
        ports: Vec<String>,
        /// Also make a service of this port in front of the pods (to the first -p port).
        #[arg(long, value_name = "PORT")]
        service: Option<u16>,
        /// Print the plan and change nothing.
        #[arg(long)]
        dry_run: bool,
        /// Print the manifest instead of applying it.
        #[arg(short, long, value_enum)]
        output: Option<ManifestFormat>,
    },
    /// Move a replication controller's pods to a new image (or template)
    /// one at a time, never below its count of serving pods; a pod that
    /// does not become ready stops the update and rolls it back.
    #[command(after_help = "Examples:
  kctl rollingupdate rc tomcatController --image tutum/tomcat:8
  kctl rollingupdate rc web --image nginx:1.27 -c web --update-period 30s
  kctl rollingupdate rc web -f web-controller-v2.json

A new pod must be Running, pass its liveness probe and be in its services'
endpoints on every minion before an old one is taken out of them, and the
old one stops only once every minion's rules have forgotten it. Exit status
1 when the update failed (and was rolled back), with the reason.")]
    Rollingupdate {
        /// rc (replicationController).
        resource: String,
        /// The controller's id.
        id: String,
        /// The new image.
        #[arg(long, required_unless_present = "files", conflicts_with = "files")]
        image: Option<String>,
        /// Which container takes the image [default: the only one].
        #[arg(short = 'c', long, requires = "image")]
        container: Option<String>,
        /// A file with the controller as it is to be (same id).
        #[arg(short = 'f', long = "filename")]
        files: Vec<PathBuf>,
        /// The pause between one pod's replacement and the next.
        #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = parse_duration)]
        update_period: std::time::Duration,
        /// How long a new pod may take to become ready.
        #[arg(long, value_name = "DURATION", default_value = "2m", value_parser = parse_duration)]
        timeout: std::time::Duration,
    },
    /// Check manifests as `apply` would, with no cluster: for CI. Exit
    /// status 1 with every problem's file, line and column.
    #[command(after_help = "Examples:
  kctl validate -f manifests/
  kctl validate -f tomcat-controller.json -f tomcat-service.json
  kctl validate --strict -f manifests/     # warnings fail too
  kctl validate --kind pod -f pod1.yaml    # a v0.5 file that names no kind")]
    Validate {
        /// A file, a directory, or - for standard input; repeatable.
        #[arg(short = 'f', long = "filename", required = true)]
        files: Vec<PathBuf>,
        #[command(flatten)]
        reading: ReadingArgs,
    },
    /// List the clusters this workstation knows: provider, size, status.
    #[command(after_help = "Examples:
  kctl clusters
  KCTL_HOME=/srv/kctl kctl clusters")]
    Clusters,
    /// Print the versions of kctl, of the kctl-node it installs, and of the
    /// helper each minion of the cluster runs.
    #[command(after_help = "Examples:
  kctl version
  kctl version --cluster lab")]
    Version,
    /// Print a shell completion script.
    #[command(after_help = "Examples:
  kctl completion bash > /etc/bash_completion.d/kctl
  kctl completion zsh > \"${fpath[1]}/_kctl\"
  kctl completion fish > ~/.config/fish/completions/kctl.fish")]
    Completion { shell: clap_complete::Shell },
    /// Print kctl's manual page (roff).
    #[command(after_help = "Examples:
  kctl man > /usr/local/share/man/man1/kctl.1 && man kctl")]
    Man,
    /// Stop or start a minion of a local cluster (a power cut on demand).
    #[command(subcommand)]
    Minion(MinionCommand),
    /// Run a program and start it again whenever it exits, until SIGTERM:
    /// how the local provider keeps its etcd and dockerds running.
    #[command(hide = true)]
    Supervise(crate::supervise::SuperviseArgs),
}

#[derive(Subcommand, Debug)]
pub enum MinionCommand {
    /// Kill every process of the minion at once, with no clean shutdown.
    #[command(after_help = "Example:\n  kctl minion stop minion-2")]
    Stop {
        /// The minion, as `kctl get minions` lists it.
        name: String,
    },
    /// Boot a stopped minion again with its old identity, and converge it.
    #[command(after_help = "Example:\n  kctl minion start minion-2")]
    Start {
        /// The minion, as `kctl get minions` lists it.
        name: String,
    },
}

#[derive(Subcommand, Debug)]
pub enum SnapshotCommand {
    /// Write the cluster's services (with their portal IPs), controllers
    /// and pods, as of one etcd revision, to FILE.
    #[command(after_help = "Examples:
  kctl snapshot save backup.json
  kctl snapshot save --cluster prod /srv/backups/prod-$(date +%F).json")]
    Save {
        /// Written whole or not at all, readable by its owner only.
        file: PathBuf,
    },
    /// Put a snapshot's objects onto a cluster that holds none (e.g. one
    /// made again after the old was lost): services keep their portal
    /// IPs, pods their ids; then start them as `apply` would.
    #[command(after_help = "Examples:
  kctl up --cluster prod && kctl snapshot restore --cluster prod backup.json")]
    Restore { file: PathBuf },
}

#[derive(Subcommand, Debug)]
pub enum ImageCommand {
    /// Copy images to every minion (no registry needed).
    #[command(after_help = "Examples:
  kctl image load nginx:1.25          # from this machine's Docker
  kctl image load -i tomcat.tar       # a `docker save` archive")]
    Load {
        /// Images in the workstation's Docker.
        images: Vec<String>,
        /// A `docker save` archive instead.
        #[arg(short = 'i', long = "input", conflicts_with = "images")]
        input: Option<PathBuf>,
    },
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum ManifestFormat {
    Json,
    Yaml,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum DryRun {
    /// Plan against the cluster.
    Server,
    /// Check the manifests only.
    Client,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProviderArg {
    Local,
    Ssh,
    Gce,
}

impl ProviderArg {
    fn kind(self) -> ProviderKind {
        match self {
            ProviderArg::Local => ProviderKind::Local,
            ProviderArg::Ssh => ProviderKind::Ssh,
            ProviderArg::Gce => ProviderKind::Gce,
        }
    }
}

/// A flag of one provider given with another is a mistake worth saying.
fn check_provider_flags(o: &ops::up::UpOptions) -> miette::Result<()> {
    let ssh = &o.ssh;
    let gce = &o.gce;
    let ssh_flags = [
        (!ssh.hosts.is_empty(), "--host"),
        (ssh.identity.is_some(), "--identity"),
        (!ssh.etcd_hosts.is_empty(), "--etcd-host"),
        (ssh.accept_new_host_keys, "--accept-new-host-keys"),
        (ssh.install, "--install"),
        (ssh.pod_net.is_some(), "--pod-net"),
    ];
    let gce_flags = [
        (gce.project.is_some(), "--project"),
        (gce.zone.is_some(), "--zone"),
        (gce.machine_type.is_some(), "--machine-type"),
        (gce.master_machine_type.is_some(), "--master-machine-type"),
        (!gce.ssh_sources.is_empty(), "--ssh-source"),
    ];
    let wrong: Vec<&str> = match o.provider {
        ProviderKind::Local => ssh_flags.iter().chain(&gce_flags).collect::<Vec<_>>(),
        ProviderKind::Ssh => gce_flags.iter().collect(),
        ProviderKind::Gce => ssh_flags.iter().collect(),
    }
    .into_iter()
    .filter(|(given, _)| *given)
    .map(|(_, flag)| *flag)
    .collect();
    if wrong.is_empty() {
        Ok(())
    } else {
        Err(miette!(
            help = "--provider ssh takes --host, --identity, --etcd-host, --accept-new-host-keys, --install, --pod-net; --provider gce takes --project, --zone, --machine-type, --master-machine-type",
            "{} not for --provider {}",
            wrong.join(", "),
            o.provider.name()
        ))
    }
}

/// `500ms`, `10s`, `2m`, `1h`, or plain seconds.
fn parse_duration(text: &str) -> Result<std::time::Duration, String> {
    let (number, unit) = text
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .map_or((text, "s"), |at| text.split_at(at));
    let value: f64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a duration like 500ms, 10s, 2m or 1h"))?;
    let seconds = match unit {
        "ms" => value / 1000.0,
        "s" => value,
        "m" => value * 60.0,
        "h" => value * 3600.0,
        _ => return Err(format!("{text:?}: the unit is one of ms, s, m, h")),
    };
    // A week is more than any pause or timeout kctl waits; far more would
    // overflow the clock arithmetic.
    if seconds > 7.0 * 86_400.0 {
        return Err(format!("{text:?} is longer than a week"));
    }
    std::time::Duration::try_from_secs_f64(seconds).map_err(|e| e.to_string())
}

fn kind_of(word: &str) -> miette::Result<Kind> {
    kind_for(word, "delete")
}

/// How `apply`, `diff` and `validate` read manifests.
#[derive(clap::Args, Debug, Clone)]
pub struct ReadingArgs {
    /// Make every warning an error: unknown fields, JSON that only a YAML
    /// parser takes, a missing `kind` or `apiVersion`, fields kctl does
    /// not act on (as kubectl's --validate=strict).
    #[arg(long)]
    strict: bool,
    /// The kind of objects whose manifest names none: pod, rc or service
    /// (as v0.5's `kubecfg -c pod.json create pods`).
    #[arg(long, value_name = "KIND", value_parser = parse_manifest_kind)]
    kind: Option<Kind>,
}

impl ReadingArgs {
    fn options(&self) -> crate::manifest::LoadOptions {
        crate::manifest::LoadOptions {
            strict: self.strict,
            kind: self.kind,
            // What the cluster allows is the cluster's to say (ops::apply).
            allow_host_dir: false,
            allow_privileged: false,
            disks_unavailable_on: None,
        }
    }
}

fn parse_manifest_kind(word: &str) -> Result<Kind, String> {
    match Resource::parse(word) {
        Some(Resource::Pods) => Ok(Kind::Pod),
        Some(Resource::Controllers) => Ok(Kind::ReplicationController),
        Some(Resource::Services) => Ok(Kind::Service),
        _ => Err("one of: pod, rc (replicationController), service".to_string()),
    }
}

/// The kind a resource word names, for a command that acts on it (`verb`
/// says which, in the error).
fn kind_for(word: &str, verb: &str) -> miette::Result<Kind> {
    match Resource::parse(word) {
        Some(Resource::Pods) => Ok(Kind::Pod),
        Some(Resource::Controllers) => Ok(Kind::ReplicationController),
        Some(Resource::Services) => Ok(Kind::Service),
        _ => Err(usage(
            &format!("cannot {verb} {word:?}"),
            "one of: pod, rc (replicationController), service",
        )),
    }
}

pub use crate::ops::UsageError;

fn usage(message: &str, help: &str) -> miette::Report {
    ops::usage_error(message, help)
}

fn parse_selector(text: &str) -> miette::Result<crate::selector::Selector> {
    crate::selector::parse(text).map_err(|e| {
        usage(
            &e.to_string(),
            "write KEY=VALUE, KEY!=VALUE, KEY in (A,B), KEY notin (A,B), KEY or !KEY, comma-separated",
        )
    })
}

/// Whether `report` is a usage error: exit status 2.
pub fn is_usage_error(report: &miette::Report) -> bool {
    report.downcast_ref::<UsageError>().is_some()
        || matches!(
            report.downcast_ref::<crate::cluster::ClusterError>(),
            Some(crate::cluster::ClusterError::BadName(_))
        )
}

pub async fn run(cli: Cli) -> miette::Result<()> {
    let ui = Ui::new();
    let name = cli.cluster.as_str();
    match cli.command {
        Command::Up {
            provider,
            minions,
            masters,
            portal_net,
            dry_run,
            hosts,
            identity,
            etcd_host,
            accept_new_host_keys,
            install,
            pod_net,
            project,
            zone,
            machine_type,
            master_machine_type,
            ssh_sources,
            boot_timeout,
            allow_host_dir,
            allow_privileged,
        } => {
            // `kctl up` again on an existing cluster means its provider.
            let provider = match provider {
                Some(p) => p.kind(),
                None => crate::cluster::ClusterDir::new(name)?
                    .load()
                    .map(|c| c.provider)
                    .unwrap_or(ProviderKind::Local),
            };
            let options = ops::up::UpOptions {
                provider,
                minions,
                masters,
                portal_net,
                dry_run,
                ssh: ops::up::ssh::SshOptions {
                    hosts,
                    identity,
                    etcd_hosts: etcd_host,
                    accept_new_host_keys,
                    install,
                    pod_net,
                },
                gce: ops::up::gce::GceOptions {
                    project,
                    zone,
                    machine_type,
                    master_machine_type,
                    boot_timeout: Some(std::time::Duration::from_secs(boot_timeout)),
                    ssh_sources,
                },
                allowances: ops::up::Allowances {
                    host_dir: allow_host_dir,
                    privileged: allow_privileged,
                },
            };
            check_provider_flags(&options)?;
            ops::up::up(&ui, name, options).await
        }
        Command::Down {
            provider,
            project,
            zone,
            dry_run,
            force,
        } => {
            let options = ops::down::DownOptions {
                provider: provider.map(ProviderArg::kind),
                project,
                zone,
                dry_run,
                force,
            };
            ops::down::down(&ui, name, &options).await
        }
        Command::Apply {
            files,
            dry_run: Some(DryRun::Client),
            reading,
            ..
        } => ops::apply::validate(
            &ui,
            &files,
            ops::apply::as_cluster_allows(name, reading.options()),
        ),
        Command::Apply {
            files,
            dry_run,
            refresh,
            prune,
            reading,
        } => {
            let options = ops::apply::ApplyOptions {
                dry_run: dry_run.is_some(),
                refresh,
                prune,
            };
            ops::apply::apply(&ui, name, &files, reading.options(), options).await
        }
        Command::Diff {
            files,
            live,
            prune,
            reading,
        } => {
            match ops::apply::diff(&ui, name, &files, reading.options(), live, prune).await {
                Ok(false) => Ok(()),
                Ok(true) => Err(ops::CommandExited(1).into()),
                // diff(1)'s convention: 2 for trouble, bad usage included.
                Err(report) => Err(ops::FailedWith { code: 2, report }.into()),
            }
        }
        Command::Get {
            resource,
            id,
            output,
            no_headers,
            selector,
            watch,
            output_version,
        } => {
            let resource = Resource::parse(&resource).ok_or_else(|| {
                usage(
                    &format!("unknown resource {resource:?}"),
                    "one of: pods (po), replicationControllers (rc), services (svc), endpoints (ep), minions, events (ev)",
                )
            })?;
            let selector = selector.as_deref().map(parse_selector).transpose()?;
            let query = ops::get::Query {
                output_version,
                resource,
                id: id.as_deref(),
                selector: selector.as_ref(),
                format: output,
                headers: !no_headers,
                watch,
            };
            ops::get::get(&ui, name, &query).await
        }
        Command::Describe { resource, id } => {
            let resource = Resource::parse(&resource)
                .filter(|r| *r != Resource::Events)
                .ok_or_else(|| {
                    usage(
                        &format!("cannot describe {resource:?}"),
                        "one of: pod (po), rc (replicationController), service (svc), minion",
                    )
                })?;
            ops::describe::describe(&ui, name, resource, &id).await
        }
        Command::Delete {
            files,
            rejected,
            resource,
            ids,
            selector,
            ignore_not_found,
        } => {
            let target = match (files.is_empty(), resource, selector) {
                _ if rejected => DeleteTarget::Rejected,
                (false, _, _) => DeleteTarget::Files(files),
                (true, Some(resource), Some(selector)) => {
                    DeleteTarget::Selected(kind_of(&resource)?, parse_selector(&selector)?)
                }
                (true, Some(resource), None) if !ids.is_empty() => {
                    DeleteTarget::Objects(kind_of(&resource)?, ids)
                }
                _ => {
                    return Err(usage(
                        "nothing to delete",
                        "kctl delete -f FILE, kctl delete pod|rc|service ID..., or kctl delete pod|rc|service -l SELECTOR",
                    ))
                }
            };
            ops::apply::delete(&ui, name, target, ignore_not_found).await
        }
        Command::Logs {
            pod,
            container,
            follow,
            tail,
            previous,
        } => {
            let options = ops::reach::LogOptions {
                container,
                follow,
                tail,
                previous,
            };
            ops::reach::logs(name, &pod, &options).await
        }
        Command::Exec {
            pod,
            container,
            stdin,
            tty,
            command,
        } => {
            let options = ops::reach::ExecOptions {
                container,
                stdin,
                tty,
                command,
            };
            ops::reach::exec(name, &pod, &options).await
        }
        Command::Ssh { minion, command } => ops::reach::ssh(name, &minion, &command).await,
        Command::PortForward { target, ports } => {
            let target = ops::reach::ForwardTarget::parse(&target).ok_or_else(|| {
                usage(
                    &format!("cannot forward to {target:?}"),
                    "pod/NAME or service/NAME",
                )
            })?;
            let ports = ports
                .iter()
                .map(|p| {
                    ops::reach::PortPair::parse(p).ok_or_else(|| {
                        usage(
                            &format!("bad port {p:?}"),
                            "LOCAL:REMOTE, REMOTE (the same port here), or :REMOTE (any free port here)",
                        )
                    })
                })
                .collect::<miette::Result<Vec<_>>>()?;
            ops::reach::port_forward(&ui, name, &target, &ports).await
        }
        Command::Snapshot(SnapshotCommand::Save { file }) => {
            ops::snapshot::save(&ui, name, &file).await
        }
        Command::Snapshot(SnapshotCommand::Restore { file }) => {
            ops::snapshot::restore(&ui, name, &file).await
        }
        Command::Image(ImageCommand::Load { images, input }) => {
            ops::image::load(&ui, name, &images, input.as_deref()).await
        }
        Command::Minion(MinionCommand::Stop { name: minion }) => {
            ops::minion::stop(&ui, name, &minion).await
        }
        Command::Minion(MinionCommand::Start { name: minion }) => {
            ops::minion::start(&ui, name, &minion).await
        }
        Command::Version => ops::version::version(&ui, name).await,
        Command::Clusters => ops::clusters::clusters(&ui).await,
        Command::Resize {
            resource,
            id,
            replicas,
        } => {
            if kind_for(&resource, "resize")? != Kind::ReplicationController {
                return Err(usage(
                    &format!("cannot resize {resource:?}"),
                    "kctl resize rc ID N",
                ));
            }
            ops::apply::resize(&ui, name, &id, replicas).await
        }
        Command::Run {
            name: id,
            image,
            replicas,
            ports,
            service,
            dry_run,
            output,
        } => {
            let ports = ports
                .iter()
                .map(|p| {
                    ops::run::parse_port(p).ok_or_else(|| {
                        usage(
                            &format!("bad port {p:?}"),
                            "-p HOSTPORT:CONTAINERPORT or -p CONTAINERPORT, each 1-65535",
                        )
                    })
                })
                .collect::<miette::Result<Vec<_>>>()?;
            let spec = ops::run::RunSpec {
                name: id,
                image,
                replicas,
                ports,
                service_port: service,
            };
            let (manifest, loaded) = ops::run::load(&spec)?;
            match output {
                Some(ManifestFormat::Json) => {
                    ui.out(serde_json::to_string_pretty(&manifest).unwrap_or_default());
                    Ok(())
                }
                Some(ManifestFormat::Yaml) => {
                    ui.out(serde_yaml_ng::to_string(&manifest).map_err(ops::report)?);
                    Ok(())
                }
                None => {
                    let options = ops::apply::ApplyOptions {
                        dry_run,
                        ..Default::default()
                    };
                    ops::apply::apply_loaded(&ui, name, loaded, None, options).await
                }
            }
        }
        Command::Rollingupdate {
            resource,
            id,
            image,
            container,
            files,
            update_period,
            timeout,
        } => {
            if kind_for(&resource, "roll out")? != Kind::ReplicationController {
                return Err(usage(
                    &format!("cannot roll out {resource:?}"),
                    "kctl rollingupdate rc ID --image IMAGE",
                ));
            }
            let target = match image {
                Some(image) => ops::rollout::Target::Image { image, container },
                None => {
                    let reading = ops::apply::as_cluster_allows(name, Default::default());
                    let loaded = crate::manifest::load_paths(&files, reading)?;
                    let mut controllers = loaded.objects.into_iter().filter_map(|o| match o {
                        crate::model::Object::ReplicationController(rc) => Some(rc),
                        _ => None,
                    });
                    match (controllers.next(), controllers.next()) {
                        (Some(rc), None) => ops::rollout::Target::Controller(rc),
                        _ => {
                            return Err(usage(
                                "the files must hold exactly one replicationController",
                                "kctl rollingupdate rc ID -f CONTROLLER.json",
                            ))
                        }
                    }
                }
            };
            let options = ops::rollout::RolloutOptions {
                update_period,
                timeout,
            };
            ops::rollout::rolling_update(&ui, name, &id, target, options).await
        }
        Command::Validate { files, reading } => {
            ops::apply::validate(&ui, &files, reading.options())
        }
        Command::Completion { shell } => {
            let mut command = <Cli as clap::CommandFactory>::command();
            clap_complete::generate(shell, &mut command, "kctl", &mut std::io::stdout());
            Ok(())
        }
        Command::Man => {
            let command = <Cli as clap::CommandFactory>::command();
            clap_mangen::Man::new(command)
                .render(&mut std::io::stdout())
                .map_err(|e| miette!("writing the manual page: {e}"))
        }
        Command::Supervise(args) => match crate::supervise::supervise(args).await {
            code if code == std::process::ExitCode::SUCCESS => Ok(()),
            _ => Err(miette!("the supervisor stopped")),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn durations_read_as_written() {
        use std::time::Duration;
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("1.5"), Ok(Duration::from_millis(1500)));
        assert!(parse_duration("10 s").is_err());
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("3d").is_err());
        assert!(parse_duration("3000000000000000h").is_err());
    }

    #[test]
    fn parses_apply_and_get() {
        let cli = Cli::try_parse_from([
            "kctl",
            "--cluster",
            "t",
            "apply",
            "-f",
            "a.json",
            "-f",
            "dir",
            "--dry-run",
        ])
        .unwrap();
        assert_eq!(cli.cluster, "t");
        assert!(matches!(
            cli.command,
            Command::Apply { ref files, dry_run: Some(DryRun::Server), .. } if files.len() == 2
        ));
        let client = Cli::try_parse_from(["kctl", "apply", "-f", "x", "--dry-run=client"]).unwrap();
        assert!(matches!(
            client.command,
            Command::Apply {
                dry_run: Some(DryRun::Client),
                ..
            }
        ));
        let cli = Cli::try_parse_from(["kctl", "get", "po", "-o", "yaml", "-l", "a=b"]).unwrap();
        assert!(matches!(
            cli.command,
            Command::Get {
                output: Format::Yaml,
                ..
            }
        ));
        assert!(Cli::try_parse_from(["kctl", "apply"]).is_err());
    }
}

/// Every hint and help text that names a `kctl` command (in backticks)
/// names one that exists, with flags it takes.
#[cfg(test)]
mod hint_tests {
    use super::Cli;
    use clap::CommandFactory;

    fn sources(dir: &std::path::Path, out: &mut Vec<(String, String)>) {
        for entry in std::fs::read_dir(dir).unwrap().flatten() {
            let path = entry.path();
            if path.is_dir() {
                sources(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let text = std::fs::read_to_string(&path).unwrap();
                out.push((path.display().to_string(), text));
            }
        }
    }

    #[test]
    fn every_hint_names_a_command_that_works() {
        let root = Cli::command();
        let mut files = Vec::new();
        sources(
            &std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src"),
            &mut files,
        );
        let mut checked = 0;
        for (file, text) in &files {
            for quoted in text.split("`kctl ").skip(1) {
                let Some(command) = quoted.split('`').next() else {
                    continue;
                };
                // (A comment may wrap the command over lines.)
                let words: Vec<&str> = command
                    .split_whitespace()
                    .filter(|w| !w.starts_with("//"))
                    .collect();
                let Some(first) = words.first() else { continue };
                if !first.chars().all(|c| c.is_ascii_lowercase() || c == '-')
                    || first.starts_with('-')
                {
                    continue;
                }
                let sub = root.find_subcommand(first).unwrap_or_else(|| {
                    panic!("{file}: `kctl {command}` names no subcommand {first:?}")
                });
                let mut target = sub;
                if let Some(second) = words.get(1) {
                    if target.has_subcommands() && !second.starts_with('-') {
                        // `stop|start` names two.
                        let parent = target;
                        for choice in second.split('|') {
                            target = parent.find_subcommand(choice).unwrap_or_else(|| {
                                panic!("{file}: `kctl {command}`: {first} has no {choice:?}")
                            });
                        }
                    }
                }
                for flag in words.iter().filter_map(|w| w.strip_prefix("--")) {
                    let flag = flag.split(['=', '`', ')', ',']).next().unwrap_or_default();
                    if flag.is_empty() || !flag.chars().all(|c| c.is_ascii_lowercase() || c == '-')
                    {
                        continue;
                    }
                    let known = target
                        .get_arguments()
                        .chain(root.get_arguments())
                        .any(|a| a.get_long() == Some(flag));
                    assert!(known, "{file}: `kctl {command}`: no flag --{flag}");
                }
                checked += 1;
            }
        }
        assert!(checked > 100, "only {checked} hints found");
    }
}
