//! Where a proxied request's destination really leads, judged before anything connects.
//!
//! IP addresses are classified by the network they reach, with every IPv6 form that carries an
//! IPv4 address (mapped, compatible, SIIT, NAT64, 6to4, Teredo) unwrapped first, so that
//! `::ffff:169.254.169.254` is the metadata service and not "some IPv6 address". Host names
//! are resolved once; the caller connects only to the checked addresses, which defeats DNS
//! rebinding between check and connect.
//!
//! Odd spellings of hosts are normalized by the `url` crate before they get here: for `http`
//! and `https` it applies the WHATWG host parser, which reads `2130706433`, `0x7f000001`,
//! `0177.0.0.1`, `127.1` and `0x7f.1` as the IPv4 address 127.0.0.1 (and refuses `1.2.3.4.5`),
//! lowercases names and converts IDNs to ASCII; the tests below pin that behaviour. A name that
//! still looks numeric is read with `inet_aton` rules here anyway, because that is how the
//! system resolver would read it.
//!
//! Refusals are `CoreError::DestinationForbidden("destination refused: ...")` naming the class of the
//! address, never the address or the host: an app must not learn internal addresses by probing.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use tresor_core::CoreError;
use url::{Host, Url};

/// Where an IP address leads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddressClass {
    /// The public internet.
    Public,
    /// 127.0.0.0/8, ::1, and the names `localhost` and `*.localhost`.
    Loopback,
    /// RFC 1918 (10/8, 172.16/12, 192.168/16) and IPv6 unique-local (fc00::/7).
    Private,
    /// Carrier-grade NAT, 100.64.0.0/10.
    SharedCgnat,
    /// 169.254.0.0/16 (except the metadata addresses) and fe80::/10.
    LinkLocal,
    /// Cloud instance metadata: 169.254.169.254 (AWS, GCP, Azure, ...), 169.254.170.2 (ECS task
    /// credentials), fd00:ec2::254 (AWS IPv6), 100.100.100.200 (Alibaba), 168.63.129.16 (Azure
    /// wire server), and the well-known metadata host names.
    CloudMetadata,
    /// 224.0.0.0/4 and ff00::/8.
    Multicast,
    /// 0.0.0.0 and ::, which reach the local host on most systems.
    Unspecified,
    /// 255.255.255.255.
    Broadcast,
    /// Not routable on the internet: 0/8, 240/4, 192.0.0/24, documentation (192.0.2/24,
    /// 198.51.100/24, 203.0.113/24, 2001:db8::/32, 3fff::/20), benchmarking (198.18/15), the
    /// 6to4 relay anycast 192.88.99/24, IETF protocol assignments 2001::/23, deprecated
    /// site-local fec0::/10, and every IPv6 address outside 2000::/3 not named above (which
    /// includes the discard prefix 100::/64).
    Reserved,
}

impl AddressClass {
    /// Whether a provider may reach this class: public always; loopback, private and CGNAT only
    /// with the operator's `allow_private_network`; the rest never.
    pub fn is_allowed(self, allow_private_network: bool) -> bool {
        match self {
            AddressClass::Public => true,
            AddressClass::Loopback | AddressClass::Private | AddressClass::SharedCgnat => {
                allow_private_network
            }
            AddressClass::LinkLocal
            | AddressClass::CloudMetadata
            | AddressClass::Multicast
            | AddressClass::Unspecified
            | AddressClass::Broadcast
            | AddressClass::Reserved => false,
        }
    }

    /// The reason phrase of a refusal.
    pub fn describe(self) -> &'static str {
        match self {
            AddressClass::Public => "the address is public",
            AddressClass::Loopback => "the address is loopback",
            AddressClass::Private => "the address is in a private network",
            AddressClass::SharedCgnat => "the address is in the shared (CGNAT) range",
            AddressClass::LinkLocal => "the address is link-local",
            AddressClass::CloudMetadata => "the address is a cloud metadata service",
            AddressClass::Multicast => "the address is multicast",
            AddressClass::Unspecified => "the address is unspecified",
            AddressClass::Broadcast => "the address is broadcast",
            AddressClass::Reserved => "the address is reserved, not routable on the internet",
        }
    }
}

