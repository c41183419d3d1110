//! kctl: the Kubernetes v0.5 workflow as one workstation binary.
//!
//! The pure core (`model`, `manifest`, `plan`, `converge::actions`, `state`)
//! does no I/O. The edges — `store` (etcd), `exec`/`ssh` (running argv on a
//! minion), `provider` (making machines), `bootstrap` (installing kctl's parts
//! on a machine over SSH) and `cli` — sit behind narrow interfaces.

pub mod bootstrap;
pub mod cli;
pub mod cluster;
pub mod converge;
pub mod docker_api;
pub mod events;
pub mod exec;
pub mod files;
pub mod image;
pub mod manifest;
pub mod model;
pub mod node;
pub mod ops;
pub mod output;
pub mod pki;
pub mod plan;
pub mod provider;
pub mod selector;
pub mod services;
pub mod snapshot;
pub mod ssh;
pub mod state;
pub mod store;
pub mod supervise;
pub mod ui;
