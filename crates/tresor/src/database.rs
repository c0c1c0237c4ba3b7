//! The PostgreSQL connection flags shared by `tresor serve` and `tresor migrate`, the database
//! URL type that never shows its password (in `Debug`, `Display`, logs or errors), and the
//! connection itself.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::anyhow;
use tresor_backend_postgres::{PostgresBackend, PostgresOptions};
use tresor_core::CoreError;
use tresor_core::backend::Quota;

/// The flags that select and reach a PostgreSQL database.
#[derive(Debug, clap::Args)]
pub struct DatabaseArgs {
    /// PostgreSQL to use instead of the embedded store: a URL (postgres://USER:PASSWORD@HOST/DB)
    /// or a key=value connection string. `sslmode=require` (or `prefer`) in it turns on TLS.
    /// The password is never shown in a log or an error.
    #[arg(long, env = "TRESOR_DATABASE_URL", hide_env_values = true, value_parser = DatabaseUrl::parse)]
    pub database_url: Option<DatabaseUrl>,
    /// Connections to PostgreSQL this process keeps at most.
    #[arg(long, env = "TRESOR_DATABASE_MAX_CONNECTIONS", default_value_t = 16, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub database_max_connections: u32,
    /// CA certificates (PEM) that the database's TLS certificate is checked against, instead of
    /// the system's roots; used when the URL asks for TLS (`sslmode=require`).
    #[arg(long, env = "TRESOR_DATABASE_CA_FILE")]
    pub database_ca_file: Option<PathBuf>,
}

/// How long connecting to the database may take before the command gives up.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Connects a pool to the database (no migration): the first step of `serve` and `migrate`.
pub async fn connect(url: &DatabaseUrl, args: &DatabaseArgs) -> anyhow::Result<PostgresBackend> {
    connect_with_quota(url, args, Quota::default()).await
}

/// [`connect`] for `serve`, with the operator's storage quotas.
pub async fn connect_with_quota(
    url: &DatabaseUrl,
    args: &DatabaseArgs,
    quota: Quota,
) -> anyhow::Result<PostgresBackend> {
    if let Some(ca) = &args.database_ca_file {
        if !ca.is_file() {
            return Err(anyhow!("--database-ca-file {}: no such file", ca.display()));
        }
        if !url.asks_for_tls() {
            tracing::warn!(
                database = %url,
                "--database-ca-file is used only when the database URL asks for TLS (sslmode=require)"
            );
        }
    }
    let options = PostgresOptions {
        max_connections: usize::try_from(args.database_max_connections).unwrap_or(16),
        ca_file: args.database_ca_file.clone(),
        connect_timeout: CONNECT_TIMEOUT,
        quota,
        ..PostgresOptions::default()
    };
    PostgresBackend::connect(url.expose(), options)
        .await
        .map_err(|e| url.error(&format!("connecting to {url}"), &e))
}

/// A database URL or connection string. `Debug` and `Display` show it with every password
/// replaced by `***`; only [`DatabaseUrl::expose`] gives the real one, to the driver.
#[derive(Clone)]
pub struct DatabaseUrl {
    raw: String,
    redacted: String,
    /// The password as written and percent-decoded, to scrub from driver messages.
    secrets: Vec<String>,
}

impl DatabaseUrl {
    /// The clap value parser: any non-empty string (the driver judges the syntax).
    pub fn parse(raw: &str) -> Result<DatabaseUrl, String> {
        if raw.trim().is_empty() {
            return Err("the database URL is empty".into());
        }
        let mut secrets = Vec::new();
        let redacted = redact(raw, &mut secrets);
        let decoded: Vec<String> = secrets
            .iter()
            .filter_map(|s| percent_decode(s))
            .filter(|d| !secrets.contains(d))
            .collect();
        secrets.extend(decoded);
        secrets.retain(|s| !s.is_empty());
        // Longest first, so a password that contains another is scrubbed whole.
        secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
        Ok(DatabaseUrl {
            raw: raw.to_owned(),
            redacted,
            secrets,
        })
    }

    /// The URL as given, for the driver only.
    pub fn expose(&self) -> &str {
        &self.raw
    }

    /// Replaces every occurrence of the password in `text` (a driver's message) with `***`.
    pub fn scrub(&self, text: &str) -> String {
        let mut out = text.to_owned();
        for s in &self.secrets {
            out = out.replace(s.as_str(), "***");
        }
        out
    }

