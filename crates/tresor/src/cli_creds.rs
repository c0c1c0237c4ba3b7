//! `tresor creds …`: write-only credentials from the command line, with an installation token.
//! A secret is read from a file or stdin only, never from an argument.

use std::io::{IsTerminal, Read};
use std::path::PathBuf;

use serde_json::{Map, Value};
use tresor_client::{CredentialPut, CredentialsClient, Owner};

use crate::cli_common::{
    CliError, CliResult, ConnArgs, EXIT_NOT_FOUND, EXIT_OK, Failure, TokenKind, connect, fail,
    page_size, parse_secret_object, print_json, print_json_line, print_line, read_secret,
    read_secret_file, read_secret_line, to_json,
};

/// Flags and subcommand of `tresor creds`.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Credentials are write-only: they are stored and used by the server (the \
    proxy), but never shown again; get and ls print metadata only.\n\
    The installation token comes from --token-file PATH or TRESOR_TOKEN; there is deliberately \
    no --token flag (command lines leak into shell history).\n\
    Exit codes: 0 success, 1 not found, 2 usage, 3 API error, 4 transport or configuration \
    error."
)]
pub struct CredsArgs {
    #[command(flatten)]
    pub conn: ConnArgs,
    #[command(subcommand)]
    pub command: CredsCommand,
}

#[derive(Debug, clap::Subcommand)]
pub enum CredsCommand {
    /// Store a credential for a provider. The secret is read from a file or stdin, never from
    /// an argument. Prints its metadata.
    #[command(
        long_about = "Store (create or replace) a credential for a provider and print its \
            metadata as JSON.\n\n\
            The secret is read from a file or from stdin only, never from an argument: a secret \
            on the command line would land in shell history and in the process list. Give \
            exactly one of:\n  \
            --secret-file PATH   a JSON object, e.g. {\"access_token\": \"…\", \
            \"refresh_token\": \"…\"}\n  \
            --secret-stdin       the same JSON object on stdin\n  \
            --api-key-stdin      one line on stdin, stored as {\"api_key\": LINE}\n  \
            --basic-user USER    the password as one line on stdin, stored as \
            {\"username\": USER, \"password\": LINE}\n\n\
            Examples:\n  \
            tresor creds put stripe --provider stripe --api-key-stdin < stripe.key\n  \
            tresor creds put github --provider github --secret-file tokens.json --owner account"
    )]
    Put(PutArgs),
    /// Print a credential's metadata as JSON (never its secret). A missing key prints nothing
    /// and exits 1.
    Get(KeyArg),
    /// List keys, one per line (with --json: metadata, one JSON document per line).
    Ls(LsArgs),
    /// Delete a credential; succeeds whether or not it exists.
    Rm(KeyArg),
}

#[derive(Debug, clap::Args)]
pub struct KeyArg {
    /// The credential's key (1–500 bytes of UTF-8).
    pub key: String,
}

/// Who holds the credential.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OwnerArg {
    /// The installation (the default).
    Installation,
    /// The account the app is installed in, shared with its other installations.
    Account,
}

impl From<OwnerArg> for Owner {
    fn from(owner: OwnerArg) -> Owner {
        match owner {
            OwnerArg::Installation => Owner::Installation,
            OwnerArg::Account => Owner::Account,
        }
    }
}

#[derive(Debug, clap::Args)]
#[command(group(
    clap::ArgGroup::new("secret")
        .required(true)
        .args(["secret_file", "secret_stdin", "api_key_stdin", "basic_user"])
))]
pub struct PutArgs {
    /// The credential's key (1–500 bytes of UTF-8).
    pub key: String,
    /// The provider the credential is for (configured with `tresor admin provider put`).
    #[arg(long, value_name = "NAME")]
    pub provider: String,
    /// Store it in the installation (default) or in the account.
    #[arg(long, value_enum)]
    pub owner: Option<OwnerArg>,
    /// Non-secret metadata as a JSON object, e.g. '{"shop": "s1"}'.
    #[arg(long, value_name = "JSON")]
    pub metadata: Option<String>,
    /// Expire the credential after this many seconds.
    #[arg(long, value_name = "SECONDS")]
    pub ttl: Option<u64>,
    /// Read the secret, a JSON object, from this file.
    #[arg(long, value_name = "PATH")]
    pub secret_file: Option<PathBuf>,
    /// Read the secret, a JSON object, from stdin.
    #[arg(long)]
    pub secret_stdin: bool,
    /// Read an API key (one line) from stdin and store {"api_key": …}.
    #[arg(long)]
    pub api_key_stdin: bool,
    /// Store {"username": USER, "password": …} with the password read (one line) from stdin.
    #[arg(long, value_name = "USER")]
    pub basic_user: Option<String>,
}

