//! Rate limits and connection caps: the `[[rate_limit]]` and `[[connection_limit]]` tables.
//!
//! # Rules
//! [`RateLimitRule`] and [`ConnectionLimitRule`] are the tables as written; [`LimitRules`] holds
//! them checked and compiled, inside the [`Policies`](super::Policies) in force. A rule matches a
//! request by `issuer`, `subject` or `quota` (the token's claims, all given ones must be equal) or
//! by `anonymous` (`true`: the request has no token; `false`: it has one); a rule with no matcher
//! matches every request. For each request the rules are tried in the file's order and the
//! **first** that matches applies, alone: put specific rules before general ones, and the default
//! (no matcher) last. A rate rule applies to the requests its `requests` lists (`publish` by
//! default; `subscribe` counts each new subscription request); rules that do not apply to a
//! request are skipped when looking for the first match.
//!
//! # What a rule counts by
//! `per = "subject"` (the default) counts by [`Subject`]: the token's `sub`, else its `jti`, else
//! the client address; `per = "address"` by the client address alone. IPv6 addresses count by
//! their /64 network (a client usually holds a whole /64). The limiter sees a digest of it
//! (SHA-256, 128 bits in hex), never the value: Redis keys and map keys have one size whatever
//! the token says, and hold no user ids or addresses. A rate rule's counter is the rule's own
//! and its rate's (`<rule name>:<interval µs>x<burst>:<digest>`): a reload that changes a rule's
//! rate starts its counters afresh. Connection counts are the subject's, whichever rule admitted
//! them, so a reload that changes a rule's caps applies them to the connections already open.
//!
//! # Decisions
//! [`Limits`] holds the node's [`Limiter`] (in process with the memory transport, in Redis with
//! the Redis transport, shared by the cluster) and the metrics of its decisions.
//! - [`Limits::check_rate`]: a publish (or subscription request) over its rule's rate is answered
//!   `429` with `Retry-After` (whole seconds, rounded up) before anything is read or stored.
//! - [`Limits::admit`]: a subscription over its subject's connection or matcher cap is answered
//!   `429` with the rule's `retry_after`; otherwise it holds a [`ConnectionSlot`] for its whole
//!   life, given back when its stream ends (and all at once when the node shuts down or, for a
//!   node that died, when its lease expires).
//!
//! When the limiter cannot answer (Redis unreachable), the rule's `on_error` decides:
//! `allow` (the default: a limiter outage does not become a hub outage; the publish itself needs
//! the same Redis and fails on its own if it is down) or `refuse` (`503` with `Retry-After`).
//! Either way it is counted (`quicksilver_rate_limit_errors_total`,
//! `quicksilver_connection_limit_errors_total`).
//!
//! Metric labels are rule names (from the file, checked when compiled) and fixed words, never
//! anything a client sends.

use std::net::{IpAddr, Ipv6Addr};
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use quicksilver_auth::Identity;
use quicksilver_transport::{
    Admission, CapExceeded, ConnectionCap, ConnectionSlot, Limiter, Rate, RateDecision,
};
use serde::Deserialize;

use super::Subject;
use crate::error::HubError;

/// Longest rule name.
const MAX_NAME: usize = 64;

/// Largest burst and largest cap a rule may set.
const MAX_COUNT: u32 = 1_000_000;

/// Longest period of a rate (`N/<period>`).
const MAX_PERIOD: Duration = Duration::from_secs(24 * 60 * 60);

/// `Retry-After` of a connection refused by a cap, unless the rule says otherwise: a slot frees
/// when another connection of the subject closes, which no one can predict.
const DEFAULT_CAP_RETRY: Duration = Duration::from_secs(5);

/// Which requests a rule counts by (see the module docs).
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Per {
    /// The token's `sub`, else its `jti`, else the client address.
    #[default]
    Subject,
    /// The client address (IPv6: its /64).
    Address,
}

/// The requests a rate rule counts.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum RequestKind {
    /// `POST` to the hub: a publish.
    Publish,
    /// A new subscription request (`GET`/`QUERY`).
    Subscribe,
}

impl RequestKind {
    fn as_str(self) -> &'static str {
        match self {
            RequestKind::Publish => "publish",
            RequestKind::Subscribe => "subscribe",
        }
    }
}

