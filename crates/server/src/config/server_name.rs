//! `SERVER_NAME` (`--server-name`): the reference hub's site address, turned into the address
//! Quicksilver listens on when `--listen` / `QUICKSILVER_LISTEN` is not given.
//!
//! The reference is a Caddy server: its site address (`:80`, `localhost`, `hub.example.com:8080`,
//! `http://hub.example.com`, several separated by commas or spaces) says which port to serve and
//! which `Host` to answer, on every interface, and whether to serve HTTPS: Caddy does for a host
//! name without the `http://` scheme or port 80, and for `https://`. Quicksilver serves one
//! listener, so the address keeps its port, binds every interface (`0.0.0.0`) unless every
//! address is the same IP literal, and answers whatever the `Host`.
//!
//! With a certificate (`--tls-cert`, `--tls-key`) the listener serves HTTPS, and an address Caddy
//! would serve over HTTPS without a port gets Caddy's port, `443`; a plain-HTTP address
//! (`http://…`, `:80`) is served over HTTPS all the same, with a notice. Without one the listener
//! serves plain HTTP, a port-less address gets `80`, and where Caddy would have served HTTPS a
//! notice says to give a certificate or to terminate TLS in front of the hub.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use super::directives::Notice;

/// What a `SERVER_NAME` value amounts to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SiteAddress {
    /// The address to listen on.
    pub listen: SocketAddr,
    /// What to log about it.
    pub notices: Vec<Notice>,
}

/// Reads a `SERVER_NAME` value, for a listener that serves TLS (`tls`) or plain HTTP.
pub fn parse(value: &str, tls: bool) -> Result<SiteAddress, String> {
    let addresses: Vec<&str> = value
        .split(|c: char| c == ',' || c.is_whitespace())
        .filter(|a| !a.is_empty())
        .collect();
    if addresses.is_empty() {
        return Err("SERVER_NAME is empty".into());
    }
    let mut port = None;
    let mut ip: Option<Option<IpAddr>> = None;
    let mut tls_expected = Vec::new();
    let mut plain_expected = Vec::new();
    let mut hosts = Vec::new();
    for address in &addresses {
        let site = site(address, tls)?;
        match port {
            None => port = Some(site.port),
            Some(p) if p != site.port => {
                return Err(format!(
                    "SERVER_NAME {value:?} names several ports ({p} and {}): Quicksilver listens on one address",
                    site.port
                ))
            }
            Some(_) => {}
        }
        let this_ip = site.host.parse::<IpAddr>().ok();
        ip = Some(match ip {
            None => this_ip,
            Some(previous) if previous == this_ip => previous,
            Some(_) => None,
        });
        if site.tls {
            tls_expected.push(*address);
        } else {
            plain_expected.push(*address);
        }
        if !site.host.is_empty() && this_ip.is_none() {
            hosts.push(site.host.clone());
        }
        if site.has_path {
            return Err(format!(
                "SERVER_NAME address {address:?} has a path: the hub lives at /.well-known/mercure"
            ));
        }
    }
    let port = port.unwrap_or(80);
    let listen = SocketAddr::new(
        ip.flatten().unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED)),
        port,
    );
    let protocol = if tls { "HTTPS" } else { "plain HTTP" };
    let mut notices = vec![Notice::info(format!(
        "SERVER_NAME={value:?}: listening on {listen}, {protocol}"
    ))];
    if tls && !plain_expected.is_empty() {
        notices.push(Notice::warn(format!(
            "SERVER_NAME {}: the reference hub would serve plain HTTP here; with --tls-cert and \
             --tls-key Quicksilver serves HTTPS only, on port {port}",
            plain_expected.join(", ")
        )));
    }
    if !tls && !tls_expected.is_empty() {
        notices.push(Notice::warn(format!(
            "SERVER_NAME {}: the reference hub would serve HTTPS here; Quicksilver serves plain HTTP \
             on port {port}: give it a certificate (--tls-cert, --tls-key) or terminate TLS at the \
             load balancer or proxy in front of it (or use `:{port}` / `http://…` to say so)",
            tls_expected.join(", ")
        )));
    }
    if !hosts.is_empty() {
        notices.push(Notice::info(format!(
            "SERVER_NAME: requests are answered whatever their Host, not only for {}",
            hosts.join(", ")
        )));
    }
    Ok(SiteAddress { listen, notices })
}

struct Site {
    host: String,
    port: u16,
    /// Caddy would serve HTTPS on this address.
    tls: bool,
    has_path: bool,
}

