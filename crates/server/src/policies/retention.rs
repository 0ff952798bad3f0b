//! `[[retention]]`: how long the history of the topics matching each rule is kept.
//!
//! ```toml
//! [[retention]]
//! topics = ["https://example.com/documents/{id}"]   # exact topics, URI templates, "*"
//! max_age = "1h"
//! [[retention]]
//! url_patterns = ["https://example.com/users/:id/notifications"]
//! length = 100
//! [[retention]]
//! topics = ["https://example.com/telemetry/{+rest}"]
//! length = 0                                         # no history at all
//! ```
//!
//! A table's `topics` are selectors as subscribers write them (an exact topic, a URI template when
//! it holds `{`, or `*`) and its `url_patterns` are absolute URL patterns. `length` is how many
//! updates the rule's topics keep together (default: `--history-size`; `0` keeps none) and
//! `max_age` how old they may get (default: `--history-max-age`; `"0"`: no age limit). A topic
//! takes the first rule that matches it; topics no rule matches keep the global history. An update
//! is kept in the history of each of its topics' rules (see [`quicksilver_transport::retention`]
//! for the storage, and what a resume reads).
//!
//! Rules are checked and compiled when the file is read ([`RetentionRules::compile`]); the hub
//! puts them in force on its transport at start and after every reload that changes the policies
//! ([`RetentionRules::resolve`] fills in the global defaults).

use std::sync::Arc;
use std::time::Duration;

use quicksilver_protocol::Selector;
use quicksilver_transport::retention::{Rule, MAX_RULES, MAX_SELECTORS};
use quicksilver_transport::{Retention, Window};
use serde::Deserialize;

/// One `[[retention]]` table, as written.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetentionTable {
    /// Exact topics, URI templates (holding `{`) or `*`.
    #[serde(default)]
    pub topics: Vec<String>,
    /// Absolute URL patterns.
    #[serde(default)]
    pub url_patterns: Vec<String>,
    /// Updates kept by the rule's topics together (default: `--history-size`; `0`: none).
    pub length: Option<usize>,
    /// Maximum age of the rule's updates, as a duration (`"90s"`, `"1h"`; `"0"`: no limit;
    /// default: `--history-max-age`).
    pub max_age: Option<String>,
}

/// The rules in force, checked and compiled; what the global defaults fill in is left open.
#[derive(Clone, Debug, Default)]
pub struct RetentionRules {
    rules: Vec<CompiledRule>,
}

#[derive(Clone, Debug)]
struct CompiledRule {
    selectors: Vec<Selector>,
    length: Option<usize>,
    /// `Some(None)`: no age limit, whatever the global one.
    max_age: Option<Option<Duration>>,
}

impl RetentionRules {
    /// Checks and compiles the tables, in order; the error names the table (1-based) and key.
    pub fn compile(tables: Vec<RetentionTable>) -> Result<Self, String> {
        if tables.len() > MAX_RULES {
            return Err(format!("[[retention]]: at most {MAX_RULES} rules"));
        }
        let mut rules = Vec::with_capacity(tables.len());
        let mut selector_count = 0;
        for (index, table) in tables.into_iter().enumerate() {
            let at =
                |key: &str, reason: String| format!("[[retention]] #{} {key}: {reason}", index + 1);
            selector_count += table.topics.len() + table.url_patterns.len();
            if selector_count > MAX_SELECTORS {
                return Err(format!(
                    "[[retention]]: at most {MAX_SELECTORS} topics and url_patterns over all rules"
                ));
            }
            let mut selectors = Vec::with_capacity(table.topics.len() + table.url_patterns.len());
            for topic in &table.topics {
                selectors.push(
                    Selector::compile(topic)
                        .map_err(|e| at("topics", format!("{topic:?}: {e}")))?,
                );
            }
            for pattern in &table.url_patterns {
                // Subscribers' relative patterns resolve against the hub's URL as they reach it,
                // which a rule cannot know.
                if !pattern.contains("://") {
                    return Err(at(
                        "url_patterns",
                        format!("{pattern:?}: a rule's URL pattern must be absolute"),
                    ));
                }
                selectors.push(
                    Selector::url_pattern(pattern, None)
                        .map_err(|e| at("url_patterns", format!("{pattern:?}: {e}")))?,
                );
            }
            if selectors.is_empty() {
                return Err(at("topics", "a rule needs topics or url_patterns".into()));
            }
            let max_age = table
                .max_age
                .as_deref()
                .map(|text| {
                    crate::config::parse_duration(text)
                        .map(|age| (!age.is_zero()).then_some(age))
                        .map_err(|e| at("max_age", e))
                })
                .transpose()?;
            rules.push(CompiledRule {
                selectors,
                length: table.length,
                max_age,
            });
        }
        Ok(Self { rules })
    }

