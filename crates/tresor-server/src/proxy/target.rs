//! The upstream URL of a proxied credential request, built so that nothing the app or the
//! credential's metadata sends can change where the request goes.
//!
//! The provider's `base_url` template is filled from the credential's metadata with values that
//! cannot carry URL structure, the app's `path` is appended below the base path (never beside it
//! or above it), its `query` is appended encoded, and the resulting host must be one of the
//! provider's `allowed_hosts`. Everything here is pure; where the host's address leads is judged
//! afterwards by [`super::address`].
//!
//! Invariant: a URL returned by [`build_target`] has the scheme, host and port of its base, and
//! the base path as a prefix of its path.

use percent_encoding::percent_decode;
use serde_json::{Map, Value};
use tresor_core::CoreError;
use url::{Host, Url};

/// Fills the `{metadata.NAME}` placeholders of a provider's `base_url` template from the
/// credential's metadata and parses the result.
///
/// A filled value must be a non-empty string of the characters valid in a DNS label or a path
/// segment (`[A-Za-z0-9._-]`), and not a dot segment, so that metadata can never add a host, a
/// port, userinfo, a path level, a query or a fragment. A missing name, a non-string value, a
/// malformed placeholder, a scheme other than `http`/`https`, userinfo or a fragment in the
/// result are all 400.
pub fn fill_base_url(template: &str, metadata: &Map<String, Value>) -> Result<Url, CoreError> {
    let mut filled = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(at) = rest.find(['{', '}']) {
        let (before, from_brace) = rest.split_at(at);
        filled.push_str(before);
        if from_brace.starts_with('}') {
            return Err(invalid("the base URL template has a '}' without its '{'"));
        }
        let Some(close) = from_brace.find('}') else {
            return Err(invalid("the base URL template has a '{' without its '}'"));
        };
        filled.push_str(placeholder_value(&from_brace[1..close], metadata)?);
        rest = &from_brace[close + 1..];
    }
    filled.push_str(rest);

    let url = Url::parse(&filled)
        .map_err(|e| invalid(format!("the filled base URL is not a valid URL: {e}")))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(invalid("the base URL's scheme must be http or https"));
    }
    // Userinfo would become an Authorization header in most clients, next to the injected
    // credential; a fragment is never sent and would only confuse the path join.
    if !url.username().is_empty() || url.password().is_some() {
        return Err(invalid("the base URL must not contain userinfo"));
    }
    if url.fragment().is_some() {
        return Err(invalid("the base URL must not contain a fragment"));
    }
    if url.host().is_none() || url.cannot_be_a_base() {
        return Err(invalid("the base URL has no host"));
    }
    Ok(url)
}

/// Appends the app's `path` below the base URL's path and its `query` after the base URL's own
/// query.
///
/// One leading `/` of `path` is removed and the rest joined to the base path with exactly one
/// `/`; a missing or empty path counts as `/` (so `https://h/v2` gives `https://h/v2/`). The path
/// is taken as already percent-encoded text: escapes are kept, characters outside the URL path
/// set are encoded. Refused with 400: an absolute URL or any `scheme:` prefix, a `//host` form,
/// `@` in the first segment, dot segments (also percent-encoded, doubly encoded or with
/// `;params`), backslashes (raw or encoded), control characters, `?`, `#` and malformed
/// percent escapes.
///
/// `query` values are strings or arrays of strings (repeated keys), appended form-encoded in the
/// given order.
pub fn build_target(
    base: &Url,
    path: Option<&str>,
    query: Option<&Map<String, Value>>,
) -> Result<Url, CoreError> {
    let raw = match path {
        None | Some("") => "/",
        Some(p) => p,
    };
    let relative = checked_relative_path(raw)?;

    let base_path = base.path();
    let mut joined = String::with_capacity(base_path.len() + 1 + relative.len());
    joined.push_str(base_path);
    if !base_path.ends_with('/') {
        joined.push('/');
    }
    joined.push_str(relative);

    let mut target = base.clone();
    target.set_path(&joined);
    target.set_fragment(None);
    if let Some(query) = query {
        append_query(&mut target, query)?;
    }

    // The checks above are meant to make this impossible; it is the invariant the rest of the
    // proxy relies on, so it is verified rather than assumed.
    if !stays_within_base(base, &target) {
        return Err(invalid(
            "the path would leave the provider's base URL; it is refused",
        ));
    }
    Ok(target)
}