/// One Caddy site address: `[scheme://][host][:port][/path]`, for a listener that serves TLS
/// (`tls_served`) or plain HTTP.
fn site(address: &str, tls_served: bool) -> Result<Site, String> {
    let bad = |why: &str| format!("SERVER_NAME address {address:?}: {why}");
    let (scheme, rest) = match address.split_once("://") {
        Some((scheme, rest)) => (Some(scheme.to_ascii_lowercase()), rest),
        None => (None, address),
    };
    if let Some(scheme) = &scheme {
        if scheme != "http" && scheme != "https" {
            return Err(bad("the scheme must be http:// or https://"));
        }
    }
    let (authority, has_path) = match rest.find('/') {
        Some(i) => (&rest[..i], rest.len() > i + 1 || scheme.is_none()),
        None => (rest, false),
    };
    let (host, port) = if let Some(bracketed) = authority.strip_prefix('[') {
        let end = bracketed
            .find(']')
            .ok_or_else(|| bad("unclosed IPv6 bracket"))?;
        let host = &bracketed[..end];
        let after = &bracketed[end + 1..];
        let port = match after.strip_prefix(':') {
            Some(p) => Some(p),
            None if after.is_empty() => None,
            None => return Err(bad("unexpected text after the IPv6 address")),
        };
        (host.to_string(), port)
    } else {
        match authority.rsplit_once(':') {
            Some((host, port)) => (host.to_string(), Some(port)),
            None => (authority.to_string(), None),
        }
    };
    if host.contains(['{', '}']) {
        return Err(bad("placeholders are not supported"));
    }
    let explicit_port = port
        .map(|p| {
            p.parse::<u16>()
                .map_err(|_| bad("the port must be a number from 0 to 65535"))
        })
        .transpose()?;
    if !host.is_empty() && host.parse::<IpAddr>().is_err() && !is_host_name(&host) {
        return Err(bad("not a host name"));
    }
    // Caddy serves HTTPS unless told `http://`, on port 80, or for an address without a host.
    let tls = match scheme.as_deref() {
        Some("https") => true,
        Some(_) => false,
        None => !host.is_empty() && explicit_port != Some(80),
    };
    // Without a port, Caddy's: 443 for HTTPS, which this listener serves with a certificate or
    // when `https://` says so; 80 otherwise.
    let port = match explicit_port {
        Some(p) => p,
        None if scheme.as_deref() == Some("https") || (tls && tls_served) => 443,
        None => 80,
    };
    Ok(Site {
        host,
        port,
        tls,
        has_path,
    })
}

fn is_host_name(host: &str) -> bool {
    host.split('.').all(|label| {
        !label.is_empty()
            && label
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '*')
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::directives::NoticeLevel;

    fn listen(value: &str) -> String {
        parse(value, false).unwrap().listen.to_string()
    }

    fn warns(value: &str) -> bool {
        parse(value, false)
            .unwrap()
            .notices
            .iter()
            .any(|n| n.level == NoticeLevel::Warn)
    }

    #[test]
    fn site_addresses_become_listen_addresses() {
        assert_eq!(listen(":80"), "0.0.0.0:80");
        assert_eq!(listen(":3000"), "0.0.0.0:3000");
        assert_eq!(listen("localhost"), "0.0.0.0:80");
        assert_eq!(listen("localhost:8080"), "0.0.0.0:8080");
        assert_eq!(listen("http://hub.example.com"), "0.0.0.0:80");
        assert_eq!(listen("http://hub.example.com:3000"), "0.0.0.0:3000");
        assert_eq!(listen("https://hub.example.com"), "0.0.0.0:443");
        assert_eq!(listen("127.0.0.1:0"), "127.0.0.1:0");
        assert_eq!(listen("http://127.0.0.1:8080"), "127.0.0.1:8080");
        assert_eq!(listen("[::1]:8080"), "[::1]:8080");
        assert_eq!(listen("example.com:80, www.example.com:80"), "0.0.0.0:80");
        assert_eq!(listen("example.com:80 127.0.0.1:80"), "0.0.0.0:80");
        assert_eq!(listen("http://localhost/"), "0.0.0.0:80");
    }

    #[test]
    fn addresses_the_reference_serves_over_tls_are_told() {
        assert!(!warns(":80"));
        assert!(!warns(":8080"));
        assert!(!warns("http://localhost:8080"));
        assert!(!warns("localhost:80"));
        assert!(warns("localhost"));
        assert!(warns("hub.example.com:8443"));
        assert!(warns("https://hub.example.com"));
    }

    #[test]
    fn unusable_addresses_are_refused() {
        for bad in [
            "",
            " , ",
            ":80 :8080",
            "ftp://example.com",
            "example.com:http",
            "example.com:99999",
            "example.com/hub",
            "[::1",
            "{$HOST}",
            "exa$mple.com",
        ] {
            assert!(parse(bad, false).is_err(), "{bad:?} was accepted");
            assert!(parse(bad, true).is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn with_a_certificate_the_addresses_caddy_serves_over_https_are_served_over_https() {
        let served = |value: &str| {
            let site = parse(value, true).unwrap();
            let warned = site.notices.iter().any(|n| n.level == NoticeLevel::Warn);
            (site.listen.to_string(), warned)
        };
        assert_eq!(served("localhost"), ("0.0.0.0:443".into(), false));
        assert_eq!(served("hub.example.com"), ("0.0.0.0:443".into(), false));
        assert_eq!(
            served("https://hub.example.com"),
            ("0.0.0.0:443".into(), false)
        );
        assert_eq!(
            served("hub.example.com:8443"),
            ("0.0.0.0:8443".into(), false)
        );
        assert_eq!(served("127.0.0.1:8443"), ("127.0.0.1:8443".into(), false));
        // What the reference would serve in plain text is served over HTTPS, with a warning.
        assert_eq!(served(":80"), ("0.0.0.0:80".into(), true));
        assert_eq!(
            served("http://hub.example.com"),
            ("0.0.0.0:80".into(), true)
        );
        let site = parse("localhost", true).unwrap();
        assert!(
            site.notices[0].message.contains("HTTPS"),
            "{:?}",
            site.notices
        );
    }
}