/// Classifies an address by where it really leads: IPv4-mapped (`::ffff:a.b.c.d`),
/// IPv4-compatible (`::a.b.c.d`), SIIT (`::ffff:0:a.b.c.d`), NAT64 (`64:ff9b::/96`,
/// `64:ff9b:1::/48`), 6to4 (`2002::/16`) and Teredo (`2001::/32`, server and client) forms are
/// classified as the IPv4 address they carry — the stricter one when they carry two.
pub fn classify(ip: IpAddr) -> AddressClass {
    match ip {
        IpAddr::V4(v4) => classify_v4(v4),
        IpAddr::V6(v6) => classify_v6(v6),
    }
}

/// `Ok` when the address may be reached; otherwise `DestinationForbidden("destination refused: ...")`.
pub fn check_ip(ip: IpAddr, allow_private_network: bool) -> Result<(), CoreError> {
    check_class(classify(ip), allow_private_network)
}

/// The class of a URL's host when it is known without DNS: an IP literal (in any spelling the
/// URL parser accepts), `localhost` and `*.localhost` (loopback), or a well-known metadata host
/// name. `None` means the name has to be resolved. A URL without a host is 400.
pub fn classify_host(url: &Url) -> Result<Option<AddressClass>, CoreError> {
    Ok(match host_before_dns(url)? {
        HostBeforeDns::Ip(ip) => Some(classify(ip)),
        HostBeforeDns::Localhost => Some(AddressClass::Loopback),
        HostBeforeDns::MetadataName => Some(AddressClass::CloudMetadata),
        HostBeforeDns::Name(_) => None,
    })
}

/// Resolves the URL's host once and checks every address it resolves to; the caller must
/// connect only to the returned addresses (pinning), never resolve the name again.
///
/// An IP literal is checked without DNS; `localhost` and `*.localhost` are 127.0.0.1 and ::1
/// without DNS. A name is refused when ANY of its addresses is refused (a name with a public and
/// a private address is a split answer or a rebinding attempt), when it does not resolve, or
/// when resolving takes longer than 5 s.
pub async fn resolve_checked(
    url: &Url,
    allow_private_network: bool,
) -> Result<Vec<SocketAddr>, CoreError> {
    let port = url
        .port_or_known_default()
        .ok_or_else(|| CoreError::InvalidRequest("the URL has no port".to_owned()))?;
    let name = match host_before_dns(url)? {
        HostBeforeDns::Ip(ip) => {
            check_ip(ip, allow_private_network)?;
            return Ok(vec![SocketAddr::new(ip, port)]);
        }
        HostBeforeDns::Localhost => {
            check_class(AddressClass::Loopback, allow_private_network)?;
            return Ok(vec![
                SocketAddr::new(Ipv4Addr::LOCALHOST.into(), port),
                SocketAddr::new(Ipv6Addr::LOCALHOST.into(), port),
            ]);
        }
        HostBeforeDns::MetadataName => {
            return check_class(AddressClass::CloudMetadata, allow_private_network)
                .map(|()| Vec::new());
        }
        HostBeforeDns::Name(name) => name,
    };

    let lookup = tokio::net::lookup_host((name.as_str(), port));
    let resolved: Vec<SocketAddr> = match tokio::time::timeout(RESOLVE_TIMEOUT, lookup).await {
        Ok(Ok(addrs)) => addrs.collect(),
        // A failed or slow lookup is answered like an empty one: the app learns nothing about
        // the resolver.
        Ok(Err(_)) | Err(_) => Vec::new(),
    };
    if resolved.is_empty() {
        // destination_forbidden
        return Err(CoreError::DestinationForbidden(
            "destination refused: the host does not resolve".to_owned(),
        ));
    }
    let mut checked: Vec<SocketAddr> = Vec::with_capacity(resolved.len());
    for addr in resolved {
        check_ip(addr.ip(), allow_private_network)?;
        if !checked.contains(&addr) {
            checked.push(addr);
        }
    }
    Ok(checked)
}

/// How long one resolution may take.
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(5);

/// Host names of metadata services that must never be resolved: they are refused by their
/// address anyway, but a hosts file or a search domain could make them resolve differently.
const METADATA_NAMES: &[&str] = &[
    "metadata",
    "metadata.google.internal",
    "metadata.goog",
    "instance-data",
    "instance-data.ec2.internal",
];

