//! What the client subcommands share: connection flags, where the token comes from, exit codes
//! and error reporting, reading values from arguments or stdin, reading secrets from files or
//! stdin (never from arguments), and writing to stdout.

use std::io::{self, IsTerminal, Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use secrecy::zeroize::{Zeroize, Zeroizing};
use serde_json::Value;
use serde_json::value::RawValue;
use tresor_client::{Client, ErrorCode};

/// Exit code: success.
pub const EXIT_OK: u8 = 0;
/// Exit code: a "not found" or "false" answer.
pub const EXIT_NOT_FOUND: u8 = 1;
/// Exit code: a usage error (clap uses 2 as well).
pub const EXIT_USAGE: u8 = 2;
/// Exit code: the server answered with an error other than not found.
pub const EXIT_API: u8 = 3;
/// Exit code: the server could not be reached, or the client is misconfigured.
pub const EXIT_TRANSPORT: u8 = 4;

/// Where the default admin token lives after `tresor serve` initialised `./tresor-data`.
pub const DEFAULT_ADMIN_TOKEN_FILE: &str = "./tresor-data/admin.token";

/// How to reach the server. Tokens are deliberately not accepted as a flag: command lines end up
/// in shell history and process listings.
#[derive(Debug, Clone, clap::Args)]
pub struct ConnArgs {
    /// Server address.
    #[arg(
        long,
        env = "TRESOR_ADDR",
        default_value = tresor_client::DEFAULT_ADDR,
        global = true
    )]
    pub addr: String,
    /// Read the token from this file instead of the environment.
    #[arg(long, value_name = "PATH", global = true)]
    pub token_file: Option<PathBuf>,
    /// Trust only the root certificates in this PEM file (for a private CA).
    #[arg(long, env = "TRESOR_CA_FILE", value_name = "PATH", global = true)]
    pub ca_file: Option<PathBuf>,
    /// Give up on a request after this many seconds.
    #[arg(long, value_name = "SECONDS", default_value_t = 30, global = true)]
    pub timeout: u64,
}

/// Which kind of token a command needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenKind {
    Installation,
    Admin,
}

/// A token and where it came from (for error hints; never printed on success).
#[derive(Clone, PartialEq, Eq)]
pub struct FoundToken {
    pub token: String,
    pub source: String,
}

impl std::fmt::Debug for FoundToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FoundToken")
            .field("token", &"<redacted>")
            .field("source", &self.source)
            .finish()
    }
}

/// A failed command: the exit code and what to print on stderr.
#[derive(Debug)]
pub struct CliError {
    pub exit: u8,
    pub message: String,
    pub hint: Option<String>,
}

impl CliError {
    pub fn usage(message: impl Into<String>) -> CliError {
        CliError {
            exit: EXIT_USAGE,
            message: message.into(),
            hint: None,
        }
    }

    pub fn local(message: impl Into<String>) -> CliError {
        CliError {
            exit: EXIT_TRANSPORT,
            message: message.into(),
            hint: None,
        }
    }
}

impl From<tresor_client::Error> for CliError {
    fn from(err: tresor_client::Error) -> CliError {
        use tresor_client::Error;
        let exit = match &err {
            Error::Api { code, .. } if *code == ErrorCode::NotFound => EXIT_NOT_FOUND,
            Error::Api { .. } => EXIT_API,
            Error::InvalidArgument(_) => EXIT_USAGE,
            _ => EXIT_TRANSPORT,
        };
        CliError {
            exit,
            message: error_chain(&err),
            hint: None,
        }
    }
}

/// The result of a client command: an exit code on success paths (0, or 1 for "not found" /
/// "false"), or a [`CliError`].
pub type CliResult = Result<u8, CliError>;

/// Prints a failure and turns the result into the process's exit code.
pub fn finish(result: CliResult) -> ExitCode {
    match result {
        Ok(code) => ExitCode::from(code),
        Err(err) if err.exit == EXIT_OK => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {}", err.message);
            if let Some(hint) = &err.hint {
                eprintln!("hint: {hint}");
            }
            ExitCode::from(err.exit)
        }
    }
}