/// What a rule decides when the limiter cannot be reached.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum OnError {
    /// Let the request through (counted).
    #[default]
    Allow,
    /// Refuse it with `503` and `Retry-After` (counted).
    Refuse,
}

impl OnError {
    fn outcome(self) -> &'static str {
        match self {
            OnError::Allow => "allowed",
            OnError::Refuse => "refused",
        }
    }
}

/// A `[[rate_limit]]` table as written.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitRule {
    /// The rule's name: the `rule` label of its metrics (letters, digits, `_`, `-`, `.`; unique).
    pub name: String,
    /// Matches tokens whose `iss` is this.
    #[serde(default)]
    pub issuer: Option<String>,
    /// Matches tokens whose `sub` is this.
    #[serde(default)]
    pub subject: Option<String>,
    /// Matches tokens whose `quota` claim is this.
    #[serde(default)]
    pub quota: Option<String>,
    /// `true`: matches requests without a token; `false`: requests with one.
    #[serde(default)]
    pub anonymous: Option<bool>,
    /// What the rule counts by.
    #[serde(default)]
    pub per: Per,
    /// The sustained rate: `<count>/<period>`, the period a unit (`s`, `min`, `h`, `d`) or a
    /// duration (`10s`, `500ms`), e.g. `10/s`, `600/min`, `5/10s`.
    pub rate: String,
    /// Requests allowed at once after a quiet spell (default: the rate's count, one period's
    /// worth).
    #[serde(default)]
    pub burst: Option<u32>,
    /// The requests it counts (default: `["publish"]`).
    #[serde(default)]
    pub requests: Option<Vec<RequestKind>>,
    /// When the limiter cannot answer (default: `allow`).
    #[serde(default)]
    pub on_error: OnError,
}

/// A `[[connection_limit]]` table as written.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConnectionLimitRule {
    /// The rule's name: the `rule` label of its metrics (letters, digits, `_`, `-`, `.`; unique).
    pub name: String,
    /// Matches tokens whose `iss` is this.
    #[serde(default)]
    pub issuer: Option<String>,
    /// Matches tokens whose `sub` is this.
    #[serde(default)]
    pub subject: Option<String>,
    /// Matches tokens whose `quota` claim is this.
    #[serde(default)]
    pub quota: Option<String>,
    /// `true`: matches requests without a token; `false`: requests with one.
    #[serde(default)]
    pub anonymous: Option<bool>,
    /// What the rule counts by.
    #[serde(default)]
    pub per: Per,
    /// Subscriber connections one subject may hold at once, cluster-wide (default: no cap).
    #[serde(default)]
    pub max_connections: Option<u32>,
    /// Topic matchers (selectors) one subject's connections may hold together, cluster-wide
    /// (default: no cap).
    #[serde(default)]
    pub max_matchers: Option<u32>,
    /// `Retry-After` of a refused connection (a duration, e.g. `10s`; default 5 s).
    #[serde(default)]
    pub retry_after: Option<String>,
    /// When the limiter cannot answer (default: `allow`).
    #[serde(default)]
    pub on_error: OnError,
}

/// Which requests a rule matches (see the module docs).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct RuleMatch {
    issuer: Option<Box<str>>,
    subject: Option<Box<str>>,
    quota: Option<Box<str>>,
    anonymous: Option<bool>,
}

impl RuleMatch {
    fn new(
        name: &str,
        issuer: Option<String>,
        subject: Option<String>,
        quota: Option<String>,
        anonymous: Option<bool>,
    ) -> Result<Self, String> {
        let by_claim = issuer.is_some() || subject.is_some() || quota.is_some();
        if anonymous == Some(true) && by_claim {
            return Err(format!(
                "rule `{name}`: `anonymous = true` matches requests without a token, which have no issuer, subject or quota"
            ));
        }
        Ok(Self {
            issuer: issuer.map(Into::into),
            subject: subject.map(Into::into),
            quota: quota.map(Into::into),
            anonymous,
        })
    }