fn check_class(class: AddressClass, allow_private_network: bool) -> Result<(), CoreError> {
    if class.is_allowed(allow_private_network) {
        return Ok(());
    }
    let hint = match class {
        AddressClass::Loopback | AddressClass::Private | AddressClass::SharedCgnat => {
            " and the provider does not allow private networks"
        }
        _ => "",
    };
    // destination_forbidden
    Err(CoreError::DestinationForbidden(format!(
        "destination refused: {}{hint}",
        class.describe()
    )))
}

/// A URL's host as far as it is known before DNS.
enum HostBeforeDns {
    Ip(IpAddr),
    Localhost,
    MetadataName,
    /// Lowercase, without a trailing dot.
    Name(String),
}

fn host_before_dns(url: &Url) -> Result<HostBeforeDns, CoreError> {
    let domain = match url.host() {
        None => return Err(CoreError::InvalidRequest("the URL has no host".to_owned())),
        Some(Host::Ipv4(ip)) => return Ok(HostBeforeDns::Ip(ip.into())),
        Some(Host::Ipv6(ip)) => return Ok(HostBeforeDns::Ip(ip.into())),
        Some(Host::Domain(d)) => d,
    };
    // "localhost." and "localhost" are the same name to a resolver.
    let name = domain
        .strip_suffix('.')
        .unwrap_or(domain)
        .to_ascii_lowercase();
    if name.is_empty() {
        return Err(CoreError::InvalidRequest("the URL has no host".to_owned()));
    }
    if name == "localhost" || name.ends_with(".localhost") {
        return Ok(HostBeforeDns::Localhost);
    }
    if METADATA_NAMES.contains(&name.as_str()) {
        return Ok(HostBeforeDns::MetadataName);
    }
    // The url crate turns numeric hosts of http(s) URLs into `Host::Ipv4`; a numeric-looking
    // name reaching this point came through some other path and is read the way the system
    // resolver would read it, or refused when even that fails.
    let last_label = name.rsplit('.').next().unwrap_or_default();
    if last_label
        .bytes()
        .next()
        .is_some_and(|b| b.is_ascii_digit())
    {
        return match inet_aton(&name) {
            Some(ip) => Ok(HostBeforeDns::Ip(ip.into())),
            // destination_forbidden
            None => Err(CoreError::DestinationForbidden(
                "destination refused: the host is a malformed numeric address".to_owned(),
            )),
        };
    }
    Ok(HostBeforeDns::Name(name))
}

/// IPv4 text as `inet_aton` reads it: one to four parts, each decimal, octal (leading `0`) or
/// hex (`0x`), the last one filling the remaining bytes.
fn inet_aton(text: &str) -> Option<Ipv4Addr> {
    let parts: Vec<&str> = text.split('.').collect();
    if parts.is_empty() || parts.len() > 4 {
        return None;
    }
    let mut values = Vec::with_capacity(parts.len());
    for part in &parts {
        let (digits, radix) =
            if let Some(hex) = part.strip_prefix("0x").or_else(|| part.strip_prefix("0X")) {
                (hex, 16)
            } else if part.len() > 1 && part.starts_with('0') {
                (&part[1..], 8)
            } else {
                (*part, 10)
            };
        if digits.is_empty() || !digits.chars().all(|c| c.is_digit(radix)) {
            return None;
        }
        values.push(u32::from_str_radix(digits, radix).ok()?);
    }
    let (last, leading) = values.split_last()?;
    if leading.iter().any(|v| *v > 255) {
        return None;
    }
    let last_bits = 8 * (4 - leading.len() as u32);
    if last_bits < 32 && *last >> last_bits != 0 {
        return None;
    }
    let mut addr: u32 = 0;
    for (i, v) in leading.iter().enumerate() {
        addr |= v << (24 - 8 * i as u32);
    }
    Some(Ipv4Addr::from(addr | last))
}