/// `err` and its sources, joined by ": " (transport errors keep the real cause in the chain).
pub fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// Finds the token for `kind`, looking up environment variables through `env`.
///
/// Installation token: `--token-file`, else `TRESOR_TOKEN`. Admin token: `TRESOR_ADMIN_TOKEN`,
/// else `--token-file`, else `TRESOR_TOKEN`, else `default_admin_file` when it exists.
pub fn find_token(
    kind: TokenKind,
    token_file: Option<&Path>,
    env: &dyn Fn(&str) -> Option<String>,
    default_admin_file: &Path,
) -> Result<FoundToken, CliError> {
    let from_env = |name: &str| {
        env(name)
            .map(|v| v.trim().to_owned())
            .filter(|v| !v.is_empty())
            .map(|token| FoundToken {
                token,
                source: format!("${name}"),
            })
    };
    let from_file = |path: &Path| -> Result<FoundToken, CliError> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            CliError::local(format!(
                "cannot read the token file {}: {e}",
                path.display()
            ))
        })?;
        let token = text.trim();
        if token.is_empty() {
            return Err(CliError::local(format!(
                "the token file {} is empty",
                path.display()
            )));
        }
        Ok(FoundToken {
            token: token.to_owned(),
            source: format!("the file {}", path.display()),
        })
    };
    match kind {
        TokenKind::Installation => {
            if let Some(path) = token_file {
                return from_file(path);
            }
            from_env("TRESOR_TOKEN").ok_or_else(|| {
                CliError::local(
                    "no token: set TRESOR_TOKEN or pass --token-file PATH (an installation token)",
                )
            })
        }
        TokenKind::Admin => {
            if let Some(found) = from_env("TRESOR_ADMIN_TOKEN") {
                return Ok(found);
            }
            if let Some(path) = token_file {
                return from_file(path);
            }
            if let Some(found) = from_env("TRESOR_TOKEN") {
                return Ok(found);
            }
            if default_admin_file.exists() {
                return from_file(default_admin_file);
            }
            Err(CliError::local(format!(
                "no admin token: TRESOR_ADMIN_TOKEN is not set, no --token-file was given, \
                 TRESOR_TOKEN is not set, and {} does not exist",
                default_admin_file.display()
            )))
        }
    }
}

/// A connected client and where its token came from.
pub struct Session {
    pub client: Client,
    pub token: FoundToken,
}

impl Session {
    /// Maps an SDK error, adding where the token came from when the server rejected it.
    pub fn fail(&self, err: tresor_client::Error) -> CliError {
        let rejected = matches!(
            err.code(),
            Some(ErrorCode::Unauthenticated | ErrorCode::Forbidden)
        );
        let mut cli = CliError::from(err);
        if rejected {
            cli.hint = Some(format!("the token came from {}", self.token.source));
        }
        cli
    }
}

/// A command's failure: either already a CLI error, or an SDK error still to be mapped (which
/// needs the [`Session`] for its hint).
pub enum Failure {
    Cli(CliError),
    Sdk(tresor_client::Error),
}

impl From<CliError> for Failure {
    fn from(err: CliError) -> Failure {
        Failure::Cli(err)
    }
}

impl From<tresor_client::Error> for Failure {
    fn from(err: tresor_client::Error) -> Failure {
        Failure::Sdk(err)
    }
}

/// Turns a [`Failure`] into the error to report.
pub fn fail(session: &Session, failure: Failure) -> CliError {
    match failure {
        Failure::Cli(err) => err,
        Failure::Sdk(err) => session.fail(err),
    }
}

/// Builds the SDK client from the flags and the environment.
pub fn connect(conn: &ConnArgs, kind: TokenKind) -> Result<Session, CliError> {
    let env = |name: &str| std::env::var(name).ok();
    let found = find_token(
        kind,
        conn.token_file.as_deref(),
        &env,
        Path::new(DEFAULT_ADMIN_TOKEN_FILE),
    )?;
    let mut builder = Client::builder(&conn.addr, found.token.clone());
    if conn.timeout > 0 {
        builder = builder.timeout(Duration::from_secs(conn.timeout));
    }
    if let Some(path) = &conn.ca_file {
        let pem = std::fs::read(path).map_err(|e| {
            CliError::local(format!("cannot read the CA file {}: {e}", path.display()))
        })?;
        builder = builder.root_ca_pem(pem);
    }
    let client = builder.build()?;
    Ok(Session {
        client,
        token: found,
    })
}

/// The text of an argument, or all of stdin for `-`.
pub fn read_arg(arg: &str, stdin: &mut dyn Read) -> Result<(String, bool), CliError> {
    if arg != "-" {
        return Ok((arg.to_owned(), false));
    }
    let mut text = String::new();
    stdin
        .read_to_string(&mut text)
        .map_err(|e| CliError::local(format!("cannot read stdin: {e}")))?;
    Ok((text, true))
}

