//! The vocabulary of the domain: stores, record keys, ids, scopes, principals, limits and
//! timestamps, each validated exactly as the contract's "Conventions" say.

use std::fmt;

use crate::error::{CoreError, Result};

/// A namespace id: the storage partition of one installation incarnation, one app's shared
/// store, or one account. Random 62-bit numbers, never reused, so a reinstall never sees the
/// data (or the key) of an earlier incarnation.
pub type Ns = i64;

/// Milliseconds since the Unix epoch (UTC).
pub type Millis = i64;

/// The record stores of the contract.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum StoreKind {
    Secrets,
    Settings,
    Kv,
    Shared,
}

impl StoreKind {
    pub const ALL: [StoreKind; 4] = [
        StoreKind::Secrets,
        StoreKind::Settings,
        StoreKind::Kv,
        StoreKind::Shared,
    ];

    pub fn parse(s: &str) -> Option<StoreKind> {
        match s {
            "secrets" => Some(StoreKind::Secrets),
            "settings" => Some(StoreKind::Settings),
            "kv" => Some(StoreKind::Kv),
            "shared" => Some(StoreKind::Shared),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            StoreKind::Secrets => "secrets",
            StoreKind::Settings => "settings",
            StoreKind::Kv => "kv",
            StoreKind::Shared => "shared",
        }
    }

    /// The stable number a backend stores for this store.
    pub fn code(self) -> i64 {
        match self {
            StoreKind::Secrets => 1,
            StoreKind::Settings => 2,
            StoreKind::Kv => 3,
            StoreKind::Shared => 4,
        }
    }

    pub fn from_code(code: i64) -> Option<StoreKind> {
        StoreKind::ALL.into_iter().find(|s| s.code() == code)
    }
}

impl fmt::Display for StoreKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A validated record key: 1 to `max_key_bytes` bytes of UTF-8, no control characters, not `.`
/// or `..`. Keys sort by their UTF-8 bytes.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RecordKey(String);

/// The longest key the contract allows, in bytes.
pub const MAX_KEY_BYTES: usize = 500;

impl RecordKey {
    /// Validates a key already decoded from its URL segment.
    pub fn parse(raw: &str) -> Result<RecordKey> {
        if raw.is_empty() {
            return Err(CoreError::invalid("the key is empty"));
        }
        if raw.len() > MAX_KEY_BYTES {
            return Err(CoreError::PayloadTooLarge(format!(
                "the key is {} bytes; at most {MAX_KEY_BYTES} are allowed",
                raw.len()
            )));
        }
        if raw == "." || raw == ".." {
            return Err(CoreError::invalid("the key may not be `.` or `..`"));
        }
        if raw.chars().any(|c| c.is_ascii_control()) {
            return Err(CoreError::invalid(
                "the key contains a control character (U+0000-U+001F or U+007F)",
            ));
        }
        Ok(RecordKey(raw.to_owned()))
    }

    /// Rebuilds a key read back from storage, where it was validated on the way in.
    pub fn from_stored(bytes: Vec<u8>) -> Result<RecordKey> {
        String::from_utf8(bytes)
            .map(RecordKey)
            .map_err(|_| CoreError::Integrity)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn as_bytes(&self) -> &[u8] {
        self.0.as_bytes()
    }
}

impl fmt::Debug for RecordKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RecordKey({:?})", self.0)
    }
}

/// Validates an id of an app, account, installation or provider: `[A-Za-z0-9._:-]{1,128}`.
pub fn validate_id(kind: &str, id: &str) -> Result<()> {
    let ok = !id.is_empty()
        && id.len() <= 128
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(CoreError::invalid(format!(
            "the {kind} id must match [A-Za-z0-9._:-]{{1,128}}"
        )))
    }
}

/// What a token may do. Parsed from manifest strings like `secrets:read`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Scope {
    Read(StoreKind),
    Write(StoreKind),
    CredentialsRead,
    CredentialsStore,
    CredentialsUse,
}

