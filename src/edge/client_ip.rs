//! Who the client is: its IP address (the socket peer, or a trusted
//! proxy's header), and the bucket an address is counted in by the limits.
//!
//! Pure: no I/O. A proxy header is believed only from a peer inside one of
//! the trusted proxy networks, and then read from the right: each proxy
//! appends the address it got the request from, so the rightmost hop that
//! is not itself a trusted proxy is the first one no trusted party vouches
//! for — everything to its left the client may have written.

use std::fmt;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};

use axum::http::{HeaderMap, HeaderName};
use ipnet::IpNet;

/// The networks whose connections may carry the client's address in a
/// header (`http.trusted_proxies`). Empty: none.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TrustedProxies(Vec<IpNet>);

impl TrustedProxies {
    /// Parses CIDRs (`10.0.0.0/8`, `fd00::/8`) or single addresses.
    pub fn parse<S: AsRef<str>>(list: &[S]) -> Result<TrustedProxies, String> {
        list.iter()
            .map(|s| parse_net(s.as_ref()))
            .collect::<Result<Vec<_>, _>>()
            .map(TrustedProxies)
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        self.0.iter().any(|net| net.contains(&ip))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// One trusted network: a CIDR, or an address (a /32 or /128).
pub fn parse_net(s: &str) -> Result<IpNet, String> {
    let s = s.trim();
    if let Ok(net) = s.parse::<IpNet>() {
        return Ok(net.trunc());
    }
    s.parse::<IpAddr>()
        .map(IpNet::from)
        .map_err(|_| format!("{s:?} is not a CIDR (e.g. 10.0.0.0/8) or an IP address"))
}

/// An IPv4-mapped IPv6 address (`::ffff:a.b.c.d`, what a dual-stack
/// socket reports) as the IPv4 address it is.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// The client's address: the socket peer, unless the peer is a trusted
/// proxy and `header` is configured; then the rightmost address in the
/// header (all its occurrences, comma-separated lists) that is not a
/// trusted proxy, or the leftmost when every hop is trusted. A header that
/// does not parse leaves the peer.
pub fn client_ip(
    headers: &HeaderMap,
    peer: SocketAddr,
    header: Option<&HeaderName>,
    trusted: &TrustedProxies,
) -> IpAddr {
    let peer_ip = canonical(peer.ip());
    let Some(name) = header else {
        return peer_ip;
    };
    if !trusted.contains(peer_ip) {
        return peer_ip;
    }
    let mut hops = Vec::new();
    for value in headers.get_all(name) {
        let Ok(value) = value.to_str() else {
            return peer_ip;
        };
        for hop in value.split(',') {
            match parse_hop(hop) {
                Some(ip) => hops.push(ip),
                None => return peer_ip,
            }
        }
    }
    hops.iter()
        .rev()
        .find(|ip| !trusted.contains(**ip))
        .or_else(|| hops.first())
        .copied()
        .unwrap_or(peer_ip)
}

/// One hop of a forwarding header: an address, possibly `[v6]:port` or
/// `v4:port` as some proxies write it.
fn parse_hop(hop: &str) -> Option<IpAddr> {
    let hop = hop.trim();
    if let Ok(ip) = hop.parse::<IpAddr>() {
        return Some(canonical(ip));
    }
    hop.parse::<SocketAddr>().ok().map(|s| canonical(s.ip()))
}

/// What the limits count a client as: an IPv4 address, or an IPv6 /64 (a
/// single subscriber usually gets a whole /64, so counting each /128 would
/// give one client 2^64 buckets).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct IpBucket(IpAddr);

impl IpBucket {
    pub fn of(ip: IpAddr) -> IpBucket {
        match canonical(ip) {
            IpAddr::V6(v6) => {
                let bits = u128::from(v6) & !((1u128 << 64) - 1);
                IpBucket(IpAddr::V6(Ipv6Addr::from(bits)))
            }
            v4 => IpBucket(v4),
        }
    }
}

impl fmt::Display for IpBucket {
    /// `203.0.113.7`, or `2001:db8:1:2::/64`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            IpAddr::V4(v4) => write!(f, "{v4}"),
            IpAddr::V6(v6) => write!(f, "{v6}/64"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn proxies(list: &[&str]) -> TrustedProxies {
        TrustedProxies::parse(list).expect("cidrs")
    }

    fn headers(name: &str, values: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append(
                HeaderName::try_from(name).expect("name"),
                v.parse().expect("value"),
            );
        }
        h
    }

    #[test]
    fn the_header_counts_only_from_a_trusted_peer() {
        let xff = HeaderName::from_static("x-forwarded-for");
        let h = headers("x-forwarded-for", &["203.0.113.7"]);
        let trusted = proxies(&["10.0.0.0/8"]);
        let from_proxy: SocketAddr = "10.1.2.3:5000".parse().expect("addr");
        let from_client: SocketAddr = "198.51.100.9:5000".parse().expect("addr");
        assert_eq!(
            client_ip(&h, from_proxy, Some(&xff), &trusted).to_string(),
            "203.0.113.7"
        );
        // A client writing the header itself is ignored.
        assert_eq!(
            client_ip(&h, from_client, Some(&xff), &trusted),
            from_client.ip()
        );
        // No header configured: always the peer.
        assert_eq!(client_ip(&h, from_proxy, None, &trusted), from_proxy.ip());
        // No trusted proxies: always the peer.
        assert_eq!(
            client_ip(&h, from_proxy, Some(&xff), &TrustedProxies::default()),
            from_proxy.ip()
        );
    }

    #[test]
    fn the_rightmost_untrusted_hop_is_the_client() {
        let xff = HeaderName::from_static("x-forwarded-for");
        let trusted = proxies(&["10.0.0.0/8", "192.0.2.1"]);
        let peer: SocketAddr = "10.0.0.1:80".parse().expect("addr");
        // The client wrote a fake first entry; our proxies appended the rest.
        let h = headers(
            "x-forwarded-for",
            &["6.6.6.6, 203.0.113.7", "192.0.2.1, 10.9.9.9"],
        );
        assert_eq!(
            client_ip(&h, peer, Some(&xff), &trusted).to_string(),
            "203.0.113.7"
        );
        // Every hop trusted: the leftmost.
        let h = headers("x-forwarded-for", &["10.1.1.1, 10.2.2.2"]);
        assert_eq!(
            client_ip(&h, peer, Some(&xff), &trusted).to_string(),
            "10.1.1.1"
        );
        // Garbage anywhere: the peer.
        let h = headers("x-forwarded-for", &["203.0.113.7, nonsense"]);
        assert_eq!(client_ip(&h, peer, Some(&xff), &trusted), peer.ip());
        // Ports and brackets are accepted.
        let h = headers("x-forwarded-for", &["[2001:db8::1]:443, 203.0.113.8:1"]);
        assert_eq!(
            client_ip(&h, peer, Some(&xff), &trusted).to_string(),
            "203.0.113.8"
        );
    }

    #[test]
    fn ipv6_clients_are_counted_by_slash_64() {
        let a = IpBucket::of("2001:db8:1:2:aaaa::1".parse().expect("ip"));
        let b = IpBucket::of("2001:db8:1:2:bbbb::2".parse().expect("ip"));
        let c = IpBucket::of("2001:db8:1:3::1".parse().expect("ip"));
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_eq!(a.to_string(), "2001:db8:1:2::/64");
        let v4 = IpBucket::of("::ffff:203.0.113.7".parse().expect("ip"));
        assert_eq!(v4.to_string(), "203.0.113.7");
    }

    #[test]
    fn trusted_proxies_parse_cidrs_and_addresses() {
        assert!(TrustedProxies::parse(&["10.0.0.0/8", "fd00::/8", "192.0.2.1"]).is_ok());
        assert!(TrustedProxies::parse(&["10.0.0.0/33"]).is_err());
        assert!(TrustedProxies::parse(&["example.com"]).is_err());
        let p = proxies(&["10.0.0.5/8"]);
        assert!(p.contains("10.200.0.1".parse().expect("ip")));
        assert!(p.contains("::ffff:10.0.0.1".parse().expect("ip")));
    }
}