fn classify_v4(ip: Ipv4Addr) -> AddressClass {
    let a = u32::from(ip);
    let within = |net: [u8; 4], len: u32| {
        let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
        a & mask == u32::from(Ipv4Addr::from(net)) & mask
    };
    // Exact addresses first: several metadata services sit inside wider ranges.
    match ip.octets() {
        [0, 0, 0, 0] => return AddressClass::Unspecified,
        [255, 255, 255, 255] => return AddressClass::Broadcast,
        [169, 254, 169, 254] | [169, 254, 170, 2] | [100, 100, 100, 200] | [168, 63, 129, 16] => {
            return AddressClass::CloudMetadata;
        }
        _ => {}
    }
    if within([127, 0, 0, 0], 8) {
        AddressClass::Loopback
    } else if within([10, 0, 0, 0], 8)
        || within([172, 16, 0, 0], 12)
        || within([192, 168, 0, 0], 16)
    {
        AddressClass::Private
    } else if within([100, 64, 0, 0], 10) {
        AddressClass::SharedCgnat
    } else if within([169, 254, 0, 0], 16) {
        AddressClass::LinkLocal
    } else if within([224, 0, 0, 0], 4) {
        AddressClass::Multicast
    } else if within([0, 0, 0, 0], 8)
        || within([240, 0, 0, 0], 4)
        || within([192, 0, 0, 0], 24)
        || within([192, 0, 2, 0], 24)
        || within([192, 88, 99, 0], 24)
        || within([198, 18, 0, 0], 15)
        || within([198, 51, 100, 0], 24)
        || within([203, 0, 113, 0], 24)
    {
        AddressClass::Reserved
    } else {
        AddressClass::Public
    }
}

fn classify_v6(ip: Ipv6Addr) -> AddressClass {
    let bits = u128::from(ip);
    let o = ip.octets();
    let v4 = |b: [u8; 4]| classify_v4(Ipv4Addr::from(b));
    let within = |net: u128, len: u32| {
        let mask = if len == 0 {
            0
        } else {
            u128::MAX << (128 - len)
        };
        bits & mask == net & mask
    };
    let low32 = [o[12], o[13], o[14], o[15]];

    match bits {
        0 => return AddressClass::Unspecified,
        1 => return AddressClass::Loopback,
        0xfd00_0ec2_0000_0000_0000_0000_0000_0254 => return AddressClass::CloudMetadata,
        _ => {}
    }
    // IPv4-compatible ::/96, IPv4-mapped ::ffff:0:0/96, SIIT ::ffff:0:0:0/96, NAT64 64:ff9b::/96.
    if within(0, 96)
        || within(0xffff << 32, 96)
        || within(0xffff_0000 << 32, 96)
        || within(0x0064_ff9b << 96, 96)
    {
        return v4(low32);
    }
    if within(0x0064_ff9b_0001 << 80, 48) {
        return local_nat64(&o);
    }
    if within(0x2002 << 112, 16) {
        return v4([o[2], o[3], o[4], o[5]]);
    }
    if within(0x2001_0000 << 96, 32) {
        // Teredo: the server's address in clear, the client's inverted.
        let server = v4([o[4], o[5], o[6], o[7]]);
        let client = v4(low32.map(|b| !b));
        return stricter(server, client);
    }
    if within(0xfe80 << 112, 10) {
        AddressClass::LinkLocal
    } else if within(0xfec0 << 112, 10) {
        AddressClass::Reserved
    } else if within(0xfc00 << 112, 7) {
        AddressClass::Private
    } else if within(0xff00 << 112, 8) {
        AddressClass::Multicast
    } else if within(0x2001_0db8 << 96, 32)
        || within(0x3fff << 112, 20)
        || within(0x2001 << 112, 23)
    {
        AddressClass::Reserved
    } else if within(0x2000 << 112, 3) {
        AddressClass::Public
    } else {
        AddressClass::Reserved
    }
}

/// The local-use NAT64 prefix 64:ff9b:1::/48 is subdivided by each network with a prefix of
/// /48, /56, /64 or /96 (RFC 6052 §2.2), and the IPv4 address sits at a different place for
/// each. Every reading is classified and the strictest wins, ignoring readings in 0.0.0.0/8:
/// those are the zero padding of a longer prefix, not an address anyone could reach.
fn local_nat64(o: &[u8; 16]) -> AddressClass {
    let readings = [
        [o[6], o[7], o[9], o[10]],
        [o[7], o[9], o[10], o[11]],
        [o[9], o[10], o[11], o[12]],
        [o[12], o[13], o[14], o[15]],
    ];
    let classes = readings.map(|b| (b[0], classify_v4(Ipv4Addr::from(b))));
    let meaningful = classes
        .iter()
        .filter(|(first, _)| *first != 0)
        .map(|(_, c)| *c);
    let all = classes.iter().map(|(_, c)| *c);
    meaningful
        .reduce(stricter)
        .or_else(|| all.reduce(stricter))
        .unwrap_or(AddressClass::Reserved)
}