    /// An operator-facing error: `what`, then the backend's message with the password scrubbed.
    pub fn error(&self, what: &str, e: &CoreError) -> anyhow::Error {
        anyhow!("{what}: {}", self.scrub(&describe(e)))
    }

    /// Does the connection string ask for TLS (`sslmode` other than `disable`)?
    fn asks_for_tls(&self) -> bool {
        let lower = self.raw.to_ascii_lowercase();
        lower.contains("sslmode=") && !lower.contains("sslmode=disable")
    }
}

impl std::fmt::Display for DatabaseUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.redacted)
    }
}

impl std::fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "DatabaseUrl({:?})", self.redacted)
    }
}

/// A core error for the operator's console: the detail of an internal error too (the server
/// log would have it), since no client sees this.
pub fn describe(e: &CoreError) -> String {
    match e {
        CoreError::Internal(detail) => detail.clone(),
        other => other.to_string(),
    }
}

/// The connection string with every password replaced by `***`; the passwords found are
/// pushed to `secrets`. Understands URLs (`scheme://user:password@host/db?password=…`) and
/// libpq key=value strings (`host=… password=… `, quoted values included).
fn redact(raw: &str, secrets: &mut Vec<String>) -> String {
    match raw.find("://") {
        Some(i) => redact_url(raw, i + 3, secrets),
        None => redact_key_values(raw, secrets),
    }
}

fn redact_url(raw: &str, authority_start: usize, secrets: &mut Vec<String>) -> String {
    let (head, rest) = raw.split_at(authority_start);
    // The user info ends at the last `@` before the path; a password with an unescaped `/`,
    // `?` or `#` pushes it further, so fall back to the last `@` anywhere (over-redacting a
    // host is safe, showing a password is not).
    let path_start = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let at = rest[..path_start].rfind('@').or_else(|| rest.rfind('@'));
    let mut out = String::from(head);
    let after_userinfo = match at {
        Some(at) => {
            let userinfo = &rest[..at];
            match userinfo.split_once(':') {
                Some((user, password)) => {
                    secrets.push(password.to_owned());
                    out.push_str(user);
                    out.push_str(":***");
                }
                None => out.push_str(userinfo),
            }
            out.push('@');
            &rest[at + 1..]
        }
        None => rest,
    };
    match after_userinfo.split_once('?') {
        Some((host_path, query)) => {
            out.push_str(host_path);
            out.push('?');
            let params: Vec<String> = query
                .split('&')
                .map(|param| match param.split_once('=') {
                    Some((name, value)) if name.eq_ignore_ascii_case("password") => {
                        secrets.push(value.to_owned());
                        format!("{name}=***")
                    }
                    _ => param.to_owned(),
                })
                .collect();
            out.push_str(&params.join("&"));
        }
        None => out.push_str(after_userinfo),
    }
    out
}

/// libpq's `key = value` form: values are bare words or single-quoted with `\` escapes.
fn redact_key_values(raw: &str, secrets: &mut Vec<String>) -> String {
    let bytes = raw.as_bytes();
    let mut out = String::with_capacity(raw.len());
    let mut i = 0;
    while i < bytes.len() {
        // Copy whitespace, then read a key up to `=`.
        let start = i;
        while i < bytes.len() && bytes[i].is_ascii_whitespace() {
            i += 1;
        }
        let key_start = i;
        while i < bytes.len() && bytes[i] != b'=' && !bytes[i].is_ascii_whitespace() {
            i += 1;
        }
        let key = &raw[key_start..i];
        while i < bytes.len() && bytes[i].is_ascii_whitespace() {
            i += 1;
        }
        if i >= bytes.len() || bytes[i] != b'=' {
            // Not a key=value pair: copy what was read and go on.
            out.push_str(&raw[start..i]);
            continue;
        }
        i += 1; // the `=`
        while i < bytes.len() && bytes[i].is_ascii_whitespace() {
            i += 1;
        }
        out.push_str(&raw[start..i]);
        let value_start = i;
        let mut value = String::new();
        if i < bytes.len() && bytes[i] == b'\'' {
            i += 1;
            while i < bytes.len() && bytes[i] != b'\'' {
                if bytes[i] == b'\\' && i + 1 < bytes.len() {
                    i += 1;
                }
                let ch_len = raw[i..].chars().next().map_or(1, char::len_utf8);
                value.push_str(&raw[i..i + ch_len]);
                i += ch_len;
            }
            i = (i + 1).min(bytes.len()); // the closing quote
        } else {
            while i < bytes.len() && !bytes[i].is_ascii_whitespace() {
                i += 1;
            }
            value.push_str(&raw[value_start..i]);
        }
        if key.eq_ignore_ascii_case("password") {
            secrets.push(value);
            secrets.push(raw[value_start..i].to_owned());
            out.push_str("***");
        } else {
            out.push_str(&raw[value_start..i]);
        }
    }
    out
}