    fn matches(&self, identity: Option<&Identity>) -> bool {
        let claim = |want: &Option<Box<str>>, have: fn(&Identity) -> Option<&str>| match want {
            None => true,
            Some(want) => identity.and_then(have) == Some(&**want),
        };
        let anonymous = match self.anonymous {
            None => true,
            Some(anonymous) => anonymous == identity.is_none(),
        };
        anonymous
            && claim(&self.issuer, |i| i.issuer.as_deref())
            && claim(&self.subject, |i| i.subject.as_deref())
            && claim(&self.quota, |i| i.quota.as_deref())
    }
}

/// A compiled `[[rate_limit]]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RateRule {
    name: Arc<str>,
    matcher: RuleMatch,
    per: Per,
    rate: Rate,
    requests: Vec<RequestKind>,
    on_error: OnError,
}

impl RateRule {
    /// The rule's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its rate.
    pub fn rate(&self) -> Rate {
        self.rate
    }
}

/// A compiled `[[connection_limit]]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConnectionRule {
    name: Arc<str>,
    matcher: RuleMatch,
    per: Per,
    cap: ConnectionCap,
    retry_after: Duration,
    on_error: OnError,
}

impl ConnectionRule {
    /// The rule's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its caps.
    pub fn cap(&self) -> ConnectionCap {
        self.cap
    }
}

/// The rate and connection rules in force, in the file's order (see the module docs).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LimitRules {
    rate: Vec<RateRule>,
    connection: Vec<ConnectionRule>,
}

impl LimitRules {
    /// Checks and compiles the tables; the error names the rule and what is wrong.
    pub fn compile(
        rate_limits: Vec<RateLimitRule>,
        connection_limits: Vec<ConnectionLimitRule>,
    ) -> Result<Self, String> {
        let mut names: Vec<(&'static str, String)> = Vec::new();
        let mut unique = |table: &'static str, name: &str| -> Result<(), String> {
            check_name(table, name)?;
            if names.iter().any(|(t, n)| *t == table && n == name) {
                return Err(format!("[[{table}]]: two rules are named `{name}`"));
            }
            names.push((table, name.to_string()));
            Ok(())
        };
        let mut rate = Vec::with_capacity(rate_limits.len());
        for rule in rate_limits {
            unique("rate_limit", &rule.name)?;
            let (count, period) = parse_rate(&rule.rate)
                .map_err(|e| format!("[[rate_limit]] `{}`: rate: {e}", rule.name))?;
            let burst = rule.burst.unwrap_or(count);
            if burst == 0 || burst > MAX_COUNT {
                return Err(format!(
                    "[[rate_limit]] `{}`: burst must be between 1 and {MAX_COUNT}",
                    rule.name
                ));
            }
            let requests = rule
                .requests
                .clone()
                .unwrap_or_else(|| vec![RequestKind::Publish]);
            if requests.is_empty() {
                return Err(format!(
                    "[[rate_limit]] `{}`: requests must name `publish`, `subscribe` or both",
                    rule.name
                ));
            }
            if rule.anonymous == Some(true) && !requests.contains(&RequestKind::Subscribe) {
                return Err(format!(
                    "[[rate_limit]] `{}`: `anonymous = true` never matches a publish (publishing needs a token); add `requests = [\"subscribe\"]`",
                    rule.name
                ));
            }
            rate.push(RateRule {
                matcher: RuleMatch::new(
                    &rule.name,
                    rule.issuer,
                    rule.subject,
                    rule.quota,
                    rule.anonymous,
                )?,
                name: rule.name.into(),
                per: rule.per,
                rate: Rate {
                    interval: period / count,
                    burst,
                },
                requests,
                on_error: rule.on_error,
            });
        }
        let mut connection = Vec::with_capacity(connection_limits.len());
        for rule in connection_limits {
            unique("connection_limit", &rule.name)?;
            for (key, value) in [
                ("max_connections", rule.max_connections),
                ("max_matchers", rule.max_matchers),
            ] {
                if value.is_some_and(|v| v > MAX_COUNT) {
                    return Err(format!(
                        "[[connection_limit]] `{}`: {key} must be at most {MAX_COUNT}",
                        rule.name
                    ));
                }
            }
            let retry_after = match &rule.retry_after {
                None => DEFAULT_CAP_RETRY,
                Some(text) => humantime::parse_duration(text)
                    .ok()
                    .filter(|d| *d >= Duration::from_secs(1) && *d <= MAX_PERIOD)
                    .ok_or_else(|| {
                        format!(
                            "[[connection_limit]] `{}`: retry_after must be a duration between 1s and 1d, like `10s`",
                            rule.name
                        )
                    })?,
            };
            connection.push(ConnectionRule {
                matcher: RuleMatch::new(
                    &rule.name,
                    rule.issuer,
                    rule.subject,
                    rule.quota,
                    rule.anonymous,
                )?,
                name: rule.name.into(),
                per: rule.per,
                cap: ConnectionCap {
                    max_connections: rule.max_connections,
                    max_matchers: rule.max_matchers,
                },
                retry_after,
                on_error: rule.on_error,
            });
        }
        Ok(Self { rate, connection })
    }

