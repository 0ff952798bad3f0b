//! Turns a scenario's command-line arguments into a [`RunSetup`]: the subscriber [`Plan`], the
//! [`PublishPlan`], and the scenario's own moves (resume order, kill).
//!
//! Every scenario is the same machine with different topics, lanes and subscriber selections:
//! `broadcast` is one topic and `--publishers` lanes; `topics` spreads lanes over T topics;
//! `collab` makes each editor both a subscriber and a lane on its document; `connect-storm`
//! publishes a single update unless given a duration; `resume-storm` adds a resume order;
//! `slow-consumers` marks a fraction of subscribers as never reading.

use std::time::Duration;

use serde_json::json;

use crate::cli::{AuthMode, Command, CommonArgs};
use crate::plan::{self, Plan, ScenarioKind, Selection};
use crate::publisher::{Lane, PublishPlan};
use crate::token::{TokenError, TokenSource};

/// How long a publish may take before it counts as failed.
const PUBLISH_TIMEOUT: Duration = Duration::from_secs(10);

/// A scenario's arguments did not make a runnable plan.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SetupError {
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Token(#[from] TokenError),
}

/// The resume-storm move.
#[derive(Clone, Debug)]
pub(crate) struct ResumeSetup {
    /// When, counted from the start of publishing.
    pub(crate) after: Duration,
    /// SIGKILL this process instead of dropping connections.
    pub(crate) kill_pid: Option<u32>,
}

/// Everything a run needs.
#[derive(Debug)]
pub(crate) struct RunSetup {
    pub(crate) plan: Plan,
    pub(crate) publish: PublishPlan,
    pub(crate) common: CommonArgs,
    /// Measured publishing time (after the warm-up).
    pub(crate) duration: Duration,
    /// Publishing time, warm-up included.
    pub(crate) publish_length: Duration,
    pub(crate) resume: Option<ResumeSetup>,
    /// Scenario parameters, for the report.
    pub(crate) parameters: serde_json::Value,
}

fn invalid(message: impl Into<String>) -> SetupError {
    SetupError::Invalid(message.into())
}

