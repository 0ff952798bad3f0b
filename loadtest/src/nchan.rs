//! The nchan adapter: how a Mercure-style run maps onto nchan's publish/subscribe locations.
//!
//! nchan has channels instead of topics, no tokens and no private updates. Each topic of the run
//! becomes one channel whose name is the topic with every character outside `[A-Za-z0-9_-]`
//! replaced by `_` (the harness's topics differ in their alphanumeric parts, so names stay
//! distinct). A subscriber opens an EventSource on `<sub prefix>/<channel>`; a publisher POSTs the
//! update's data, raw, to `<pub prefix>/<channel>`. The data is the harness's usual JSON header
//! (sequence number, publish time), so every update is accounted for as with a Mercure hub,
//! whatever message ids nchan assigns. See `loadtest/nchan/nginx.conf.template`.

use bytes::Bytes;
use http::header::CONTENT_TYPE;
use http::Request;
use http_body_util::Full;

/// The channel name of `topic`.
pub(crate) fn channel(topic: &str) -> String {
    topic
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// Joins a location prefix and a channel name with exactly one `/`.
fn join(prefix: &str, topic: &str) -> String {
    format!("{}/{}", prefix.trim_end_matches('/'), channel(topic))
}

/// The request path of a subscription to `topic` (`prefix` is the `--sub-url` path).
pub(crate) fn subscribe_path(prefix: &str, topic: &str) -> String {
    join(prefix, topic)
}

/// A publish of `data` to `topic` (`pub_url` is the `--pub-url`, a location prefix).
pub(crate) fn publish_request(
    pub_url: &str,
    topic: &str,
    data: String,
) -> Result<Request<Full<Bytes>>, http::Error> {
    Request::post(join(pub_url, topic))
        .header(CONTENT_TYPE, "text/plain")
        .body(Full::new(Bytes::from(data)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topics_become_channel_names() {
        assert_eq!(
            channel("https://example.com/doc/7"),
            "https___example_com_doc_7"
        );
        assert_eq!(
            subscribe_path("/sub/", "urn:x-1"),
            "/sub/urn_x-1".to_string()
        );
        let r = publish_request("http://127.0.0.1:8080/pub", "t", "d".into()).unwrap();
        assert_eq!(r.uri(), "http://127.0.0.1:8080/pub/t");
    }
}
