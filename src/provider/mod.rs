//! Providers make and unmake machines. Installing kctl's parts on them is
//! `bootstrap`'s job, the same for every provider.

pub mod gce;
pub mod host;
pub mod local;