/// Whether the target's host and port match one of the provider's `allowed_hosts` entries
/// (`host`, `host:port`, `[v6]`, `[v6]:port` or `*.suffix`).
///
/// Hosts are compared after the URL parser's normalization (lowercase, IDNA to ASCII, canonical
/// IP text) with one trailing dot removed. `*.suffix` matches names with at least one more whole
/// label (`*.example.com` matches `a.example.com` and `a.b.example.com`, not `example.com` nor
/// `badexample.com`) and never an IP address. An entry without a port allows only the scheme's
/// default port. Malformed entries match nothing, and an empty list allows nothing: the caller
/// passes [`default_allowed_hosts`] of the filled base URL when the provider lists none.
pub fn host_allowed(target: &Url, allowed_hosts: &[String]) -> bool {
    let Some(host) = target.host().map(NormalHost::from_url_host) else {
        return false;
    };
    allowed_hosts
        .iter()
        .filter_map(|entry| AllowedHost::parse(entry).ok())
        .any(|entry| entry.matches(&host, target))
}

/// The allowed-hosts list a provider without one gets: the host (and non-default port) of its
/// filled base URL.
pub fn default_allowed_hosts(base: &Url) -> Vec<String> {
    let Some(host) = base.host_str() else {
        return Vec::new();
    };
    match base.port() {
        Some(port) => vec![format!("{host}:{port}")],
        None => vec![host.to_owned()],
    }
}

/// Checks one `allowed_hosts` entry at configuration time: 400 when it is empty, holds `/`, `@`,
/// whitespace, a bad port, a `*` anywhere but a leading `*.`, or a host the URL parser refuses.
pub fn validate_allowed_host_entry(entry: &str) -> Result<(), CoreError> {
    AllowedHost::parse(entry).map(|_| ())
}

fn invalid(msg: impl Into<String>) -> CoreError {
    CoreError::InvalidRequest(msg.into())
}

/// The longest DNS name; no sensible label or path segment comes near it.
const MAX_PLACEHOLDER_VALUE: usize = 253;

/// The metadata value for the placeholder text between `{` and `}`.
fn placeholder_value<'m>(
    inner: &str,
    metadata: &'m Map<String, Value>,
) -> Result<&'m str, CoreError> {
    let Some(name) = inner.strip_prefix("metadata.") else {
        return Err(invalid(
            "the base URL template has a placeholder other than {metadata.NAME}",
        ));
    };
    let name_ok = !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
    if !name_ok {
        return Err(invalid(
            "the base URL template has a malformed {metadata.NAME} placeholder",
        ));
    }
    let value = match metadata.get(name) {
        None => {
            return Err(invalid(format!(
                "the credential's metadata has no \"{name}\", which the provider's base URL needs"
            )));
        }
        Some(Value::String(s)) => s.as_str(),
        Some(_) => {
            return Err(invalid(format!(
                "the credential's metadata \"{name}\" must be a string"
            )));
        }
    };
    // Only label/segment characters: no '/', '@', ':', '?', '#', '%', '\\', whitespace or
    // non-ASCII, so the value can only ever be part of one label or one path segment. An empty
    // or all-dots value would still create or remove a level ("//", "/../").
    let value_ok = !value.is_empty()
        && value.len() <= MAX_PLACEHOLDER_VALUE
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
        && !value.bytes().all(|b| b == b'.');
    if !value_ok {
        return Err(invalid(format!(
            "the credential's metadata \"{name}\" may hold only letters, digits, '.', '_' and '-'"
        )));
    }
    Ok(value)
}

/// Checks the app's raw path and returns it without its one leading `/`.
fn checked_relative_path(raw: &str) -> Result<&str, CoreError> {
    for c in raw.chars() {
        if c.is_control() {
            return Err(invalid("the path must not contain control characters"));
        }
        match c {
            '\\' => return Err(invalid("the path must not contain a backslash")),
            '?' => return Err(invalid("the path must not contain '?'; use \"query\"")),
            '#' => return Err(invalid("the path must not contain a fragment")),
            _ => {}
        }
    }
    if raw.starts_with("//") {
        return Err(invalid(
            "the path must not start with \"//\" (a host); it is relative to the base URL",
        ));
    }
    let relative = raw.strip_prefix('/').unwrap_or(raw);

    let first = relative.split('/').next().unwrap_or_default();
    if looks_like_scheme(first) {
        return Err(invalid(
            "the path must not be an absolute URL; it is relative to the base URL",
        ));
    }
    if first.contains('@') {
        return Err(invalid("the path must not start with userinfo ('@')"));
    }
    check_percent_escapes(relative)?;
    for segment in relative.split('/') {
        check_segment(segment.as_bytes())?;
    }
    Ok(relative)
}