    /// Whether there is no rule at all.
    pub fn is_empty(&self) -> bool {
        self.rate.is_empty() && self.connection.is_empty()
    }

    /// The rate rule that applies to a `request` from `identity` (`None`: no token).
    pub fn rate_rule(
        &self,
        request: RequestKind,
        identity: Option<&Identity>,
    ) -> Option<&RateRule> {
        self.rate
            .iter()
            .find(|r| r.requests.contains(&request) && r.matcher.matches(identity))
    }

    /// The connection rule that applies to a subscriber with `identity` (`None`: no token).
    pub fn connection_rule(&self, identity: Option<&Identity>) -> Option<&ConnectionRule> {
        self.connection.iter().find(|r| r.matcher.matches(identity))
    }
}

fn check_name(table: &str, name: &str) -> Result<(), String> {
    let valid = !name.is_empty()
        && name.len() <= MAX_NAME
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
    if valid {
        Ok(())
    } else {
        Err(format!(
            "[[{table}]]: rule name `{name}` must be 1 to {MAX_NAME} letters, digits, `_`, `-` or `.`"
        ))
    }
}

/// Parses `<count>/<period>` (see [`RateLimitRule::rate`]): the count and the period.
fn parse_rate(text: &str) -> Result<(u32, Duration), String> {
    let usage = "expected `<count>/<period>`, like `10/s`, `600/min` or `5/10s`";
    let (count, period) = text.split_once('/').ok_or(usage)?;
    let count: u32 = count
        .trim()
        .parse()
        .ok()
        .filter(|c| (1..=MAX_COUNT).contains(c))
        .ok_or_else(|| format!("the count must be a whole number from 1 to {MAX_COUNT}"))?;
    let period = period.trim();
    let period = match period {
        "s" | "sec" | "second" => Duration::from_secs(1),
        "m" | "min" | "minute" => Duration::from_secs(60),
        "h" | "hour" => Duration::from_secs(60 * 60),
        "d" | "day" => Duration::from_secs(24 * 60 * 60),
        other => humantime::parse_duration(other).map_err(|_| usage.to_string())?,
    };
    if period.is_zero() || period > MAX_PERIOD {
        return Err("the period must be more than zero and at most a day".into());
    }
    if period / count < Duration::from_micros(1) {
        return Err("more than a million per second cannot be counted".into());
    }
    Ok((count, period))
}

/// Whom a rule counts a request as: a digest of the [`Subject`] (or of the address alone), IPv6
/// addresses by their /64.
fn counted_as(per: Per, identity: Option<&Identity>, client: IpAddr) -> String {
    let client = match client {
        IpAddr::V6(v6) => IpAddr::V6(Ipv6Addr::from_bits(v6.to_bits() & !((1u128 << 64) - 1))),
        v4 => v4,
    };
    let subject = match per {
        Per::Subject => Subject::of(identity, client),
        Per::Address => Subject::Address(client),
    };
    let digest = ring::digest::digest(&ring::digest::SHA256, subject.key().as_bytes());
    digest.as_ref()[..16]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Labels of the refusal counters: the rule's name (from the file) and fixed words.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RuleLabels {
    /// The rule's configured name.
    pub rule: String,
    /// `publish` or `subscribe` (rates); `connections` or `matchers` (caps).
    pub what: &'static str,
}

