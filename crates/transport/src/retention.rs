//! Retention per topic: rules that give the topics matching their selectors a history window of
//! their own (a length, a maximum age, or both), apart from the global history.
//!
//! # Classes
//! A rule's window is its *retention class*; rules with the same window share one class, and the
//! topics no rule matches form the default class (the global `history_size` and
//! `history_max_age`). A class is named by its window ([`Window::tag`], e.g. `n100` or
//! `n1000a3600000`), so a reload that keeps a window keeps its class, and its stored history, even
//! when the rules around it change. Each class keeps its own history: a transport stores an update
//! in the history of the class of *each* of its topics (the first rule matching that topic), once
//! per class, so a busy topic with a short window never pushes a quiet topic with a long one out of
//! history, and a topic's updates are found in its own class whether the topic is an update's
//! canonical topic or an alternate one. A class's length counts the updates of all its topics
//! together (one history per class, not per topic: the number of topics is the publishers' to
//! choose, the number of classes the operator's). A length of 0 keeps no history for the class.
//!
//! # What a resume reads
//! A resuming subscriber's history is read from the classes its selectors may match
//! ([`Retention::classes_for`]): an exact topic's own class; for a URI template, every class with
//! a rule selector whose literal start is compatible with the template's (one is a prefix of the
//! other), and the default class; for `*` and URL patterns, every class. Its last event id is
//! looked up in those classes, and it is told `earliest` (the id is unknown, or an update it may
//! match fell out of its class's window after that id) exactly as with one history.
//!
//! With no rules there is one class, the default, kept exactly as before rules existed.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use quicksilver_protocol::{Selector, Update};
use thiserror::Error;

use crate::Scope;

/// Most rules accepted: each published topic is matched against the rules' selectors, so their
/// number bounds the work of every publish.
pub const MAX_RULES: usize = 256;

/// Most selectors accepted over all rules (exact topics are looked up in a hash map; the others
/// are tried in order on every published topic).
pub const MAX_SELECTORS: usize = 4096;

/// How long a class keeps updates: the newest `length` (0: none), and none older than `max_age`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Window {
    /// Updates kept, newest first; 0 keeps no history.
    pub length: usize,
    /// Updates older than this are dropped too (`None`: by length only).
    pub max_age: Option<Duration>,
}

impl Window {
    /// The class name of this window: `n<length>`, then `a<milliseconds>` with a maximum age.
    /// Stable across versions: it names the class's stored history.
    pub fn tag(&self) -> String {
        match self.max_age {
            None => format!("n{}", self.length),
            Some(age) => format!("n{}a{}", self.length, age.as_millis()),
        }
    }
}

/// One retention class (see the module docs).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Class {
    tag: Arc<str>,
    window: Window,
}

impl Class {
    fn new(window: Window) -> Self {
        Self {
            tag: window.tag().into(),
            window,
        }
    }

    /// Its name ([`Window::tag`]).
    pub fn tag(&self) -> &Arc<str> {
        &self.tag
    }

    /// Its window.
    pub fn window(&self) -> Window {
        self.window
    }

    /// Whether it keeps any history.
    pub fn keeps_history(&self) -> bool {
        self.window.length > 0
    }
}

/// A rule as configured: the topics it covers and their window.
#[derive(Clone, Debug)]
pub struct Rule {
    /// Exact topics, URI templates or URL patterns; a topic matching any of them is covered.
    pub selectors: Vec<Selector>,
    /// The window of the covered topics.
    pub window: Window,
}

/// Why rules were refused.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum RetentionError {
    /// More rules than [`MAX_RULES`].
    #[error("at most {MAX_RULES} retention rules are accepted")]
    TooManyRules,
    /// More selectors than [`MAX_SELECTORS`].
    #[error("at most {MAX_SELECTORS} retention selectors are accepted over all rules")]
    TooManySelectors,
    /// A rule without a selector.
    #[error("retention rule {0} has no topics")]
    NoTopics(usize),
}

/// The compiled rules: which class each topic belongs to (see the module docs). Shared by a
/// transport's publishes and history reads; replaced whole on reload.
#[derive(Debug)]
pub struct Retention {
    /// Index 0: the default class; then one per distinct rule window, in rule order.
    classes: Vec<Class>,
    /// Per rule, its selectors that are not exact topics, and its class.
    rules: Vec<(Vec<Selector>, usize)>,
    /// Exact topic → (first rule naming it, its class).
    exact: HashMap<Box<str>, (usize, usize)>,
    /// Per class (index as `classes`), the literal starts of its rules' selectors; `None` when
    /// one of them may match topics of any spelling (see [`Selector::literal_prefix`]).
    prefixes: Vec<Option<Vec<Box<str>>>>,
}

