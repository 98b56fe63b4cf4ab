//! `camunda-worker status`: what the engine says is waiting — the first thing to run when an
//! instance seems stuck. Besides the engine's own counts, the follow-ups as the ledger records
//! them (see [`crate::ledger`]): owed, overdue (a reconciler's to deliver), and failed work.
//!
//! On an engine with tenants, each route's counts are split by tenant below its totals: the
//! route's own `tenant_ids`, or else every tenant that deployed a process definition. Each
//! tenant's line asks the engine with `tenantIdIn`. The totals are the route's, as its fetch and
//! its reconciler see them: a route with `tenant_ids` counts those tenants only (the sum of their
//! lines), one with `without_tenant_id` the instances without a tenant (everything less every
//! tenant's counts: the engine's variable query cannot ask for "no tenant"), so that an operator
//! never reads another tenant's owed follow-ups as this route's reconciler falling behind.

use crate::config::Config;
use crate::engine::{EngineClient, EngineError, TaskFilter, TenantScope};
use crate::ledger::{failed_range, lease_variable, owed_range, INCIDENT_TYPE};
use crate::route::{Route, RouteKind};

/// Prints, for each route, the waiting instances, open tasks and follow-ups of its topic and
/// message (per tenant when there are tenants); then the engine's incidents.
pub async fn run(client: &EngineClient, config: &Config) -> Result<(), EngineError> {
    println!("engine: {}", client.base_url());
    let deployed_tenants = client.definition_tenants().await?;
    for route in &config.routes {
        if let RouteKind::Complete(_) = route.kind {
            if config.routes.len() > 1 {
                println!("route {} (kind complete):", route.topic);
            }
            complete_route_status(client, route, &deployed_tenants).await?;
            continue;
        }
        if config.routes.len() > 1 {
            println!("route {} → message {}:", route.topic, route.message.name);
        }
        route_status(client, config, route, &deployed_tenants).await?;
    }
    let incidents = client.count_incidents().await?;
    let ours = client.count_incidents_of(INCIDENT_TYPE).await?;
    println!("open incidents: {incidents} ({ours} of follow-ups, type {INCIDENT_TYPE})");
    if incidents > 0 {
        println!("  see Cockpit, or GET {}/incident", client.base_url());
    }
    Ok(())
}

/// A message route's totals within its tenants, then one line per tenant (none for a route
/// without tenant).
async fn route_status(
    client: &EngineClient,
    config: &Config,
    route: &Route,
    deployed_tenants: &[String],
) -> Result<(), EngineError> {
    let marker = &config.correlation.marker_variable;
    let tenants = route
        .filter
        .tenant_id_in
        .clone()
        .unwrap_or_else(|| deployed_tenants.to_vec());
    let mut lines = Vec::new();
    let mut of_tenants = RouteCounts::default();
    for tenant in &tenants {
        let counts = RouteCounts::read(client, route, marker, Some(tenant)).await?;
        of_tenants.add(&counts);
        lines.push((tenant, counts));
    }
    let totals = if route.filter.tenant_id_in.is_some() {
        of_tenants
    } else {
        let mut all = RouteCounts::read(client, route, marker, None).await?;
        if route.filter.without_tenant_id {
            all.subtract(&of_tenants);
        }
        all
    };
    totals.print(route);
    if !route.filter.without_tenant_id {
        for (tenant, counts) in &lines {
            counts.print_for_tenant(tenant);
        }
    }
    Ok(())
}

/// What waits and what failed on a complete route: its open tasks, and those out of retries —
/// each one an incident an operator must resolve (no message, no markers on this kind). Counted
/// within the route's tenants as a message route's are (see [`route_status`]), then one line per
/// tenant.
async fn complete_route_status(
    client: &EngineClient,
    route: &Route,
    deployed_tenants: &[String],
) -> Result<(), EngineError> {
    let topic = &route.topic;
    let tenants = route
        .filter
        .tenant_id_in
        .clone()
        .unwrap_or_else(|| deployed_tenants.to_vec());
    let mut lines = Vec::new();
    let mut of_tenants = [0u64; 3];
    for tenant in &tenants {
        let counts = task_counts(client, topic, Some(tenant)).await?;
        for (sum, count) in of_tenants.iter_mut().zip(counts) {
            *sum += count;
        }
        lines.push((tenant, counts));
    }
    let [open, locked, incidents] = if route.filter.tenant_id_in.is_some() {
        of_tenants
    } else {
        let mut all = task_counts(client, topic, None).await?;
        if route.filter.without_tenant_id {
            for (count, of_tenant) in all.iter_mut().zip(of_tenants) {
                *count = count.saturating_sub(of_tenant);
            }
        }
        all
    };
    println!("open tasks on topic {topic}: {open} ({locked} locked)");
    println!("incidents on topic {topic}: {incidents} (tasks without retries left; set their retries to try again)");
    if !route.filter.without_tenant_id {
        for (tenant, [open, locked, incidents]) in lines {
            println!(
                "  tenant {tenant}: {open} open tasks ({locked} locked), {incidents} incidents"
            );
        }
    }
    Ok(())
}