/// Builds the run of `command` (not `worker`).
pub(crate) fn build(command: Command) -> Result<RunSetup, SetupError> {
    let (kind, common) = match &command {
        Command::Broadcast(a) => (ScenarioKind::Broadcast, &a.common),
        Command::Topics(a) => (ScenarioKind::Topics, &a.common),
        Command::Collab(a) => (ScenarioKind::Collab, &a.common),
        Command::ConnectStorm(a) => (ScenarioKind::ConnectStorm, &a.common),
        Command::ResumeStorm(a) => (ScenarioKind::ResumeStorm, &a.common),
        Command::SlowConsumers(a) => (ScenarioKind::SlowConsumers, &a.common),
        Command::Worker => return Err(invalid("`worker` is not a scenario")),
    };
    let common = common.clone();
    validate_common(&common)?;
    let tokens = TokenSource::new(
        common.jwt.as_deref(),
        common.jwt_key.as_deref(),
        &common.jwt_alg,
        common.jwt_private_key_file.as_deref(),
    )?;
    let default_duration = if kind == ScenarioKind::ConnectStorm {
        Duration::ZERO
    } else {
        Duration::from_secs(10)
    };
    let duration = common.duration.unwrap_or(default_duration);
    let mut publish_length = common.warmup + duration;
    let subscribers = common.subscribers.unwrap_or(100);
    let rate = common.rate.unwrap_or(10.0);
    if !(rate > 0.0 && rate.is_finite()) {
        return Err(invalid("--rate must be a positive number"));
    }
    let lanes_n = common.publishers.max(1);
    let broadcast_lanes = |topics: &dyn Fn(u32) -> Vec<u32>| -> Vec<Lane> {
        (0..lanes_n)
            .map(|l| Lane {
                topics: topics(l),
                rate: rate / f64::from(lanes_n),
                phase: Duration::from_secs_f64(f64::from(l) / rate),
                token: 0,
            })
            .collect()
    };
    let everything = tokens.token(&["*"], &["*"])?;
    let mut plan = Plan {
        scenario: kind,
        sub_urls: common.sub_urls.clone(),
        resume_urls: Vec::new(),
        subscribers,
        topics: vec![plan::BROADCAST_TOPIC.to_owned()],
        selection: Selection::Single,
        slow_fraction: 0.0,
        slow_recv_buffer: 4096,
        auth: common.auth,
        tokens: vec![everything.clone()],
        connect_rate: common.connect_rate,
        connect_timeout: common.connect_timeout,
        source_ips: common.source_ips.clone(),
        hub: common.hub_kind,
    };
    let mut publish = PublishPlan {
        pub_urls: if common.pub_urls.is_empty() {
            vec![common.sub_urls[0].clone()]
        } else {
            common.pub_urls.clone()
        },
        topics: Default::default(),
        lanes: broadcast_lanes(&|_| vec![0]),
        payload_bytes: common.payload_bytes,
        private: common.private,
        tokens: vec![everything],
        request_timeout: PUBLISH_TIMEOUT,
        hub: common.hub_kind,
    };
    if common.token_per_subscriber {
        plan.tokens = (0..subscribers)
            .map(|i| tokens.token_of(&[], &["*"], Some(&format!("user-{i}"))))
            .collect::<Result<_, _>>()?;
    }
    let mut resume = None;
    let mut parameters = json!({});
    match command {
        Command::Broadcast(_) | Command::Worker => {}
        Command::Topics(a) => {
            if a.topics == 0 {
                return Err(invalid("--topics must be at least 1"));
            }
            plan.topics = (0..a.topics).map(plan::numbered_topic).collect();
            plan.selection = Selection::Topics { mode: a.selector };
            // Update g (all lanes interleaved) goes to topic g mod T; lane l sends updates
            // g = l, l + P, l + 2P, …
            publish.lanes = broadcast_lanes(&|l| {
                (0..a.topics)
                    .map(|j| {
                        ((u64::from(l) + u64::from(j) * u64::from(lanes_n)) % u64::from(a.topics))
                            as u32
                    })
                    .collect()
            });
            parameters = json!({ "topics": a.topics, "selector": a.selector });
        }
        Command::Collab(a) => {
            if a.documents == 0 || a.editors == 0 || a.editors > 1000 {
                return Err(invalid(
                    "--documents must be ≥ 1 and --editors between 1 and 1000",
                ));
            }
            if !(a.editor_rate > 0.0 && a.editor_rate.is_finite()) {
                return Err(invalid("--editor-rate must be a positive number"));
            }
            plan.topics = (0..a.documents).map(plan::document_topic).collect();
            plan.subscribers = (a.documents * a.editors) as usize;
            plan.selection = Selection::Documents { editors: a.editors };
            // One token per document, allowed that document only: the hub checks real grants.
            let doc_tokens: Vec<String> = plan
                .topics
                .iter()
                .map(|t| tokens.token(&[t.as_str()], &[t.as_str()]))
                .collect::<Result<_, _>>()?;
            plan.tokens = doc_tokens.clone();
            publish.tokens = doc_tokens;
            publish.private = !a.public;
            let period = 1.0 / a.editor_rate;
            publish.lanes = (0..a.documents * a.editors)
                .map(|i| Lane {
                    topics: vec![i / a.editors],
                    rate: a.editor_rate,
                    // Editors start at random points of their period, as people would.
                    phase: Duration::from_secs_f64(fastrand::f64() * period),
                    token: (i / a.editors) as usize,
                })
                .collect();
            parameters = json!({
                "documents": a.documents, "editors": a.editors, "editor_rate": a.editor_rate,
                "private": !a.public,
            });
        }
        Command::ConnectStorm(_) => {
            if duration.is_zero() {
                // One update, sent at once, proves every subscription is live.
                publish.lanes = vec![Lane {
                    topics: vec![0],
                    rate: 1.0,
                    phase: Duration::ZERO,
                    token: 0,
                }];
                publish_length = Duration::from_millis(1);
            }
        }
        Command::ResumeStorm(a) => {
            let after = a.disconnect_after.unwrap_or(publish_length / 3);
            if after >= publish_length {
                return Err(invalid(
                    "--disconnect-after must fall within warm-up + duration",
                ));
            }
            plan.resume_urls = if a.resume_urls.is_empty() {
                common.sub_urls.clone()
            } else {
                a.resume_urls.clone()
            };
            resume = Some(ResumeSetup {
                after,
                kill_pid: a.kill_pid,
            });
            parameters = json!({
                "disconnect_after_s": after.as_secs_f64(), "kill_pid": a.kill_pid,
                "resume_urls": plan.resume_urls,
            });
        }
        Command::SlowConsumers(a) => {
            if !(0.0..1.0).contains(&a.slow_fraction) {
                return Err(invalid("--slow-fraction must be in [0, 1)"));
            }
            plan.slow_fraction = a.slow_fraction;
            plan.slow_recv_buffer = a.slow_recv_buffer;
            parameters =
                json!({ "slow_fraction": a.slow_fraction, "slow_recv_buffer": a.slow_recv_buffer });
        }
    }
    if plan.subscribers == 0 {
        return Err(invalid("--subscribers must be at least 1"));
    }
    if common.processes > plan.subscribers {
        return Err(invalid(
            "--processes must not exceed the number of subscribers",
        ));
    }
    if common.private && common.auth == AuthMode::None {
        return Err(invalid(
            "--private updates cannot reach subscribers with --auth none",
        ));
    }
    publish.topics = std::sync::Arc::new(plan.topics.clone());
    Ok(RunSetup {
        plan,
        publish,
        common,
        duration,
        publish_length,
        resume,
        parameters,
    })
}