/// The class that allows less; among the never-allowed ones, the most specific reason.
fn stricter(a: AddressClass, b: AddressClass) -> AddressClass {
    fn rank(c: AddressClass) -> u8 {
        match c {
            AddressClass::Public => 0,
            AddressClass::Private | AddressClass::SharedCgnat => 1,
            AddressClass::Loopback => 2,
            AddressClass::Reserved => 3,
            AddressClass::Broadcast | AddressClass::Multicast => 4,
            AddressClass::Unspecified => 5,
            AddressClass::LinkLocal => 6,
            AddressClass::CloudMetadata => 7,
        }
    }
    if rank(b) > rank(a) { b } else { a }
}

#[cfg(test)]
mod tests {
    use super::*;

    use AddressClass::*;

    /// Every case renders its outcome as text and compares it with the expectation.
    fn check(label: &str, got: String, want: &str) {
        assert_eq!(got, want, "case {label:?}");
    }

    /// `ok` or the error code, for `check_ip` and friends.
    fn verdict<T>(r: Result<T, CoreError>) -> String {
        match r {
            Ok(_) => "ok".to_owned(),
            Err(e) => e.code().as_str().to_owned(),
        }
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().expect("test address")
    }

    #[test]
    fn classifies_addresses_by_where_they_lead() {
        let cases: &[(&str, AddressClass)] = &[
            ("127.0.0.1", Loopback),
            ("127.255.255.254", Loopback),
            ("10.0.0.1", Private),
            ("172.16.0.1", Private),
            ("172.31.255.255", Private),
            ("172.32.0.1", Public),
            ("172.15.255.255", Public),
            ("192.168.1.1", Private),
            ("100.64.0.1", SharedCgnat),
            ("100.127.255.255", SharedCgnat),
            ("100.128.0.1", Public),
            ("169.254.169.254", CloudMetadata),
            ("169.254.170.2", CloudMetadata),
            ("100.100.100.200", CloudMetadata),
            ("168.63.129.16", CloudMetadata),
            ("169.254.1.1", LinkLocal),
            ("169.254.169.253", LinkLocal),
            ("0.0.0.0", Unspecified),
            ("0.1.2.3", Reserved),
            ("255.255.255.255", Broadcast),
            ("255.255.255.254", Reserved),
            ("224.0.0.1", Multicast),
            ("239.255.255.250", Multicast),
            ("240.0.0.1", Reserved),
            ("192.0.0.1", Reserved),
            ("192.0.2.1", Reserved),
            ("192.88.99.1", Reserved),
            ("198.18.0.1", Reserved),
            ("198.19.255.255", Reserved),
            ("198.51.100.1", Reserved),
            ("203.0.113.1", Reserved),
            ("8.8.8.8", Public),
            ("1.1.1.1", Public),
            // IPv6 of its own.
            ("::1", Loopback),
            ("::", Unspecified),
            ("fe80::1", LinkLocal),
            ("febf::1", LinkLocal),
            ("fec0::1", Reserved),
            ("fc00::1", Private),
            ("fd00::1", Private),
            ("fd00:ec2::254", CloudMetadata),
            ("ff02::1", Multicast),
            ("2001:db8::1", Reserved),
            ("3fff::1", Reserved),
            ("2001:2::1", Reserved),
            ("100::1", Reserved),
            ("4000::1", Reserved),
            ("2606:4700:4700::1111", Public),
            ("2a00:1450:4001::200e", Public),
            // IPv4 inside IPv6.
            ("::ffff:127.0.0.1", Loopback),
            ("::ffff:169.254.169.254", CloudMetadata),
            ("::ffff:8.8.8.8", Public),
            ("::127.0.0.1", Loopback),
            ("::10.0.0.1", Private),
            ("::0.0.0.2", Reserved),
            ("::ffff:0:127.0.0.1", Loopback),
            ("64:ff9b::a9fe:a9fe", CloudMetadata),
            ("64:ff9b::7f00:1", Loopback),
            ("64:ff9b::808:808", Public),
            ("64:ff9b::", Unspecified),
            ("64:ff9b:1::a9fe:a9fe", CloudMetadata),
            ("64:ff9b:1:a9fe:a9:fe00::", CloudMetadata),
            ("64:ff9b:1::808:808", Public),
            ("64:ff9b:1:808:8:800::", Public),
            ("64:ff9b:1:808:8:800:7f00:1", Loopback),
            ("2002:7f00:1::1", Loopback),
            ("2002:a9fe:a9fe::1", CloudMetadata),
            ("2002:0808:0808::1", Public),
            ("2001:0:4136:e378:8000:63bf:3fff:fdd2", Reserved),
            ("2001:0:a9fe:a9fe::f7f7:f7f7", CloudMetadata),
            ("2001:0:4136:e378:8000:63bf:80ff:fffe", Loopback),
            ("2001:0:4136:e378:8000:63bf:f7f7:f7f7", Public),
        ];
        for (text, want) in cases {
            check(
                text,
                format!("{:?}", classify(ip(text))),
                &format!("{want:?}"),
            );
        }
    }