    /// Whether there are rules.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// The rules with the global history (`default`) filled in where a rule leaves it open.
    pub fn resolve(&self, default: Window) -> Arc<Retention> {
        let rules = self
            .rules
            .iter()
            .map(|rule| Rule {
                selectors: rule.selectors.clone(),
                window: Window {
                    length: rule.length.unwrap_or(default.length),
                    max_age: rule.max_age.unwrap_or(default.max_age),
                },
            })
            .collect();
        // Counts and emptiness were checked by `compile`, the only way to build rules.
        let retention = Retention::new(default, rules).unwrap_or_else(|e| {
            tracing::error!(error = %e, "retention rules refused; keeping the global history only");
            Retention::global(default)
        });
        Arc::new(retention)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tables(toml: &str) -> Vec<RetentionTable> {
        #[derive(Deserialize)]
        struct File {
            retention: Vec<RetentionTable>,
        }
        toml::from_str::<File>(toml).expect("toml").retention
    }

    #[test]
    fn rules_inherit_the_global_window_where_they_leave_it_open() {
        let rules = RetentionRules::compile(tables(
            r#"
            [[retention]]
            topics = ["https://example.com/documents/{id}"]
            max_age = "1h"
            [[retention]]
            url_patterns = ["https://example.com/users/:id/notifications"]
            length = 100
            max_age = "0"
            [[retention]]
            topics = ["https://example.com/telemetry/{+rest}"]
            length = 0
            "#,
        ))
        .expect("rules");
        let default = Window {
            length: 1000,
            max_age: Some(Duration::from_secs(60)),
        };
        let retention = rules.resolve(default);
        let window = |topic: &str| retention.class_of(topic).window();
        assert_eq!(
            window("https://example.com/documents/1"),
            Window {
                length: 1000,
                max_age: Some(Duration::from_secs(3600))
            }
        );
        assert_eq!(
            window("https://example.com/users/7/notifications"),
            Window {
                length: 100,
                max_age: None
            }
        );
        assert_eq!(window("https://example.com/telemetry/a/b").length, 0);
        assert_eq!(window("https://example.com/else"), default);
    }

    #[test]
    fn bad_rules_are_refused_naming_the_table() {
        for (toml, expected) in [
            ("[[retention]]\nlength = 5\n", "#1 topics"),
            (
                "[[retention]]\ntopics = [\"a\"]\n[[retention]]\ntopics = [\"{bad\"]\n",
                "#2 topics",
            ),
            (
                "[[retention]]\ntopics = [\"a\"]\nmax_age = \"soon\"\n",
                "#1 max_age",
            ),
            (
                "[[retention]]\nurl_patterns = [\"/relative\"]\n",
                "#1 url_patterns",
            ),
        ] {
            let error = RetentionRules::compile(tables(toml)).expect_err(toml);
            assert!(error.contains(expected), "{error}");
        }
        let many = "[[retention]]\ntopics = [\"a\"]\n".repeat(MAX_RULES + 1);
        assert!(RetentionRules::compile(tables(&many)).is_err());
        let misspelt = toml::from_str::<toml::Table>("topic = [\"a\"]\n").expect("toml");
        assert!(RetentionTable::deserialize(toml::Value::Table(misspelt)).is_err());
    }
}
