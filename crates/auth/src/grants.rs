//! What a verified token allows: the publish selectors, the private updates it may receive, and
//! the subscriber payload.
//!
//! [`Grants`] is the same whatever claim generation the token used, so the rest of the hub never
//! looks at claims. The two checks differ on purpose, as on the reference hub:
//! - [`can_publish`]: *every* topic of the update must match some publish selector — a publisher
//!   may not slip an alternate topic it has no right to next to one it has;
//! - [`Access::allows`]: a private update may be received when *any* of its topics matches *any*
//!   subscribe selector.
//!
//! [`Access`] is the subscribe half of the grants in the form the fan-out applies to every private
//! update of every subscriber ([`Grants::private_access`], built once when the token is verified).
//! It lives here rather than in the fan-out crate so that "private stays private" has one
//! implementation, next to the grants it is derived from: the subscription API asks it whether a
//! token may read a subscription, and the fan-out (which sits above this crate) stores it with each
//! subscriber and asks it about each private update, live and replayed. The fan-out knows nothing
//! of tokens; it only holds the answer.
//!
//! Matching goes through the node's [`SelectorStore`] (cached template results); `*` selectors are
//! found once at verification time and short-circuit both checks.
//!
//! The subscriber payload differs by generation: a legacy token has one (`mercure.payload`) for
//! every subscription, a current token one per `subscribe` authorization detail, chosen per
//! subscription by [`Grants::payload_for`] ("Payloads" in the specification).

use std::sync::Arc;
use std::time::SystemTime;

use quicksilver_protocol::{Selector, SelectorStore};

use crate::identity::Identity;

/// The rights a verified token carries. The default value allows nothing.
#[derive(Clone, Debug, Default)]
pub struct Grants {
    publish: Vec<Selector>,
    publish_all: bool,
    private_access: Access,
    payload: Option<serde_json::Value>,
    subscribe_payloads: Vec<SubscribePayload>,
    expires_at: Option<SystemTime>,
    identity: Arc<Identity>,
}

/// One `subscribe` authorization detail, kept for payload selection: its topic matchers and its
/// payload.
#[derive(Clone, Debug)]
struct SubscribePayload {
    topics: Vec<Selector>,
    payload: Option<serde_json::Value>,
}

impl Grants {
    /// Grants from compiled selectors (the `*` fast paths are derived here).
    pub fn new(
        publish: Vec<Selector>,
        subscribe: Vec<Selector>,
        payload: Option<serde_json::Value>,
    ) -> Self {
        Self {
            publish_all: publish.iter().any(Selector::is_wildcard),
            publish,
            private_access: Access::from_selectors(subscribe),
            payload,
            subscribe_payloads: Vec::new(),
            expires_at: None,
            identity: Arc::default(),
        }
    }

    /// Appends a `subscribe` authorization detail's matchers and payload, in token order, for
    /// [`Grants::payload_for`]. (Its matchers must also be among the subscribe selectors given to
    /// [`Grants::new`]; this only records which payload goes with them.)
    pub fn with_subscribe_payload(
        mut self,
        topics: Vec<Selector>,
        payload: Option<serde_json::Value>,
    ) -> Self {
        self.subscribe_payloads
            .push(SubscribePayload { topics, payload });
        self
    }

    /// Sets when the token stops being valid (its `exp`).
    pub fn with_expires_at(mut self, expires_at: Option<SystemTime>) -> Self {
        self.expires_at = expires_at;
        self
    }

    /// Sets whom the token names (its registered claims).
    pub fn with_identity(mut self, identity: Identity) -> Self {
        self.identity = Arc::new(identity);
        self
    }

    /// Whom the token names: shared by every clone of these grants (a cached verification and
    /// the subscribers it authenticated hold one copy).
    pub fn identity(&self) -> &Arc<Identity> {
        &self.identity
    }

    /// The publish selectors.
    pub fn publish(&self) -> &[Selector] {
        &self.publish
    }

    /// Whether a `*` publish selector allows every topic.
    pub fn publish_all(&self) -> bool {
        self.publish_all
    }

    /// Which private updates the bearer may receive: the subscribe selectors, as the fan-out and
    /// the subscription API check them.
    pub fn private_access(&self) -> &Access {
        &self.private_access
    }

    /// The token-wide subscriber payload (`mercure.payload`, legacy tokens only), shown in
    /// subscription events; `null` is `None`. Prefer [`Grants::payload_for`], which also knows
    /// current tokens' per-detail payloads.
    pub fn payload(&self) -> Option<&serde_json::Value> {
        self.payload.as_ref()
    }

    /// The payload for the subscription created by `matcher` (its `match` / `match_<type>` query
    /// value): the payload of the first `subscribe` detail one of whose topic matchers matches
    /// `matcher` taken as a topic — `None` if that detail has no payload, as the first match wins
    /// ("Payloads"). When no detail matches, the token-wide payload (legacy tokens).
    pub fn payload_for(&self, store: &SelectorStore, matcher: &str) -> Option<&serde_json::Value> {
        self.subscribe_payloads
            .iter()
            .find(|d| d.topics.iter().any(|s| store.matches(s, matcher)))
            .map_or(self.payload.as_ref(), |d| d.payload.as_ref())
    }

    /// When the token expires, if it has an `exp` claim. The reference hub closes a subscriber's
    /// connection at that time (the client reconnects with a fresh token).
    pub fn expires_at(&self) -> Option<SystemTime> {
        self.expires_at
    }
}