/// Labels of the error counters.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    /// The rule's configured name.
    pub rule: String,
    /// What the rule's `on_error` made of it: `allowed` or `refused`.
    pub outcome: &'static str,
}

/// The counters of limit decisions.
#[derive(Clone, Debug, Default)]
pub struct LimitMetrics {
    /// Requests refused with `429` by a rate rule, by rule and request.
    pub rate_limited: Family<RuleLabels, Counter>,
    /// Rate checks the limiter could not answer, by rule and outcome.
    pub rate_errors: Family<ErrorLabels, Counter>,
    /// Subscriptions refused with `429` by a connection rule, by rule and cap.
    pub connections_limited: Family<RuleLabels, Counter>,
    /// Admissions the limiter could not answer, by rule and outcome.
    pub connection_errors: Family<ErrorLabels, Counter>,
}

/// The node's limiter and the metrics of its decisions (see the module docs).
#[derive(Clone)]
pub struct Limits {
    limiter: Arc<dyn Limiter>,
    metrics: LimitMetrics,
}

impl std::fmt::Debug for Limits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Limits").finish_non_exhaustive()
    }
}

impl Limits {
    /// Decisions made by `limiter`.
    pub fn new(limiter: Arc<dyn Limiter>) -> Self {
        Self {
            limiter,
            metrics: LimitMetrics::default(),
        }
    }

    /// The limiter.
    pub fn limiter(&self) -> &Arc<dyn Limiter> {
        &self.limiter
    }

    /// The decision counters.
    pub fn metrics(&self) -> &LimitMetrics {
        &self.metrics
    }

    /// Counts a `request` from `identity` (`None`: no token) at `client` against the rate rule
    /// that applies, if any: `429` with `Retry-After` over it.
    pub async fn check_rate(
        &self,
        rules: &LimitRules,
        request: RequestKind,
        identity: Option<&Identity>,
        client: IpAddr,
    ) -> Result<(), HubError> {
        let Some(rule) = rules.rate_rule(request, identity) else {
            return Ok(());
        };
        // The rate is part of the key: a rule whose rate a reload changed starts afresh rather
        // than reading times stored on the old rate's scale (which could refuse for as long as
        // the old period after a raise).
        let key = format!(
            "{}:{}x{}:{}",
            rule.name,
            rule.rate.interval_micros(),
            rule.rate.burst(),
            counted_as(rule.per, identity, client)
        );
        match self.limiter.check_rate(&key, rule.rate).await {
            Ok(RateDecision::Allowed) => Ok(()),
            Ok(RateDecision::Limited { retry_after }) => {
                self.metrics
                    .rate_limited
                    .get_or_create(&RuleLabels {
                        rule: rule.name.to_string(),
                        what: request.as_str(),
                    })
                    .inc();
                Err(HubError::Limited {
                    message: format!("over the rate limit `{}`", rule.name),
                    retry_after,
                })
            }
            Err(e) => {
                self.metrics
                    .rate_errors
                    .get_or_create(&ErrorLabels {
                        rule: rule.name.to_string(),
                        outcome: rule.on_error.outcome(),
                    })
                    .inc();
                tracing::warn!(rule = %rule.name, error = %e, on_error = rule.on_error.outcome(), "rate limit not checked");
                match rule.on_error {
                    OnError::Allow => Ok(()),
                    OnError::Refuse => Err(HubError::Unavailable(
                        "the rate limit cannot be checked now, retry later".into(),
                    )),
                }
            }
        }
    }

