//! Egress safety (SSRF): which destinations deliveries may reach.
//!
//! By default only `https://` URLs whose addresses are public are allowed. Refused:
//! - IPv4: unspecified/"this network" 0.0.0.0/8, loopback 127/8, private 10/8, 172.16/12,
//!   192.168/16, CGNAT 100.64/10, link-local 169.254/16 (cloud metadata 169.254.169.254),
//!   IETF protocol assignments 192.0.0/24, documentation 192.0.2/24, 198.51.100/24, 203.0.113/24,
//!   6to4 relay 192.88.99/24, benchmarking 198.18/15, multicast 224/4, reserved 240/4 and the
//!   broadcast address;
//! - IPv6: unspecified `::`, loopback `::1`, unique local fc00::/7, link-local fe80::/10,
//!   site-local fec0::/10, multicast ff00::/8, documentation 2001:db8::/32 and 3fff::/20,
//!   benchmarking 2001:2::/48, ORCHID 2001:10::/28 and 2001:20::/28, discard 100::/64,
//!   SRv6 5f00::/16, local-use NAT64 64:ff9b:1::/48, and everything outside 2000::/3;
//! - IPv6 forms that embed an IPv4 address are judged by that address: IPv4-mapped
//!   `::ffff:a.b.c.d`, IPv4-translated `::ffff:0:a.b.c.d`, NAT64 `64:ff9b::a.b.c.d`, 6to4
//!   `2002:AABB:CCDD::/48` and Teredo (server and client address); the deprecated
//!   IPv4-compatible `::a.b.c.d` is refused in any case.
//!
//! The operator's [`EgressPolicy`] can allow CIDRs (in-cluster receivers, tests on loopback),
//! deny more, and allow plain `http://`. Deny wins over allow. The allow list lifts the built-in
//! refusals for the addresses it contains; an IPv4-mapped address counts as its IPv4 address.
//!
//! [`check_url`] checks what can be known from the URL (scheme, IP literals, `localhost`
//! names, cloud metadata names such as `metadata.google.internal`); the HTTP client checks every resolved address with [`EgressPolicy::check_ip`] at
//! connect time (see [`super::client`]), so DNS rebinding cannot get around the rules.
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use ipnet::IpNet;
use url::{Host, Url};

/// Why an address is refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BlockReason {
    Unspecified,
    Loopback,
    /// RFC 1918.
    Private,
    /// CGNAT, 100.64.0.0/10.
    SharedAddressSpace,
    /// Including the cloud metadata address 169.254.169.254.
    LinkLocal,
    /// IPv6 fc00::/7.
    UniqueLocal,
    Multicast,
    Broadcast,
    Documentation,
    Benchmarking,
    /// Reserved, deprecated or not globally routable.
    Reserved,
    /// In a CIDR the operator's policy denies.
    Denied(IpNet),
}

impl std::fmt::Display for BlockReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BlockReason::Unspecified => f.write_str("an unspecified address"),
            BlockReason::Loopback => f.write_str("a loopback address"),
            BlockReason::Private => f.write_str("a private (RFC 1918) address"),
            BlockReason::SharedAddressSpace => f.write_str("a shared (CGNAT) address"),
            BlockReason::LinkLocal => f.write_str("a link-local address"),
            BlockReason::UniqueLocal => f.write_str("a unique local address"),
            BlockReason::Multicast => f.write_str("a multicast address"),
            BlockReason::Broadcast => f.write_str("the broadcast address"),
            BlockReason::Documentation => f.write_str("a documentation address"),
            BlockReason::Benchmarking => f.write_str("a benchmarking address"),
            BlockReason::Reserved => f.write_str("a reserved address"),
            BlockReason::Denied(net) => write!(f, "in {net}, denied by the egress policy"),
        }
    }
}

/// The operator's egress configuration.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EgressPolicy {
    /// Allow plain `http://` URLs.
    pub allow_http: bool,
    /// CIDRs allowed even though the built-in rules refuse them.
    pub allow: Vec<IpNet>,
    /// CIDRs refused in addition to the built-in rules (wins over `allow`).
    pub deny: Vec<IpNet>,
}

