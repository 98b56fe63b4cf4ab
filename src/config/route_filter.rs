//! The subscription keys of a `[[route]]` table: which of its topic's tasks the route fetches
//! (tenants, definitions, business key, variable values) and what comes with them (local
//! variables, extension properties, deserialized objects), as the official clients' topic
//! subscriptions choose them.
//!
//! They are route keys only: a filter belongs to one topic, and one fetch serves every route, so
//! a worker-wide default would filter topics it was never meant for. Each key is checked here so
//! that a typo or a wrong type is refused at start, naming the key: the engine would ignore a
//! field it cannot use and hand out every task of the topic.

use std::collections::BTreeMap;

use crate::cli::values;
use crate::engine::FetchFilter;

/// The subscription keys a `[[route]]` table may set, besides its other keys.
pub(super) const FILTER_KEYS: [&str; 10] = [
    "tenant_ids",
    "without_tenant_id",
    "process_definition_keys",
    "process_definition_ids",
    "process_definition_version_tag",
    "business_key",
    "process_variables",
    "local_variables",
    "include_extension_properties",
    "deserialize_values",
];

/// The filter a route's table sets over `inherited` (the top level's, which filters nothing);
/// the error names the key and what is wrong with it.
pub(super) fn filter_from(
    table: &toml::Table,
    inherited: &FetchFilter,
) -> Result<FetchFilter, String> {
    let keys = FilterKeys(table);
    let mut filter = inherited.clone();
    if let Some(tenants) = keys.names("tenant_ids")? {
        filter.tenant_id_in = Some(tenants);
    }
    if let Some(without) = keys.flag("without_tenant_id")? {
        filter.without_tenant_id = without;
    }
    if filter.without_tenant_id && filter.tenant_id_in.is_some() {
        return Err(
            "keys `tenant_ids` and `without_tenant_id = true` contradict each other: \
             a task has one tenant or none; keep one of them"
                .to_owned(),
        );
    }
    if let Some(keys_in) = keys.names("process_definition_keys")? {
        filter.process_definition_key_in = Some(keys_in);
    }
    if let Some(ids) = keys.names("process_definition_ids")? {
        filter.process_definition_id_in = Some(ids);
    }
    if let Some(tag) = keys.name("process_definition_version_tag")? {
        filter.process_definition_version_tag = Some(tag);
    }
    if let Some(business_key) = keys.name("business_key")? {
        filter.business_key = Some(business_key);
    }
    if let Some(variables) = keys.variable_values("process_variables")? {
        filter.process_variables = Some(variables);
    }
    for (key, field) in [
        ("local_variables", &mut filter.local_variables),
        (
            "include_extension_properties",
            &mut filter.include_extension_properties,
        ),
        ("deserialize_values", &mut filter.deserialize_values),
    ] {
        if let Some(value) = keys.flag(key)? {
            *field = value;
        }
    }
    Ok(filter)
}

/// The subscription keys `filter` sets, as `key = value` lines of a `[[route]]` table (for
/// `--print-config`); none for a filter that filters nothing.
pub(super) fn filter_lines(filter: &FetchFilter) -> Vec<String> {
    let list = |items: &[String]| {
        let quoted: Vec<String> = items.iter().map(|i| format!("{i:?}")).collect();
        format!("[{}]", quoted.join(", "))
    };
    let mut lines = Vec::new();
    let mut push = |key: &str, value: Option<String>| {
        if let Some(value) = value {
            lines.push(format!("{key} = {value}"));
        }
    };
    push("tenant_ids", filter.tenant_id_in.as_deref().map(list));
    push(
        "without_tenant_id",
        filter.without_tenant_id.then(|| "true".to_owned()),
    );
    let keys = filter.process_definition_key_in.as_deref();
    push("process_definition_keys", keys.map(list));
    let ids = filter.process_definition_id_in.as_deref();
    push("process_definition_ids", ids.map(list));
    let tag = filter.process_definition_version_tag.as_ref();
    push(
        "process_definition_version_tag",
        tag.map(|t| format!("{t:?}")),
    );
    push(
        "business_key",
        filter.business_key.as_ref().map(|b| format!("{b:?}")),
    );
    let variables = filter.process_variables.as_ref().map(|variables| {
        let pairs: Vec<String> = variables
            .iter()
            .map(|(name, value)| format!("{name:?} = {value}"))
            .collect();
        format!("{{ {} }}", pairs.join(", "))
    });
    push("process_variables", variables);
    for (key, set) in [
        ("local_variables", filter.local_variables),
        (
            "include_extension_properties",
            filter.include_extension_properties,
        ),
        ("deserialize_values", filter.deserialize_values),
    ] {
        push(key, set.then(|| "true".to_owned()));
    }
    lines
}