/// A scope that is not the contract's. The text is not repeated (invariant 6: whatever was
/// sent may be a secret in the wrong place); the accepted forms are listed instead.
fn unknown_scope() -> CoreError {
    CoreError::invalid(
        "unknown scope (accepted: `storage:app`, `<store>:read` and `<store>:write` for \
         secrets, settings, kv and shared, `credentials:read`, `credentials:store`, \
         `credentials:use`)",
    )
}

/// Forge's alias: read and write on `secrets`, `settings` and `kv`.
pub const STORAGE_APP_ALIAS: &str = "storage:app";

impl Scope {
    /// Parses one scope string; `storage:app` expands to six scopes.
    pub fn parse_expanding(s: &str) -> Result<Vec<Scope>> {
        if s == STORAGE_APP_ALIAS {
            return Ok([StoreKind::Secrets, StoreKind::Settings, StoreKind::Kv]
                .into_iter()
                .flat_map(|st| [Scope::Read(st), Scope::Write(st)])
                .collect());
        }
        let scope = match s {
            "credentials:read" => Scope::CredentialsRead,
            "credentials:store" => Scope::CredentialsStore,
            "credentials:use" => Scope::CredentialsUse,
            _ => {
                let (store, access) = s.split_once(':').ok_or_else(unknown_scope)?;
                let store = StoreKind::parse(store).ok_or_else(unknown_scope)?;
                match access {
                    "read" => Scope::Read(store),
                    "write" => Scope::Write(store),
                    _ => return Err(unknown_scope()),
                }
            }
        };
        Ok(vec![scope])
    }

    /// Parses and validates a list of scope strings, keeping them as written.
    pub fn validate_list(scopes: &[String]) -> Result<ScopeSet> {
        let mut set = ScopeSet::default();
        for s in scopes {
            for scope in Scope::parse_expanding(s)? {
                set.insert(scope);
            }
        }
        Ok(set)
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Scope::Read(s) => write!(f, "{s}:read"),
            Scope::Write(s) => write!(f, "{s}:write"),
            Scope::CredentialsRead => f.write_str("credentials:read"),
            Scope::CredentialsStore => f.write_str("credentials:store"),
            Scope::CredentialsUse => f.write_str("credentials:use"),
        }
    }
}

/// A set of expanded scopes, small enough to be a sorted vector.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ScopeSet(Vec<Scope>);

impl ScopeSet {
    pub fn insert(&mut self, scope: Scope) {
        if let Err(pos) = self.0.binary_search(&scope) {
            self.0.insert(pos, scope);
        }
    }

    pub fn contains(&self, scope: Scope) -> bool {
        self.0.binary_search(&scope).is_ok()
    }

    pub fn is_subset_of(&self, other: &ScopeSet) -> bool {
        self.0.iter().all(|s| other.contains(*s))
    }

    pub fn intersection(&self, other: &ScopeSet) -> ScopeSet {
        ScopeSet(
            self.0
                .iter()
                .copied()
                .filter(|s| other.contains(*s))
                .collect(),
        )
    }

    pub fn iter(&self) -> impl Iterator<Item = Scope> + '_ {
        self.0.iter().copied()
    }
}

/// Who is calling, decided by the token alone.
#[derive(Debug, Clone)]
pub enum Principal {
    Admin { token_id: Option<String> },
    Installation(InstallationPrincipal),
}

/// An installation token's view: its installation incarnation and effective scopes.
#[derive(Debug, Clone)]
pub struct InstallationPrincipal {
    pub token_id: String,
    pub installation_id: String,
    pub app_id: String,
    pub account_id: String,
    /// The installation incarnation the token belongs to.
    pub ns: Ns,
    /// The app's shared-store namespace.
    pub app_ns: Ns,
    /// The account's namespace (account credentials).
    pub account_ns: Ns,
    pub scopes: ScopeSet,
}

impl InstallationPrincipal {
    /// 403 naming the scope when it is missing.
    pub fn require(&self, scope: Scope) -> Result<()> {
        if self.scopes.contains(scope) {
            Ok(())
        } else {
            Err(CoreError::Forbidden(format!(
                "this token lacks the scope `{scope}`"
            )))
        }
    }

