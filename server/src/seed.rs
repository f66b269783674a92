//! `switch-seed FILE`: upserts subscribers from a YAML or JSON list by `(topic, target_url)`.

use anyhow::{bail, Context};
use diesel::Connection;
use serde_json::{Map, Value};
use switch_core::db::models::{now, NewSubscriber, SubscriberChanges};
use switch_core::db::{repo, AnyConnection};

use crate::routes::subscribers::new_subscriber;
use switch_core::target::TargetPolicy;

/// What applying a seed file did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct SeedReport {
    pub created: usize,
    pub updated: usize,
    pub unchanged: usize,
}

/// A seed file's contents: JSON, or YAML (a superset most people write).
fn read_value(text: &str) -> anyhow::Result<Value> {
    match serde_json::from_str(text) {
        Ok(v) => Ok(v),
        Err(_) => serde_norway::from_str(text).context("the file is neither JSON nor YAML"),
    }
}

/// Parses and validates every entry before touching the database.
pub fn parse_file(text: &str, policy: &TargetPolicy) -> anyhow::Result<Vec<NewSubscriber>> {
    let value = read_value(text)?;
    let items = match value {
        Value::Array(items) => items,
        Value::Object(mut m) if m.get("subscribers").is_some_and(Value::is_array) => {
            match m.remove("subscribers") {
                Some(Value::Array(items)) => items,
                _ => unreachable!("checked above"),
            }
        }
        // Only keys to create.
        Value::Object(m) if m.contains_key("keys") && !m.contains_key("subscribers") => Vec::new(),
        _ => bail!("the file must hold a list of subscribers"),
    };
    items
        .into_iter()
        .enumerate()
        .map(|(i, item)| {
            let mut m: Map<String, Value> = match item {
                Value::Object(m) => m,
                _ => bail!("entry {} is not an object", i + 1),
            };
            // YAML reads an unquoted `True` (the legacy always-true filter) as a boolean.
            if let Some(Value::Bool(b)) = m.get("filter_expression") {
                let text = if *b { "true" } else { "false" };
                m.insert("filter_expression".into(), Value::String(text.into()));
            }
            let label = m
                .get("topic")
                .and_then(Value::as_str)
                .unwrap_or("?")
                .to_string();
            new_subscriber(&m, policy)
                .map_err(|e| anyhow::anyhow!("entry {} (topic `{label}`): {e}", i + 1))
        })
        .collect()
}

/// Applies the entries in one transaction: all of them, or none.
pub fn apply(
    conn: &mut AnyConnection,
    entries: &[NewSubscriber],
    explicit_secret: &[bool],
) -> anyhow::Result<SeedReport> {
    conn.transaction::<_, anyhow::Error, _>(|conn| {
        let mut report = SeedReport::default();
        for (entry, keep_secret) in entries.iter().zip(explicit_secret) {
            match repo::find_by_topic_and_url(conn, &entry.topic, &entry.target_url)? {
                None => {
                    repo::insert_subscriber(conn, entry)?;
                    report.created += 1;
                }
                Some(existing) => {
                    let same = existing.filter_expression == entry.filter_expression
                        && existing.enabled == entry.enabled
                        && existing.description == entry.description
                        && (!keep_secret || existing.secret == entry.secret);
                    if same {
                        report.unchanged += 1;
                        continue;
                    }
                    let changes = SubscriberChanges {
                        filter_expression: Some(entry.filter_expression.clone()),
                        enabled: Some(entry.enabled),
                        description: Some(entry.description.clone()),
                        secret: if *keep_secret {
                            Some(entry.secret.clone())
                        } else {
                            None
                        },
                        updated_at: Some(now()),
                        ..Default::default()
                    };
                    repo::update_subscriber(conn, existing.id, &changes)?;
                    report.updated += 1;
                }
            }
        }
        Ok(report)
    })
}

/// Which entries of the file name their own secret (others keep the stored one).
pub fn explicit_secrets(text: &str) -> Vec<bool> {
    let value = read_value(text).unwrap_or(Value::Null);
    let items = match value {
        Value::Array(items) => items,
        Value::Object(m) => m
            .get("subscribers")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default(),
        _ => Vec::new(),
    };
    items
        .iter()
        .map(|i| i.get("secret").is_some_and(|s| !s.is_null()))
        .collect()
}

/// API keys a seed file asks for (`keys:` beside `subscribers:`), validated.
pub fn parse_keys(text: &str) -> anyhow::Result<Vec<(switch_core::db::models::NewApiKey, String)>> {
    let value = read_value(text)?;
    let Some(items) = value.get("keys") else {
        return Ok(Vec::new());
    };
    let Value::Array(items) = items else {
        bail!("`keys` must be a list");
    };
    items
        .iter()
        .enumerate()
        .map(|(i, item)| {
            let m = item
                .as_object()
                .ok_or_else(|| anyhow::anyhow!("key {} is not an object", i + 1))?;
            crate::routes::keys::new_key(m).map_err(|e| anyhow::anyhow!("key {}: {e}", i + 1))
        })
        .collect()
}

/// Creates the keys whose name no key has yet; returns each new key's name
/// and key, to be shown this once. A key named already is left as it is.
pub fn apply_keys(
    conn: &mut AnyConnection,
    keys: Vec<(switch_core::db::models::NewApiKey, String)>,
) -> anyhow::Result<Vec<(String, String)>> {
    conn.transaction::<_, anyhow::Error, _>(|conn| {
        let existing: Vec<String> = repo::list_api_keys(conn)?
            .into_iter()
            .map(|k| k.name)
            .collect();
        let mut created = Vec::new();
        for (new, key) in keys {
            if existing.contains(&new.name) || created.iter().any(|(n, _)| *n == new.name) {
                continue;
            }
            repo::insert_api_key(conn, &new)?;
            created.push((new.name.clone(), key));
        }
        Ok(created)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unquoted_yaml_true_is_the_always_filter() {
        let policy = TargetPolicy::default();
        let entries = parse_file(
            "- topic: t1\n  target_url: https://a.example/hook\n  filter_expression: True\n",
            &policy,
        )
        .unwrap();
        assert_eq!(entries[0].filter_expression.as_deref(), Some("true"));
        let err = parse_file(
            "- topic: t1\n  target_url: https://a.example/hook\n  filter_expression: 5\n",
            &policy,
        )
        .unwrap_err();
        assert!(err.to_string().contains("filter_expression"), "{err}");
    }
}