/// Whether an update with these topics may be published: every topic must match a publish
/// selector. An empty topic list is refused (there is nothing the grant could be checked against;
/// a publish without topics is invalid anyway).
pub fn can_publish(store: &SelectorStore, grants: &Grants, topics: &[String]) -> bool {
    if topics.is_empty() {
        return false;
    }
    if grants.publish_all {
        return true;
    }
    topics
        .iter()
        .all(|topic| grants.publish.iter().any(|s| store.matches(s, topic)))
}

/// Which private updates a subscriber may receive: those with at least one topic matching one of
/// its subscribe selectors. Cloning is cheap (the selectors are shared). The default allows
/// nothing.
#[derive(Clone, Debug, Default)]
pub enum Access {
    /// Every private update (a `*` subscribe selector).
    All,
    /// No private update (anonymous subscribers, tokens without a subscribe grant).
    #[default]
    None,
    /// Private updates with a topic matching one of these selectors.
    Selectors(Arc<[Selector]>),
}

impl Access {
    /// The access a list of subscribe selectors gives, with a fast path for `*`.
    pub fn from_selectors(selectors: Vec<Selector>) -> Self {
        if selectors.iter().any(Selector::is_wildcard) {
            Access::All
        } else if selectors.is_empty() {
            Access::None
        } else {
            Access::Selectors(selectors.into())
        }
    }

    /// Whether a private update with these topics may be received: any topic must match any
    /// selector. An update without topics matches nothing, not even `*`.
    pub fn allows(&self, store: &SelectorStore, topics: &[String]) -> bool {
        match self {
            Access::All => !topics.is_empty(),
            Access::None => false,
            Access::Selectors(selectors) => topics
                .iter()
                .any(|topic| selectors.iter().any(|s| store.matches(s, topic))),
        }
    }

    /// The selectors of [`Access::Selectors`]; empty for [`Access::All`] and [`Access::None`].
    pub fn selectors(&self) -> &[Selector] {
        match self {
            Access::Selectors(selectors) => selectors,
            Access::All | Access::None => &[],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sel(raw: &[&str]) -> Vec<Selector> {
        raw.iter().map(|r| Selector::compile(r).unwrap()).collect()
    }

    fn topics(t: &[&str]) -> Vec<String> {
        t.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn nothing_is_allowed_by_default() {
        let store = SelectorStore::default();
        let g = Grants::default();
        assert!(!can_publish(&store, &g, &topics(&["a"])));
        assert!(!g.private_access().allows(&store, &topics(&["a"])));
        assert!(g.payload().is_none());
        assert!(g.payload_for(&store, "a").is_none());
        assert!(g.expires_at().is_none());
    }

    #[test]
    fn first_matching_subscribe_detail_gives_the_payload() {
        let store = SelectorStore::default();
        let exact = |t: &str| Selector::exact_topic(t);
        let g = Grants::new(vec![], sel(&["urn:a", "urn:b", "*"]), None)
            .with_subscribe_payload(vec![exact("urn:a")], Some(serde_json::json!({"n": 1})))
            .with_subscribe_payload(vec![exact("urn:b")], None)
            .with_subscribe_payload(sel(&["*"]), Some(serde_json::json!({"n": 3})));
        assert_eq!(
            g.payload_for(&store, "urn:a"),
            Some(&serde_json::json!({"n": 1}))
        );
        // The first matching detail wins even without a payload.
        assert_eq!(g.payload_for(&store, "urn:b"), None);
        assert_eq!(
            g.payload_for(&store, "urn:c"),
            Some(&serde_json::json!({"n": 3}))
        );
        assert_eq!(g.payload(), None);

        // Legacy grants: the token-wide payload for every subscription.
        let legacy = Grants::new(vec![], sel(&["*"]), Some(serde_json::json!("p")));
        assert_eq!(
            legacy.payload_for(&store, "urn:x"),
            Some(&serde_json::json!("p"))
        );
    }

    #[test]
    fn publish_needs_every_topic() {
        let store = SelectorStore::default();
        let g = Grants::new(sel(&["https://ex.com/books/{id}", "urn:a"]), vec![], None);
        assert!(can_publish(
            &store,
            &g,
            &topics(&["https://ex.com/books/1"])
        ));
        assert!(can_publish(
            &store,
            &g,
            &topics(&["https://ex.com/books/1", "urn:a"])
        ));
        assert!(!can_publish(
            &store,
            &g,
            &topics(&["https://ex.com/books/1", "urn:b"])
        ));
        assert!(!can_publish(&store, &g, &[]));
    }

    #[test]
    fn star_allows_every_topic() {
        let store = SelectorStore::default();
        let g = Grants::new(sel(&["urn:x", "*"]), sel(&["*"]), None);
        assert!(g.publish_all() && matches!(g.private_access(), crate::Access::All));
        assert!(can_publish(&store, &g, &topics(&["urn:a", "urn:b"])));
        assert!(g.private_access().allows(&store, &topics(&["urn:a"])));
        assert!(!g.private_access().allows(&store, &[]));
    }

    #[test]
    fn subscribe_needs_any_topic() {
        let store = SelectorStore::default();
        let g = Grants::new(vec![], sel(&["https://ex.com/users/{id}/inbox"]), None);
        assert!(!matches!(g.private_access(), crate::Access::All));
        assert!(g.private_access().allows(
            &store,
            &topics(&["urn:other", "https://ex.com/users/7/inbox"])
        ));
        assert!(!g.private_access().allows(&store, &topics(&["urn:other"])));
        // The template's literal text matches too, as on the reference hub.
        assert!(g
            .private_access()
            .allows(&store, &topics(&["https://ex.com/users/{id}/inbox"])));
        // A subscribe grant is not a publish grant.
        assert!(!can_publish(
            &store,
            &g,
            &topics(&["https://ex.com/users/7/inbox"])
        ));
    }
}