/// A route table's subscription keys, each `None` when not set.
struct FilterKeys<'a>(&'a toml::Table);

impl FilterKeys<'_> {
    /// A non-empty string without control characters or surrounding spaces.
    fn name(&self, key: &str) -> Result<Option<String>, String> {
        match self.0.get(key) {
            None => Ok(None),
            Some(toml::Value::String(text)) => values::name(text)
                .map(Some)
                .map_err(|why| format!("key `{key}`: {why}")),
            Some(_) => Err(format!("key `{key}` must be a non-empty string")),
        }
    }

    /// A non-empty list of such strings: an empty list would match no task at all, which is
    /// never what a route wants (leave the key out to take every task).
    fn names(&self, key: &str) -> Result<Option<Vec<String>>, String> {
        let Some(value) = self.0.get(key) else {
            return Ok(None);
        };
        let shape = || format!("key `{key}` must be a list of strings, like {key} = [\"a\"]");
        let toml::Value::Array(items) = value else {
            return Err(shape());
        };
        if items.is_empty() {
            return Err(format!(
                "key `{key}` is an empty list, which no task matches; name at least one, or remove the key"
            ));
        }
        items
            .iter()
            .map(|item| match item {
                toml::Value::String(text) => {
                    values::name(text).map_err(|why| format!("key `{key}`: {why}"))
                }
                _ => Err(shape()),
            })
            .collect::<Result<Vec<String>, String>>()
            .map(Some)
    }

    fn flag(&self, key: &str) -> Result<Option<bool>, String> {
        match self.0.get(key) {
            None => Ok(None),
            Some(toml::Value::Boolean(value)) => Ok(Some(*value)),
            Some(_) => Err(format!("key `{key}` must be true or false")),
        }
    }

    /// `name = value` pairs the task's process variables must equal. The engine compares a
    /// value with the variable's as Java objects, so only plain values can match: strings,
    /// numbers (an integer matches an `Integer` variable, a decimal a `Double`) and booleans.
    fn variable_values(
        &self,
        key: &str,
    ) -> Result<Option<BTreeMap<String, serde_json::Value>>, String> {
        let Some(value) = self.0.get(key) else {
            return Ok(None);
        };
        let toml::Value::Table(entries) = value else {
            return Err(format!(
                "key `{key}` must be a table, like {key} = {{ status = \"open\" }}"
            ));
        };
        if entries.is_empty() {
            return Err(format!(
                "key `{key}` is an empty table; name a variable and its value, or remove the key"
            ));
        }
        let mut matched = BTreeMap::new();
        for (name, value) in entries {
            values::assigned_variable_name(name).map_err(|why| format!("key `{key}`: {why}"))?;
            let json = match value {
                toml::Value::String(text) => serde_json::Value::from(text.clone()),
                toml::Value::Integer(number) => serde_json::Value::from(*number),
                toml::Value::Float(number) => serde_json::Value::from(*number),
                toml::Value::Boolean(flag) => serde_json::Value::from(*flag),
                _ => {
                    return Err(format!(
                        "key `{key}`: variable `{name}` must be a string, a number or a boolean (the engine matches plain values only)"
                    ))
                }
            };
            matched.insert(name.clone(), json);
        }
        Ok(Some(matched))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filter(text: &str) -> Result<FetchFilter, String> {
        let table: toml::Table = toml::from_str(text).expect("valid TOML");
        filter_from(&table, &FetchFilter::default())
    }

    fn refused(text: &str) -> String {
        filter(text).expect_err("a refused key")
    }

    #[test]
    fn every_subscription_key_sets_its_field() {
        let set = filter(
            r#"
            tenant_ids = ["a", "b"]
            process_definition_keys = ["order"]
            process_definition_ids = ["order:1:x"]
            process_definition_version_tag = "v2"
            business_key = "bk-1"
            process_variables = { status = "open", size = 3, ratio = 0.5, rush = true }
            local_variables = true
            include_extension_properties = true
            deserialize_values = true
            "#,
        )
        .expect("a valid filter");
        assert_eq!(
            set,
            FetchFilter {
                tenant_id_in: Some(vec!["a".into(), "b".into()]),
                without_tenant_id: false,
                process_definition_key_in: Some(vec!["order".into()]),
                process_definition_id_in: Some(vec!["order:1:x".into()]),
                process_definition_version_tag: Some("v2".into()),
                business_key: Some("bk-1".into()),
                process_variables: Some(BTreeMap::from([
                    ("ratio".into(), serde_json::json!(0.5)),
                    ("rush".into(), serde_json::json!(true)),
                    ("size".into(), serde_json::json!(3)),
                    ("status".into(), serde_json::json!("open")),
                ])),
                local_variables: true,
                include_extension_properties: true,
                deserialize_values: true,
            }
        );
    }

    #[test]
    fn a_route_without_subscription_keys_filters_nothing() {
        assert_eq!(filter("topic = \"t\"").unwrap(), FetchFilter::default());
        assert_eq!(
            filter("without_tenant_id = true").unwrap(),
            FetchFilter {
                without_tenant_id: true,
                ..FetchFilter::default()
            }
        );
    }

    #[test]
    fn the_printed_keys_read_back_as_the_same_filter() {
        let text = r#"
            tenant_ids = ["a", "b"]
            process_definition_keys = ["order"]
            process_definition_ids = ["order:1:x"]
            process_definition_version_tag = "v2"
            business_key = "bk \"1\""
            process_variables = { status = "open", size = 3, ratio = 0.5, rush = true }
            local_variables = true
            include_extension_properties = true
            deserialize_values = true
            "#;
        let set = filter(text).unwrap();
        let printed = filter_lines(&set).join("\n");
        assert_eq!(filter(&printed).unwrap(), set, "{printed}");
        assert!(filter_lines(&FetchFilter::default()).is_empty());
    }

    #[test]
    fn tenant_ids_with_without_tenant_id_are_refused() {
        let why = refused("tenant_ids = [\"a\"]\nwithout_tenant_id = true");
        assert!(why.contains("`tenant_ids`"), "{why}");
        assert!(why.contains("`without_tenant_id = true`"), "{why}");
        // `false` says the same as leaving the key out: no contradiction.
        let both = filter("tenant_ids = [\"a\"]\nwithout_tenant_id = false").unwrap();
        assert_eq!(both.tenant_id_in, Some(vec!["a".to_owned()]));
    }

    #[test]
    fn each_wrong_value_is_refused_naming_its_key() {
        for (text, key, what) in [
            ("tenant_ids = \"a\"", "tenant_ids", "list of strings"),
            ("tenant_ids = []", "tenant_ids", "empty list"),
            ("tenant_ids = [1]", "tenant_ids", "list of strings"),
            ("tenant_ids = [\"\"]", "tenant_ids", "must not be empty"),
            (
                "process_definition_keys = []",
                "process_definition_keys",
                "empty list",
            ),
            (
                "process_definition_ids = [\" x\"]",
                "process_definition_ids",
                "spaces",
            ),
            (
                "process_definition_version_tag = \"\"",
                "process_definition_version_tag",
                "must not be empty",
            ),
            ("business_key = 7", "business_key", "non-empty string"),
            (
                "without_tenant_id = \"yes\"",
                "without_tenant_id",
                "true or false",
            ),
            ("local_variables = 1", "local_variables", "true or false"),
            (
                "include_extension_properties = \"true\"",
                "include_extension_properties",
                "true or false",
            ),
            (
                "deserialize_values = []",
                "deserialize_values",
                "true or false",
            ),
            (
                "process_variables = \"a=1\"",
                "process_variables",
                "must be a table",
            ),
            ("process_variables = {}", "process_variables", "empty table"),
            (
                "process_variables = { a = [1] }",
                "process_variables",
                "variable `a`",
            ),
            (
                "process_variables = { a = { b = 1 } }",
                "process_variables",
                "string, a number or a boolean",
            ),
        ] {
            let why = refused(text);
            assert!(why.contains(&format!("key `{key}`")), "{text}: {why}");
            assert!(why.contains(what), "{text}: {why}");
        }
    }
}