    #[test]
    fn allows_private_networks_only_when_the_provider_does() {
        const NO: &str = "destination_forbidden";
        let cases: &[(&str, &str, &str)] = &[
            // (address, without allow_private_network, with it)
            ("8.8.8.8", "ok", "ok"),
            ("2606:4700:4700::1111", "ok", "ok"),
            ("127.0.0.1", NO, "ok"),
            ("::1", NO, "ok"),
            ("10.0.0.1", NO, "ok"),
            ("fd00::1", NO, "ok"),
            ("100.64.0.1", NO, "ok"),
            ("::ffff:192.168.1.1", NO, "ok"),
            ("169.254.169.254", NO, NO),
            ("fd00:ec2::254", NO, NO),
            ("169.254.1.1", NO, NO),
            ("fe80::1", NO, NO),
            ("224.0.0.1", NO, NO),
            ("ff02::1", NO, NO),
            ("0.0.0.0", NO, NO),
            ("::", NO, NO),
            ("255.255.255.255", NO, NO),
            ("192.0.2.1", NO, NO),
            ("2001:db8::1", NO, NO),
            ("64:ff9b::a9fe:a9fe", NO, NO),
        ];
        for (text, without, with) in cases {
            check(text, verdict(check_ip(ip(text), false)), without);
            check(text, verdict(check_ip(ip(text), true)), with);
        }
    }

    #[test]
    fn refusals_name_the_class_and_not_the_address() {
        let cases: &[(&str, bool, &str)] = &[
            (
                "169.254.169.254",
                true,
                "destination refused: the address is a cloud metadata service",
            ),
            (
                "169.254.1.1",
                true,
                "destination refused: the address is link-local",
            ),
            (
                "10.1.2.3",
                false,
                "destination refused: the address is in a private network and the provider does not allow private networks",
            ),
        ];
        for (text, allow, want) in cases {
            let got = match check_ip(ip(text), *allow) {
                Ok(()) => "ok".to_owned(),
                Err(e) => e.public_message(),
            };
            check(text, got, want);
        }
    }

