//! Command-line parsing. Each subcommand calls one function in `ops`.

use crate::cluster::DEFAULT_CLUSTER;
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
    #[command(after_help = "Examples:\n  kctl up\n  kctl up --cluster test --minions 2")]
    Up {
        /// How many minions [default: 3].
        #[arg(long)]
        minions: Option<usize>,
        /// The range services' portal IPs come from [default: the upper half
        /// of the local cluster's own 10.x.0.0/16].
        #[arg(long, value_name = "CIDR")]
        portal_net: Option<ipnet::Ipv4Net>,
        /// Where the machines come from; only `local` (namespaces on this machine) so far.
        #[arg(long, default_value = "local", value_parser = ["local"])]
        provider: String,
    },
    /// Remove everything `up` made.
    #[command(after_help = "Examples:\n  kctl down\n  kctl down --cluster test")]
    Down,
    /// Diff manifests against the cluster, show the plan, converge.
    #[command(after_help = "Examples:
  kctl apply -f manifests/tomcat-controller.json
  kctl apply -f manifests/            # every .json, .yaml, .yml in it
  cat pod.yaml | kctl apply -f -
  kctl apply -f manifests/ --dry-run  # show the plan only")]
    Apply {
        /// A file, a directory, or - for standard input; repeatable.
        #[arg(short = 'f', long = "filename", required = true)]
        files: Vec<PathBuf>,
        /// Print the plan and change nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// List pods, replicationControllers, services, endpoints or minions.
    #[command(after_help = "Examples:
  kctl get pods
  kctl get rc tomcatController -o yaml
  kctl get pods -l name=tomcatCluster -o json
  kctl get minions")]
    Get {
        /// pods (po), replicationControllers (rc), services (svc), endpoints (ep) or minions.
        resource: String,
        /// Show only this object.
        id: Option<String>,
        /// Output format.
        #[arg(short, long, value_enum, default_value = "table")]
        output: Format,
        /// Only objects with these labels: key=value[,key=value].
        #[arg(short = 'l', long)]
        selector: Option<String>,
    },
    /// Delete objects named in files, or one object by kind and id.
    #[command(after_help = "Examples:
  kctl delete -f manifests/
  kctl delete rc tomcatController     # and its pods
  kctl delete pod web --ignore-not-found")]
    Delete {
        /// Files or directories whose objects to delete.
        #[arg(short = 'f', long = "filename", conflicts_with_all = ["resource", "id"])]
        files: Vec<PathBuf>,
        /// pod, rc or service.
        resource: Option<String>,
        id: Option<String>,
        /// Succeed when the object does not exist.
        #[arg(long)]
        ignore_not_found: bool,
    },
    /// Manage images on the minions.
    #[command(subcommand)]
    Image(ImageCommand),
    /// Stop or start a minion of a local cluster (a power cut on demand).
    #[command(subcommand)]
    Minion(MinionCommand),
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

fn kind_of(word: &str) -> miette::Result<Kind> {
    match Resource::parse(word) {
        Some(Resource::Pods) => Ok(Kind::Pod),
        Some(Resource::Controllers) => Ok(Kind::ReplicationController),
        Some(Resource::Services) => Ok(Kind::Service),
        _ => Err(miette!(
            help = "one of: pod, rc (replicationController), service",
            "cannot delete {word:?}"
        )),
    }
}

pub async fn run(cli: Cli) -> miette::Result<()> {
    let ui = Ui::new();
    let name = cli.cluster.as_str();
    match cli.command {
        Command::Up {
            minions,
            portal_net,
            ..
        } => ops::up::up(&ui, name, minions, portal_net).await,
        Command::Down => ops::down::down(&ui, name).await,
        Command::Apply { files, dry_run } => ops::apply::apply(&ui, name, &files, dry_run).await,
        Command::Get {
            resource,
            id,
            output,
            selector,
        } => {
            let resource = Resource::parse(&resource).ok_or_else(|| {
                miette!(
                    help =
                        "one of: pods (po), replicationControllers (rc), services (svc), minions",
                    "unknown resource {resource:?}"
                )
            })?;
            let selector = selector
                .as_deref()
                .map(ops::get::parse_selector)
                .transpose()?;
            ops::get::get(
                &ui,
                name,
                resource,
                id.as_deref(),
                output,
                selector.as_ref(),
            )
            .await
        }
        Command::Delete {
            files,
            resource,
            id,
            ignore_not_found,
        } => {
            let target = match (files.is_empty(), resource, id) {
                (false, _, _) => DeleteTarget::Files(files),
                (true, Some(resource), Some(id)) => DeleteTarget::Object(kind_of(&resource)?, id),
                _ => {
                    return Err(miette!(
                        help = "kctl delete -f FILE, or kctl delete pod|rc|service ID",
                        "nothing to delete"
                    ))
                }
            };
            ops::apply::delete(&ui, name, target, ignore_not_found).await
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
        assert!(
            matches!(cli.command, Command::Apply { ref files, dry_run: true } if files.len() == 2)
        );
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