#[derive(Debug, clap::Args)]
pub struct LsArgs {
    /// Only keys starting with this prefix.
    #[arg(long, default_value = "")]
    pub prefix: String,
    /// Print at most N keys.
    #[arg(long, value_name = "N")]
    pub limit: Option<u64>,
    /// Print each credential's metadata as one JSON document per line.
    #[arg(long)]
    pub json: bool,
}

/// Runs a creds subcommand.
pub async fn run(args: CredsArgs) -> CliResult {
    let session = connect(&args.conn, TokenKind::Installation)?;
    let credentials = session.client.credentials();
    let result = match args.command {
        CredsCommand::Put(args) => {
            let stdin = &mut std::io::stdin();
            let interactive = std::io::stdin().is_terminal();
            put(&credentials, args, stdin, interactive).await
        }
        CredsCommand::Get(args) => get(&credentials, args).await,
        CredsCommand::Ls(args) => ls(&credentials, args).await,
        CredsCommand::Rm(args) => credentials
            .delete(&args.key)
            .await
            .map(|()| EXIT_OK)
            .map_err(Failure::from),
    };
    result.map_err(|e| fail(&session, e))
}

type Outcome = Result<u8, Failure>;

/// The `--metadata` argument: a JSON object (not secret, so it may be an argument).
fn parse_metadata(text: &str) -> Result<Map<String, Value>, CliError> {
    match serde_json::from_str(text.trim()) {
        Ok(Value::Object(metadata)) => Ok(metadata),
        Ok(_) => Err(CliError::usage("--metadata must be a JSON object")),
        Err(e) => Err(CliError::usage(format!(
            "--metadata is not valid JSON (error at line {} column {})",
            e.line(),
            e.column()
        ))),
    }
}

/// Builds the credential the flags ask for, reading the secret from its file or stdin. With
/// `interactive` (stdin is a terminal) a short prompt goes to stderr first.
fn credential_put(
    args: &PutArgs,
    stdin: &mut dyn Read,
    interactive: bool,
) -> Result<CredentialPut, CliError> {
    // Checked before anything is read, so that a typo does not waste a typed secret.
    let metadata = args.metadata.as_deref().map(parse_metadata).transpose()?;
    let provider = args.provider.clone();
    let mut put = if let Some(path) = &args.secret_file {
        let bytes = read_secret_file(path)?;
        let what = format!("the secret in {}", path.display());
        CredentialPut::new(provider, parse_secret_object(&bytes, &what)?)
    } else if args.secret_stdin {
        if interactive {
            eprintln!("Enter the secret as a JSON object, then Ctrl-D:");
        }
        let bytes = read_secret(stdin, "stdin")?;
        CredentialPut::new(
            provider,
            parse_secret_object(&bytes, "the secret on stdin")?,
        )
    } else if args.api_key_stdin {
        if interactive {
            eprint!("API key (shown as typed; better pipe it in): ");
        }
        let mut key = read_secret_line(stdin, interactive, "the API key")?;
        if key.is_empty() {
            return Err(CliError::usage("the API key on stdin is empty"));
        }
        CredentialPut::api_key(provider, std::mem::take(&mut *key))
    } else if let Some(user) = &args.basic_user {
        if interactive {
            eprint!("Password for {user} (shown as typed; better pipe it in): ");
        }
        let mut password = read_secret_line(stdin, interactive, "the password")?;
        CredentialPut::basic(provider, user.clone(), std::mem::take(&mut *password))
    } else {
        // clap's required group makes this unreachable; keep a usage error all the same.
        return Err(CliError::usage(
            "give one of --secret-file, --secret-stdin, --api-key-stdin, --basic-user",
        ));
    };
    put.owner = args.owner.map(Owner::from);
    put.metadata = metadata;
    put.ttl_seconds = args.ttl;
    Ok(put)
}

async fn put(
    credentials: &CredentialsClient,
    args: PutArgs,
    stdin: &mut dyn Read,
    interactive: bool,
) -> Outcome {
    // Dropping `credential` wipes the secret.
    let credential = credential_put(&args, stdin, interactive)?;
    let (meta, _created) = credentials.put(&args.key, &credential).await?;
    drop(credential);
    print_json(&to_json(&meta)?)?;
    Ok(EXIT_OK)
}

async fn get(credentials: &CredentialsClient, args: KeyArg) -> Outcome {
    match credentials.get(&args.key).await? {
        Some(meta) => {
            print_json(&to_json(&meta)?)?;
            Ok(EXIT_OK)
        }
        None => Ok(EXIT_NOT_FOUND),
    }
}