/// `ALPHA *( ALPHA / DIGIT / "+" / "-" / "." ) ":"` at the start: what a URL parser would take
/// for a scheme.
fn looks_like_scheme(segment: &str) -> bool {
    let Some((scheme, _)) = segment.split_once(':') else {
        return false;
    };
    let mut bytes = scheme.bytes();
    bytes.next().is_some_and(|b| b.is_ascii_alphabetic())
        && bytes.all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.'))
}

/// Every `%` must start a two-hex-digit escape: a stray one would be decoded differently by
/// different servers.
fn check_percent_escapes(path: &str) -> Result<(), CoreError> {
    let bytes = path.as_bytes();
    for (i, _) in path.match_indices('%') {
        let hex = bytes.get(i + 1..i + 3).unwrap_or_default();
        if hex.len() != 2 || !hex.iter().all(u8::is_ascii_hexdigit) {
            return Err(invalid("the path has a malformed percent escape"));
        }
    }
    Ok(())
}

/// How many times a segment is decoded when looking for hidden dots and backslashes: servers
/// and the proxies in front of them decode once or twice; more layers than this are refused.
const DECODE_ROUNDS: usize = 3;

/// Refuses a segment that is, or decodes (once, twice, ...) into, a dot segment or anything with
/// a backslash. `;params` are ignored when judging dots because several servers drop them before
/// normalizing (`..;` works as `..` there), and decoded `/` splits pieces for servers that decode
/// `%2F` before normalizing.
fn check_segment(segment: &[u8]) -> Result<(), CoreError> {
    let mut current = segment.to_vec();
    for round in 0..=DECODE_ROUNDS {
        if current.contains(&b'\\') {
            return Err(invalid(
                "the path must not contain a backslash, even encoded",
            ));
        }
        for piece in current.split(|b| *b == b'/') {
            let bare = piece.split(|b| *b == b';').next().unwrap_or_default();
            if bare == b"." || bare == b".." {
                return Err(invalid(
                    "the path must not contain dot segments, even percent-encoded",
                ));
            }
        }
        let decoded: Vec<u8> = percent_decode(&current).collect();
        if decoded == current {
            return Ok(());
        }
        if round == DECODE_ROUNDS {
            return Err(invalid("the path is percent-encoded too many times"));
        }
        current = decoded;
    }
    Ok(())
}

/// The parameter's name is not repeated: it is the app's text (invariant 6).
const QUERY_VALUE_TYPE: &str = "each query parameter must be a string or an array of strings";

fn append_query(target: &mut Url, query: &Map<String, Value>) -> Result<(), CoreError> {
    let mut pairs: Vec<(&str, &str)> = Vec::new();
    for (key, value) in query {
        match value {
            Value::String(s) => pairs.push((key, s)),
            Value::Array(items) => {
                for item in items {
                    let Value::String(s) = item else {
                        return Err(invalid(QUERY_VALUE_TYPE));
                    };
                    pairs.push((key, s));
                }
            }
            _ => {
                return Err(invalid(QUERY_VALUE_TYPE));
            }
        }
    }
    // Only touch the query when there is something to add: the serializer would otherwise
    // leave a bare '?' behind.
    if !pairs.is_empty() {
        let mut serializer = target.query_pairs_mut();
        for (key, value) in pairs {
            serializer.append_pair(key, value);
        }
    }
    Ok(())
}

fn stays_within_base(base: &Url, target: &Url) -> bool {
    let base_path = base.path();
    let path_ok = if base_path.ends_with('/') {
        target.path().starts_with(base_path)
    } else {
        target
            .path()
            .strip_prefix(base_path)
            .is_some_and(|rest| rest.starts_with('/'))
    };
    target.scheme() == base.scheme()
        && target.host() == base.host()
        && target.port() == base.port()
        && target.username().is_empty()
        && target.password().is_none()
        && target.fragment().is_none()
        && path_ok
}

/// A host as compared against `allowed_hosts`.
#[derive(Debug, PartialEq, Eq)]
enum NormalHost {
    /// Lowercase ASCII, without a trailing dot.
    Domain(String),
    Ip(std::net::IpAddr),
}

impl NormalHost {
    fn from_url_host(host: Host<&str>) -> Self {
        match host {
            Host::Domain(d) => {
                let d = d.strip_suffix('.').unwrap_or(d);
                NormalHost::Domain(d.to_ascii_lowercase())
            }
            Host::Ipv4(ip) => NormalHost::Ip(ip.into()),
            Host::Ipv6(ip) => NormalHost::Ip(ip.into()),
        }
    }
}

/// One parsed `allowed_hosts` entry.
#[derive(Debug)]
struct AllowedHost {
    pattern: HostPattern,
    /// `None`: the scheme's default port only.
    port: Option<u16>,
}