/// Why a URL or destination is refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum EgressError {
    #[error("scheme `{0}` is not allowed (only https)")]
    UnsupportedScheme(String),
    #[error("plain http is not allowed by the egress policy; use https")]
    InsecureScheme,
    #[error("the URL has no host")]
    MissingHost,
    #[error("{ip} is {reason}")]
    BlockedAddress { ip: IpAddr, reason: BlockReason },
    #[error("host {host} is {reason}")]
    BlockedHost { host: String, reason: BlockReason },
    #[error("host {host} resolves only to refused addresses: {}", describe(.blocked))]
    NoAllowedAddress {
        host: String,
        blocked: Vec<(IpAddr, BlockReason)>,
    },
}

impl EgressError {
    /// The refused destination, for the security log: the address (the first one, when a host
    /// resolved only to refused ones) or the host name refused by name.
    pub fn refused_address(&self) -> Option<String> {
        match self {
            EgressError::BlockedAddress { ip, .. } => Some(ip.to_string()),
            EgressError::BlockedHost { host, .. } => Some(host.clone()),
            EgressError::NoAllowedAddress { blocked, .. } => {
                blocked.first().map(|(ip, _)| ip.to_string())
            }
            _ => None,
        }
    }
}

fn describe(blocked: &[(IpAddr, BlockReason)]) -> String {
    let parts: Vec<String> = blocked
        .iter()
        .map(|(ip, reason)| format!("{ip} ({reason})"))
        .collect();
    if parts.is_empty() {
        "none returned".to_string()
    } else {
        parts.join(", ")
    }
}

/// The built-in class of an address that deliveries may not reach, or `None` if it is public.
pub fn classify(ip: IpAddr) -> Option<BlockReason> {
    match ip {
        IpAddr::V4(v4) => classify_v4(v4),
        IpAddr::V6(v6) => classify_v6(v6),
    }
}

fn classify_v4(ip: Ipv4Addr) -> Option<BlockReason> {
    let [a, b, c, _] = ip.octets();
    let reason = match (a, b, c) {
        (0, _, _) => BlockReason::Unspecified,
        (10, _, _) => BlockReason::Private,
        (100, 64..=127, _) => BlockReason::SharedAddressSpace,
        (127, _, _) => BlockReason::Loopback,
        (169, 254, _) => BlockReason::LinkLocal,
        (172, 16..=31, _) => BlockReason::Private,
        (192, 0, 0) | (192, 88, 99) => BlockReason::Reserved,
        (192, 0, 2) | (198, 51, 100) | (203, 0, 113) => BlockReason::Documentation,
        (192, 168, _) => BlockReason::Private,
        (198, 18..=19, _) => BlockReason::Benchmarking,
        (224..=239, _, _) => BlockReason::Multicast,
        _ if ip == Ipv4Addr::BROADCAST => BlockReason::Broadcast,
        (240..=255, _, _) => BlockReason::Reserved,
        _ => return None,
    };
    Some(reason)
}

