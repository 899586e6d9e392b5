//! Who the client is: the TCP peer, or, when the peer is a trusted proxy (an
//! ingress controller, a load balancer), the address it forwards in
//! `X-Forwarded-For`.
//!
//! Login throttling and the audit log key on this address. Behind an ingress
//! every request comes from the ingress's own address, so without this one
//! guesser would lock a user out for everybody. The header is believed only
//! from configured proxies, since any client can send one: the list is read
//! from the right (each proxy appends the address it received from) and the
//! first hop that is not a trusted proxy is the client, as nginx's
//! `real_ip_recursive` does. Only proxies that append to or overwrite the
//! header may be listed: one that passes a client's header on untouched lets
//! that client choose its address.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::HeaderMap;
use axum::http::request::Parts;
use ipnet::{IpNet, Ipv4Net};

use crate::AppState;

/// Networks whose `X-Forwarded-For` is believed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedProxies(Vec<IpNet>);

impl TrustedProxies {
    pub fn new(networks: Vec<IpNet>) -> Self {
        TrustedProxies(networks)
    }

    /// Parses one network: `10.0.12.0/24`, `fd00::/8`, or a single address.
    /// An IPv4-mapped IPv6 network is read as the IPv4 network it maps, since
    /// addresses are compared in their IPv4 form.
    pub fn parse_network(text: &str) -> Result<IpNet, String> {
        let text = text.trim();
        let network = text
            .parse::<IpNet>()
            .or_else(|_| text.parse::<IpAddr>().map(IpNet::from))
            .map_err(|_| {
                format!("{text:?} is not an IP network: write e.g. 10.0.12.0/24 or 192.168.1.10")
            })?;
        Ok(match network {
            IpNet::V6(v6) if v6.prefix_len() >= 96 => match v6.addr().to_ipv4_mapped() {
                Some(v4) => Ipv4Net::new(v4, v6.prefix_len() - 96)
                    .expect("a prefix of at most 32")
                    .into(),
                None => network,
            },
            _ => network,
        })
    }

    /// Whether `address` is a trusted proxy.
    pub fn trusts(&self, address: IpAddr) -> bool {
        self.0.iter().any(|network| network.contains(&address))
    }

    /// The client behind `peer`, the connection's remote address.
    pub fn client(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        let mut client = peer.to_canonical();
        if self.0.is_empty() || !self.trusts(client) {
            return client;
        }
        // Later header lines were added by later proxies, like later entries.
        let hops = headers
            .get_all("x-forwarded-for")
            .iter()
            .rev()
            .flat_map(|value| {
                // A value that is not text ends the walk: nothing past it is
                // believed. Empty entries are skipped, as nginx does.
                let entries = value.to_str().unwrap_or("?").rsplit(',');
                entries
                    .map(str::trim)
                    .filter(|entry| !entry.is_empty())
                    .map(parse_hop)
            });
        for hop in hops {
            let Some(hop) = hop else { break };
            client = hop;
            if !self.trusts(hop) {
                break;
            }
        }
        client
    }
}

/// An address as proxies write it: bare, or with a port (`[::1]:80`).
fn parse_hop(entry: &str) -> Option<IpAddr> {
    entry
        .parse::<IpAddr>()
        .or_else(|_| entry.parse::<SocketAddr>().map(|a| a.ip()))
        .ok()
        .map(|ip| ip.to_canonical())
}

/// Extractor: the client's address (see the module documentation), and
/// whether the request came through a trusted proxy, whose other
/// `X-Forwarded-*` headers are then believed too.
#[derive(Debug, Clone, Copy)]
pub struct ClientAddr {
    pub ip: IpAddr,
    pub via_trusted_proxy: bool,
}

