//! Which tenants a route serves, beyond its fetch: the route's `tenantIdIn` / `withoutTenantId`
//! (see [`FetchFilter`]) limit the reconciler's marker queries the same way, so that a worker
//! serving one tenant never recovers, nor counts, another tenant's follow-ups.
//!
//! The engine's variable-instance query takes `tenantIdIn` but ignores `withoutTenantId`
//! (measured on Camunda 7.21: every tenant's variables come back), silently like every unknown
//! field. So a scope without tenant is applied to the answer instead, on the `tenantId` each
//! variable carries: [`TenantScope::admits`].

use super::FetchFilter;

/// The tenants a route's marker queries are limited to; the default limits nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TenantScope {
    /// Only these tenants (`tenantIdIn` on the query).
    pub tenant_id_in: Option<Vec<String>>,
    /// Only instances without a tenant (checked on the answer).
    pub without_tenant_id: bool,
}

impl TenantScope {
    /// The scope of a route's fetch filter.
    pub fn of(filter: &FetchFilter) -> TenantScope {
        TenantScope {
            tenant_id_in: filter.tenant_id_in.clone(),
            without_tenant_id: filter.without_tenant_id,
        }
    }

    /// Only `tenant` (`status` counts one tenant at a time).
    pub fn only(tenant: &str) -> TenantScope {
        TenantScope {
            tenant_id_in: Some(vec![tenant.to_owned()]),
            without_tenant_id: false,
        }
    }

    /// Whether a variable (or instance) of `tenant` lies within the scope.
    pub fn admits(&self, tenant: Option<&str>) -> bool {
        if self.without_tenant_id && tenant.is_some() {
            return false;
        }
        match (&self.tenant_id_in, tenant) {
            (Some(tenants), Some(tenant)) => tenants.iter().any(|t| t == tenant),
            (Some(_), None) => false,
            (None, _) => true,
        }
    }

    /// Adds the scope's `tenantIdIn` to a variable-instance query body.
    pub(super) fn limit_query(&self, body: &mut serde_json::Value) {
        if let Some(tenants) = &self.tenant_id_in {
            body["tenantIdIn"] = serde_json::json!(tenants);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_scope_admits_its_tenants_only_and_no_scope_admits_all() {
        let all = TenantScope::default();
        assert!(all.admits(None) && all.admits(Some("a")));
        let a = TenantScope::only("a");
        assert!(a.admits(Some("a")));
        assert!(!a.admits(Some("b")) && !a.admits(None));
        let none = TenantScope {
            tenant_id_in: None,
            without_tenant_id: true,
        };
        assert!(none.admits(None) && !none.admits(Some("a")));
    }

    #[test]
    fn only_tenant_id_in_reaches_the_query() {
        let mut body = serde_json::json!({});
        TenantScope::default().limit_query(&mut body);
        assert_eq!(body, serde_json::json!({}));
        TenantScope {
            tenant_id_in: None,
            without_tenant_id: true,
        }
        .limit_query(&mut body);
        assert_eq!(body, serde_json::json!({}), "the engine ignores it");
        TenantScope::only("a").limit_query(&mut body);
        assert_eq!(body, serde_json::json!({"tenantIdIn": ["a"]}));
    }
}