fn classify_v6(ip: Ipv6Addr) -> Option<BlockReason> {
    if let Some(v4) = ip.to_ipv4_mapped() {
        return classify_v4(v4);
    }
    let s = ip.segments();
    let low_v4 = Ipv4Addr::new((s[6] >> 8) as u8, s[6] as u8, (s[7] >> 8) as u8, s[7] as u8);
    if ip.is_unspecified() {
        return Some(BlockReason::Unspecified);
    }
    if ip.is_loopback() {
        return Some(BlockReason::Loopback);
    }
    match s {
        // IPv4-compatible ::a.b.c.d (deprecated) and IPv4-translated ::ffff:0:a.b.c.d.
        [0, 0, 0, 0, 0, 0, _, _] | [0, 0, 0, 0, 0xffff, 0, _, _] => {
            return Some(classify_v4(low_v4).unwrap_or(BlockReason::Reserved))
        }
        // NAT64 well-known prefix: reaches the embedded IPv4 address.
        [0x64, 0xff9b, 0, 0, 0, 0, _, _] => return classify_v4(low_v4),
        _ => {}
    }
    if let Some(v4) = embedded_6to4_or_teredo(ip) {
        return v4.into_iter().find_map(classify_v4);
    }
    let reason = match s {
        [0x64, 0xff9b, 1, ..] => BlockReason::Reserved,
        [0x100, 0, 0, 0, ..] => BlockReason::Reserved,
        [0x2001, 0xdb8, ..] => BlockReason::Documentation,
        [0x2001, 2, 0, ..] => BlockReason::Benchmarking,
        [0x2001, 0x10..=0x2f, ..] => BlockReason::Reserved,
        [0x3fff, 0..=0x0fff, ..] => BlockReason::Documentation,
        [0x5f00, ..] => BlockReason::Reserved,
        [first, ..] if first & 0xfe00 == 0xfc00 => BlockReason::UniqueLocal,
        [first, ..] if first & 0xffc0 == 0xfe80 => BlockReason::LinkLocal,
        [first, ..] if first & 0xffc0 == 0xfec0 => BlockReason::Reserved,
        [first, ..] if first & 0xff00 == 0xff00 => BlockReason::Multicast,
        [first, ..] if first & 0xe000 != 0x2000 => BlockReason::Reserved,
        _ => return None,
    };
    Some(reason)
}

/// The IPv4 addresses a 6to4 (`2002::/16`) or Teredo (`2001::/32`) address leads to.
fn embedded_6to4_or_teredo(ip: Ipv6Addr) -> Option<[Ipv4Addr; 2]> {
    let s = ip.segments();
    let v4 = |hi: u16, lo: u16| Ipv4Addr::from((u32::from(hi) << 16) | u32::from(lo));
    match s {
        [0x2002, hi, lo, ..] => Some([v4(hi, lo); 2]),
        // Teredo: server address in clear, client address inverted in the last 32 bits.
        [0x2001, 0, server_hi, server_lo, _, _, client_hi, client_lo] => {
            Some([v4(server_hi, server_lo), v4(!client_hi, !client_lo)])
        }
        _ => None,
    }
}

/// The IPv4 addresses an IPv6 address embeds (mapped, compatible, translated, NAT64, 6to4, Teredo).
fn embedded_v4(ip: IpAddr) -> Vec<Ipv4Addr> {
    let IpAddr::V6(v6) = ip else {
        return Vec::new();
    };
    if let Some(v4) = v6.to_ipv4_mapped() {
        return vec![v4];
    }
    let s = v6.segments();
    let low = Ipv4Addr::from((u32::from(s[6]) << 16) | u32::from(s[7]));
    match s {
        [0, 0, 0, 0, 0, 0, _, _]
        | [0, 0, 0, 0, 0xffff, 0, _, _]
        | [0x64, 0xff9b, 0, 0, 0, 0, _, _] => vec![low],
        _ => embedded_6to4_or_teredo(v6)
            .map(Vec::from)
            .unwrap_or_default(),
    }
}

/// An IPv4-mapped IPv6 address as its IPv4 address; others unchanged.
pub fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// Whether `host` is a `localhost` name (RFC 6761: always loopback, never sent to DNS).
fn is_localhost_name(host: &str) -> bool {
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    host == "localhost" || host.ends_with(".localhost")
}

/// Names of cloud metadata services, which resolve to link-local addresses inside the cloud;
/// refused up front so that they are refused the same way where they do not resolve.
const METADATA_HOSTS: &[&str] = &[
    "metadata.google.internal",
    "metadata.goog",
    "metadata",
    "instance-data",
    "instance-data.ec2.internal",
];

fn is_metadata_name(host: &str) -> bool {
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    METADATA_HOSTS.contains(&host.as_str())
}

impl EgressPolicy {
    /// A policy that also allows plain http and the given CIDRs (e.g. `127.0.0.0/8` in tests).
    pub fn allowing(allow: impl IntoIterator<Item = IpNet>) -> Self {
        Self {
            allow_http: true,
            allow: allow.into_iter().collect(),
            deny: Vec::new(),
        }
    }