async fn ls(credentials: &CredentialsClient, args: LsArgs) -> Outcome {
    if args.limit == Some(0) {
        return Ok(EXIT_OK);
    }
    let mut left = args.limit.unwrap_or(u64::MAX);
    let mut pages = credentials.list(&args.prefix, Some(page_size(args.limit)));
    while let Some(page) = pages.next_page().await? {
        for meta in page {
            if args.json {
                print_json_line(&to_json(&meta)?)?;
            } else {
                print_line(&meta.key)?;
            }
            left -= 1;
            if left == 0 {
                return Ok(EXIT_OK);
            }
        }
    }
    Ok(EXIT_OK)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{CommandFactory, Parser};
    use serde_json::json;

    #[derive(Debug, Parser)]
    struct Harness {
        #[command(flatten)]
        args: CredsArgs,
    }

    fn parse(args: &[&str]) -> Result<CredsArgs, clap::Error> {
        let mut argv = vec!["creds"];
        argv.extend_from_slice(args);
        Harness::try_parse_from(argv).map(|h| h.args)
    }

    fn put_args(args: &[&str]) -> PutArgs {
        let mut argv = vec!["put"];
        argv.extend_from_slice(args);
        match parse(&argv).unwrap().command {
            CredsCommand::Put(put) => put,
            other => panic!("not put: {other:?}"),
        }
    }

    fn build(args: &[&str], stdin: &str) -> Result<CredentialPut, CliError> {
        credential_put(&put_args(args), &mut stdin.as_bytes(), false)
    }

    #[test]
    fn put_flags_map_to_the_request() {
        let put = build(
            &[
                "stripe/main",
                "--provider",
                "stripe",
                "--owner",
                "account",
                "--metadata",
                r#"{"shop": "s1", "n": 12345678901234567890}"#,
                "--ttl",
                "3600",
                "--secret-stdin",
            ],
            "{\"access_token\": \"at\", \"expires_at\": 1795323794}\n",
        )
        .unwrap();
        assert_eq!(put.provider, "stripe");
        assert_eq!(put.owner, Some(Owner::Account));
        assert_eq!(put.ttl_seconds, Some(3600));
        assert_eq!(
            Value::Object(put.metadata.clone().unwrap()).to_string(),
            r#"{"shop":"s1","n":12345678901234567890}"#
        );
        assert_eq!(
            put.secret,
            json!({"access_token": "at", "expires_at": 1795323794})
        );
        let put = build(&["k", "--provider", "p", "--secret-stdin"], "{}").unwrap();
        assert_eq!(put.owner, None, "the server's default owner applies");
        assert_eq!(put.metadata, None);
        assert_eq!(put.ttl_seconds, None);
        let put = build(
            &[
                "k",
                "--provider",
                "p",
                "--owner",
                "installation",
                "--secret-stdin",
            ],
            "{}",
        )
        .unwrap();
        assert_eq!(put.owner, Some(Owner::Installation));
    }

    #[test]
    fn api_key_stdin_builds_an_api_key_secret() {
        let put = build(&["k", "--provider", "p", "--api-key-stdin"], "sk_live_1\n").unwrap();
        assert_eq!(put.secret, json!({"api_key": "sk_live_1"}));
        let err = build(&["k", "--provider", "p", "--api-key-stdin"], "\n").unwrap_err();
        assert_eq!(err.exit, 2);
        let err = build(&["k", "--provider", "p", "--api-key-stdin"], "sk_1\nsk_2\n").unwrap_err();
        assert_eq!(err.exit, 2);
        assert!(!err.message.contains("sk_"), "{}", err.message);
        // On a terminal the first line is the key.
        let put = credential_put(
            &put_args(&["k", "--provider", "p", "--api-key-stdin"]),
            &mut "typed\n".as_bytes(),
            true,
        )
        .unwrap();
        assert_eq!(put.secret, json!({"api_key": "typed"}));
    }

    #[test]
    fn basic_user_reads_the_password_from_stdin() {
        let put = build(&["k", "--provider", "p", "--basic-user", "bob"], "pw 1\r\n").unwrap();
        assert_eq!(put.secret, json!({"username": "bob", "password": "pw 1"}));
        // An empty password is legitimate for some APIs (the user name is the key).
        let put = build(&["k", "--provider", "p", "--basic-user", "bob"], "").unwrap();
        assert_eq!(put.secret, json!({"username": "bob", "password": ""}));
    }

    #[test]
    fn secret_file_is_read_and_must_be_an_object() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("secret.json");
        std::fs::write(&file, r#"{"username": "u", "password": "hunter2"}"#).unwrap();
        let path = file.to_str().unwrap();
        let put = build(&["k", "--provider", "p", "--secret-file", path], "ignored").unwrap();
        assert_eq!(put.secret, json!({"username": "u", "password": "hunter2"}));
        std::fs::write(&file, r#""hunter2""#).unwrap();
        let err = build(&["k", "--provider", "p", "--secret-file", path], "").unwrap_err();
        assert_eq!(err.exit, 2);
        assert!(!err.message.contains("hunter2"), "{}", err.message);
        std::fs::write(&file, r#"{"password": hunter2}"#).unwrap();
        let err = build(&["k", "--provider", "p", "--secret-file", path], "").unwrap_err();
        assert_eq!(err.exit, 2);
        assert!(!err.message.contains("hunter2"), "{}", err.message);
        let missing = dir.path().join("missing.json");
        let err = build(
            &[
                "k",
                "--provider",
                "p",
                "--secret-file",
                missing.to_str().unwrap(),
            ],
            "",
        )
        .unwrap_err();
        assert_eq!(err.exit, 4);
    }

    #[test]
    fn metadata_must_be_an_object_and_is_checked_first() {
        for bad in ["[1]", "nope", "\"s\""] {
            let err = build(
                &["k", "--provider", "p", "--metadata", bad, "--secret-stdin"],
                "not even read",
            )
            .unwrap_err();
            assert_eq!(err.exit, 2);
            assert!(err.message.contains("--metadata"), "{}", err.message);
        }
    }

    #[test]
    fn exactly_one_secret_source() {
        let err = parse(&["put", "k", "--provider", "p"]).unwrap_err();
        assert_eq!(err.exit_code(), 2);
        let err = parse(&[
            "put",
            "k",
            "--provider",
            "p",
            "--secret-stdin",
            "--api-key-stdin",
        ])
        .unwrap_err();
        assert_eq!(err.exit_code(), 2);
        let err = parse(&["put", "k", "--secret-stdin"]).unwrap_err();
        assert_eq!(err.exit_code(), 2, "--provider is required");
        assert!(
            parse(&[
                "put",
                "k",
                "--provider",
                "p",
                "--owner",
                "app",
                "--secret-stdin"
            ])
            .is_err()
        );
    }

    #[test]
    fn no_argument_takes_a_secret() {
        for attempt in [
            &["put", "k", "--provider", "p", r#"{"api_key": "x"}"#][..],
            &[
                "put",
                "k",
                "--provider",
                "p",
                "--secret",
                r#"{"api_key": "x"}"#,
            ],
            &["put", "k", "--provider", "p", "--api-key", "x"],
            &["put", "k", "--provider", "p", "--password", "x"],
            &[
                "put",
                "k",
                "--provider",
                "p",
                "--token",
                "x",
                "--secret-stdin",
            ],
            &["put", "k", "--provider", "p", "--secret-stdin", "x"],
            &["get", "k", "--token", "t"],
        ] {
            assert!(parse(attempt).is_err(), "{attempt:?}");
        }
        // Every argument that takes a value anywhere under `creds` is one of these, none of
        // them secret (the secret file flag takes a path).
        let allowed = [
            "key",
            "provider",
            "owner",
            "metadata",
            "ttl",
            "secret_file",
            "basic_user",
            "prefix",
            "limit",
            "addr",
            "token_file",
            "ca_file",
            "timeout",
        ];
        let mut command = Harness::command();
        command.build();
        let mut pending = vec![&command];
        let mut seen = 0;
        while let Some(command) = pending.pop() {
            for arg in command.get_arguments() {
                if arg.get_action().takes_values() {
                    seen += 1;
                    let id = arg.get_id().as_str();
                    assert!(allowed.contains(&id), "{id} of {}", command.get_name());
                }
            }
            pending.extend(command.get_subcommands());
        }
        assert!(seen > 10, "{seen}");
    }

    #[test]
    fn get_ls_rm_parse() {
        let args = parse(&["ls", "--prefix", "p/", "--limit", "5", "--json"]).unwrap();
        let CredsCommand::Ls(ls) = args.command else {
            panic!("not ls")
        };
        assert_eq!(
            (ls.prefix.as_str(), ls.limit, ls.json),
            ("p/", Some(5), true)
        );
        assert!(matches!(
            parse(&["get", "k"]).unwrap().command,
            CredsCommand::Get(KeyArg { key }) if key == "k"
        ));
        assert!(matches!(
            parse(&["rm", "a/b", "--token-file", "/t"]).unwrap().command,
            CredsCommand::Rm(KeyArg { key }) if key == "a/b"
        ));
        assert!(parse(&["get"]).is_err());
    }
}