impl Retention {
    /// No rules: every topic in the default class, of window `default`.
    pub fn global(default: Window) -> Self {
        Self {
            classes: vec![Class::new(default)],
            rules: Vec::new(),
            exact: HashMap::new(),
            prefixes: vec![Some(Vec::new())],
        }
    }

    /// `rules`, tried in order, over the default class of window `default`.
    pub fn new(default: Window, rules: Vec<Rule>) -> Result<Self, RetentionError> {
        if rules.len() > MAX_RULES {
            return Err(RetentionError::TooManyRules);
        }
        if rules.iter().map(|r| r.selectors.len()).sum::<usize>() > MAX_SELECTORS {
            return Err(RetentionError::TooManySelectors);
        }
        let mut retention = Self::global(default);
        for (index, rule) in rules.into_iter().enumerate() {
            if rule.selectors.is_empty() {
                return Err(RetentionError::NoTopics(index));
            }
            let class = match retention
                .classes
                .iter()
                .position(|c| c.window == rule.window)
            {
                Some(class) => class,
                None => {
                    retention.classes.push(Class::new(rule.window));
                    retention.prefixes.push(Some(Vec::new()));
                    retention.classes.len() - 1
                }
            };
            let mut others = Vec::new();
            for selector in rule.selectors {
                match selector.literal_prefix() {
                    None => retention.prefixes[class] = None,
                    Some(prefix) => {
                        if let Some(list) = &mut retention.prefixes[class] {
                            list.push(prefix.into());
                        }
                    }
                }
                match selector.exact() {
                    Some(topic) => {
                        retention
                            .exact
                            .entry(topic.into())
                            .or_insert((index, class));
                    }
                    None => others.push(selector),
                }
            }
            retention.rules.push((others, class));
        }
        Ok(retention)
    }

    /// Whether there are rules (without, history is kept as before rules existed).
    pub fn has_rules(&self) -> bool {
        !self.rules.is_empty()
    }

    /// Every class, the default first.
    pub fn classes(&self) -> &[Class] {
        &self.classes
    }

    /// The default class.
    pub fn default_class(&self) -> &Class {
        &self.classes[0]
    }

    /// The class of `topic`: the first rule with a selector matching it, else the default.
    pub fn class_of(&self, topic: &str) -> &Class {
        &self.classes[self.class_index(topic)]
    }

    fn class_index(&self, topic: &str) -> usize {
        let exact = self.exact.get(topic).copied();
        // Only rules before the exact match can take the topic first.
        let before = exact.map_or(self.rules.len(), |(rule, _)| rule);
        self.rules[..before]
            .iter()
            .find(|(selectors, _)| selectors.iter().any(|s| s.matches(topic)))
            .map(|(_, class)| *class)
            .or(exact.map(|(_, class)| class))
            .unwrap_or(0)
    }

    /// The classes of `update`'s topics, each once, in the order of the topics that name them.
    pub fn classes_of(&self, update: &Update) -> Vec<&Class> {
        self.classes_of_topics(update.topics.iter().map(String::as_str))
    }

    /// The classes of `topics`, each once, in order of first appearance.
    pub fn classes_of_topics<'a>(&self, topics: impl Iterator<Item = &'a str>) -> Vec<&Class> {
        let mut seen: Vec<usize> = Vec::new();
        for topic in topics {
            let class = self.class_index(topic);
            if !seen.contains(&class) {
                seen.push(class);
            }
        }
        seen.into_iter().map(|c| &self.classes[c]).collect()
    }

    /// The classes a subscriber of `scope` may match (see the module docs), as their tags.
    pub fn classes_for(&self, scope: &Scope) -> ClassSet {
        match scope {
            Scope::All => ClassSet::All,
            Scope::Topics(topics) => {
                ClassSet::of(self.classes_of_topics(topics.iter().map(String::as_str)))
            }
            Scope::Matching { topics, prefixes } => {
                let mut classes = self.classes_of_topics(topics.iter().map(String::as_str));
                if prefixes.is_empty() {
                    return ClassSet::of(classes);
                }
                // The default class holds whatever no rule takes: any template may match there.
                for (index, class) in self.classes.iter().enumerate() {
                    let compatible = index == 0
                        || self.prefixes[index].as_ref().is_none_or(|rule_prefixes| {
                            rule_prefixes.iter().any(|r| {
                                prefixes
                                    .iter()
                                    .any(|p| r.starts_with(p.as_str()) || p.starts_with(&**r))
                            })
                        });
                    if compatible && !classes.contains(&class) {
                        classes.push(class);
                    }
                }
                ClassSet::of(classes)
            }
        }
    }
}

