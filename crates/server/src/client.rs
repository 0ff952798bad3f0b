//! Who a request comes from: the client's address, and how many connections each address holds.
//!
//! The accept loop stamps every request with the [`Peer`] it came from (the TCP peer). Headers a
//! proxy adds (`X-Forwarded-For`, `-Host`, `-Proto`) say more, but any client can send them, so
//! they are believed only when the peer is one of the `--trusted-proxies` ([`TrustedProxies`]);
//! [`client_ip`] then takes the nearest address in `X-Forwarded-For` that is not itself a trusted
//! proxy, as a chain of proxies appends one entry each.
//!
//! [`ClientCounts`] bounds what one address may hold (`--max-connections-per-client`): the accept
//! loop counts connections by peer address, and a subscription arriving through a trusted proxy
//! (whose connections are shared by many clients) is counted under its client's address instead,
//! for as long as its stream lasts. A count is a guard ([`ClientSlot`]) dropped with what it counts;
//! the map holds an entry only for addresses that hold something, so it is bounded by the open
//! connections.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use http::HeaderMap;
use ipnet::IpNet;
use parking_lot::Mutex;

/// The TCP peer of a request's connection, put in the request's extensions by the accept loop.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Peer(pub SocketAddr);

/// The networks whose connections may set `X-Forwarded-*` headers (`--trusted-proxies`).
#[derive(Clone, Debug, Default)]
pub struct TrustedProxies(Vec<IpNet>);

impl TrustedProxies {
    /// Proxies in these networks (single addresses are networks of one).
    pub fn new(networks: Vec<IpNet>) -> Self {
        Self(networks)
    }

    /// Whether none is trusted (forwarded headers are never believed).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether `ip` is a trusted proxy. An IPv4 address seen as IPv6 (`::ffff:a.b.c.d`, on a
    /// dual-stack listener) is compared as IPv4.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        self.0.iter().any(|net| net.contains(&ip))
    }

    /// Whether a request from `peer` may speak for its client through `X-Forwarded-*` headers.
    pub fn trusts(&self, peer: Option<Peer>) -> bool {
        peer.is_some_and(|Peer(addr)| self.contains(addr.ip()))
    }
}

/// Parses a `--trusted-proxies` entry: an address (`10.0.0.1`, `::1`) or a network (`10.0.0.0/8`).
pub fn parse_network(text: &str) -> Result<IpNet, String> {
    let text = text.trim();
    text.parse::<IpNet>()
        .or_else(|_| text.parse::<IpAddr>().map(IpNet::from))
        .map_err(|_| format!("{text:?} is neither an IP address nor a network (a.b.c.d/n)"))
}

/// The client's address: the peer's, or, when the peer is a trusted proxy, the nearest
/// `X-Forwarded-For` address that is not a trusted proxy (the last one written by a proxy of
/// ours). `None` without a peer (requests not from the accept loop).
pub fn client_ip(
    peer: Option<Peer>,
    headers: &HeaderMap,
    trusted: &TrustedProxies,
) -> Option<IpAddr> {
    let Peer(peer) = peer?;
    if !trusted.contains(peer.ip()) {
        return Some(peer.ip());
    }
    // Several headers count as one list, in order; the nearest hop is the last entry.
    let mut forwarded: Vec<IpAddr> = Vec::new();
    for value in headers.get_all("x-forwarded-for") {
        let Ok(value) = value.to_str() else {
            return Some(peer.ip());
        };
        for entry in value.split(',') {
            match parse_forwarded_ip(entry) {
                Some(ip) => forwarded.push(ip),
                // A malformed chain cannot be read past: the proxy itself is the client.
                None => return Some(peer.ip()),
            }
        }
    }
    let mut nearest = peer.ip();
    for ip in forwarded.into_iter().rev() {
        nearest = ip;
        if !trusted.contains(ip) {
            break;
        }
    }
    Some(nearest)
}

/// One `X-Forwarded-For` entry: an address, possibly with a port (`1.2.3.4:5678`, `[::1]:80`).
fn parse_forwarded_ip(entry: &str) -> Option<IpAddr> {
    let entry = entry.trim();
    entry
        .parse::<IpAddr>()
        .ok()
        .or_else(|| entry.parse::<SocketAddr>().ok().map(|a| a.ip()))
}