/// A VALUE argument: JSON text (kept exactly as written, so numbers and member order survive),
/// or with `as_string` the text itself as a JSON string. From stdin, a string loses one trailing
/// newline (what `echo` and editors add).
pub fn parse_value(
    arg: &str,
    as_string: bool,
    what: &str,
    stdin: &mut dyn Read,
) -> Result<Box<RawValue>, CliError> {
    let (mut text, from_stdin) = read_arg(arg, stdin)?;
    if as_string {
        if from_stdin {
            if text.ends_with("\r\n") {
                text.truncate(text.len() - 2);
            } else if text.ends_with('\n') {
                text.truncate(text.len() - 1);
            }
        }
        return serde_json::value::to_raw_value(&text)
            .map_err(|e| CliError::local(format!("cannot encode the string: {e}")));
    }
    serde_json::from_str::<Box<RawValue>>(text.trim()).map_err(|e| {
        CliError::usage(format!(
            "{what} is not valid JSON ({}); to store text as it is, use --string",
            json_error_position(&e)
        ))
    })
}

/// A JSON argument that is needed as a value (ops arrays, patches to inspect).
pub fn parse_json(arg: &str, what: &str, stdin: &mut dyn Read) -> Result<Value, CliError> {
    let (text, _) = read_arg(arg, stdin)?;
    serde_json::from_str(text.trim()).map_err(|e| {
        CliError::usage(format!(
            "{what} is not valid JSON ({})",
            json_error_position(&e)
        ))
    })
}

/// Secrets are read into a buffer this large up front, so that reading a typical secret never
/// reallocates (which would leave copies behind in freed memory).
const SECRET_BUFFER: usize = 64 * 1024;

/// All of `input`, for a secret: the buffer is wiped when dropped.
pub fn read_secret(input: &mut dyn Read, what: &str) -> Result<Zeroizing<Vec<u8>>, CliError> {
    let mut bytes = Zeroizing::new(Vec::with_capacity(SECRET_BUFFER));
    input
        .read_to_end(&mut bytes)
        .map_err(|e| CliError::local(format!("cannot read {what}: {e}")))?;
    Ok(bytes)
}

/// The secret file at `path`, or stdin for `-`.
pub fn read_secret_source(arg: &str, stdin: &mut dyn Read) -> Result<Zeroizing<Vec<u8>>, CliError> {
    if arg == "-" {
        return read_secret(stdin, "stdin");
    }
    read_secret_file(Path::new(arg))
}

/// A file holding a secret.
pub fn read_secret_file(path: &Path) -> Result<Zeroizing<Vec<u8>>, CliError> {
    let what = format!("the file {}", path.display());
    let mut file = std::fs::File::open(path)
        .map_err(|e| CliError::local(format!("cannot read {what}: {e}")))?;
    read_secret(&mut file, &what)
}

/// One line of a secret from stdin, without its line ending. On a terminal only the first
/// line is read; from a pipe or file the input must be exactly one line (a missing final
/// newline is fine).
pub fn read_secret_line(
    stdin: &mut dyn Read,
    interactive: bool,
    what: &str,
) -> Result<Zeroizing<String>, CliError> {
    let mut bytes = Zeroizing::new(Vec::with_capacity(4096));
    if interactive {
        let mut byte = [0u8; 1];
        loop {
            let n = stdin
                .read(&mut byte)
                .map_err(|e| CliError::local(format!("cannot read stdin: {e}")))?;
            if n == 0 || byte[0] == b'\n' {
                break;
            }
            bytes.push(byte[0]);
        }
        byte.zeroize();
    } else {
        stdin
            .read_to_end(&mut bytes)
            .map_err(|e| CliError::local(format!("cannot read stdin: {e}")))?;
        if bytes.ends_with(b"\n") {
            bytes.pop();
        }
    }
    if bytes.ends_with(b"\r") {
        bytes.pop();
    }
    if bytes.contains(&b'\n') {
        return Err(CliError::usage(format!(
            "{what} on stdin must be a single line"
        )));
    }
    match String::from_utf8(std::mem::take(&mut *bytes)) {
        Ok(text) => Ok(Zeroizing::new(text)),
        Err(err) => {
            err.into_bytes().zeroize();
            Err(CliError::usage(format!("{what} on stdin is not UTF-8")))
        }
    }
}