    /// Admits a subscriber with `identity` (`None`: no token) at `client` holding `matchers`
    /// matchers under the connection rule that applies, if any: the slot to hold for the
    /// connection's life (`None` when no rule applies or the limiter could not answer and the
    /// rule allows it), or `429` with the rule's `Retry-After` over a cap.
    pub async fn admit(
        &self,
        rules: &LimitRules,
        identity: Option<&Identity>,
        client: IpAddr,
        matchers: usize,
    ) -> Result<Option<ConnectionSlot>, HubError> {
        let Some(rule) = rules.connection_rule(identity) else {
            return Ok(None);
        };
        if rule.cap == ConnectionCap::default() {
            return Ok(None);
        }
        let key = counted_as(rule.per, identity, client);
        let matchers = u32::try_from(matchers).unwrap_or(u32::MAX);
        match self.limiter.acquire(&key, matchers, rule.cap).await {
            Ok(Admission::Admitted(slot)) => Ok(Some(slot)),
            Ok(Admission::Refused(which)) => {
                self.metrics
                    .connections_limited
                    .get_or_create(&RuleLabels {
                        rule: rule.name.to_string(),
                        what: which.as_str(),
                    })
                    .inc();
                let message = match which {
                    CapExceeded::Connections => format!(
                        "too many connections for this subject (connection limit `{}`)",
                        rule.name
                    ),
                    CapExceeded::Matchers => format!(
                        "too many topic selectors for this subject (connection limit `{}`)",
                        rule.name
                    ),
                };
                Err(HubError::Limited {
                    message,
                    retry_after: rule.retry_after,
                })
            }
            Err(e) => {
                self.metrics
                    .connection_errors
                    .get_or_create(&ErrorLabels {
                        rule: rule.name.to_string(),
                        outcome: rule.on_error.outcome(),
                    })
                    .inc();
                tracing::warn!(rule = %rule.name, error = %e, on_error = rule.on_error.outcome(), "connection limit not checked");
                match rule.on_error {
                    OnError::Allow => Ok(None),
                    OnError::Refuse => Err(HubError::Unavailable(
                        "the connection limit cannot be checked now, retry later".into(),
                    )),
                }
            }
        }
    }

    /// Registers the decision counters and the limiter's own (read at scrape time).
    pub fn register_metrics(&self, registry: &mut prometheus_client::registry::Registry) {
        let m = &self.metrics;
        registry.register(
            "rate_limited",
            "Requests refused with 429 by a [[rate_limit]] rule, by rule and request (publish, subscribe)",
            m.rate_limited.clone(),
        );
        registry.register(
            "rate_limit_errors",
            "Rate checks the limiter could not answer (Redis unreachable), by rule and what the rule's on_error made of them",
            m.rate_errors.clone(),
        );
        registry.register(
            "connection_limited",
            "Subscriptions refused with 429 by a [[connection_limit]] rule, by rule and cap (connections, matchers)",
            m.connections_limited.clone(),
        );
        registry.register(
            "connection_limit_errors",
            "Connection admissions the limiter could not answer (Redis unreachable), by rule and what the rule's on_error made of them",
            m.connection_errors.clone(),
        );
        registry.register_collector(Box::new(LimiterCollector(self.limiter.clone())));
    }
}

/// Reads the limiter's counters at scrape time.
struct LimiterCollector(Arc<dyn Limiter>);

impl std::fmt::Debug for LimiterCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LimiterCollector").finish_non_exhaustive()
    }
}

impl prometheus_client::collector::Collector for LimiterCollector {
    fn encode(
        &self,
        mut encoder: prometheus_client::encoding::DescriptorEncoder,
    ) -> std::fmt::Result {
        use prometheus_client::encoding::EncodeMetric;
        use prometheus_client::metrics::counter::ConstCounter;
        use prometheus_client::metrics::gauge::ConstGauge;
        let s = self.0.stats();
        let gauges = [
            (
                "rate_limit_entries",
                "Rate-limit keys held in this process (memory transport; bounded by --rate-limit-entries)",
                s.rate_entries,
            ),
            (
                "limited_connections",
                "Subscriber connections of this node counted by a [[connection_limit]] rule",
                s.connections,
            ),
        ];
        for (name, help, value) in gauges {
            let metric = ConstGauge::new(i64::try_from(value).unwrap_or(i64::MAX));
            metric.encode(encoder.encode_descriptor(name, help, None, metric.metric_type())?)?;
        }
        let counters = [
            (
                "rate_limit_evictions",
                "Rate-limit keys evicted before they were idle because the table was full (each got a fresh burst)",
                s.rate_evictions,
            ),
            (
                "connection_limit_reregistrations",
                "Times this node found its connection-count lease gone and wrote its counts to Redis again",
                s.reregistrations,
            ),
            (
                "rate_limit_local_refusals",
                "Requests refused by the node itself, without asking Redis, because Redis had refused their key and its Retry-After was not over",
                s.local_refusals,
            ),
            (
                "limiter_errors",
                "Failed limiter calls to Redis (checks, admissions, releases, renewals)",
                s.errors,
            ),
        ];
        for (name, help, value) in counters {
            let metric = ConstCounter::new(value);
            metric.encode(encoder.encode_descriptor(name, help, None, metric.metric_type())?)?;
        }
        Ok(())
    }
}