    pub fn has(&self, scope: Scope) -> bool {
        self.scopes.contains(scope)
    }
}

impl Principal {
    pub fn token_id(&self) -> Option<&str> {
        match self {
            Principal::Admin { token_id } => token_id.as_deref(),
            Principal::Installation(p) => Some(&p.token_id),
        }
    }

    pub fn installation(&self) -> Result<&InstallationPrincipal> {
        match self {
            Principal::Installation(p) => Ok(p),
            Principal::Admin { .. } => Err(CoreError::Forbidden(
                "an admin token cannot use tenant routes; use an installation token".into(),
            )),
        }
    }

    pub fn require_admin(&self) -> Result<()> {
        match self {
            Principal::Admin { .. } => Ok(()),
            Principal::Installation(_) => Err(CoreError::Forbidden(
                "an installation token cannot use admin routes".into(),
            )),
        }
    }
}

/// Server-configurable limits, with the contract's defaults.
#[derive(Debug, Clone)]
pub struct Limits {
    pub max_key_bytes: usize,
    pub max_secret_value_bytes: usize,
    pub max_kv_value_bytes: usize,
    pub max_description_chars: usize,
    pub max_depth: usize,
    pub max_batch_ops: usize,
    pub max_field_ops: usize,
    pub max_list_limit: usize,
    pub default_list_limit: usize,
    pub max_ttl_seconds: i64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_key_bytes: MAX_KEY_BYTES,
            max_secret_value_bytes: 128 * 1024,
            max_kv_value_bytes: 400 * 1024,
            max_description_chars: 1024,
            max_depth: 64,
            max_batch_ops: 100,
            max_field_ops: 100,
            max_list_limit: 1000,
            default_list_limit: 100,
            max_ttl_seconds: 3_153_600_000,
        }
    }
}

impl Limits {
    /// The largest compact-JSON value a store accepts.
    pub fn max_value_bytes(&self, store: StoreKind) -> usize {
        match store {
            StoreKind::Secrets | StoreKind::Settings => self.max_secret_value_bytes,
            StoreKind::Kv | StoreKind::Shared => self.max_kv_value_bytes,
        }
    }

    /// The largest request body: the largest value limit plus 64 KiB.
    pub fn max_body_bytes(&self) -> usize {
        self.max_secret_value_bytes.max(self.max_kv_value_bytes) + 64 * 1024
    }

    /// A batch body may be up to 4 MiB.
    pub fn max_batch_body_bytes(&self) -> usize {
        4 * 1024 * 1024
    }

    pub fn check_ttl(&self, ttl: i64) -> Result<i64> {
        if (1..=self.max_ttl_seconds).contains(&ttl) {
            Ok(ttl)
        } else {
            Err(CoreError::invalid(format!(
                "ttl_seconds must be an integer from 1 to {}",
                self.max_ttl_seconds
            )))
        }
    }

    pub fn check_description(&self, d: &str) -> Result<()> {
        let n = d.chars().count();
        if n > self.max_description_chars {
            return Err(CoreError::PayloadTooLarge(format!(
                "the description has {n} characters; at most {} are allowed",
                self.max_description_chars
            )));
        }
        Ok(())
    }

    /// Checks a value against the store's size and depth limits and the no-top-level-null rule.
    pub fn check_value(&self, store: StoreKind, value: &serde_json::Value) -> Result<()> {
        if value.is_null() {
            return Err(CoreError::invalid("a value may not be null"));
        }
        let depth = crate::json::depth(value);
        if depth > self.max_depth {
            return Err(CoreError::invalid(format!(
                "the value is nested {depth} containers deep; at most {} are allowed",
                self.max_depth
            )));
        }
        let len = crate::json::compact_len(value);
        let max = self.max_value_bytes(store);
        if len > max {
            return Err(CoreError::PayloadTooLarge(format!(
                "the value is {len} bytes as compact JSON; the {store} store allows at most {max}"
            )));
        }
        Ok(())
    }
}

