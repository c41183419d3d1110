//! `kctl up --provider gce`.

use super::UpOptions;
use crate::ui::Ui;

#[derive(Debug, Clone, Default)]
pub struct GceOptions {
    pub project: Option<String>,
    pub zone: Option<String>,
    pub machine_type: Option<String>,
    pub master_machine_type: Option<String>,
}

pub async fn up(_ui: &Ui, _name: &str, _options: &UpOptions) -> miette::Result<()> {
    Err(miette::miette!("the gce provider is being integrated"))
}

pub async fn down(
    _ui: &Ui,
    _dir: crate::cluster::ClusterDir,
    _config: Option<crate::cluster::ClusterConfig>,
    _options: &crate::ops::down::DownOptions,
) -> miette::Result<()> {
    Err(miette::miette!("the gce provider is being integrated"))
}