#[derive(Debug)]
enum HostPattern {
    Exact(NormalHost),
    /// The suffix after `*.`, normalized like a domain.
    Subdomains(String),
}

impl AllowedHost {
    fn parse(entry: &str) -> Result<Self, CoreError> {
        let bad = |why: &str| invalid(format!("allowed_hosts entry is malformed: {why}"));
        if entry.is_empty() {
            return Err(bad("it is empty"));
        }
        if entry.chars().any(char::is_whitespace) {
            return Err(bad("it contains whitespace"));
        }
        if entry.contains(['/', '\\', '@', '?', '#']) {
            return Err(bad("it must be a host or host:port, not a URL"));
        }

        let (host, port) = if entry.starts_with('[') {
            let Some(end) = entry.find(']') else {
                return Err(bad("an IPv6 address misses its ']'"));
            };
            let (host, after) = entry.split_at(end + 1);
            match after {
                "" => (host, None),
                _ => match after.strip_prefix(':') {
                    Some(port) => (host, Some(port)),
                    None => return Err(bad("unexpected text after the IPv6 address")),
                },
            }
        } else {
            match entry.split_once(':') {
                Some((_, port)) if port.contains(':') => {
                    return Err(bad("an IPv6 address must be written in brackets"));
                }
                Some((host, port)) => (host, Some(port)),
                None => (entry, None),
            }
        };
        let port = match port {
            None => None,
            Some(p) => Some(parse_port(p).ok_or_else(|| bad("the port must be 1 to 65535"))?),
        };

        let pattern = if let Some(suffix) = host.strip_prefix("*.") {
            if suffix.contains('*') {
                return Err(bad("'*' is allowed only as a leading \"*.\""));
            }
            match Host::parse(suffix).map_err(|_| bad("the host is not valid"))? {
                Host::Domain(d) => {
                    let d = d.strip_suffix('.').unwrap_or(&d).to_ascii_lowercase();
                    if d.is_empty() {
                        return Err(bad("the wildcard has no suffix"));
                    }
                    HostPattern::Subdomains(d)
                }
                _ => return Err(bad("a wildcard suffix must be a domain name")),
            }
        } else {
            if host.contains('*') {
                return Err(bad("'*' is allowed only as a leading \"*.\""));
            }
            let parsed = Host::parse(host).map_err(|_| bad("the host is not valid"))?;
            let normal = match &parsed {
                Host::Domain(d) => NormalHost::from_url_host(Host::Domain(d.as_str())),
                Host::Ipv4(ip) => NormalHost::Ip((*ip).into()),
                Host::Ipv6(ip) => NormalHost::Ip((*ip).into()),
            };
            if normal == NormalHost::Domain(String::new()) {
                return Err(bad("the host is not valid"));
            }
            HostPattern::Exact(normal)
        };
        Ok(AllowedHost { pattern, port })
    }

    fn matches(&self, host: &NormalHost, target: &Url) -> bool {
        // The URL parser drops a port equal to the scheme's default, so `port()` is `None`
        // exactly when the default port is used.
        let port_ok = match self.port {
            None => target.port().is_none(),
            Some(p) => target.port_or_known_default() == Some(p),
        };
        let host_ok = match (&self.pattern, host) {
            (HostPattern::Exact(want), got) => want == got,
            (HostPattern::Subdomains(suffix), NormalHost::Domain(name)) => name
                .strip_suffix(suffix.as_str())
                .and_then(|prefix| prefix.strip_suffix('.'))
                .is_some_and(|label| !label.is_empty()),
            (HostPattern::Subdomains(_), NormalHost::Ip(_)) => false,
        };
        port_ok && host_ok
    }
}