impl FromRequestParts<Arc<AppState>> for ClientAddr {
    type Rejection = <ConnectInfo<SocketAddr> as FromRequestParts<Arc<AppState>>>::Rejection;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<AppState>,
    ) -> Result<Self, Self::Rejection> {
        let ConnectInfo(peer) = ConnectInfo::<SocketAddr>::from_request_parts(parts, state).await?;
        let proxies = &state.trusted_proxies;
        Ok(ClientAddr {
            ip: proxies.client(peer.ip(), &parts.headers),
            via_trusted_proxy: proxies.trusts(peer.ip().to_canonical()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn proxies(networks: &[&str]) -> TrustedProxies {
        TrustedProxies::new(
            networks
                .iter()
                .map(|n| TrustedProxies::parse_network(n).unwrap())
                .collect(),
        )
    }

    fn forwarded(lines: &[&str]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for line in lines {
            headers.append("x-forwarded-for", HeaderValue::from_str(line).unwrap());
        }
        headers
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn the_header_is_ignored_unless_the_peer_is_trusted() {
        let headers = forwarded(&["203.0.113.7"]);
        let peer = ip("198.51.100.1");
        assert_eq!(TrustedProxies::default().client(peer, &headers), peer);
        assert_eq!(proxies(&["10.0.0.0/8"]).client(peer, &headers), peer);
        // A proxy that forwards nothing is the client itself.
        let peer = ip("10.1.2.3");
        assert_eq!(
            proxies(&["10.0.0.0/8"]).client(peer, &HeaderMap::new()),
            peer
        );
    }

    #[test]
    fn the_first_untrusted_hop_from_the_right_is_the_client() {
        let trusted = proxies(&["10.0.0.0/8", "192.168.1.10"]);
        let peer = ip("10.0.0.5");
        // What the client sent itself (a forged first entry) is left of it.
        let headers = forwarded(&["1.1.1.1, 203.0.113.7, 192.168.1.10"]);
        assert_eq!(trusted.client(peer, &headers), ip("203.0.113.7"));
        // The same across header lines, and with ports.
        let headers = forwarded(&["1.1.1.1", "203.0.113.7:5123", "192.168.1.10"]);
        assert_eq!(trusted.client(peer, &headers), ip("203.0.113.7"));
        let headers = forwarded(&["[2001:db8::7]:443"]);
        assert_eq!(trusted.client(peer, &headers), ip("2001:db8::7"));
        // Only proxies: the leftmost is as far as can be known.
        let headers = forwarded(&["10.9.9.9, 192.168.1.10"]);
        assert_eq!(trusted.client(peer, &headers), ip("10.9.9.9"));
    }

    #[test]
    fn garbage_ends_the_walk_at_the_last_proxy() {
        let trusted = proxies(&["10.0.0.0/8"]);
        let peer = ip("10.0.0.5");
        let headers = forwarded(&["203.0.113.7, unknown, 10.0.0.6"]);
        assert_eq!(trusted.client(peer, &headers), ip("10.0.0.6"));
        // Empty entries are no hops.
        let headers = forwarded(&["203.0.113.7, ,", ""]);
        assert_eq!(trusted.client(peer, &headers), ip("203.0.113.7"));
    }

    #[test]
    fn ipv4_mapped_peers_match_ipv4_networks() {
        let headers = forwarded(&["203.0.113.7"]);
        for networks in [["10.0.0.0/8"], ["::ffff:10.0.0.0/104"]] {
            let trusted = proxies(&networks);
            for peer in ["::ffff:10.0.0.5", "10.0.0.5"] {
                assert_eq!(trusted.client(ip(peer), &headers), ip("203.0.113.7"));
            }
        }
    }

    #[test]
    fn networks_parse_or_say_what_to_write() {
        assert!(TrustedProxies::parse_network("10.0.0.0/8").is_ok());
        assert!(TrustedProxies::parse_network(" fd00::/8").is_ok());
        assert!(TrustedProxies::parse_network("192.168.1.10").is_ok());
        let error = TrustedProxies::parse_network("ingress.local").unwrap_err();
        assert!(error.contains("10.0.12.0/24"), "{error}");
    }
}
