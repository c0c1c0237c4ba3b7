//! Rate limits, all off unless the operator sets them: requests per installation (checked
//! right after authentication, before the body is read), failed authentications per client
//! address (checked before a presented token is looked at, so a guesser gets no oracle) and
//! OAuth callbacks per client address; and the client address itself, read from
//! `X-Forwarded-For` only when the peer is a trusted proxy.
//!
//! Each limit is a GCRA token bucket: one "theoretical arrival time" (a `u64` of nanoseconds
//! on this process's monotonic clock) per key, in a sharded map of bounded size. A key whose
//! arrival time has passed is a full bucket, the same as no entry, so idle entries are dropped
//! without losing anything. With several servers over one database each enforces its share of
//! the limit: the rate and the burst divided by the number of live servers (see
//! [`RateLimits::set_nodes`]); no request writes to the database.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::net::{IpAddr, SocketAddr};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Instant;

use axum::http::HeaderMap;
use tresor_core::CoreError;
use tresor_core::audit::RequestContext;
use tresor_core::model::Principal;

use crate::AppState;

const NANOS_PER_SEC: u64 = 1_000_000_000;
/// Entries a limiter keeps at most (idle ones are dropped first; see [`Limiter::store`]).
const DEFAULT_CAPACITY: usize = 1 << 20;
const SHARDS: usize = 64;

/// A rate and the burst allowed above it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rate {
    /// Sustained requests per second (over every server together).
    pub per_second: f64,
    /// Requests that may come at once, from a full bucket (at least 1).
    pub burst: u32,
}

impl Rate {
    /// `n` per minute, with a minute's worth as the burst.
    pub fn per_minute(n: u32) -> Rate {
        Rate {
            per_second: f64::from(n) / 60.0,
            burst: n.max(1),
        }
    }
}

/// An address block: `10.0.0.0/8`, `2001:db8::/32`, or one address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// Parses `ADDR/PREFIX` or a bare address (a block of one).
    pub fn parse(s: &str) -> Result<Cidr, String> {
        let s = s.trim();
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr = addr
            .parse()
            .map_err(|_| format!("`{s}` is not an IP address or CIDR block"))?;
        let addr = addr.to_canonical();
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => p
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| format!("`{s}`: the prefix length must be 0 to {max}"))?,
        };
        Ok(Cidr { addr, prefix })
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip.to_canonical()) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => prefix_eq(
                u128::from(u32::from(net)) << 96,
                u128::from(u32::from(ip)) << 96,
                self.prefix,
            ),
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                prefix_eq(u128::from(net), u128::from(ip), self.prefix)
            }
            _ => false,
        }
    }
}

fn prefix_eq(a: u128, b: u128, prefix: u8) -> bool {
    let mask = if prefix == 0 {
        0
    } else {
        u128::MAX << (128 - u32::from(prefix))
    };
    a & mask == b & mask
}

impl std::fmt::Display for Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// What the operator configured; `Default` is every limit off and no trusted proxy.
#[derive(Debug, Clone, Default)]
pub struct RateLimitConfig {
    pub per_installation: Option<Rate>,
    pub auth_failures_per_address: Option<Rate>,
    pub oauth_callbacks_per_address: Option<Rate>,
    pub trusted_proxies: Vec<Cidr>,
}

/// Which limit refused a request: the `kind` label of `tresor_rate_limited_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitKind {
    Installation,
    AuthFailure,
    OauthCallback,
}

impl LimitKind {
    pub const ALL: [LimitKind; 3] = [
        LimitKind::Installation,
        LimitKind::AuthFailure,
        LimitKind::OauthCallback,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            LimitKind::Installation => "installation",
            LimitKind::AuthFailure => "auth_failure",
            LimitKind::OauthCallback => "oauth_callback",
        }
    }
}

