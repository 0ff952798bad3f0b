//! Grant checks against a plain reference model: `Access::allows` is "any topic matches any
//! subscribe selector" and `can_publish` is "every topic matches some publish selector", whatever
//! mix of exact, `*` and template selectors a token holds.

use proptest::prelude::*;
use quicksilver_auth::{can_publish, Grants};
use quicksilver_protocol::{Selector, SelectorStore};

const SELECTORS: &[&str] = &[
    "*",
    "https://example.com/books/1",
    "https://example.com/books/{id}",
    "https://example.com/users/{user}/inbox",
    "https://example.com/{+path}",
    "urn:a",
    "urn:{x}",
];

const TOPICS: &[&str] = &[
    "https://example.com/books/1",
    "https://example.com/books/2",
    "https://example.com/books/{id}",
    "https://example.com/users/7/inbox",
    "https://example.com/users/7/outbox",
    "https://example.org/books/1",
    "urn:a",
    "urn:b",
];

fn selectors(without_star: bool) -> impl Strategy<Value = Vec<Selector>> {
    let start = usize::from(without_star);
    prop::collection::vec(start..SELECTORS.len(), 0..4).prop_map(|ix| {
        ix.into_iter()
            .map(|i| Selector::compile(SELECTORS[i]).unwrap())
            .collect()
    })
}

fn topics() -> impl Strategy<Value = Vec<String>> {
    prop::collection::vec(0..TOPICS.len(), 0..4)
        .prop_map(|ix| ix.into_iter().map(|i| TOPICS[i].to_string()).collect())
}

proptest! {
    #[test]
    fn private_access_is_any_topic_any_selector(
        sels in prop_oneof![selectors(true), selectors(false)],
        topics in topics(),
    ) {
        let store = SelectorStore::default();
        let model = topics.iter().any(|t| sels.iter().any(|s| s.matches(t)));
        let grants = Grants::new(Vec::new(), sels, None);
        prop_assert_eq!(grants.private_access().allows(&store, &topics), model);
        // A cached second answer agrees with the first.
        prop_assert_eq!(grants.private_access().allows(&store, &topics), model);
    }

    #[test]
    fn can_publish_is_every_topic_some_selector(
        sels in prop_oneof![selectors(true), selectors(false)],
        topics in topics(),
    ) {
        let store = SelectorStore::default();
        let model = !topics.is_empty() && topics.iter().all(|t| sels.iter().any(|s| s.matches(t)));
        let grants = Grants::new(sels, Vec::new(), None);
        prop_assert_eq!(can_publish(&store, &grants, &topics), model);
    }
}

#[test]
fn publish_and_subscribe_grants_are_separate() {
    let store = SelectorStore::default();
    let star = vec![Selector::compile("*").unwrap()];
    let topics = vec!["urn:a".to_string()];
    let publisher = Grants::new(star.clone(), Vec::new(), None);
    assert!(can_publish(&store, &publisher, &topics));
    assert!(!publisher.private_access().allows(&store, &topics));
    let subscriber = Grants::new(Vec::new(), star, None);
    assert!(!can_publish(&store, &subscriber, &topics));
    assert!(subscriber.private_access().allows(&store, &topics));
}