/// Parses a secret JSON document that must be an object, without ever quoting it in an error.
pub fn parse_secret_object(bytes: &[u8], what: &str) -> Result<Value, CliError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(CliError::usage(format!("{what} is empty")));
    }
    let mut value: Value = serde_json::from_slice(bytes).map_err(|e| {
        CliError::usage(format!(
            "{what} is not valid JSON ({})",
            json_error_position(&e)
        ))
    })?;
    if !value.is_object() {
        tresor_client::zeroize_json(&mut value);
        return Err(CliError::usage(format!("{what} must be a JSON object")));
    }
    Ok(value)
}

/// The page size for a listing of at most `limit` items.
pub fn page_size(limit: Option<u64>) -> u32 {
    match limit {
        Some(limit) => u32::try_from(limit.clamp(1, 1000)).unwrap_or(1000),
        None => 1000,
    }
}

/// `a,b` lists given as repeated flags or comma-separated; empty entries are dropped.
pub fn split_list(values: &[String]) -> Vec<String> {
    values
        .iter()
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .map(str::to_owned)
        .collect()
}

/// Writes `text` and a newline to stdout. A closed pipe (`tresor kv ls | head`) ends the
/// command quietly with success.
pub fn print_line(text: &str) -> Result<(), CliError> {
    let mut stdout = io::stdout().lock();
    write_out(writeln!(stdout, "{text}").and_then(|_| stdout.flush()))
}

/// Writes a stored string exactly; a newline follows only on a terminal, so that
/// `tresor secrets get k > file` stores the exact secret.
pub fn print_raw(text: &str) -> Result<(), CliError> {
    let mut stdout = io::stdout().lock();
    let newline = if stdout.is_terminal() { "\n" } else { "" };
    write_out(write!(stdout, "{text}{newline}").and_then(|_| stdout.flush()))
}

/// Pretty JSON on stdout.
pub fn print_json(value: &Value) -> Result<(), CliError> {
    let text = serde_json::to_string_pretty(value)
        .map_err(|e| CliError::local(format!("cannot print JSON: {e}")))?;
    print_line(&text)
}

/// Converts an SDK document for printing.
pub fn to_json<T: ToJson + ?Sized>(document: &T) -> Result<Value, CliError> {
    document.to_json()
}

/// SDK documents that can be printed (the binary does not depend on serde itself).
pub trait ToJson {
    fn to_json(&self) -> Result<Value, CliError>;
}

macro_rules! to_json_via_serde {
    ($($ty:ty),*) => {$(
        impl ToJson for $ty {
            fn to_json(&self) -> Result<Value, CliError> {
                serde_json::to_value(self)
                    .map_err(|e| CliError::local(format!("cannot print JSON: {e}")))
            }
        }
    )*};
}

to_json_via_serde!(
    tresor_client::Record<Value>,
    tresor_client::RecordMeta,
    tresor_client::CredentialMeta
);

/// One compact JSON document per line on stdout.
pub fn print_json_line(value: &Value) -> Result<(), CliError> {
    let text = serde_json::to_string(value)
        .map_err(|e| CliError::local(format!("cannot print JSON: {e}")))?;
    print_line(&text)
}

/// Where JSON parsing failed, without quoting the (possibly secret) input.
fn json_error_position(err: &serde_json::Error) -> String {
    format!("error at line {} column {}", err.line(), err.column())
}