/// A topic's open tasks, those locked, and those without retries left (in `tenant` when given).
async fn task_counts(
    client: &EngineClient,
    topic: &str,
    tenant: Option<&str>,
) -> Result<[u64; 3], EngineError> {
    let tasks = |filter| client.count_external_tasks(topic, filter, tenant);
    Ok([
        tasks(TaskFilter::All).await?,
        tasks(TaskFilter::Locked).await?,
        tasks(TaskFilter::NoRetriesLeft).await?,
    ])
}

/// What waits and what failed on one route, in one tenant or in all.
#[derive(Debug, Default, Clone)]
struct RouteCounts {
    waiting: u64,
    open: u64,
    locked: u64,
    no_retries: u64,
    owed: u64,
    overdue: u64,
    failed: u64,
}

impl RouteCounts {
    /// Reads the counts of `route` from the engine, of `tenant` only when given.
    async fn read(
        client: &EngineClient,
        route: &Route,
        marker: &str,
        tenant: Option<&str>,
    ) -> Result<RouteCounts, EngineError> {
        let topic = &route.topic;
        let tasks = |filter| client.count_external_tasks(topic, filter, tenant);
        let scope = &tenant.map(TenantScope::only).unwrap_or_default();
        let count = |name: String, (from, to): (String, String)| async move {
            client
                .count_variables_in_range(&name, (&from, &to), scope)
                .await
        };
        let markers = |range| count(marker.to_owned(), range);
        let (owed_from, overdue_to) = owed_range(topic);
        // `;` sorts right after `:`: every owed marker of the topic, due or not.
        let owed_to = format!("owed:{topic};");
        Ok(RouteCounts {
            waiting: client
                .count_message_subscriptions(&route.message.name, tenant)
                .await?,
            open: tasks(TaskFilter::All).await?,
            locked: tasks(TaskFilter::Locked).await?,
            no_retries: tasks(TaskFilter::NoRetriesLeft).await?,
            owed: markers((owed_from.clone(), owed_to)).await?,
            overdue: markers((owed_from, overdue_to)).await?,
            // A failed work's mark is in its lease (see crate::ledger).
            failed: count(lease_variable(marker), failed_range(topic)).await?,
        })
    }

    /// The fields, in order, for sums and differences.
    fn fields(&mut self) -> [&mut u64; 7] {
        [
            &mut self.waiting,
            &mut self.open,
            &mut self.locked,
            &mut self.no_retries,
            &mut self.owed,
            &mut self.overdue,
            &mut self.failed,
        ]
    }

    /// Adds `other`'s counts (the totals of several tenants).
    fn add(&mut self, other: &RouteCounts) {
        let mut other = other.clone();
        for (mine, theirs) in self.fields().into_iter().zip(other.fields()) {
            *mine += *theirs;
        }
    }

    /// Takes `other`'s counts away; never below zero (the counts are read one after another
    /// while the engine moves on).
    fn subtract(&mut self, other: &RouteCounts) {
        let mut other = other.clone();
        for (mine, theirs) in self.fields().into_iter().zip(other.fields()) {
            *mine = mine.saturating_sub(*theirs);
        }
    }

    /// The route's lines, as on an engine without tenants.
    fn print(&self, route: &Route) {
        let (topic, message) = (&route.topic, &route.message.name);
        println!("instances waiting for message {message}: {}", self.waiting);
        println!(
            "open tasks on topic {topic}: {} ({} locked, {} without retries left)",
            self.open, self.locked, self.no_retries
        );
        println!(
            "follow-ups owed on topic {topic}: {} ({} past due, for a reconciler to deliver); work failed for good: {}",
            self.owed, self.overdue, self.failed
        );
    }

    /// One tenant's line below the totals.
    fn print_for_tenant(&self, tenant: &str) {
        println!(
            "  tenant {tenant}: {} waiting, {} open tasks ({} locked, {} without retries left), {} follow-ups owed ({} past due), {} failed",
            self.waiting, self.open, self.locked, self.no_retries, self.owed, self.overdue, self.failed
        );
    }
}

#[cfg(test)]
mod tests {
    use super::RouteCounts;

    fn counts(n: u64) -> RouteCounts {
        RouteCounts {
            waiting: n,
            open: n + 1,
            locked: n,
            no_retries: n,
            owed: n,
            overdue: n,
            failed: n,
        }
    }

    #[test]
    fn tenants_add_up_and_are_taken_from_the_totals_never_below_zero() {
        let mut sum = counts(1);
        sum.add(&counts(2));
        assert_eq!((sum.waiting, sum.open, sum.failed), (3, 5, 3));
        sum.subtract(&counts(2));
        assert_eq!((sum.waiting, sum.open, sum.failed), (1, 2, 1));
        sum.subtract(&counts(5));
        assert_eq!((sum.waiting, sum.open, sum.failed), (0, 0, 0));
    }
}