    /// May a delivery connect to `ip`?
    pub fn check_ip(&self, ip: IpAddr) -> Result<(), BlockReason> {
        let canon = canonical(ip);
        let candidates = [ip, canon]
            .into_iter()
            .chain(embedded_v4(ip).into_iter().map(IpAddr::V4));
        for candidate in candidates {
            if let Some(net) = self.deny.iter().find(|net| net.contains(&candidate)) {
                return Err(BlockReason::Denied(*net));
            }
        }
        if self
            .allow
            .iter()
            .any(|net| net.contains(&ip) || net.contains(&canon))
        {
            return Ok(());
        }
        classify(canon).map_or(Ok(()), Err)
    }

    /// Splits resolved addresses into those a delivery may connect to and the refused ones.
    pub fn filter_resolved(
        &self,
        addrs: impl IntoIterator<Item = SocketAddr>,
    ) -> (Vec<SocketAddr>, Vec<(IpAddr, BlockReason)>) {
        let mut allowed = Vec::new();
        let mut blocked = Vec::new();
        for addr in addrs {
            match self.check_ip(addr.ip()) {
                Ok(()) => allowed.push(addr),
                Err(reason) => blocked.push((addr.ip(), reason)),
            }
        }
        (allowed, blocked)
    }
}

/// Checks what the URL alone tells: the scheme (https, or http if allowed), that there is a
/// host, IP literals and `localhost` names. Other host names are checked when they resolve.
pub fn check_url(url: &Url, policy: &EgressPolicy) -> Result<(), EgressError> {
    match url.scheme() {
        "https" => {}
        "http" if policy.allow_http => {}
        "http" => return Err(EgressError::InsecureScheme),
        other => return Err(EgressError::UnsupportedScheme(other.to_string())),
    }
    let blocked_address = |ip: IpAddr| {
        policy
            .check_ip(ip)
            .map_err(|reason| EgressError::BlockedAddress { ip, reason })
    };
    match url.host() {
        None => Err(EgressError::MissingHost),
        Some(Host::Ipv4(v4)) => blocked_address(IpAddr::V4(v4)),
        Some(Host::Ipv6(v6)) => blocked_address(IpAddr::V6(v6)),
        Some(Host::Domain("")) => Err(EgressError::MissingHost),
        Some(Host::Domain(domain)) if is_localhost_name(domain) => policy
            .check_ip(IpAddr::V4(Ipv4Addr::LOCALHOST))
            .map_err(|reason| EgressError::BlockedHost {
                host: domain.to_string(),
                reason,
            }),
        Some(Host::Domain(domain)) if is_metadata_name(domain) => policy
            .check_ip(IpAddr::V4(Ipv4Addr::new(169, 254, 169, 254)))
            .map_err(|reason| EgressError::BlockedHost {
                host: domain.to_string(),
                reason,
            }),
        Some(Host::Domain(_)) => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    #[test]
    fn blocked_ipv4() {
        let cases = [
            ("0.0.0.0", BlockReason::Unspecified),
            ("0.1.2.3", BlockReason::Unspecified),
            ("127.0.0.1", BlockReason::Loopback),
            ("127.255.255.254", BlockReason::Loopback),
            ("10.0.0.1", BlockReason::Private),
            ("172.16.0.1", BlockReason::Private),
            ("172.31.255.255", BlockReason::Private),
            ("192.168.1.1", BlockReason::Private),
            ("100.64.0.1", BlockReason::SharedAddressSpace),
            ("100.127.255.255", BlockReason::SharedAddressSpace),
            ("169.254.169.254", BlockReason::LinkLocal),
            ("192.0.0.170", BlockReason::Reserved),
            ("192.0.2.1", BlockReason::Documentation),
            ("198.51.100.7", BlockReason::Documentation),
            ("203.0.113.9", BlockReason::Documentation),
            ("192.88.99.1", BlockReason::Reserved),
            ("198.18.0.1", BlockReason::Benchmarking),
            ("198.19.255.255", BlockReason::Benchmarking),
            ("224.0.0.1", BlockReason::Multicast),
            ("239.255.255.250", BlockReason::Multicast),
            ("240.0.0.1", BlockReason::Reserved),
            ("255.255.255.255", BlockReason::Broadcast),
        ];
        for (addr, reason) in cases {
            assert_eq!(classify(ip(addr)), Some(reason), "{addr}");
        }
    }

    #[test]
    fn public_ipv4_and_neighbours_of_blocked_ranges_pass() {
        for addr in [
            "8.8.8.8",
            "1.1.1.1",
            "100.63.255.255",
            "100.128.0.0",
            "172.15.255.255",
            "172.32.0.0",
            "169.253.1.1",
            "192.167.1.1",
            "198.17.0.1",
            "198.20.0.1",
            "223.255.255.255",
            "11.0.0.1",
            "126.255.255.255",
            "128.0.0.1",
        ] {
            assert_eq!(classify(ip(addr)), None, "{addr}");
        }
    }

    #[test]
    fn blocked_ipv6() {
        let cases = [
            ("::", BlockReason::Unspecified),
            ("::1", BlockReason::Loopback),
            ("fc00::1", BlockReason::UniqueLocal),
            ("fd12:3456::1", BlockReason::UniqueLocal),
            ("fe80::1", BlockReason::LinkLocal),
            ("febf::1", BlockReason::LinkLocal),
            ("fec0::1", BlockReason::Reserved),
            ("ff02::1", BlockReason::Multicast),
            ("2001:db8::1", BlockReason::Documentation),
            ("3fff::1", BlockReason::Documentation),
            ("2001:2::1", BlockReason::Benchmarking),
            ("2001:10::1", BlockReason::Reserved),
            ("2001:20::1", BlockReason::Reserved),
            ("100::1", BlockReason::Reserved),
            ("5f00::1", BlockReason::Reserved),
            ("64:ff9b:1::1", BlockReason::Reserved),
            ("4000::1", BlockReason::Reserved),
            ("::2", BlockReason::Unspecified),
            // Embedded IPv4.
            ("::ffff:127.0.0.1", BlockReason::Loopback),
            ("::ffff:169.254.169.254", BlockReason::LinkLocal),
            ("::ffff:10.1.2.3", BlockReason::Private),
            ("::127.0.0.1", BlockReason::Loopback),
            ("::8.8.8.8", BlockReason::Reserved),
            ("::ffff:0:192.168.0.1", BlockReason::Private),
            ("64:ff9b::127.0.0.1", BlockReason::Loopback),
            ("64:ff9b::a9fe:a9fe", BlockReason::LinkLocal),
            ("2002:7f00:1::1", BlockReason::Loopback),
            ("2002:a9fe:a9fe::", BlockReason::LinkLocal),
            ("2002:c0a8:0101::1", BlockReason::Private),
            // Teredo with client 127.0.0.1 (inverted: 80ff:fffe) or server 10.0.0.1.
            (
                "2001:0:4136:e378:8000:63bf:80ff:fffe",
                BlockReason::Loopback,
            ),
            ("2001:0:a00:1::1", BlockReason::Private),
        ];
        for (addr, reason) in cases {
            assert_eq!(classify(ip(addr)), Some(reason), "{addr}");
        }
    }

    #[test]
    fn public_ipv6_passes() {
        for addr in [
            "2606:4700:4700::1111",
            "2001:4860:4860::8888",
            "::ffff:8.8.8.8",
            "64:ff9b::808:808",
            "2002:808:808::1",
            "2a00:1450::1",
            "2001:0:4136:e378:8000:63bf:f7f7:f7f7",
        ] {
            assert_eq!(classify(ip(addr)), None, "{addr}");
        }
    }

    #[test]
    fn policy_allow_and_deny() {
        let policy = EgressPolicy {
            allow_http: false,
            allow: vec![net("127.0.0.0/8"), net("10.0.0.0/8")],
            deny: vec![net("10.1.0.0/16"), net("8.8.8.0/24")],
        };
        assert_eq!(policy.check_ip(ip("127.0.0.1")), Ok(()));
        assert_eq!(policy.check_ip(ip("::ffff:127.0.0.1")), Ok(()));
        assert_eq!(policy.check_ip(ip("10.2.3.4")), Ok(()));
        assert_eq!(
            policy.check_ip(ip("10.1.3.4")),
            Err(BlockReason::Denied(net("10.1.0.0/16")))
        );
        assert_eq!(
            policy.check_ip(ip("8.8.8.8")),
            Err(BlockReason::Denied(net("8.8.8.0/24")))
        );
        assert_eq!(
            policy.check_ip(ip("::ffff:8.8.8.8")),
            Err(BlockReason::Denied(net("8.8.8.0/24")))
        );
        assert_eq!(
            policy.check_ip(ip("64:ff9b::808:808")),
            Err(BlockReason::Denied(net("8.8.8.0/24")))
        );
        assert_eq!(policy.check_ip(ip("::1")), Err(BlockReason::Loopback));
        assert_eq!(
            policy.check_ip(ip("169.254.169.254")),
            Err(BlockReason::LinkLocal)
        );
        assert_eq!(
            EgressPolicy::default().check_ip(ip("127.0.0.1")),
            Err(BlockReason::Loopback)
        );
    }

    #[test]
    fn urls() {
        let default = EgressPolicy::default();
        let check = |url: &str, policy: &EgressPolicy| check_url(&Url::parse(url).unwrap(), policy);
        assert_eq!(check("https://example.com/hook", &default), Ok(()));
        assert_eq!(check("https://93.184.216.34/", &default), Ok(()));
        assert_eq!(
            check("http://example.com/", &default),
            Err(EgressError::InsecureScheme)
        );
        assert!(
            matches!(check("ftp://example.com/", &default), Err(EgressError::UnsupportedScheme(s)) if s == "ftp")
        );
        for blocked in [
            "https://127.0.0.1/",
            "https://[::1]/",
            "https://[::ffff:127.0.0.1]:8443/",
            "https://169.254.169.254/latest/meta-data/",
            "https://2130706433/",
            "https://0x7f.1/",
            "https://0177.0.0.1/",
            "https://127.1/",
            "https://0/",
            "https://[fd00::1]/",
            "https://10.0.0.1/",
            "https://[64:ff9b::a9fe:a9fe]/",
        ] {
            assert!(
                matches!(
                    check(blocked, &default),
                    Err(EgressError::BlockedAddress { .. })
                ),
                "{blocked}"
            );
        }
        assert!(check("https://127.0.0.1./", &default).is_err());
        for (name, expected) in [
            (
                "https://metadata.google.internal/computeMetadata/v1/",
                BlockReason::LinkLocal,
            ),
            ("https://METADATA.goog./", BlockReason::LinkLocal),
            ("https://instance-data/", BlockReason::LinkLocal),
            ("https://localhost/", BlockReason::Loopback),
            ("https://LOCALHOST./", BlockReason::Loopback),
            ("https://api.localhost:8443/", BlockReason::Loopback),
        ] {
            let result = check(name, &default);
            assert!(
                matches!(result, Err(EgressError::BlockedHost { reason, .. }) if reason == expected),
                "{name}"
            );
        }
        let loopback = EgressPolicy::allowing([net("127.0.0.0/8")]);
        assert_eq!(check("http://127.0.0.1:8080/", &loopback), Ok(()));
        assert_eq!(check("http://localhost:8080/", &loopback), Ok(()));
        assert!(check("http://[::1]:8080/", &loopback).is_err());
        assert_eq!(
            check("https://169.254.169.254/", &loopback),
            Err(EgressError::BlockedAddress {
                ip: ip("169.254.169.254"),
                reason: BlockReason::LinkLocal
            })
        );
    }

    #[test]
    fn error_messages_are_clear() {
        let err = EgressError::BlockedAddress {
            ip: ip("169.254.169.254"),
            reason: BlockReason::LinkLocal,
        };
        assert_eq!(err.to_string(), "169.254.169.254 is a link-local address");
        let err = EgressError::NoAllowedAddress {
            host: "evil.test".into(),
            blocked: vec![(ip("127.0.0.1"), BlockReason::Loopback)],
        };
        assert_eq!(
            err.to_string(),
            "host evil.test resolves only to refused addresses: 127.0.0.1 (a loopback address)"
        );
    }

    #[test]
    fn filter_resolved_keeps_only_allowed() {
        let addrs: Vec<SocketAddr> = vec![
            "127.0.0.1:443".parse().unwrap(),
            "93.184.216.34:443".parse().unwrap(),
            "[::1]:443".parse().unwrap(),
        ];
        let (allowed, blocked) = EgressPolicy::default().filter_resolved(addrs);
        assert_eq!(
            allowed,
            vec!["93.184.216.34:443".parse::<SocketAddr>().unwrap()]
        );
        assert_eq!(blocked.len(), 2);
    }

    proptest! {
        /// Every IPv4 form of a blocked address (mapped, compatible, translated, NAT64, 6to4) is blocked too.
        #[test]
        fn embedded_forms_agree_with_ipv4(raw in any::<u32>()) {
            let v4 = Ipv4Addr::from(raw);
            let hi = (raw >> 16) as u16;
            let lo = raw as u16;
            let forms = [
                v4.to_ipv6_mapped(),
                Ipv6Addr::new(0, 0, 0, 0, 0xffff, 0, hi, lo),
                Ipv6Addr::new(0x64, 0xff9b, 0, 0, 0, 0, hi, lo),
                Ipv6Addr::new(0x2002, hi, lo, 0, 0, 0, 0, 1),
                Ipv6Addr::new(0x2001, 0, 0x0808, 0x0808, 0, 0, !hi, !lo),
            ];
            let expected = classify_v4(v4);
            for form in forms {
                let got = classify(IpAddr::V6(form));
                if expected.is_some() {
                    prop_assert!(got.is_some(), "{} embeds blocked {}", form, v4);
                }
            }
            prop_assert_eq!(classify(IpAddr::V6(v4.to_ipv6_mapped())), expected);
            prop_assert_eq!(classify(IpAddr::V6(Ipv6Addr::new(0x64, 0xff9b, 0, 0, 0, 0, hi, lo))), expected);
            prop_assert!(classify(IpAddr::V6(v4.to_ipv6_compatible())).is_some());
        }

        /// Agrees with the standard library's own predicates where they exist.
        #[test]
        fn std_predicates_are_blocked(raw in any::<u32>(), raw6 in any::<u128>()) {
            let v4 = Ipv4Addr::from(raw);
            if v4.is_private() || v4.is_loopback() || v4.is_link_local() || v4.is_multicast() || v4.is_broadcast() || v4.is_documentation() || v4.is_unspecified() {
                prop_assert!(classify(IpAddr::V4(v4)).is_some());
            }
            let v6 = Ipv6Addr::from(raw6);
            if v6.is_loopback() || v6.is_multicast() || v6.is_unspecified() || v6.is_unique_local() || v6.is_unicast_link_local() {
                prop_assert!(classify(IpAddr::V6(v6)).is_some());
            }
            // Only global unicast space can pass.
            if classify(IpAddr::V6(v6)).is_none() {
                let first = v6.segments()[0];
                prop_assert!(first & 0xe000 == 0x2000 || v6.to_ipv4_mapped().is_some() || (first == 0x64 && v6.segments()[1] == 0xff9b));
            }
        }

        /// The allow list lifts exactly what it contains; deny always wins.
        #[test]
        fn allow_and_deny_lists(raw in any::<u32>(), prefix in 0u8..=32) {
            let v4 = IpAddr::V4(Ipv4Addr::from(raw));
            let cidr = IpNet::new(v4, prefix).unwrap().trunc();
            let allow = EgressPolicy { allow: vec![cidr], ..Default::default() };
            prop_assert_eq!(allow.check_ip(v4), Ok(()));
            let deny = EgressPolicy { allow: vec![cidr], deny: vec![cidr], ..Default::default() };
            prop_assert_eq!(deny.check_ip(v4), Err(BlockReason::Denied(cidr)));
            prop_assert_eq!(EgressPolicy::default().check_ip(v4), classify(v4).map_or(Ok(()), Err));
        }
    }
}