/// `Retry-After` for a wait: whole seconds, rounded up, at least 1.
pub fn retry_after_seconds(wait: Duration) -> u64 {
    let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    secs.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn identity(sub: Option<&str>, iss: Option<&str>, quota: Option<&str>) -> Identity {
        Identity {
            subject: sub.map(Into::into),
            issuer: iss.map(Into::into),
            quota: quota.map(Into::into),
            ..Identity::default()
        }
    }

    fn rules(text: &str) -> Result<LimitRules, String> {
        #[derive(Deserialize)]
        struct Tables {
            #[serde(default)]
            rate_limit: Vec<RateLimitRule>,
            #[serde(default)]
            connection_limit: Vec<ConnectionLimitRule>,
        }
        let tables: Tables = toml::from_str(text).map_err(|e| e.to_string())?;
        LimitRules::compile(tables.rate_limit, tables.connection_limit)
    }

    #[test]
    fn rates_parse_with_units_and_durations() {
        assert_eq!(parse_rate("10/s"), Ok((10, Duration::from_secs(1))));
        assert_eq!(
            parse_rate(" 600 / min "),
            Ok((600, Duration::from_secs(60)))
        );
        assert_eq!(parse_rate("5/10s"), Ok((5, Duration::from_secs(10))));
        assert_eq!(parse_rate("1/500ms"), Ok((1, Duration::from_millis(500))));
        assert_eq!(parse_rate("100/h"), Ok((100, Duration::from_secs(3600))));
        for bad in [
            "10",
            "0/s",
            "-1/s",
            "x/s",
            "10/fortnight",
            "10/0s",
            "10/2d",
            "1000000/1ms",
        ] {
            assert!(parse_rate(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_first_matching_rule_applies() {
        let r = rules(
            r#"
            [[rate_limit]]
            name = "anonymous"
            anonymous = true
            per = "address"
            rate = "10/s"
            burst = 20
            requests = ["subscribe"]
            [[rate_limit]]
            name = "gold"
            quota = "gold"
            rate = "1000/s"
            burst = 2000
            [[rate_limit]]
            name = "partner"
            issuer = "https://partner.example"
            rate = "50/s"
            [[rate_limit]]
            name = "default"
            rate = "5/s"
            "#,
        )
        .unwrap();
        let name =
            |kind, id: Option<&Identity>| r.rate_rule(kind, id).map(|r| r.name().to_string());
        // The anonymous rule only counts subscription requests: the default comes next.
        assert_eq!(name(RequestKind::Publish, None).as_deref(), Some("default"));
        assert_eq!(
            name(RequestKind::Subscribe, None).as_deref(),
            Some("anonymous")
        );
        let gold = identity(Some("a"), Some("https://partner.example"), Some("gold"));
        assert_eq!(
            name(RequestKind::Publish, Some(&gold)).as_deref(),
            Some("gold")
        );
        let partner = identity(Some("a"), Some("https://partner.example"), None);
        assert_eq!(
            name(RequestKind::Publish, Some(&partner)).as_deref(),
            Some("partner")
        );
        let plain = identity(Some("a"), None, Some("silver"));
        assert_eq!(
            name(RequestKind::Publish, Some(&plain)).as_deref(),
            Some("default")
        );
        assert_eq!(name(RequestKind::Subscribe, Some(&plain)), None);
        let gold_rule = r.rate_rule(RequestKind::Publish, Some(&gold)).unwrap();
        assert_eq!(
            gold_rule.rate(),
            Rate {
                interval: Duration::from_millis(1),
                burst: 2000
            }
        );
        // The burst defaults to the rate's count.
        let default = r.rate_rule(RequestKind::Publish, Some(&plain)).unwrap();
        assert_eq!(default.rate().burst, 5);
    }

    #[test]
    fn connection_rules_match_like_rate_rules() {
        let r = rules(
            r#"
            [[connection_limit]]
            name = "bob"
            subject = "bob"
            max_connections = 100
            [[connection_limit]]
            name = "tokens"
            anonymous = false
            max_connections = 20
            max_matchers = 200
            retry_after = "30s"
            "#,
        )
        .unwrap();
        let bob = identity(Some("bob"), None, None);
        let alice = identity(Some("alice"), None, None);
        assert_eq!(r.connection_rule(Some(&bob)).unwrap().name(), "bob");
        let tokens = r.connection_rule(Some(&alice)).unwrap();
        assert_eq!(tokens.name(), "tokens");
        assert_eq!(tokens.retry_after, Duration::from_secs(30));
        assert_eq!(
            tokens.cap(),
            ConnectionCap {
                max_connections: Some(20),
                max_matchers: Some(200)
            }
        );
        assert!(r.connection_rule(None).is_none());
    }

    #[test]
    fn bad_rules_are_refused_with_their_name() {
        for (text, needle) in [
            ("[[rate_limit]]\nname = \"a b\"\nrate = \"1/s\"", "rule name"),
            ("[[rate_limit]]\nname = \"x\"\nrate = \"1/s\"\n[[rate_limit]]\nname = \"x\"\nrate = \"2/s\"", "two rules"),
            ("[[rate_limit]]\nname = \"x\"\nrate = \"fast\"", "`x`: rate"),
            ("[[rate_limit]]\nname = \"x\"\nrate = \"1/s\"\nburst = 0", "burst"),
            ("[[rate_limit]]\nname = \"x\"\nrate = \"1/s\"\nanonymous = true", "never matches a publish"),
            ("[[rate_limit]]\nname = \"x\"\nrate = \"1/s\"\nanonymous = true\nquota = \"g\"\nrequests = [\"subscribe\"]", "no issuer"),
            ("[[rate_limit]]\nname = \"x\"\nrate = \"1/s\"\nrequests = []", "requests"),
            ("[[rate_limit]]\nname = \"x\"\nrate = \"1/s\"\nper = \"planet\"", "planet"),
            ("[[rate_limit]]\nname = \"x\"\nrate = \"1/s\"\nlimit = 3", "limit"),
            ("[[connection_limit]]\nname = \"x\"\nmax_connections = 2000000", "max_connections"),
            ("[[connection_limit]]\nname = \"x\"\nretry_after = \"soon\"", "retry_after"),
        ] {
            let e = rules(text).expect_err(text);
            assert!(e.contains(needle), "{text}: {e}");
        }
    }

    #[test]
    fn keys_are_digests_and_ipv6_counts_by_its_64() {
        let a: IpAddr = "2001:db8:1:2:3:4:5:6".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:ffff::1".parse().unwrap();
        let c: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        let key = |ip| counted_as(Per::Address, None, ip);
        assert_eq!(key(a), key(b));
        assert_ne!(key(a), key(c));
        assert_eq!(key(a).len(), 32);
        let alice = identity(Some("alice"), None, None);
        // By subject: the token's, wherever it comes from; by address: the address, whoever asks.
        assert_eq!(
            counted_as(Per::Subject, Some(&alice), a),
            counted_as(Per::Subject, Some(&alice), c)
        );
        assert_eq!(
            counted_as(Per::Address, Some(&alice), a),
            counted_as(Per::Address, None, a)
        );
        // Without a token, by subject is by address.
        assert_eq!(counted_as(Per::Subject, None, a), key(a));
    }

    #[test]
    fn retry_after_rounds_up_to_whole_seconds() {
        assert_eq!(retry_after_seconds(Duration::ZERO), 1);
        assert_eq!(retry_after_seconds(Duration::from_millis(1)), 1);
        assert_eq!(retry_after_seconds(Duration::from_millis(1000)), 1);
        assert_eq!(retry_after_seconds(Duration::from_millis(1001)), 2);
        assert_eq!(retry_after_seconds(Duration::from_secs(59)), 59);
    }
}