/// Connections (or, through trusted proxies, streams) held per client address, within a limit.
#[derive(Debug)]
pub struct ClientCounts {
    limit: usize,
    held: Mutex<HashMap<IpAddr, usize>>,
}

impl ClientCounts {
    /// Counts allowing `limit` per address (`0`: no limit, nothing is counted).
    pub fn new(limit: usize) -> Arc<Self> {
        Arc::new(Self {
            limit,
            held: Mutex::new(HashMap::new()),
        })
    }

    /// Whether a limit is set.
    pub fn is_limited(&self) -> bool {
        self.limit > 0
    }

    /// Takes one slot for `ip`, or `None` when it holds its limit already. Without a limit every
    /// request gets an empty slot.
    pub fn acquire(self: &Arc<Self>, ip: IpAddr) -> Option<ClientSlot> {
        if self.limit == 0 {
            return Some(ClientSlot(None));
        }
        let mut held = self.held.lock();
        let count = held.entry(ip).or_insert(0);
        if *count >= self.limit {
            return None;
        }
        *count += 1;
        Some(ClientSlot(Some((self.clone(), ip))))
    }

    /// How many slots `ip` holds.
    pub fn held_by(&self, ip: IpAddr) -> usize {
        self.held.lock().get(&ip).copied().unwrap_or(0)
    }

    fn release(&self, ip: IpAddr) {
        let mut held = self.held.lock();
        if let Some(count) = held.get_mut(&ip) {
            *count -= 1;
            if *count == 0 {
                held.remove(&ip);
            }
        }
    }
}

/// One connection or stream counted for its client address; dropping it frees the slot.
#[derive(Debug)]
pub struct ClientSlot(Option<(Arc<ClientCounts>, IpAddr)>);

impl Drop for ClientSlot {
    fn drop(&mut self) {
        if let Some((counts, ip)) = self.0.take() {
            counts.release(ip);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(xff: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in xff {
            h.append("x-forwarded-for", v.parse().unwrap());
        }
        h
    }

    fn peer(ip: &str) -> Option<Peer> {
        Some(Peer(SocketAddr::new(ip.parse().unwrap(), 1234)))
    }

    #[test]
    fn forwarded_for_is_believed_only_from_trusted_proxies() {
        let trusted = TrustedProxies::new(vec![
            parse_network("10.0.0.0/8").unwrap(),
            parse_network("::1").unwrap(),
        ]);
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let spoofed = headers(&["203.0.113.9"]);
        // An untrusted peer is the client, whatever it claims.
        assert_eq!(
            client_ip(peer("198.51.100.1"), &spoofed, &trusted),
            Some(ip("198.51.100.1"))
        );
        // Through a trusted proxy: the nearest untrusted entry (a client's own entries come first
        // and are not believed past it).
        let chain = headers(&["1.1.1.1, 203.0.113.9", "10.1.2.3"]);
        assert_eq!(
            client_ip(peer("10.0.0.2"), &chain, &trusted),
            Some(ip("203.0.113.9"))
        );
        assert_eq!(
            client_ip(
                peer("::ffff:10.0.0.2"),
                &headers(&["[2001:db8::1]:443"]),
                &trusted
            ),
            Some(ip("2001:db8::1"))
        );
        // No header, or a malformed one: the proxy is the client.
        assert_eq!(
            client_ip(peer("::1"), &HeaderMap::new(), &trusted),
            Some(ip("::1"))
        );
        assert_eq!(
            client_ip(peer("::1"), &headers(&["nonsense"]), &trusted),
            Some(ip("::1"))
        );
        assert!(parse_network("10.0.0.0/33").is_err());
        assert!(parse_network("example.com").is_err());
    }

    #[test]
    fn counts_are_bounded_per_address_and_freed_with_their_slot() {
        let counts = ClientCounts::new(2);
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        let first = counts.acquire(a).expect("first");
        let second = counts.acquire(a).expect("second");
        assert!(counts.acquire(a).is_none());
        assert!(counts.acquire(b).is_some());
        drop(first);
        let third = counts.acquire(a).expect("a freed slot is taken again");
        drop((second, third));
        assert_eq!(counts.held_by(a), 0);
        assert!(counts.held.lock().is_empty());
        let unlimited = ClientCounts::new(0);
        let slots: Vec<_> = (0..100).filter_map(|_| unlimited.acquire(a)).collect();
        assert_eq!(slots.len(), 100);
    }
}