/// The limits of one server process.
pub struct RateLimits {
    installation: Option<Limiter>,
    auth_failure: Option<Limiter>,
    oauth_callback: Option<Limiter>,
    trusted_proxies: Vec<Cidr>,
    /// Live servers sharing the limits (at least 1).
    nodes: AtomicU32,
    epoch: Instant,
    /// Keys are hashed with a per-process random key, so nobody can aim collisions.
    hasher: RandomState,
}

impl std::fmt::Debug for RateLimits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimits")
            .field("installation", &self.installation.as_ref().map(|l| l.rate))
            .field("auth_failure", &self.auth_failure.as_ref().map(|l| l.rate))
            .field(
                "oauth_callback",
                &self.oauth_callback.as_ref().map(|l| l.rate),
            )
            .field("trusted_proxies", &self.trusted_proxies)
            .field("nodes", &self.nodes.load(Ordering::Relaxed))
            .finish()
    }
}

impl RateLimits {
    pub fn new(config: RateLimitConfig) -> RateLimits {
        RateLimits::with_capacity(config, DEFAULT_CAPACITY)
    }

    /// Every limit off, no trusted proxy.
    pub fn disabled() -> RateLimits {
        RateLimits::new(RateLimitConfig::default())
    }

    fn with_capacity(config: RateLimitConfig, capacity: usize) -> RateLimits {
        let make = |r: Option<Rate>| r.map(|r| Limiter::new(r, capacity));
        RateLimits {
            installation: make(config.per_installation),
            auth_failure: make(config.auth_failures_per_address),
            oauth_callback: make(config.oauth_callbacks_per_address),
            trusted_proxies: config.trusted_proxies,
            nodes: AtomicU32::new(1),
            epoch: Instant::now(),
            hasher: RandomState::new(),
        }
    }

    /// How many live servers share the limits; each then allows its share. Set from the node
    /// registry at every heartbeat (1 on the embedded store).
    pub fn set_nodes(&self, n: usize) {
        let n = u32::try_from(n).unwrap_or(u32::MAX).max(1);
        self.nodes.store(n, Ordering::Relaxed);
    }

    pub fn nodes(&self) -> u32 {
        self.nodes.load(Ordering::Relaxed).max(1)
    }

    fn now(&self) -> u64 {
        // Never 0, so that an arrival time of 0 (no entry) is always in the past.
        u64::try_from(self.epoch.elapsed().as_nanos())
            .unwrap_or(u64::MAX)
            .saturating_add(1)
    }

    fn key_of(&self, kind: LimitKind, bytes: &[u8]) -> u64 {
        self.hasher.hash_one((kind.as_str(), bytes))
    }

    /// The client's address: the peer, or, when the peer is a trusted proxy, the rightmost
    /// address of `X-Forwarded-For` that is not a trusted proxy itself (the leftmost one when
    /// all are). An entry that is not an address ends the walk at the last trusted hop.
    pub fn client_addr(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        let peer = peer.to_canonical();
        if !self.is_trusted(peer) {
            return peer;
        }
        let mut hops: Vec<&str> = Vec::new();
        for v in headers.get_all("x-forwarded-for") {
            let Ok(v) = v.to_str() else {
                return peer;
            };
            hops.extend(v.split(',').map(str::trim).filter(|h| !h.is_empty()));
        }
        let mut client = peer;
        for hop in hops.iter().rev() {
            let Some(ip) = parse_hop(hop) else {
                return client;
            };
            client = ip;
            if !self.is_trusted(ip) {
                return ip;
            }
        }
        client
    }

    fn is_trusted(&self, ip: IpAddr) -> bool {
        self.trusted_proxies.iter().any(|c| c.contains(ip))
    }

    /// One request of an installation; `Err(seconds)` when it is over its limit.
    pub fn check_installation(&self, installation_id: &str) -> Result<(), u64> {
        let Some(l) = &self.installation else {
            return Ok(());
        };
        let key = self.key_of(LimitKind::Installation, installation_id.as_bytes());
        l.acquire(key, self.now(), self.nodes())
            .map_err(retry_after_secs)
    }