/// `%XX` escapes decoded, when the result is UTF-8 and anything was escaped.
fn percent_decode(s: &str) -> Option<String> {
    if !s.contains('%') {
        return None;
    }
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let (Some(h), Some(l)) = (hex_value(bytes[i + 1]), hex_value(bytes[i + 2]))
        {
            out.push(h * 16 + l);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (connection string, what it shows, the password that must not show).
    const CASES: &[(&str, &str, &str)] = &[
        (
            "postgres://tresor:s3cr3t-pw@db.example:5432/tresor",
            "postgres://tresor:***@db.example:5432/tresor",
            "s3cr3t-pw",
        ),
        (
            "postgresql://tresor:p%40ss%2Fw0rd@db/tresor?sslmode=require",
            "postgresql://tresor:***@db/tresor?sslmode=require",
            "p@ss/w0rd",
        ),
        (
            "postgres://tresor:pa/ss@word@db/tresor",
            "postgres://tresor:***@db/tresor",
            "pa/ss@word",
        ),
        (
            "postgres://db/tresor?user=tresor&password=qu3ry-pw&sslmode=require",
            "postgres://db/tresor?user=tresor&password=***&sslmode=require",
            "qu3ry-pw",
        ),
        (
            "postgres://tresor@db/tresor",
            "postgres://tresor@db/tresor",
            "",
        ),
        (
            "postgres://db.example/tresor",
            "postgres://db.example/tresor",
            "",
        ),
        (
            "host=db user=tresor password=kv-s3cret dbname=tresor",
            "host=db user=tresor password=*** dbname=tresor",
            "kv-s3cret",
        ),
        (
            "host=db password = 'with space\\'s' dbname=tresor",
            "host=db password = *** dbname=tresor",
            "with space's",
        ),
        (
            "host=/run/postgresql dbname=t",
            "host=/run/postgresql dbname=t",
            "",
        ),
    ];

    #[test]
    fn passwords_never_show() {
        for (raw, shown, password) in CASES {
            let url = DatabaseUrl::parse(raw).unwrap();
            assert_eq!(url.to_string(), *shown, "{raw}");
            assert_eq!(format!("{url:?}"), format!("DatabaseUrl({shown:?})"));
            assert_eq!(url.expose(), *raw);
            if !password.is_empty() {
                assert!(!url.to_string().contains(password), "{raw}");
                let message = format!("password authentication failed: {password} for {raw}");
                let scrubbed = url.scrub(&message);
                assert!(!scrubbed.contains(password), "{scrubbed}");
            }
        }
    }

    #[test]
    fn errors_are_scrubbed() {
        let url = DatabaseUrl::parse("postgres://u:hunter2-long@h/d").unwrap();
        let e = CoreError::Unavailable("server said hunter2-long is wrong".into());
        let text = format!("{:#}", url.error(&format!("connecting to {url}"), &e));
        assert!(!text.contains("hunter2-long"), "{text}");
        assert!(text.contains("postgres://u:***@h/d"), "{text}");
    }

    #[test]
    fn tls_is_asked_by_sslmode() {
        let on = DatabaseUrl::parse("postgres://h/d?sslmode=require").unwrap();
        let off = DatabaseUrl::parse("postgres://h/d?sslmode=disable").unwrap();
        let none = DatabaseUrl::parse("postgres://h/d").unwrap();
        assert!(on.asks_for_tls());
        assert!(!off.asks_for_tls());
        assert!(!none.asks_for_tls());
        assert!(DatabaseUrl::parse("  ").is_err());
    }
}