/// The classes a history read covers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClassSet {
    /// Every class.
    All,
    /// These classes, by tag.
    Tags(Vec<Arc<str>>),
}

impl ClassSet {
    fn of(classes: Vec<&Class>) -> Self {
        ClassSet::Tags(classes.into_iter().map(|c| c.tag.clone()).collect())
    }

    /// Whether the class tagged `tag` is covered.
    pub fn contains(&self, tag: &str) -> bool {
        match self {
            ClassSet::All => true,
            ClassSet::Tags(tags) => tags.iter().any(|t| &**t == tag),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn window(length: usize, age_secs: Option<u64>) -> Window {
        Window {
            length,
            max_age: age_secs.map(Duration::from_secs),
        }
    }

    fn rule(selectors: &[&str], length: usize, age_secs: Option<u64>) -> Rule {
        Rule {
            selectors: selectors
                .iter()
                .map(|s| Selector::compile(s).expect("selector"))
                .collect(),
            window: window(length, age_secs),
        }
    }

    fn example() -> Retention {
        Retention::new(
            window(1000, None),
            vec![
                rule(&["https://example.com/documents/{id}"], 1000, Some(3600)),
                rule(&["https://example.com/users/{id}/notifications"], 100, None),
                rule(&["https://example.com/telemetry/{+rest}"], 0, None),
                rule(&["https://example.com/users/7/notifications"], 5, None),
                rule(&["https://example.com/other"], 100, None),
            ],
        )
        .expect("rules")
    }

    #[test]
    fn tags_name_windows() {
        assert_eq!(window(100, None).tag(), "n100");
        assert_eq!(window(1000, Some(3600)).tag(), "n1000a3600000");
        assert_eq!(window(0, None).tag(), "n0");
    }

    #[test]
    fn first_matching_rule_wins_and_windows_share_classes() {
        let r = example();
        let tag = |t: &str| r.class_of(t).tag().to_string();
        assert_eq!(tag("https://example.com/documents/1"), "n1000a3600000");
        assert_eq!(tag("https://example.com/users/7/notifications"), "n100");
        assert_eq!(tag("https://example.com/telemetry/a/b"), "n0");
        assert_eq!(tag("https://example.com/other"), "n100");
        assert_eq!(tag("https://example.com/unruled"), "n1000");
        // Default, documents, notifications (shared with `other`), telemetry, users/7 (unused).
        assert_eq!(r.classes().len(), 5);
        assert!(r.has_rules() && !Retention::global(window(1, None)).has_rules());
        assert!(!r
            .class_of("https://example.com/telemetry/x")
            .keeps_history());
    }

    #[test]
    fn an_update_belongs_to_the_class_of_each_topic() {
        let r = example();
        let update = Update {
            id: "x".into(),
            topics: vec![
                "https://example.com/documents/1".into(),
                "https://example.com/documents/2".into(),
                "https://example.com/telemetry/1".into(),
            ],
            data: String::new(),
            private: false,
            event_type: None,
            retry: None,
        };
        let tags: Vec<&str> = r.classes_of(&update).iter().map(|c| &**c.tag()).collect();
        assert_eq!(tags, vec!["n1000a3600000", "n0"]);
    }

    #[test]
    fn subscribers_read_the_classes_they_may_match() {
        let r = example();
        let exact = r.classes_for(&Scope::Topics(vec![
            "https://example.com/documents/1".into()
        ]));
        assert_eq!(exact, ClassSet::Tags(vec!["n1000a3600000".into()]));
        // A template over documents: the documents class and the default, not telemetry.
        let template = r.classes_for(&Scope::Matching {
            topics: vec![],
            prefixes: vec!["https://example.com/documents/".into()],
        });
        assert!(template.contains("n1000a3600000") && template.contains("n1000"));
        assert!(!template.contains("n0") && !template.contains("n100"));
        // A shorter prefix reaches every rule under it.
        let broad = r.classes_for(&Scope::Matching {
            topics: vec![],
            prefixes: vec!["https://example.com/".into()],
        });
        for class in r.classes() {
            assert!(broad.contains(class.tag()));
        }
        assert!(r.classes_for(&Scope::All).contains("anything"));
    }

    #[test]
    fn limits_are_enforced() {
        let many = (0..=MAX_RULES).map(|_| rule(&["a"], 1, None)).collect();
        assert_eq!(
            Retention::new(window(1, None), many).err(),
            Some(RetentionError::TooManyRules)
        );
        let empty = Rule {
            selectors: vec![],
            window: window(1, None),
        };
        assert_eq!(
            Retention::new(window(1, None), vec![empty]).err(),
            Some(RetentionError::NoTopics(0))
        );
    }
}