    /// Before a presented token is checked: `Err(seconds)` when the address has used up its
    /// failed authentications.
    pub fn check_auth_failures(&self, client: IpAddr) -> Result<(), u64> {
        let Some(l) = &self.auth_failure else {
            return Ok(());
        };
        let key = self.key_of(LimitKind::AuthFailure, &address_key(client));
        l.peek(key, self.now(), self.nodes())
            .map_err(retry_after_secs)
    }

    /// After a presented token was refused.
    pub fn record_auth_failure(&self, client: IpAddr) {
        if let Some(l) = &self.auth_failure {
            let key = self.key_of(LimitKind::AuthFailure, &address_key(client));
            l.charge(key, self.now(), self.nodes());
        }
    }

    /// One OAuth callback from an address; `Err(seconds)` when it is over its limit.
    pub fn check_oauth_callback(&self, client: IpAddr) -> Result<(), u64> {
        let Some(l) = &self.oauth_callback else {
            return Ok(());
        };
        let key = self.key_of(LimitKind::OauthCallback, &address_key(client));
        l.acquire(key, self.now(), self.nodes())
            .map_err(retry_after_secs)
    }
}

/// An address as a limit key: IPv4 whole, IPv6 by its /64 (one host usually holds a whole /64,
/// so a per-address limit on single IPv6 addresses would limit nothing).
fn address_key(ip: IpAddr) -> Vec<u8> {
    match ip.to_canonical() {
        IpAddr::V4(v4) => v4.octets().to_vec(),
        IpAddr::V6(v6) => v6.octets()[..8].to_vec(),
    }
}

/// An `X-Forwarded-For` entry: an address, or an address with a port (`1.2.3.4:5`,
/// `[::1]:5`), as some proxies write it.
fn parse_hop(hop: &str) -> Option<IpAddr> {
    hop.parse::<IpAddr>()
        .ok()
        .or_else(|| hop.parse::<SocketAddr>().ok().map(|s| s.ip()))
        .map(|ip| ip.to_canonical())
}

/// Whole seconds to wait, at least 1 (for `Retry-After`).
fn retry_after_secs(wait_nanos: u64) -> u64 {
    wait_nanos.div_ceil(NANOS_PER_SEC).max(1)
}

/// The GCRA step: with the key's arrival time `tat`, a request at `now` that costs `increment`
/// conforms when the new arrival time is at most `window` ahead of now. `Ok(new tat)`, or
/// `Err(nanoseconds until it would conform)`.
fn gcra(tat: u64, now: u64, increment: u64, window: u64) -> Result<u64, u64> {
    let next = tat.max(now).saturating_add(increment);
    let ahead = next - now;
    if ahead <= window {
        Ok(next)
    } else {
        Err(ahead - window)
    }
}

/// One limit: its rate and the arrival times of its keys.
struct Limiter {
    rate: Rate,
    /// Nanoseconds between two requests at the whole rate.
    emission: u64,
    shards: Box<[Mutex<HashMap<u64, u64>>]>,
    per_shard: usize,
}

impl Limiter {
    fn new(rate: Rate, capacity: usize) -> Limiter {
        let emission = (NANOS_PER_SEC as f64 / rate.per_second).round();
        let emission = if emission.is_finite() && emission >= 1.0 {
            // Saturating float-to-int conversion: a rate too small to matter is "one per ~584
            // years".
            emission as u64
        } else {
            1
        };
        Limiter {
            rate,
            emission,
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            per_shard: capacity.div_ceil(SHARDS).max(1),
        }
    }

    /// With `nodes` servers, each allows 1/nodes of the rate and of the burst: a request costs
    /// `nodes` emission intervals, and the bucket holds `burst` of them.
    fn params(&self, nodes: u32) -> (u64, u64) {
        let increment = self.emission.saturating_mul(u64::from(nodes));
        let window = self
            .emission
            .saturating_mul(u64::from(self.rate.burst.max(1)));
        (increment, window)
    }

