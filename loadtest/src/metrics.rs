//! Prometheus scrapes before and after a run, reported as the series that changed.
//!
//! Only the text exposition format is read: `name{labels} value [timestamp]` lines; comments and
//! anything unparsable are skipped. The delta of every series is reported, which for counters is
//! what the run added and for gauges the change.

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde::Serialize;

/// Series name (with labels) → value.
pub(crate) type Scrape = BTreeMap<String, f64>;

/// Scrapes one metrics URL, giving up after `timeout`.
pub(crate) async fn scrape(url: &str, timeout: Duration) -> Result<Scrape, String> {
    let client: Client<_, Empty<Bytes>> = Client::builder(TokioExecutor::new())
        .build(hyper_util::client::legacy::connect::HttpConnector::new());
    let uri: http::Uri = url.parse().map_err(|e| format!("{url}: {e}"))?;
    let fetch = async {
        let response = client.get(uri).await.map_err(|e| e.to_string())?;
        let status = response.status();
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|e| e.to_string())?
            .to_bytes();
        if !status.is_success() {
            return Err(format!("HTTP {status}"));
        }
        Ok(parse(&String::from_utf8_lossy(&body)))
    };
    tokio::time::timeout(timeout, fetch)
        .await
        .map_err(|_| format!("{url}: timed out"))?
        .map_err(|e| format!("{url}: {e}"))
}

/// Parses the text exposition format.
pub(crate) fn parse(text: &str) -> Scrape {
    let mut out = Scrape::new();
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        // The value follows the series, which ends at the closing brace if there are labels.
        let series_end = match line.find('{') {
            Some(open) => match line[open..].find('}') {
                Some(close) => open + close + 1,
                None => continue,
            },
            None => match line.find(char::is_whitespace) {
                Some(i) => i,
                None => continue,
            },
        };
        let (series, rest) = line.split_at(series_end);
        if let Some(Ok(value)) = rest.split_whitespace().next().map(str::parse::<f64>) {
            out.insert(series.to_owned(), value);
        }
    }
    out
}

/// Before/after scrapes of one URL.
#[derive(Debug, Serialize)]
pub(crate) struct MetricsDelta {
    pub(crate) url: String,
    /// Series whose value changed: after − before.
    pub(crate) delta: BTreeMap<String, f64>,
    pub(crate) error: Option<String>,
}

/// The changed series between two scrapes.
pub(crate) fn delta(
    url: &str,
    before: Result<Scrape, String>,
    after: Result<Scrape, String>,
) -> MetricsDelta {
    match (before, after) {
        (Ok(before), Ok(after)) => MetricsDelta {
            url: url.to_owned(),
            delta: after
                .iter()
                .filter_map(|(k, v)| {
                    let d = v - before.get(k).copied().unwrap_or(0.0);
                    (d != 0.0).then(|| (k.clone(), d))
                })
                .collect(),
            error: None,
        },
        (Err(e), _) | (_, Err(e)) => MetricsDelta {
            url: url.to_owned(),
            delta: BTreeMap::new(),
            error: Some(e),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_diffs() {
        let before = parse("# HELP x\nx_total 3\ny{a=\"b c\"} 1.5 1700000000\nbad\n");
        assert_eq!(before.get("x_total"), Some(&3.0));
        assert_eq!(before.get("y{a=\"b c\"}"), Some(&1.5));
        let after = parse("x_total 10\ny{a=\"b c\"} 1.5\nz 1\n");
        let d = delta("u", Ok(before), Ok(after));
        assert_eq!(d.delta.get("x_total"), Some(&7.0));
        assert_eq!(d.delta.get("z"), Some(&1.0));
        assert!(!d.delta.contains_key("y{a=\"b c\"}"));
    }
}
