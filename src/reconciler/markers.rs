//! The reconciler's marker queries: the markers of its topic whose value lies in a range, page by
//! page, within the route's tenants (see [`TenantScope`]) — each with the instance that holds it
//! and that instance's tenant, which its recovery keeps.

use super::{Reconciler, PAGE_SIZE};
use crate::engine::{EngineError, TenantScope};
use crate::ledger::Marker;

/// A marker a query found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct FoundMarker {
    /// What it says.
    pub marker: Marker,
    /// The process instance that holds it.
    pub instance: String,
    /// That instance's tenant (`None`: without one): its recovered message stays within it.
    pub tenant_id: Option<String>,
}

impl Reconciler {
    /// The values of ledger variable `name` (the marker or the lease) of this topic, within this
    /// reconciler's tenants, that lie in `[from, to)`.
    pub(super) async fn markers_in(
        &self,
        name: &str,
        from: &str,
        to: &str,
    ) -> Result<Vec<FoundMarker>, EngineError> {
        let mut found = Vec::new();
        let mut first_result = 0;
        loop {
            // Every page is a query the engine answers: within the retry budget, like the rest
            // of what an undeliverable backlog costs it.
            self.follow_ups.spend_budget().await;
            let page = self
                .client
                .variables_in_range(name, (from, to), &self.tenants, first_result, PAGE_SIZE)
                .await?;
            let page_len = page.len() as u64;
            for variable in page {
                let (Some(value), Some(instance)) =
                    (variable.value.as_str(), variable.process_instance_id)
                else {
                    continue;
                };
                // The query cannot ask for instances without a tenant: the answer is sorted here.
                if !self.tenants.admits(variable.tenant_id.as_deref()) {
                    continue;
                }
                // The range also holds topics that extend ours ("a:b" for "a"): parse to be sure.
                found.extend(self.of_topic(value, instance, variable.tenant_id));
            }
            if page_len < PAGE_SIZE {
                break;
            }
            first_result += PAGE_SIZE;
        }
        Ok(found)
    }

    /// The values of ledger variable `name` in the `instances` (read in pages of [`PAGE_SIZE`]),
    /// those of this topic.
    pub(super) async fn markers_of(
        &self,
        name: &str,
        instances: &[&str],
    ) -> Result<Vec<FoundMarker>, EngineError> {
        let mut found = Vec::new();
        for page in instances.chunks(PAGE_SIZE as usize) {
            self.follow_ups.spend_budget().await;
            for variable in self.client.variables_of_instances(name, page).await? {
                let (Some(value), Some(instance)) =
                    (variable.value.as_str(), variable.process_instance_id)
                else {
                    continue;
                };
                found.extend(self.of_topic(value, instance, variable.tenant_id));
            }
        }
        Ok(found)
    }

    /// A value found in `instance`, if it is a marker (or lease) of this topic.
    fn of_topic(
        &self,
        value: &str,
        instance: String,
        tenant_id: Option<String>,
    ) -> Option<FoundMarker> {
        let marker = Marker::parse(value)?;
        (marker.topic() == Some(self.topic.as_str())).then_some(FoundMarker {
            marker,
            instance,
            tenant_id,
        })
    }

    /// The same reconciler, its queries limited to `tenants` (a route's `tenant_ids` or
    /// `without_tenant_id`).
    pub fn within(mut self, tenants: TenantScope) -> Self {
        self.tenants = tenants;
        self
    }
}