    fn shard(&self, key: u64) -> std::sync::MutexGuard<'_, HashMap<u64, u64>> {
        // The map is only ever left consistent (plain inserts and removes), so a panic while
        // holding the lock cannot have broken it.
        let i = (key % SHARDS as u64) as usize;
        self.shards[i].lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Takes one request if it conforms.
    fn acquire(&self, key: u64, now: u64, nodes: u32) -> Result<(), u64> {
        let (inc, window) = self.params(nodes);
        let mut map = self.shard(key);
        let tat = map.get(&key).copied().unwrap_or(0);
        let next = gcra(tat, now, inc, window)?;
        self.store(&mut map, key, next, now);
        Ok(())
    }

    /// Whether one more request would conform, without taking it.
    fn peek(&self, key: u64, now: u64, nodes: u32) -> Result<(), u64> {
        let (inc, window) = self.params(nodes);
        let tat = self.shard(key).get(&key).copied().unwrap_or(0);
        gcra(tat, now, inc, window).map(|_| ())
    }

    /// Takes one request whether it conforms or not (a failure that already happened).
    fn charge(&self, key: u64, now: u64, nodes: u32) {
        let (inc, _) = self.params(nodes);
        let mut map = self.shard(key);
        let tat = map.get(&key).copied().unwrap_or(0);
        let next = tat.max(now).saturating_add(inc);
        self.store(&mut map, key, next, now);
    }

    /// Keeps the shard within its size: when it is full, entries whose time has passed (full
    /// buckets, the same as none) go first; if every entry is still busy, one is dropped (that
    /// key starts again from a full bucket) rather than let memory grow.
    fn store(&self, map: &mut HashMap<u64, u64>, key: u64, tat: u64, now: u64) {
        if map.len() >= self.per_shard && !map.contains_key(&key) {
            map.retain(|_, t| *t > now);
            if map.len() >= self.per_shard
                && let Some(victim) = map.keys().next().copied()
            {
                map.remove(&victim);
            }
        }
        map.insert(key, tat);
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().map(|m| m.len()).unwrap_or(0))
            .sum()
    }
}

