//! `camunda-worker deploy [FILE...]`: deploy BPMN files with duplicate filtering.

use anyhow::Context;

use super::{BUNDLED_BPMN, BUNDLED_BPMN_NAME};
use crate::cli::DeployArgs;
use crate::engine::EngineClient;

/// Deploys the files (or the bundled BPMN) and prints what the engine deployed.
pub async fn run(client: &EngineClient, args: &DeployArgs) -> anyhow::Result<()> {
    let mut resources = Vec::new();
    if args.files.is_empty() {
        resources.push((
            BUNDLED_BPMN_NAME.to_owned(),
            BUNDLED_BPMN.as_bytes().to_vec(),
        ));
    }
    for path in &args.files {
        let bytes =
            std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "process.bpmn".to_owned());
        if !name.ends_with(".bpmn") && !name.ends_with(".bpmn20.xml") {
            anyhow::bail!(
                "{}: the engine only parses files ending in .bpmn or .bpmn20.xml",
                path.display()
            );
        }
        resources.push((name, bytes));
    }
    let names: Vec<String> = resources.iter().map(|(n, _)| n.clone()).collect();
    let deployment = client
        .deploy(&args.name, args.tenant_id.as_deref(), resources)
        .await
        .context("deployment failed")?;
    let definitions = deployment.deployed_process_definitions.unwrap_or_default();
    if definitions.is_empty() {
        println!(
            "unchanged: {} already deployed (duplicate filtering), nothing new",
            names.join(", ")
        );
    } else {
        for definition in definitions.values() {
            let tenant = args
                .tenant_id
                .as_ref()
                .map(|t| format!(" for tenant {t}"))
                .unwrap_or_default();
            println!(
                "deployed {} version {} ({}) in deployment {}{tenant}",
                definition.key,
                definition.version.unwrap_or_default(),
                definition.id,
                deployment.id
            );
        }
    }
    Ok(())
}