fn write_out(result: io::Result<()>) -> Result<(), CliError> {
    match result {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Err(CliError {
            exit: EXIT_OK,
            message: String::new(),
            hint: None,
        }),
        Err(e) => Err(CliError::local(format!("cannot write to stdout: {e}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn value(arg: &str, as_string: bool, stdin: &str) -> Result<String, CliError> {
        parse_value(arg, as_string, "VALUE", &mut stdin.as_bytes()).map(|raw| raw.get().to_owned())
    }

    #[test]
    fn values_are_json_unless_string() {
        assert_eq!(
            value(r#"{"a": 1.50}"#, false, "").unwrap(),
            r#"{"a": 1.50}"#
        );
        assert_eq!(value(" 42 ", false, "").unwrap(), "42");
        assert_eq!(value(r#""s""#, false, "").unwrap(), r#""s""#);
        assert_eq!(value("hunter2", true, "").unwrap(), r#""hunter2""#);
        assert_eq!(value(r#"{"a":1}"#, true, "").unwrap(), r#""{\"a\":1}""#);
        let err = value("hunter2", false, "").unwrap_err();
        assert_eq!(err.exit, EXIT_USAGE);
        assert!(err.message.contains("--string"));
        assert!(!err.message.contains("hunter2"), "{}", err.message);
    }

    #[test]
    fn dash_reads_stdin() {
        assert_eq!(
            value("-", false, "{\"k\": [1, 2]}\n").unwrap(),
            "{\"k\": [1, 2]}"
        );
        assert_eq!(value("-", true, "s3cret\n").unwrap(), r#""s3cret""#);
        assert_eq!(value("-", true, "s3cret\r\n").unwrap(), r#""s3cret""#);
        assert_eq!(value("-", true, "two\n\n").unwrap(), r#""two\n""#);
        assert_eq!(value("-", true, "").unwrap(), r#""""#);
        // A literal argument keeps its newline: the user typed it.
        assert_eq!(value("a\n", true, "").unwrap(), r#""a\n""#);
    }

    #[test]
    fn secret_lines() {
        let line = |input: &str, interactive: bool| {
            read_secret_line(&mut input.as_bytes(), interactive, "the key")
                .map(|text| text.as_str().to_owned())
        };
        assert_eq!(line("sk_1\n", false).unwrap(), "sk_1");
        assert_eq!(line("sk_1\r\n", false).unwrap(), "sk_1");
        assert_eq!(line("sk_1", false).unwrap(), "sk_1");
        assert_eq!(line("", false).unwrap(), "");
        assert_eq!(line(" spaced \n", false).unwrap(), " spaced ");
        let err = line("sk_1\nsk_2\n", false).unwrap_err();
        assert_eq!(err.exit, EXIT_USAGE);
        assert!(!err.message.contains("sk_"), "{}", err.message);
        assert_eq!(line("sk_1\n\n", false).unwrap_err().exit, EXIT_USAGE);
        // On a terminal the first line ends the input.
        assert_eq!(line("typed\nnot read\n", true).unwrap(), "typed");
        assert_eq!(line("typed\r\n", true).unwrap(), "typed");
        let err = read_secret_line(&mut &b"\xff\n"[..], false, "the key").unwrap_err();
        assert_eq!(err.exit, EXIT_USAGE);
    }

    #[test]
    fn secret_objects() {
        let parse = |text: &str| parse_secret_object(text.as_bytes(), "the secret");
        assert_eq!(
            parse(" {\"api_key\": \"k\", \"n\": 1.50}\n")
                .unwrap()
                .to_string(),
            r#"{"api_key":"k","n":1.50}"#
        );
        for bad in [
            "",
            " \n",
            "\"hunter2\"",
            "[\"hunter2\"]",
            "{\"a\": hunter2}",
            "hunter2",
        ] {
            let err = parse(bad).unwrap_err();
            assert_eq!(err.exit, EXIT_USAGE, "{bad:?}");
            assert!(!err.message.contains("hunter2"), "{}", err.message);
        }
    }

    #[test]
    fn secret_sources() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("provider.json");
        std::fs::write(&file, "{\"x\": 1}").unwrap();
        let from_file = read_secret_source(file.to_str().unwrap(), &mut "unused".as_bytes());
        assert_eq!(&from_file.unwrap()[..], b"{\"x\": 1}");
        let from_stdin = read_secret_source("-", &mut "{}".as_bytes()).unwrap();
        assert_eq!(&from_stdin[..], b"{}");
        let err = read_secret_source("/nonexistent/p.json", &mut "".as_bytes()).unwrap_err();
        assert_eq!(err.exit, EXIT_TRANSPORT);
        assert!(err.message.contains("/nonexistent/p.json"));
    }

    #[test]
    fn listing_page_sizes() {
        assert_eq!(page_size(None), 1000);
        assert_eq!(page_size(Some(5)), 5);
        assert_eq!(page_size(Some(50_000)), 1000);
    }

    #[test]
    fn lists_split_on_commas() {
        let given = vec!["a,b".to_owned(), "c".to_owned(), " d , ".to_owned()];
        assert_eq!(split_list(&given), ["a", "b", "c", "d"]);
    }

    fn env_of(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> + use<> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        move |name: &str| map.get(name).cloned()
    }

    #[test]
    fn admin_token_sources_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let flag_file = dir.path().join("flag.token");
        std::fs::write(&flag_file, "from-flag-file\n").unwrap();
        let default_file = dir.path().join("admin.token");
        std::fs::write(&default_file, "from-default-file\n").unwrap();
        let missing = dir.path().join("missing.token");
        let all = env_of(&[
            ("TRESOR_ADMIN_TOKEN", "from-admin-env"),
            ("TRESOR_TOKEN", "from-token-env"),
        ]);
        let token = |env: &dyn Fn(&str) -> Option<String>, flag: Option<&Path>, default: &Path| {
            find_token(TokenKind::Admin, flag, env, default).map(|f| f.token)
        };
        assert_eq!(
            token(&all, Some(&flag_file), &default_file).unwrap(),
            "from-admin-env"
        );
        let no_admin = env_of(&[("TRESOR_TOKEN", "from-token-env")]);
        assert_eq!(
            token(&no_admin, Some(&flag_file), &default_file).unwrap(),
            "from-flag-file"
        );
        assert_eq!(
            token(&no_admin, None, &default_file).unwrap(),
            "from-token-env"
        );
        let none = env_of(&[("TRESOR_TOKEN", "  ")]);
        assert_eq!(
            token(&none, None, &default_file).unwrap(),
            "from-default-file"
        );
        let err = token(&none, None, &missing).unwrap_err();
        assert_eq!(err.exit, EXIT_TRANSPORT);
        for source in [
            "TRESOR_ADMIN_TOKEN",
            "--token-file",
            "TRESOR_TOKEN",
            "missing.token",
        ] {
            assert!(err.message.contains(source), "{}", err.message);
        }
    }

    #[test]
    fn installation_token_sources() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("t");
        std::fs::write(&file, "file-token").unwrap();
        let env = env_of(&[
            ("TRESOR_TOKEN", "env-token"),
            ("TRESOR_ADMIN_TOKEN", "admin"),
        ]);
        let found = find_token(TokenKind::Installation, Some(&file), &env, &file).unwrap();
        assert_eq!(found.token, "file-token");
        assert!(!format!("{found:?}").contains("file-token"));
        let found = find_token(TokenKind::Installation, None, &env, &file).unwrap();
        assert_eq!(found.token, "env-token");
        assert_eq!(found.source, "$TRESOR_TOKEN");
        let err = find_token(TokenKind::Installation, None, &env_of(&[]), &file).unwrap_err();
        assert!(err.message.contains("TRESOR_TOKEN"));
        let empty = dir.path().join("empty");
        std::fs::write(&empty, "\n").unwrap();
        assert!(find_token(TokenKind::Installation, Some(&empty), &env, &file).is_err());
    }

    #[test]
    fn sdk_errors_map_to_exit_codes() {
        use tresor_client::Error;
        let api = |code: ErrorCode, status: u16| Error::Api {
            status,
            code,
            message: "m".into(),
            request_id: Some("r1".into()),
            op_index: None,
        };
        let not_found = CliError::from(api(ErrorCode::NotFound, 404));
        assert_eq!(not_found.exit, EXIT_NOT_FOUND);
        let conflict = CliError::from(api(ErrorCode::Conflict, 409));
        assert_eq!(conflict.exit, EXIT_API);
        assert_eq!(conflict.message, "conflict: m (request r1)");
        assert_eq!(
            CliError::from(api(ErrorCode::Unauthenticated, 401)).exit,
            EXIT_API
        );
        assert_eq!(
            CliError::from(Error::Config("c".into())).exit,
            EXIT_TRANSPORT
        );
        assert_eq!(
            CliError::from(Error::Decode("d".into())).exit,
            EXIT_TRANSPORT
        );
        assert_eq!(
            CliError::from(Error::InvalidArgument("k".into())).exit,
            EXIT_USAGE
        );
    }

    #[test]
    fn rejected_tokens_get_a_source_hint() {
        let session = Session {
            client: Client::new("http://127.0.0.1:1", "secret-token").unwrap(),
            token: FoundToken {
                token: "secret-token".into(),
                source: "$TRESOR_ADMIN_TOKEN".into(),
            },
        };
        let api = |code: ErrorCode, status: u16| tresor_client::Error::Api {
            status,
            code,
            message: "m".into(),
            request_id: None,
            op_index: None,
        };
        let err = session.fail(api(ErrorCode::Unauthenticated, 401));
        assert_eq!(
            err.hint.as_deref(),
            Some("the token came from $TRESOR_ADMIN_TOKEN")
        );
        assert!(!err.message.contains("secret-token"));
        assert_eq!(session.fail(api(ErrorCode::Conflict, 409)).hint, None);
    }
}