/// Authentication with the limits around it: a request that presents credentials from an
/// address over its failed-authentication limit is refused (429) before its token is looked
/// at; a refused token counts against its address; an installation over its rate is refused
/// (429) before anything else is done. Admin tokens are never rate limited.
pub async fn authenticate(
    state: &AppState,
    authorization: Option<&str>,
    client: Option<IpAddr>,
    ctx: &RequestContext,
) -> Result<Principal, CoreError> {
    let limits = &state.rate_limits;
    // A request without credentials guesses nothing: it is answered 401 and not counted.
    let presented = authorization.is_some();
    if presented
        && let Some(ip) = client
        && let Err(secs) = limits.check_auth_failures(ip)
    {
        state.metrics.count_rate_limited(LimitKind::AuthFailure);
        // Audited as the refusal of an authentication, as a 401 is.
        state.service.audit_auth_refusal(authorization, ctx, 429)?;
        return Err(CoreError::RateLimited {
            retry_after_secs: secs,
        });
    }
    let result = state.service.authenticate(authorization, ctx).await;
    match &result {
        Err(CoreError::Unauthenticated) if presented => {
            if let Some(ip) = client {
                limits.record_auth_failure(ip);
            }
        }
        Ok(Principal::Installation(p)) => {
            if let Err(secs) = limits.check_installation(&p.installation_id) {
                state.metrics.count_rate_limited(LimitKind::Installation);
                tracing::debug!(
                    request_id = %ctx.request_id,
                    retry_after = secs,
                    "installation over its rate limit"
                );
                return Err(CoreError::RateLimited {
                    retry_after_secs: secs,
                });
            }
        }
        _ => {}
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = NANOS_PER_SEC;

    #[test]
    fn gcra_allows_the_burst_then_one_per_interval() {
        // 1 per second, burst 3: emission 1 s, window 3 s.
        let (inc, window) = (S, 3 * S);
        let now = 10 * S;
        let mut tat = 0;
        for _ in 0..3 {
            tat = gcra(tat, now, inc, window).expect("within the burst");
        }
        assert_eq!(tat, 13 * S);
        assert_eq!(gcra(tat, now, inc, window), Err(S));
        // A little later: still not yet.
        assert_eq!(gcra(tat, now + S / 2, inc, window), Err(S / 2));
        // One interval later, exactly one more.
        let tat = gcra(tat, now + S, inc, window).expect("one more after 1 s");
        assert!(gcra(tat, now + S, inc, window).is_err());
        // Long idle: a full burst again.
        let mut t = tat;
        for _ in 0..3 {
            t = gcra(t, now + 100 * S, inc, window).expect("full again");
        }
        assert!(gcra(t, now + 100 * S, inc, window).is_err());
    }

    #[test]
    fn limiter_counts_burst_and_splits_over_nodes() {
        let l = Limiter::new(
            Rate {
                per_second: 5.0,
                burst: 10,
            },
            1000,
        );
        let now = S;
        let ok = (0..30).filter(|_| l.acquire(1, now, 1).is_ok()).count();
        assert_eq!(ok, 10);
        // Two servers: each takes half the burst, at half the rate.
        let ok = (0..30).filter(|_| l.acquire(2, now, 2).is_ok()).count();
        assert_eq!(ok, 5);
        assert_eq!(l.acquire(2, now, 2), Err(S / 5 * 2));
        let ok = (0..30).filter(|_| l.acquire(3, now, 3).is_ok()).count();
        assert_eq!(ok, 3, "10/3 rounds down");
    }

    #[test]
    fn peek_does_not_take_and_charge_always_takes() {
        let l = Limiter::new(Rate::per_minute(3), 1000);
        let now = S;
        for _ in 0..5 {
            assert!(l.peek(7, now, 1).is_ok());
        }
        for _ in 0..3 {
            assert!(l.peek(7, now, 1).is_ok());
            l.charge(7, now, 1);
        }
        // 20 s per failure: the next is allowed 20 s later.
        assert_eq!(l.peek(7, now, 1), Err(20 * S));
        assert_eq!(l.peek(7, now + 20 * S, 1), Ok(()));
        // Charging past the limit pushes it further out.
        l.charge(7, now, 1);
        assert_eq!(l.peek(7, now, 1), Err(40 * S));
    }

    #[test]
    fn retry_after_is_whole_seconds_at_least_one() {
        assert_eq!(retry_after_secs(0), 1);
        assert_eq!(retry_after_secs(1), 1);
        assert_eq!(retry_after_secs(S), 1);
        assert_eq!(retry_after_secs(S + 1), 2);
        assert_eq!(retry_after_secs(20 * S), 20);
    }

    #[test]
    fn memory_stays_bounded() {
        let l = Limiter::new(
            Rate {
                per_second: 1.0,
                burst: 1,
            },
            SHARDS * 4,
        );
        // Busy keys beyond the capacity: some are dropped, the size holds.
        for k in 0..10_000u64 {
            let _ = l.acquire(k, S, 1);
        }
        assert!(l.len() <= SHARDS * 4, "{}", l.len());
        // Idle keys go first and lose nothing: later, every bucket is full again anyway.
        for k in 10_000..20_000u64 {
            let _ = l.acquire(k, 100 * S, 1);
        }
        assert!(l.len() <= SHARDS * 4, "{}", l.len());
    }

    #[test]
    fn cidr_parsing_and_matching() {
        let c = Cidr::parse("10.0.0.0/8").expect("v4 block");
        assert!(c.contains("10.1.2.3".parse().expect("ip")));
        assert!(!c.contains("11.0.0.1".parse().expect("ip")));
        assert!(c.contains("::ffff:10.9.9.9".parse().expect("mapped ip")));
        let one = Cidr::parse("127.0.0.1").expect("bare address");
        assert_eq!(one.to_string(), "127.0.0.1/32");
        assert!(one.contains("127.0.0.1".parse().expect("ip")));
        assert!(!one.contains("127.0.0.2".parse().expect("ip")));
        let v6 = Cidr::parse("2001:db8::/32").expect("v6 block");
        assert!(v6.contains("2001:db8:1::1".parse().expect("ip")));
        assert!(!v6.contains("2001:db9::1".parse().expect("ip")));
        assert!(!v6.contains("10.0.0.1".parse().expect("ip")));
        assert!(
            Cidr::parse("0.0.0.0/0")
                .expect("all")
                .contains("8.8.8.8".parse().expect("ip"))
        );
        for bad in ["10.0.0.0/33", "::/129", "nope", "10.0.0.0/x", ""] {
            assert!(Cidr::parse(bad).is_err(), "{bad}");
        }
    }

    fn xff(values: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append("x-forwarded-for", v.parse().expect("header value"));
        }
        h
    }

    #[test]
    fn forwarded_for_is_read_only_from_trusted_proxies() {
        let ip = |s: &str| s.parse::<IpAddr>().expect("ip");
        let untrusting = RateLimits::disabled();
        assert_eq!(
            untrusting.client_addr(ip("127.0.0.1"), &xff(&["203.0.113.9"])),
            ip("127.0.0.1")
        );
        let limits = RateLimits::new(RateLimitConfig {
            trusted_proxies: vec![
                Cidr::parse("127.0.0.1/32").expect("cidr"),
                Cidr::parse("10.0.0.0/8").expect("cidr"),
            ],
            ..RateLimitConfig::default()
        });
        let peer = ip("127.0.0.1");
        assert_eq!(limits.client_addr(peer, &xff(&[])), peer);
        assert_eq!(
            limits.client_addr(peer, &xff(&["203.0.113.9"])),
            ip("203.0.113.9")
        );
        // The rightmost untrusted hop: a client cannot choose its address by prepending one.
        assert_eq!(
            limits.client_addr(peer, &xff(&["1.1.1.1, 203.0.113.9, 10.0.0.5"])),
            ip("203.0.113.9")
        );
        assert_eq!(
            limits.client_addr(peer, &xff(&["1.1.1.1", "203.0.113.9:4711"])),
            ip("203.0.113.9")
        );
        // Every hop trusted: the leftmost.
        assert_eq!(
            limits.client_addr(peer, &xff(&["10.0.0.7, 10.0.0.5"])),
            ip("10.0.0.7")
        );
        // Garbage ends the walk at the last trusted hop.
        assert_eq!(
            limits.client_addr(peer, &xff(&["203.0.113.9, bogus, 10.0.0.5"])),
            ip("10.0.0.5")
        );
        // An untrusted peer's header is ignored.
        assert_eq!(
            limits.client_addr(ip("192.0.2.1"), &xff(&["203.0.113.9"])),
            ip("192.0.2.1")
        );
    }

    #[test]
    fn ipv6_addresses_share_their_64() {
        let a = address_key("2001:db8:1:2::1".parse().expect("ip"));
        let b = address_key("2001:db8:1:2:ffff::9".parse().expect("ip"));
        let c = address_key("2001:db8:1:3::1".parse().expect("ip"));
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_eq!(
            address_key("192.0.2.1".parse().expect("ip")),
            vec![192, 0, 2, 1]
        );
    }

    #[test]
    fn limits_are_per_key_and_off_when_unset() {
        let limits = RateLimits::new(RateLimitConfig {
            per_installation: Some(Rate {
                per_second: 0.001,
                burst: 2,
            }),
            ..RateLimitConfig::default()
        });
        assert!(limits.check_installation("a").is_ok());
        assert!(limits.check_installation("a").is_ok());
        assert!(limits.check_installation("a").is_err());
        assert!(limits.check_installation("b").is_ok());
        let ip = "192.0.2.1".parse().expect("ip");
        for _ in 0..100 {
            limits.record_auth_failure(ip);
            assert!(limits.check_auth_failures(ip).is_ok());
            assert!(limits.check_oauth_callback(ip).is_ok());
        }
    }
}
