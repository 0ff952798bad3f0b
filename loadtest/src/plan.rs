//! The plan of a run as the subscriber side sees it: which hub URLs, which topics, and for each
//! subscriber what it selects, which token it shows and whether it is a slow consumer.
//!
//! The parent builds one [`Plan`] from the command line and ships it to every worker process, so
//! every process derives the same subscriber list from it. Subscriber `i` is driven by worker
//! `i % workers`. Nothing here does I/O.

use std::net::IpAddr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::cli::{AuthMode, HubKind, SelectorMode};

/// Which scenario a run is (names the report and picks behaviours such as resume targets).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum ScenarioKind {
    Broadcast,
    Topics,
    Collab,
    ConnectStorm,
    ResumeStorm,
    SlowConsumers,
}

impl ScenarioKind {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::Broadcast => "broadcast",
            Self::Topics => "topics",
            Self::Collab => "collab",
            Self::ConnectStorm => "connect-storm",
            Self::ResumeStorm => "resume-storm",
            Self::SlowConsumers => "slow-consumers",
        }
    }
}

/// How subscribers map to topics.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) enum Selection {
    /// Everyone subscribes to topic 0.
    Single,
    /// Subscriber `i` follows topic `i % topics`.
    Topics { mode: SelectorMode },
    /// Subscriber `i` is editor `i % editors` of document `i / editors` (topic = document).
    Documents { editors: u32 },
}

/// What the subscriber side of a run does.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct Plan {
    pub(crate) scenario: ScenarioKind,
    /// Hub URLs subscribers connect to (round-robin).
    pub(crate) sub_urls: Vec<String>,
    /// Hub URLs used for reconnections after a resume order (round-robin).
    pub(crate) resume_urls: Vec<String>,
    /// Number of subscribers, all workers together.
    pub(crate) subscribers: usize,
    /// Topic URIs; updates carry an index into this list.
    pub(crate) topics: Vec<String>,
    pub(crate) selection: Selection,
    /// Fraction of subscribers that stop reading after the preamble.
    pub(crate) slow_fraction: f64,
    /// Receive buffer of slow subscribers' sockets.
    pub(crate) slow_recv_buffer: u32,
    pub(crate) auth: AuthMode,
    /// Subscriber tokens: one for everyone, or one per document in `collab`.
    pub(crate) tokens: Vec<String>,
    /// Subscribers opened per second, all workers together (0 = unpaced).
    pub(crate) connect_rate: f64,
    pub(crate) connect_timeout: Duration,
    /// Local addresses subscriber sockets bind to, round-robin.
    pub(crate) source_ips: Vec<IpAddr>,
    /// Protocol of the hub (how subscription URLs are built).
    #[serde(default)]
    pub(crate) hub: HubKind,
}

/// The topics one subscriber receives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum TopicSet {
    One(u32),
    All,
}

/// Everything a worker needs to run subscriber `i`.
#[derive(Clone, Debug)]
pub(crate) struct SubscriberPlan {
    pub(crate) index: usize,
    /// `topic` query parameters.
    pub(crate) selectors: Vec<String>,
    pub(crate) topics: TopicSet,
    /// Index into [`Plan::tokens`], if the subscriber shows a token.
    pub(crate) token: Option<usize>,
    /// The publishing lane that is this subscriber itself (`collab` editors).
    pub(crate) own_lane: Option<u32>,
    /// Never reads past the preamble.
    pub(crate) slow: bool,
}

/// Topic URI of topic `k` in the `topics` scenario.
pub(crate) fn numbered_topic(k: u32) -> String {
    format!("https://example.com/t/{k}/u")
}

/// Topic URI of document `d` in the `collab` scenario.
pub(crate) fn document_topic(d: u32) -> String {
    format!("https://example.com/docs/{d}")
}

/// The single topic of `broadcast`, `connect-storm`, `resume-storm` and `slow-consumers`.
pub(crate) const BROADCAST_TOPIC: &str = "https://example.com/broadcast";