    #[test]
    fn numeric_and_odd_host_spellings_are_the_address_they_reach() {
        let cases: &[(&str, &str)] = &[
            ("http://2130706433/", "Some(Loopback)"),
            ("http://0x7f000001/", "Some(Loopback)"),
            ("http://0177.0.0.1/", "Some(Loopback)"),
            ("http://127.1/", "Some(Loopback)"),
            ("http://0x7f.1/", "Some(Loopback)"),
            ("http://127.0.0.1./", "Some(Loopback)"),
            ("http://[::ffff:7f00:1]/", "Some(Loopback)"),
            ("http://[::ffff:127.0.0.1]/", "Some(Loopback)"),
            ("http://localhost/", "Some(Loopback)"),
            ("http://localhost./", "Some(Loopback)"),
            ("http://LOCALHOST/", "Some(Loopback)"),
            ("http://sub.localhost/", "Some(Loopback)"),
            ("http://a.b.LocalHost./", "Some(Loopback)"),
            ("http://%6c%6fcalhost/", "Some(Loopback)"),
            ("http://ｌｏｃａｌｈｏｓｔ/", "Some(Loopback)"),
            ("http://2852039166/", "Some(CloudMetadata)"),
            ("http://0xa9.0xfe.0xa9.0xfe/", "Some(CloudMetadata)"),
            ("http://0251.0376.0251.0376/", "Some(CloudMetadata)"),
            ("http://169.254.43518/", "Some(CloudMetadata)"),
            ("http://[::ffff:a9fe:a9fe]/", "Some(CloudMetadata)"),
            ("http://metadata.google.internal./", "Some(CloudMetadata)"),
            ("http://Metadata/", "Some(CloudMetadata)"),
            ("http://0/", "Some(Unspecified)"),
            ("http://[::]/", "Some(Unspecified)"),
            ("http://10.1/", "Some(Private)"),
            ("https://8.8.8.8/", "Some(Public)"),
            ("https://api.example.com/", "None"),
            ("https://localhost.example.com/", "None"),
        ];
        for (text, want) in cases {
            let url = Url::parse(text).expect("test URL");
            check(
                text,
                format!("{:?}", classify_host(&url).map_err(|e| e.code())),
                &format!("Ok({want})"),
            );
        }
        // Forms the URL parser refuses outright never get as far as a URL.
        for text in [
            "http://1.2.3.4.5/",
            "http://0x100000000/",
            "http://256.0.0.1/",
            "http://[::1/",
        ] {
            check(text, Url::parse(text).is_err().to_string(), "true");
        }
    }

    #[test]
    fn numeric_names_are_read_like_the_system_resolver_reads_them() {
        let cases: &[(&str, &str)] = &[
            ("2130706433", "Some(127.0.0.1)"),
            ("0x7f.1", "Some(127.0.0.1)"),
            ("0177.0.0.1", "Some(127.0.0.1)"),
            ("127.1", "Some(127.0.0.1)"),
            ("127.0.1", "Some(127.0.0.1)"),
            ("169.254.43518", "Some(169.254.169.254)"),
            ("0XA9FEA9FE", "Some(169.254.169.254)"),
            ("0", "Some(0.0.0.0)"),
            ("1.2.3.4.5", "None"),
            ("256.1", "None"),
            ("1.2.3.256", "None"),
            ("4294967296", "None"),
            ("08.1.1.1", "None"),
            ("0x", "None"),
            ("1..1", "None"),
            ("1.2.3.4a", "None"),
        ];
        for (text, want) in cases {
            check(text, format!("{:?}", inet_aton(text)), want);
        }
    }

    #[tokio::test]
    async fn resolves_and_pins_checked_addresses_without_the_network() {
        const NO: &str = "destination_forbidden";
        let cases: &[(&str, bool, &str)] = &[
            ("http://127.0.0.1:1/", false, NO),
            ("http://127.0.0.1:1/", true, "[127.0.0.1:1]"),
            ("http://2130706433:1/", false, NO),
            ("http://localhost:1/", false, NO),
            ("http://LOCALHOST.:1/", false, NO),
            ("http://localhost:1/", true, "[127.0.0.1:1, [::1]:1]"),
            ("http://sub.localhost/", true, "[127.0.0.1:80, [::1]:80]"),
            ("http://[::1]:8080/", true, "[[::1]:8080]"),
            ("https://8.8.8.8/", false, "[8.8.8.8:443]"),
            (
                "https://[2606:4700:4700::1111]:8443/",
                false,
                "[[2606:4700:4700::1111]:8443]",
            ),
            ("http://169.254.169.254/", true, NO),
            ("http://[::ffff:169.254.169.254]/", true, NO),
            ("http://[64:ff9b::a9fe:a9fe]/", true, NO),
            ("http://metadata.google.internal/", true, NO),
            ("http://0.0.0.0:1/", true, NO),
            ("http://[fe80::1]/", true, NO),
        ];
        for (text, allow, want) in cases {
            let url = Url::parse(text).expect("test URL");
            let got = match resolve_checked(&url, *allow).await {
                Ok(addrs) => format!("{addrs:?}"),
                Err(e) => e.code().as_str().to_owned(),
            };
            check(&format!("{text} allow={allow}"), got, want);
        }
    }
}