fn parse_port(text: &str) -> Option<u16> {
    if text.is_empty() || text.len() > 5 || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse::<u16>().ok().filter(|p| *p != 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// Every case renders its outcome as text: the URL (or `true`/`false`, `ok`) on success,
    /// the error code on failure.
    fn check(label: &str, got: String, want: &str) {
        assert_eq!(got, want, "case {label:?}");
    }

    fn render<T: ToString>(r: Result<T, CoreError>) -> String {
        match r {
            Ok(v) => v.to_string(),
            Err(e) => e.code().as_str().to_owned(),
        }
    }

    fn object(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            other => panic!("test data must be an object, got {other}"),
        }
    }

    const BAD: &str = "invalid_request";

    #[test]
    fn fills_placeholders_from_metadata() {
        let meta = object(json!({
            "shop": "acme-42", "region": "eu.west_1", "n": 5, "list": ["a"], "nil": null,
            "slash": "evil.com/", "at": "a@b", "colon": "a:1", "pct": "%2e%2e", "space": "a b",
            "uni": "bücher", "dot": ".", "dots": "..", "empty": "", "q": "a?x", "hash": "a#b",
            "bs": "a\\b", "nl": "a\nb", "long": "a".repeat(254),
        }));
        let cases: &[(&str, &str)] = &[
            (
                "https://{metadata.shop}.myshopify.com/admin/",
                "https://acme-42.myshopify.com/admin/",
            ),
            (
                "https://api.example.com/{metadata.region}/v1",
                "https://api.example.com/eu.west_1/v1",
            ),
            (
                "https://api.example.com/v1?shop={metadata.shop}",
                "https://api.example.com/v1?shop=acme-42",
            ),
            (
                "https://{metadata.shop}.{metadata.region}.example.com",
                "https://acme-42.eu.west_1.example.com/",
            ),
            ("https://api.example.com/", "https://api.example.com/"),
            ("HTTP://API.Example.COM", "http://api.example.com/"),
            ("https://{metadata.slash}.example.com/", BAD),
            ("https://api.example.com/{metadata.slash}", BAD),
            ("https://{metadata.at}.example.com/", BAD),
            ("https://{metadata.colon}.example.com/", BAD),
            ("https://api.example.com/{metadata.pct}/x", BAD),
            ("https://{metadata.space}.example.com/", BAD),
            ("https://{metadata.uni}.example.com/", BAD),
            ("https://api.example.com/a/{metadata.dot}/x", BAD),
            ("https://api.example.com/a/{metadata.dots}/x", BAD),
            ("https://api.example.com/a/{metadata.empty}/x", BAD),
            ("https://api.example.com/{metadata.q}", BAD),
            ("https://api.example.com/{metadata.hash}", BAD),
            ("https://api.example.com/{metadata.bs}", BAD),
            ("https://api.example.com/{metadata.nl}", BAD),
            ("https://api.example.com/{metadata.long}", BAD),
            ("https://{metadata.missing}.example.com/", BAD),
            ("https://{metadata.n}.example.com/", BAD),
            ("https://{metadata.list}.example.com/", BAD),
            ("https://{metadata.nil}.example.com/", BAD),
            ("https://{shop}.example.com/", BAD),
            ("https://{metadata.}.example.com/", BAD),
            ("https://{metadata.shop.example.com/", BAD),
            ("https://metadata.shop}.example.com/", BAD),
            ("ftp://{metadata.shop}.example.com/", BAD),
            ("file:///etc/passwd", BAD),
            ("javascript:alert(1)", BAD),
            ("https://user:pw@api.example.com/", BAD),
            ("https://api.example.com/#frag", BAD),
            ("not a url", BAD),
        ];
        for (template, want) in cases {
            check(template, render(fill_base_url(template, &meta)), want);
        }
    }

    #[test]
    fn appends_paths_below_the_base() {
        let cases: &[(&str, Option<&str>, &str)] = &[
            (
                "https://api.example.com/v2/",
                Some("users"),
                "https://api.example.com/v2/users",
            ),
            (
                "https://api.example.com/v2/",
                Some("/users"),
                "https://api.example.com/v2/users",
            ),
            (
                "https://api.example.com/v2",
                Some("/users"),
                "https://api.example.com/v2/users",
            ),
            (
                "https://api.example.com/v2",
                Some("users"),
                "https://api.example.com/v2/users",
            ),
            (
                "https://api.example.com/v2",
                None,
                "https://api.example.com/v2/",
            ),
            (
                "https://api.example.com/v2/",
                Some(""),
                "https://api.example.com/v2/",
            ),
            (
                "https://api.example.com/v2/",
                Some("/"),
                "https://api.example.com/v2/",
            ),
            (
                "https://api.example.com",
                Some("/users/42"),
                "https://api.example.com/users/42",
            ),
            (
                "https://api.example.com:8443/v2/",
                Some("x"),
                "https://api.example.com:8443/v2/x",
            ),
            (
                "https://api.example.com/v2/?key=1",
                Some("x"),
                "https://api.example.com/v2/x?key=1",
            ),
            (
                "https://api.example.com/v2/",
                Some("a/b%2Fc"),
                "https://api.example.com/v2/a/b%2Fc",
            ),
            (
                "https://api.example.com/v2/",
                Some("a b/ü"),
                "https://api.example.com/v2/a%20b/%C3%BC",
            ),
            (
                "https://api.example.com/v2/",
                Some("users/@me"),
                "https://api.example.com/v2/users/@me",
            ),
            (
                "https://api.example.com/v1/",
                Some("projects/p:cancel"),
                "https://api.example.com/v1/projects/p:cancel",
            ),
            (
                "https://api.example.com/v2/",
                Some("file%2ejson"),
                "https://api.example.com/v2/file%2ejson",
            ),
            (
                "https://api.example.com/v2/",
                Some("a..b/.x/x."),
                "https://api.example.com/v2/a..b/.x/x.",
            ),
            (
                "https://api.example.com/v2/",
                Some("a//b/"),
                "https://api.example.com/v2/a//b/",
            ),
            (
                "https://api.example.com/v2/",
                Some("%00%ff"),
                "https://api.example.com/v2/%00%ff",
            ),
            // Dot segments, plain, encoded, doubly encoded, with ;params.
            ("https://api.example.com/v2/", Some("../x"), BAD),
            ("https://api.example.com/v2/", Some("./x"), BAD),
            ("https://api.example.com/v2/", Some("a/../b"), BAD),
            ("https://api.example.com/v2/", Some("a/.."), BAD),
            ("https://api.example.com/v2/", Some("/.."), BAD),
            ("https://api.example.com/v2/", Some(".."), BAD),
            ("https://api.example.com/v2/", Some("."), BAD),
            ("https://api.example.com/v2/", Some("%2e%2e/x"), BAD),
            ("https://api.example.com/v2/", Some("%2E%2E/x"), BAD),
            ("https://api.example.com/v2/", Some(".%2E/x"), BAD),
            ("https://api.example.com/v2/", Some("%2e./x"), BAD),
            ("https://api.example.com/v2/", Some("%2E"), BAD),
            ("https://api.example.com/v2/", Some("a/%2e%2e"), BAD),
            ("https://api.example.com/v2/", Some("a/%2e%2e%2fx"), BAD),
            ("https://api.example.com/v2/", Some("%252e%252e/x"), BAD),
            ("https://api.example.com/v2/", Some("a%2F..%2Fb"), BAD),
            (
                "https://api.example.com/v2/",
                Some("%2e%2e%2e%2e%2e%2e%2e"),
                "https://api.example.com/v2/%2e%2e%2e%2e%2e%2e%2e",
            ),
            ("https://api.example.com/v2/", Some("%25252e%25252e/x"), BAD),
            ("https://api.example.com/v2/", Some("..;/x"), BAD),
            (
                "https://api.example.com/v2/",
                Some("a/..;jsessionid=1/b"),
                BAD,
            ),
            // Backslashes.
            ("https://api.example.com/v2/", Some("\\evil"), BAD),
            ("https://api.example.com/v2/", Some("a\\..\\b"), BAD),
            ("https://api.example.com/v2/", Some("%5cevil"), BAD),
            ("https://api.example.com/v2/", Some("%5Cevil"), BAD),
            ("https://api.example.com/v2/", Some("%255cevil"), BAD),
            // Other hosts, schemes and userinfo.
            ("https://api.example.com/v2/", Some("//evil.com/x"), BAD),
            ("https://api.example.com/v2/", Some("///evil.com/x"), BAD),
            ("https://api.example.com/v2/", Some("http://evil.com"), BAD),
            ("https://api.example.com/v2/", Some("/http://evil.com"), BAD),
            ("https://api.example.com/v2/", Some("HTTPS://evil"), BAD),
            (
                "https://api.example.com/v2/",
                Some("javascript:alert(1)"),
                BAD,
            ),
            ("https://api.example.com/v2/", Some("mailto:a@b"), BAD),
            ("https://api.example.com/v2/", Some("@evil.com"), BAD),
            ("https://api.example.com/v2/", Some("/@evil.com/x"), BAD),
            ("https://api.example.com/v2/", Some("user:pw@evil.com"), BAD),
            // Query, fragment, control characters, malformed escapes.
            ("https://api.example.com/v2/", Some("a#frag"), BAD),
            ("https://api.example.com/v2/", Some("a?x=1"), BAD),
            ("https://api.example.com/v2/", Some("a\0b"), BAD),
            ("https://api.example.com/v2/", Some("a\r\nHost: evil"), BAD),
            ("https://api.example.com/v2/", Some("a\tb"), BAD),
            ("https://api.example.com/v2/", Some("a\u{7f}"), BAD),
            ("https://api.example.com/v2/", Some("a\u{85}"), BAD),
            ("https://api.example.com/v2/", Some("a%"), BAD),
            ("https://api.example.com/v2/", Some("a%2"), BAD),
            ("https://api.example.com/v2/", Some("a%zz"), BAD),
        ];
        for (base, path, want) in cases {
            let base = Url::parse(base).expect("test base URL");
            let label = format!("{base} + {path:?}");
            check(&label, render(build_target(&base, *path, None)), want);
        }
    }

    #[test]
    fn appends_query_parameters_encoded_in_order() {
        let cases: &[(&str, Value, &str)] = &[
            ("https://h.example/v1/", json!({}), "https://h.example/v1/x"),
            (
                "https://h.example/v1/",
                json!({"a": "1", "b": "2"}),
                "https://h.example/v1/x?a=1&b=2",
            ),
            (
                "https://h.example/v1/",
                json!({"z": "1", "a": "2"}),
                "https://h.example/v1/x?z=1&a=2",
            ),
            (
                "https://h.example/v1/",
                json!({"q": "a b&c=d"}),
                "https://h.example/v1/x?q=a+b%26c%3Dd",
            ),
            (
                "https://h.example/v1/",
                json!({"k y": "v#?"}),
                "https://h.example/v1/x?k+y=v%23%3F",
            ),
            (
                "https://h.example/v1/",
                json!({"u": "é€"}),
                "https://h.example/v1/x?u=%C3%A9%E2%82%AC",
            ),
            (
                "https://h.example/v1/",
                json!({"id": ["1", "2"], "x": ""}),
                "https://h.example/v1/x?id=1&id=2&x=",
            ),
            (
                "https://h.example/v1/",
                json!({"id": []}),
                "https://h.example/v1/x",
            ),
            (
                "https://h.example/v1/?key=k",
                json!({"a": "1"}),
                "https://h.example/v1/x?key=k&a=1",
            ),
            (
                "https://h.example/v1/?key=k",
                json!({}),
                "https://h.example/v1/x?key=k",
            ),
            ("https://h.example/v1/", json!({"n": 1}), BAD),
            ("https://h.example/v1/", json!({"b": true}), BAD),
            ("https://h.example/v1/", json!({"nil": null}), BAD),
            ("https://h.example/v1/", json!({"o": {"a": "b"}}), BAD),
            ("https://h.example/v1/", json!({"arr": ["1", 2]}), BAD),
            ("https://h.example/v1/", json!({"arr": [["1"]]}), BAD),
        ];
        for (base, query, want) in cases {
            let base = Url::parse(base).expect("test base URL");
            let query = object(query.clone());
            let label = format!("{base} + {query:?}");
            check(
                &label,
                render(build_target(&base, Some("x"), Some(&query))),
                want,
            );
        }
    }

    #[test]
    fn allows_only_listed_hosts_and_ports() {
        let cases: &[(&str, &[&str], bool)] = &[
            ("https://api.example.com/x", &["api.example.com"], true),
            ("https://API.Example.COM/x", &["api.example.com"], true),
            ("https://api.example.com/x", &["API.EXAMPLE.COM"], true),
            ("https://api.example.com./x", &["api.example.com"], true),
            ("https://api.example.com/x", &["api.example.com."], true),
            ("https://api.example.com/x", &["other.example.com"], false),
            ("https://api.example.com/x", &[], false),
            (
                "https://api.example.com.evil.com/x",
                &["api.example.com"],
                false,
            ),
            ("https://evilapi.example.com/x", &["api.example.com"], false),
            // Ports: no port in the entry means the scheme's default only.
            ("https://api.example.com:443/x", &["api.example.com"], true),
            ("http://api.example.com/x", &["api.example.com"], true),
            (
                "https://api.example.com:8443/x",
                &["api.example.com"],
                false,
            ),
            ("https://api.example.com:80/x", &["api.example.com"], false),
            (
                "https://api.example.com:8443/x",
                &["api.example.com:8443"],
                true,
            ),
            (
                "https://api.example.com/x",
                &["api.example.com:8443"],
                false,
            ),
            ("https://api.example.com/x", &["api.example.com:443"], true),
            ("http://api.example.com/x", &["api.example.com:443"], false),
            (
                "https://api.example.com:8443/x",
                &["api.example.com:9443", "api.example.com:8443"],
                true,
            ),
            // Wildcards: whole labels, at least one of them, never the bare suffix or an IP.
            ("https://a.example.com/x", &["*.example.com"], true),
            ("https://a.b.example.com/x", &["*.example.com"], true),
            ("https://A.Example.com./x", &["*.EXAMPLE.com"], true),
            ("https://example.com/x", &["*.example.com"], false),
            ("https://badexample.com/x", &["*.example.com"], false),
            (
                "https://a.example.com.evil.com/x",
                &["*.example.com"],
                false,
            ),
            ("https://a.example.com:8443/x", &["*.example.com"], false),
            (
                "https://a.example.com:8443/x",
                &["*.example.com:8443"],
                true,
            ),
            ("https://10.0.0.1/x", &["*.0.0.1"], false),
            // IP addresses, compared in canonical form.
            ("https://10.0.0.1/x", &["10.0.0.1"], true),
            ("https://0x0a.0.0.1/x", &["10.0.0.1"], true),
            ("https://10.0.0.1/x", &["10.1"], true),
            ("https://10.0.0.2/x", &["10.0.0.1"], false),
            ("https://[::1]:8080/x", &["[::1]:8080"], true),
            ("https://[0:0::1]/x", &["[::1]"], true),
            ("https://[::1]/x", &["::1"], false),
            // IDN: the Unicode and the punycode forms are the same host.
            ("https://bücher.example/x", &["bücher.example"], true),
            ("https://bücher.example/x", &["xn--bcher-kva.example"], true),
            ("https://xn--bcher-kva.example/x", &["BÜCHER.example"], true),
            ("https://a.bücher.example/x", &["*.bücher.example"], true),
            ("https://bucher.example/x", &["bücher.example"], false),
            // Malformed entries match nothing, and do not stop the others from matching.
            (
                "https://api.example.com/x",
                &["https://api.example.com"],
                false,
            ),
            ("https://api.example.com/x", &["api.*.com"], false),
            ("https://api.example.com/x", &["*", "api.example.com"], true),
        ];
        for (target, entries, want) in cases {
            let url = Url::parse(target).expect("test target URL");
            let entries: Vec<String> = entries.iter().map(|e| (*e).to_owned()).collect();
            let label = format!("{target} in {entries:?}");
            check(
                &label,
                host_allowed(&url, &entries).to_string(),
                &want.to_string(),
            );
        }
    }

    #[test]
    fn defaults_to_the_base_host_and_port() {
        let cases: &[(&str, &str, &str)] = &[
            (
                "https://api.example.com/v2/",
                "https://api.example.com/v2/x",
                "true",
            ),
            (
                "https://api.example.com/v2/",
                "https://api.example.com:8443/v2/x",
                "false",
            ),
            (
                "https://api.example.com/v2/",
                "https://a.api.example.com/v2/x",
                "false",
            ),
            (
                "https://api.example.com:8443/",
                "https://api.example.com:8443/x",
                "true",
            ),
            (
                "https://api.example.com:8443/",
                "https://api.example.com/x",
                "false",
            ),
            ("http://[::1]:8080/", "http://[::1]:8080/x", "true"),
        ];
        for (base, target, want) in cases {
            let defaults = default_allowed_hosts(&Url::parse(base).expect("test base URL"));
            let target = Url::parse(target).expect("test target URL");
            let label = format!("{target} in {defaults:?}");
            check(&label, host_allowed(&target, &defaults).to_string(), want);
        }
    }

    #[test]
    fn validates_allowed_host_entries() {
        let cases: &[(&str, &str)] = &[
            ("api.example.com", "ok"),
            ("api.example.com:8443", "ok"),
            ("*.example.com", "ok"),
            ("*.example.com:443", "ok"),
            ("10.0.0.1", "ok"),
            ("[::1]", "ok"),
            ("[2001:db8::1]:8443", "ok"),
            ("bücher.example", "ok"),
            ("api.example.com.", "ok"),
            ("", BAD),
            (" api.example.com", BAD),
            ("api example.com", BAD),
            ("api.example.com/v1", BAD),
            ("https://api.example.com", BAD),
            ("user@api.example.com", BAD),
            ("api.example.com\\x", BAD),
            ("api.example.com:", BAD),
            ("api.example.com:0", BAD),
            ("api.example.com:65536", BAD),
            ("api.example.com:+80", BAD),
            ("api.example.com:8o", BAD),
            ("api.example.com:80:80", BAD),
            ("*", BAD),
            ("*.", BAD),
            ("*example.com", BAD),
            ("api.*.com", BAD),
            ("*.*.example.com", BAD),
            ("a*.example.com", BAD),
            ("*.10.0.0.1", BAD),
            ("::1", BAD),
            ("[::1", BAD),
            ("[::1]x", BAD),
            ("[::1]:", BAD),
            ("[nonsense]", BAD),
            ("exa<mple.com", BAD),
            ("1.2.3.4.5", BAD),
        ];
        for (entry, want) in cases {
            let got = render(validate_allowed_host_entry(entry).map(|()| "ok"));
            check(entry, got, want);
        }
    }
}