/// The current time in milliseconds.
pub fn now_millis() -> Millis {
    let now = time::OffsetDateTime::now_utc();
    (now.unix_timestamp_nanos() / 1_000_000) as Millis
}

/// RFC 3339 UTC with milliseconds: `2026-11-22T05:03:14.123Z`.
pub fn format_millis(ms: Millis) -> String {
    let secs = ms.div_euclid(1000);
    let milli = ms.rem_euclid(1000);
    match time::OffsetDateTime::from_unix_timestamp(secs) {
        Ok(t) => format!(
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
            t.year(),
            u8::from(t.month()),
            t.day(),
            t.hour(),
            t.minute(),
            t.second(),
            milli
        ),
        Err(_) => "1970-01-01T00:00:00.000Z".to_owned(),
    }
}

/// Parses an RFC 3339 timestamp (any offset) into milliseconds.
pub fn parse_timestamp(s: &str) -> Result<Millis> {
    let t = time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
        .map_err(|_| CoreError::invalid(format!("`{s}` is not an RFC 3339 timestamp")))?;
    Ok((t.unix_timestamp_nanos() / 1_000_000) as Millis)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_validated_at_the_exact_boundaries() {
        let check = |raw: &str, want: Option<crate::ErrorCode>| {
            let got = RecordKey::parse(raw).err().map(|e| e.code());
            assert_eq!(got, want, "key of {} bytes", raw.len());
        };
        check("a", None);
        check(&"k".repeat(500), None);
        check(&"k".repeat(501), Some(crate::ErrorCode::PayloadTooLarge));
        check(&"é".repeat(250), None);
        check(
            &format!("{}x", "é".repeat(250)),
            Some(crate::ErrorCode::PayloadTooLarge),
        );
        check("", Some(crate::ErrorCode::InvalidRequest));
        check(".", Some(crate::ErrorCode::InvalidRequest));
        check("..", Some(crate::ErrorCode::InvalidRequest));
        check("...", None);
        check("a/b%c", None);
        check("a\u{0}b", Some(crate::ErrorCode::InvalidRequest));
        check("a\u{1f}b", Some(crate::ErrorCode::InvalidRequest));
        check("a\u{7f}b", Some(crate::ErrorCode::InvalidRequest));
        check("a\u{80}b", None);
    }

    #[test]
    fn ids_follow_the_contract_pattern() {
        assert!(validate_id("app", "my-app.v2:prod_1").is_ok());
        assert!(validate_id("app", &"a".repeat(128)).is_ok());
        assert!(validate_id("app", &"a".repeat(129)).is_err());
        assert!(validate_id("app", "").is_err());
        assert!(validate_id("app", "a/b").is_err());
        assert!(validate_id("app", "a b").is_err());
    }

    #[test]
    fn storage_app_alias_expands_to_read_and_write_on_three_stores() {
        let set = Scope::validate_list(&["storage:app".into()]).unwrap();
        for st in [StoreKind::Secrets, StoreKind::Settings, StoreKind::Kv] {
            assert!(set.contains(Scope::Read(st)) && set.contains(Scope::Write(st)));
        }
        assert!(!set.contains(Scope::Read(StoreKind::Shared)));
        assert!(Scope::validate_list(&["secrets:admin".into()]).is_err());
        assert!(Scope::validate_list(&["bogus".into()]).is_err());
    }

    #[test]
    fn ttl_bounds() {
        let l = Limits::default();
        assert!(l.check_ttl(0).is_err());
        assert!(l.check_ttl(1).is_ok());
        assert!(l.check_ttl(3_153_600_000).is_ok());
        assert!(l.check_ttl(3_153_600_001).is_err());
    }

    #[test]
    fn timestamps_have_milliseconds_and_a_z() {
        assert_eq!(format_millis(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(format_millis(1_795_323_794_123), "2026-11-22T05:03:14.123Z");
        assert_eq!(
            parse_timestamp("2026-11-22T05:03:14.123Z").unwrap(),
            1_795_323_794_123
        );
    }
}
