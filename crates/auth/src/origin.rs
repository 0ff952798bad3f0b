//! Publish origins: which web origins may publish with the authorization cookie.
//!
//! A browser attaches cookies to cross-site requests, so a publish authenticated by cookie alone
//! could be forged by any page the user visits (CSRF). Such a request must say where it comes from
//! (`Origin`, else the origin of its `Referer`) and that origin must be listed here. The list
//! accepts exact origins (`https://example.com`, `null`), `*` for every origin, and one-`*`
//! wildcards such as `https://*.example.com`. Matching ignores ASCII case, as on the reference hub.

use thiserror::Error;

/// A publish origin that is not `*`, `null` or `scheme://host[:port]` (wildcards allowed).
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[error(
    "invalid publish origin {0:?}: expected a URL with only a scheme, a host and optionally a port, \"*\" or \"null\""
)]
pub struct OriginError(pub String);

/// The origins allowed to publish with the authorization cookie. The default allows none.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PublishOrigins {
    all: bool,
    exact: Vec<String>,
    wildcards: Vec<(String, String)>,
}

impl PublishOrigins {
    /// Every origin (`*`).
    pub fn any() -> Self {
        Self {
            all: true,
            ..Self::default()
        }
    }

    /// Parses a configured list; a `*` entry makes it allow every origin.
    pub fn new<I, S>(origins: I) -> Result<Self, OriginError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut out = Self::default();
        for origin in origins {
            let origin = origin.as_ref().trim();
            if origin.is_empty() {
                continue;
            }
            validate(origin)?;
            let origin = origin.to_ascii_lowercase();
            if origin == "*" {
                out.all = true;
            } else if let Some((prefix, suffix)) = origin.split_once('*') {
                out.wildcards.push((prefix.to_string(), suffix.to_string()));
            } else {
                out.exact.push(origin);
            }
        }
        if out.all {
            out.exact.clear();
            out.wildcards.clear();
        }
        Ok(out)
    }

    /// Whether every origin is allowed.
    pub fn allows_any(&self) -> bool {
        self.all
    }

    /// Whether `origin` (as sent in an `Origin` header) is allowed.
    pub fn allows(&self, origin: &str) -> bool {
        if self.all {
            return true;
        }
        let origin = origin.to_ascii_lowercase();
        self.exact.contains(&origin)
            || self.wildcards.iter().any(|(prefix, suffix)| {
                origin.len() >= prefix.len() + suffix.len()
                    && origin.starts_with(prefix.as_str())
                    && origin.ends_with(suffix.as_str())
            })
    }
}

fn validate(origin: &str) -> Result<(), OriginError> {
    if origin == "*" || origin == "null" {
        return Ok(());
    }
    let invalid = || OriginError(origin.to_string());
    let (_, rest) = origin.split_once("://").ok_or_else(invalid)?;
    if rest.is_empty() || rest.contains(['/', '?', '#', '@']) {
        return Err(invalid());
    }
    // The wildcard is not valid URL syntax everywhere; check the rest with a placeholder label.
    let url = url::Url::parse(&origin.replacen('*', "wildcard", 1)).map_err(|_| invalid())?;
    if url.host().is_none() {
        return Err(invalid());
    }
    Ok(())
}

/// The origin of a `Referer` URL: `scheme://host[:port]` (the default port omitted), or `None`
/// when it is not an absolute URL with a host.
pub(crate) fn referer_origin(referer: &str) -> Option<String> {
    let url = url::Url::parse(referer).ok()?;
    let host = url.host_str()?;
    Some(match url.port() {
        Some(port) => format!("{}://{}:{}", url.scheme(), host, port),
        None => format!("{}://{}", url.scheme(), host),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_and_wildcard_origins() {
        let o =
            PublishOrigins::new(["https://example.com", "https://*.example.org", "null"]).unwrap();
        assert!(!o.allows_any());
        assert!(o.allows("https://example.com"));
        assert!(o.allows("HTTPS://EXAMPLE.COM"));
        assert!(o.allows("null"));
        assert!(o.allows("https://a.example.org"));
        assert!(o.allows("https://a.b.example.org"));
        assert!(!o.allows("https://example.org"));
        assert!(!o.allows("http://a.example.org"));
        assert!(!o.allows("https://example.com:8443"));
        assert!(!o.allows("https://evil.com"));
    }

    #[test]
    fn star_allows_everything() {
        let o = PublishOrigins::new(["https://example.com", "*"]).unwrap();
        assert!(o.allows_any());
        assert!(o.allows("https://anything.test"));
        assert_eq!(o, PublishOrigins::any());
    }

    #[test]
    fn nothing_by_default() {
        assert!(!PublishOrigins::default().allows("https://example.com"));
        assert!(!PublishOrigins::new(Vec::<String>::new())
            .unwrap()
            .allows("https://example.com"));
    }

    #[test]
    fn refuses_entries_that_are_not_origins() {
        for bad in [
            "example.com",
            "https://example.com/",
            "https://example.com/path",
            "https://user@example.com",
            "https://example.com?q",
            "https://",
        ] {
            assert_eq!(
                PublishOrigins::new([bad]).unwrap_err(),
                OriginError(bad.into()),
                "{bad}"
            );
        }
        PublishOrigins::new(["http://localhost:8000", "https://[::1]:8443"]).unwrap();
    }

    #[test]
    fn referer_origins() {
        assert_eq!(
            referer_origin("https://example.com/page?x=1#y").as_deref(),
            Some("https://example.com")
        );
        assert_eq!(
            referer_origin("http://Example.com:8080/").as_deref(),
            Some("http://example.com:8080")
        );
        assert_eq!(
            referer_origin("https://example.com:443/a").as_deref(),
            Some("https://example.com")
        );
        assert_eq!(referer_origin("/relative"), None);
        assert_eq!(referer_origin("mailto:x@example.com"), None);
    }
}