fn validate_common(common: &CommonArgs) -> Result<(), SetupError> {
    if common.sub_urls.is_empty() {
        return Err(invalid("give at least one --sub-url"));
    }
    if common.processes == 0 || common.processes > 256 {
        return Err(invalid("--processes must be between 1 and 256"));
    }
    if common.connect_rate < 0.0 || !common.connect_rate.is_finite() {
        return Err(invalid("--connect-rate must be ≥ 0"));
    }
    for url in common.sub_urls.iter().chain(&common.pub_urls) {
        crate::net::Endpoint::parse(url).map_err(|e| invalid(e.to_string()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::Cli;
    use clap::Parser;

    fn setup(args: &[&str]) -> Result<RunSetup, SetupError> {
        let mut all = vec!["lt"];
        all.extend_from_slice(args);
        all.extend_from_slice(&["--jwt-key", "k"]);
        build(Cli::try_parse_from(all).unwrap().command)
    }

    #[test]
    fn topics_lanes_cover_every_topic_evenly() {
        let s = setup(&[
            "topics",
            "--topics",
            "6",
            "--publishers",
            "4",
            "--rate",
            "40",
        ])
        .unwrap();
        assert_eq!(s.publish.lanes.len(), 4);
        // Interleaving the lanes' k-th updates gives topics 0, 1, 2, … in turn.
        let mut order = Vec::new();
        for k in 0..3 {
            for lane in &s.publish.lanes {
                order.push(lane.topics[k % lane.topics.len()]);
            }
        }
        assert_eq!(order, vec![0, 1, 2, 3, 4, 5, 0, 1, 2, 3, 4, 5]);
        assert!((s.publish.total_rate() - 40.0).abs() < 1e-9);
    }

    #[test]
    fn collab_makes_editors_lanes() {
        let s = setup(&[
            "collab",
            "--documents",
            "3",
            "--editors",
            "4",
            "--editor-rate",
            "2",
        ])
        .unwrap();
        assert_eq!(s.plan.subscribers, 12);
        assert_eq!(s.publish.lanes.len(), 12);
        assert_eq!(s.publish.lanes[5].topics, vec![1]);
        assert!(s.publish.private);
        assert_eq!(s.plan.tokens.len(), 3);
    }

    #[test]
    fn connect_storm_sends_one_update() {
        let s = setup(&["connect-storm", "--subscribers", "10"]).unwrap();
        assert_eq!(s.publish.lanes.len(), 1);
        assert!(s.publish_length < Duration::from_secs(1));
    }

    #[test]
    fn rejects_nonsense() {
        assert!(setup(&["broadcast", "--rate", "0"]).is_err());
        assert!(setup(&["slow-consumers", "--slow-fraction", "1.5"]).is_err());
        assert!(setup(&["broadcast", "--subscribers", "2", "--processes", "3"]).is_err());
        assert!(setup(&["resume-storm", "--duration", "2", "--disconnect-after", "5"]).is_err());
    }
}