impl Plan {
    /// The spec of subscriber `i`.
    pub(crate) fn subscriber(&self, i: usize) -> SubscriberPlan {
        let token = match self.auth {
            AuthMode::None => None,
            _ if self.tokens.is_empty() => None,
            // One token for all, or one each (`--token-per-subscriber`).
            _ => Some(i % self.tokens.len()),
        };
        let slow = is_slow(i, self.slow_fraction);
        let base = SubscriberPlan {
            index: i,
            selectors: vec![self.topics[0].clone()],
            topics: TopicSet::One(0),
            token,
            own_lane: None,
            slow,
        };
        match &self.selection {
            Selection::Single => base,
            Selection::Topics { mode } => {
                let k = (i % self.topics.len()) as u32;
                let (selector, topics) = match mode {
                    SelectorMode::Exact => (self.topics[k as usize].clone(), TopicSet::One(k)),
                    SelectorMode::Template => {
                        (format!("https://example.com/t/{k}/{{x}}"), TopicSet::One(k))
                    }
                    SelectorMode::TemplateAll => {
                        ("https://example.com/t/{k}/{x}".to_owned(), TopicSet::All)
                    }
                };
                SubscriberPlan {
                    selectors: vec![selector],
                    topics,
                    ..base
                }
            }
            Selection::Documents { editors } => {
                let doc = (i / *editors as usize) as u32;
                SubscriberPlan {
                    selectors: vec![self.topics[doc as usize].clone()],
                    topics: TopicSet::One(doc),
                    token: token.map(|_| doc as usize % self.tokens.len()),
                    own_lane: Some(i as u32),
                    ..base
                }
            }
        }
    }

    /// Subscriber indices driven by worker `shard` of `shards`.
    pub(crate) fn shard(&self, shard: usize, shards: usize) -> impl Iterator<Item = usize> {
        (shard..self.subscribers).step_by(shards.max(1))
    }
}

/// Whether subscriber `i` is slow: spreads `fraction` of the subscribers evenly over the indices.
pub(crate) fn is_slow(i: usize, fraction: f64) -> bool {
    if fraction <= 0.0 {
        return false;
    }
    ((i + 1) as f64 * fraction).floor() > (i as f64 * fraction).floor()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(selection: Selection, topics: Vec<String>) -> Plan {
        Plan {
            scenario: ScenarioKind::Topics,
            sub_urls: vec!["http://127.0.0.1:1/.well-known/mercure".into()],
            resume_urls: vec![],
            subscribers: 10,
            topics,
            selection,
            slow_fraction: 0.0,
            slow_recv_buffer: 4096,
            auth: AuthMode::Header,
            tokens: vec!["a".into(), "b".into()],
            connect_rate: 0.0,
            connect_timeout: Duration::from_secs(1),
            source_ips: vec![],
            hub: HubKind::Mercure,
        }
    }

    #[test]
    fn slow_fraction_spreads_evenly() {
        let slow = (0..1000).filter(|&i| is_slow(i, 0.1)).count();
        assert_eq!(slow, 100);
        assert_eq!((0..10).filter(|&i| is_slow(i, 0.0)).count(), 0);
        assert_eq!((0..10).filter(|&i| is_slow(i, 1.0)).count(), 10);
    }

    #[test]
    fn topic_selectors() {
        let topics: Vec<String> = (0..4).map(numbered_topic).collect();
        let p = plan(
            Selection::Topics {
                mode: SelectorMode::Template,
            },
            topics.clone(),
        );
        let s = p.subscriber(6);
        assert_eq!(s.selectors, vec!["https://example.com/t/2/{x}"]);
        assert_eq!(s.topics, TopicSet::One(2));
        let p = plan(
            Selection::Topics {
                mode: SelectorMode::TemplateAll,
            },
            topics,
        );
        assert_eq!(p.subscriber(3).topics, TopicSet::All);
    }

    #[test]
    fn documents_and_shards() {
        let topics: Vec<String> = (0..5).map(document_topic).collect();
        let p = plan(Selection::Documents { editors: 2 }, topics);
        let s = p.subscriber(7);
        assert_eq!(s.topics, TopicSet::One(3));
        assert_eq!(s.own_lane, Some(7));
        assert_eq!(s.token, Some(1));
        let all: Vec<usize> = (0..3).flat_map(|w| p.shard(w, 3)).collect();
        assert_eq!(all.len(), 10);
    }
}
