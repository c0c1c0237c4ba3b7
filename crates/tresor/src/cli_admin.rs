//! `tresor admin …`: apps, accounts, installations, tokens, providers and the audit log, with an
//! admin token.

use std::io::Read;

use serde_json::Value;
use tresor_client::{AdminClient, AuditQuery};

use crate::cli_common::{
    CliError, CliResult, ConnArgs, EXIT_NOT_FOUND, EXIT_OK, TokenKind, connect,
    parse_secret_object, print_json, print_json_line, print_line, read_secret_source, split_list,
};

/// Flags and subcommand of `tresor admin`.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "The admin token comes from TRESOR_ADMIN_TOKEN, else --token-file PATH, \
    else TRESOR_TOKEN, else ./tresor-data/admin.token (written by `tresor serve` on first \
    start). There is deliberately no --token flag.\n\
    Exit codes: 0 success, 1 not found, 2 usage, 3 API error, 4 transport or configuration error."
)]
pub struct AdminArgs {
    #[command(flatten)]
    pub conn: ConnArgs,
    #[command(subcommand)]
    pub command: AdminCommand,
}

#[derive(Debug, clap::Subcommand)]
pub enum AdminCommand {
    /// Register, show, list or delete apps.
    #[command(subcommand)]
    App(AppCommand),
    /// Create, show, list or delete accounts.
    #[command(subcommand)]
    Account(AccountCommand),
    /// Install an app into an account; prints the installation token once, on stdout.
    Install(InstallArgs),
    /// Uninstall: deletes the installation's data and revokes its tokens.
    Uninstall(IdArg),
    /// Issue or revoke installation tokens.
    #[command(subcommand)]
    Token(TokenCommand),
    /// Configure, show, list or delete providers (the APIs credentials are used with).
    #[command(subcommand)]
    Provider(ProviderCommand),
    /// Print audit events, oldest first, one JSON document per line.
    Audit(AuditArgs),
}

#[derive(Debug, clap::Subcommand)]
pub enum AppCommand {
    /// Register an app (or re-register it) with the scopes it asks for.
    Put(AppPutArgs),
    /// Print an app (exit 1 if missing).
    Get(IdArg),
    /// List apps, one JSON document per line.
    Ls,
    /// Delete an app, all its installations and its shared store.
    Rm(IdArg),
}

#[derive(Debug, clap::Subcommand)]
pub enum AccountCommand {
    /// Create an account.
    Put(IdArg),
    /// Print an account (exit 1 if missing).
    Get(IdArg),
    /// List accounts, one JSON document per line.
    Ls,
    /// Delete an account and everything in it.
    Rm(IdArg),
}

#[derive(Debug, clap::Subcommand)]
pub enum ProviderCommand {
    /// Configure a provider from a JSON document in FILE (`-` reads stdin); prints the stored
    /// document without its client secret.
    #[command(
        long_about = "Configure (create or replace) a provider from its JSON document:             base_url, allowed_hosts, allow_private_network, inject and oauth2 (see the API             contract, \"Providers\"). The document is read from FILE, or from stdin with `-`,             never from an argument, because oauth2.client_secret is a secret. A document             without oauth2.client_secret keeps the stored one. Prints the stored document,             which never shows the secret (only oauth2.client_secret_set).\n\n            Example: tresor admin provider put github github-provider.json"
    )]
    Put(ProviderPutArgs),
    /// Print a provider's document, without its client secret (exit 1 if missing).
    Get(NameArg),
    /// List providers, one JSON document per line.
    Ls,
    /// Delete a provider.
    Rm(NameArg),
}

#[derive(Debug, clap::Args)]
pub struct NameArg {
    /// The provider's name (`[A-Za-z0-9._:-]{1,128}`).
    pub name: String,
}

#[derive(Debug, clap::Args)]
pub struct ProviderPutArgs {
    /// The provider's name (`[A-Za-z0-9._:-]{1,128}`).
    pub name: String,
    /// The file holding the provider document as JSON; `-` reads stdin.
    #[arg(value_name = "FILE|-", allow_hyphen_values = true)]
    pub file: String,
}

#[derive(Debug, clap::Subcommand)]
pub enum TokenCommand {
    /// Issue another token for an installation; prints it once, on stdout.
    Create(TokenCreateArgs),
    /// Revoke a token, at once on every server.
    Revoke(TokenRevokeArgs),
}

#[derive(Debug, clap::Args)]
pub struct IdArg {
    /// The id (`[A-Za-z0-9._:-]{1,128}`).
    pub id: String,
}

#[derive(Debug, clap::Args)]
pub struct AppPutArgs {
    /// The app id (`[A-Za-z0-9._:-]{1,128}`).
    pub id: String,
    /// A scope the app asks for, e.g. secrets:read (repeat, or comma-separated).
    #[arg(long = "scope", value_name = "SCOPE")]
    pub scopes: Vec<String>,
}

#[derive(Debug, clap::Args)]
pub struct InstallArgs {
    /// The new installation's id.
    pub installation_id: String,
    /// The app to install.
    #[arg(long, value_name = "APP_ID")]
    pub app: String,
    /// The account to install it into.
    #[arg(long, value_name = "ACCOUNT_ID")]
    pub account: String,
}

#[derive(Debug, clap::Args)]
pub struct TokenCreateArgs {
    /// The installation the token is for.
    pub installation_id: String,
    /// Limit the token to these scopes (a subset of the app's; default all of them).
    #[arg(long = "scope", value_name = "SCOPE")]
    pub scopes: Vec<String>,
    /// Expire the token after this many seconds.
    #[arg(long, value_name = "SECONDS")]
    pub ttl: Option<u64>,
}

#[derive(Debug, clap::Args)]
pub struct TokenRevokeArgs {
    /// The token's id (printed when it was issued).
    pub token_id: String,
}

#[derive(Debug, clap::Args)]
pub struct AuditArgs {
    /// Only events of this installation.
    #[arg(long = "installation", value_name = "ID")]
    pub installation_id: Option<String>,
    /// Only events of this account.
    #[arg(long = "account", value_name = "ID")]
    pub account_id: Option<String>,
    /// Only events at or after this RFC 3339 time.
    #[arg(long, value_name = "TIME")]
    pub since: Option<String>,
    /// Only events before this RFC 3339 time.
    #[arg(long, value_name = "TIME")]
    pub until: Option<String>,
    /// Continue after this cursor (printed on stderr after a page).
    #[arg(long, value_name = "CURSOR")]
    pub after: Option<String>,
    /// Events per page (1–1000).
    #[arg(long, value_name = "N")]
    pub limit: Option<u32>,
    /// Follow the cursor to the end instead of printing one page.
    #[arg(long)]
    pub all: bool,
}

/// Runs an admin subcommand.
pub async fn run(args: AdminArgs) -> CliResult {
    let session = connect(&args.conn, TokenKind::Admin)?;
    let admin = session.client.admin();
    let result = match args.command {
        AdminCommand::App(command) => app(&admin, command).await,
        AdminCommand::Account(command) => account(&admin, command).await,
        AdminCommand::Install(args) => install(&admin, args).await,
        AdminCommand::Uninstall(args) => admin.uninstall(&args.id).await.map(|()| Ok(EXIT_OK)),
        AdminCommand::Token(command) => token(&admin, command).await,
        AdminCommand::Provider(command) => provider(&admin, command, &mut std::io::stdin()).await,
        AdminCommand::Audit(args) => audit(&admin, args).await,
    };
    match result {
        Ok(outcome) => outcome,
        Err(err) => Err(session.fail(err)),
    }
}

/// SDK errors stay outside (they need the session to be mapped); printing errors inside.
type Outcome = tresor_client::Result<CliResult>;

async fn app(admin: &AdminClient, command: AppCommand) -> Outcome {
    match command {
        AppCommand::Put(args) => {
            let scopes = split_list(&args.scopes);
            let upserted = admin.put_app(&args.id, &scopes).await?;
            Ok(print_json(&upserted.document).map(|()| EXIT_OK))
        }
        AppCommand::Get(args) => Ok(print_document(admin.get_app(&args.id).await?)),
        AppCommand::Ls => Ok(print_lines(&admin.list_apps().await?)),
        AppCommand::Rm(args) => admin.delete_app(&args.id).await.map(|()| Ok(EXIT_OK)),
    }
}

async fn account(admin: &AdminClient, command: AccountCommand) -> Outcome {
    match command {
        AccountCommand::Put(args) => {
            let upserted = admin.put_account(&args.id).await?;
            Ok(print_json(&upserted.document).map(|()| EXIT_OK))
        }
        AccountCommand::Get(args) => Ok(print_document(admin.get_account(&args.id).await?)),
        AccountCommand::Ls => Ok(print_lines(&admin.list_accounts().await?)),
        AccountCommand::Rm(args) => admin.delete_account(&args.id).await.map(|()| Ok(EXIT_OK)),
    }
}

async fn install(admin: &AdminClient, args: InstallArgs) -> Outcome {
    let installed = admin
        .install(&args.installation_id, &args.app, &args.account)
        .await?;
    let Some(token) = installed.token else {
        eprintln!(
            "installation {} already exists with app {} and account {}; no new token is shown \
             (issue one with `tresor admin token create {}`)",
            installed.installation_id, args.app, args.account, installed.installation_id
        );
        return Ok(Ok(EXIT_OK));
    };
    eprintln!(
        "installed app {} into account {} as installation {} (token id {}); the token below is \
         shown only once",
        args.app,
        args.account,
        installed.installation_id,
        installed.token_id.as_deref().unwrap_or("unknown")
    );
    Ok(print_line(&token).map(|()| EXIT_OK))
}

async fn token(admin: &AdminClient, command: TokenCommand) -> Outcome {
    match command {
        TokenCommand::Create(args) => {
            let scopes = split_list(&args.scopes);
            let scopes = (!scopes.is_empty()).then_some(scopes);
            let issued = admin
                .create_token(&args.installation_id, scopes, args.ttl)
                .await?;
            eprintln!(
                "issued token {} for installation {}; the token below is shown only once",
                issued.token_id, args.installation_id
            );
            Ok(print_line(&issued.token).map(|()| EXIT_OK))
        }
        TokenCommand::Revoke(args) => admin
            .revoke_token(&args.token_id)
            .await
            .map(|()| Ok(EXIT_OK)),
    }
}

/// The provider document of `provider put`: a JSON object from a file or stdin.
fn read_provider_document(args: &ProviderPutArgs, stdin: &mut dyn Read) -> Result<Value, CliError> {
    let bytes = read_secret_source(&args.file, stdin)?;
    let what = if args.file == "-" {
        "the provider document on stdin".to_owned()
    } else {
        format!("the provider document in {}", args.file)
    };
    parse_secret_object(&bytes, &what)
}

async fn provider(admin: &AdminClient, command: ProviderCommand, stdin: &mut dyn Read) -> Outcome {
    match command {
        ProviderCommand::Put(args) => {
            let mut document = match read_provider_document(&args, stdin) {
                Ok(document) => document,
                Err(err) => return Ok(Err(err)),
            };
            let upserted = admin.put_provider(&args.name, &document).await;
            // The document may hold oauth2.client_secret.
            tresor_client::zeroize_json(&mut document);
            Ok(print_json(&upserted?.document).map(|()| EXIT_OK))
        }
        ProviderCommand::Get(args) => Ok(print_document(admin.get_provider(&args.name).await?)),
        ProviderCommand::Ls => Ok(print_lines(&admin.list_providers().await?)),
        ProviderCommand::Rm(args) => admin
            .delete_provider(&args.name)
            .await
            .map(|()| Ok(EXIT_OK)),
    }
}

fn audit_query(args: &AuditArgs) -> AuditQuery {
    AuditQuery {
        installation_id: args.installation_id.clone(),
        account_id: args.account_id.clone(),
        since: args.since.clone(),
        until: args.until.clone(),
        after: args.after.clone(),
        limit: args.limit,
    }
}

async fn audit(admin: &AdminClient, args: AuditArgs) -> Outcome {
    let mut query = audit_query(&args);
    loop {
        let page = admin.audit(&query).await?;
        if let Err(err) = print_all(&page.items) {
            return Ok(Err(err));
        }
        match page.next_cursor {
            Some(cursor) if args.all => query.after = Some(cursor),
            Some(cursor) => {
                eprintln!("more events: continue with --after {cursor}");
                return Ok(Ok(EXIT_OK));
            }
            None => return Ok(Ok(EXIT_OK)),
        }
    }
}

fn print_document(document: Option<Value>) -> CliResult {
    match document {
        Some(document) => print_json(&document).map(|()| EXIT_OK),
        None => Ok(EXIT_NOT_FOUND),
    }
}

fn print_lines(items: &[Value]) -> CliResult {
    print_all(items).map(|()| EXIT_OK)
}

fn print_all(items: &[Value]) -> Result<(), CliError> {
    items.iter().try_for_each(print_json_line)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Harness {
        #[command(flatten)]
        args: AdminArgs,
    }

    fn parse(args: &[&str]) -> Result<AdminArgs, clap::Error> {
        let mut argv = vec!["admin"];
        argv.extend_from_slice(args);
        Harness::try_parse_from(argv).map(|h| h.args)
    }

    #[test]
    fn app_scopes_repeat_or_split() {
        let args = parse(&[
            "app",
            "put",
            "my.app",
            "--scope",
            "kv:read,kv:write",
            "--scope",
            "secrets:read",
        ])
        .unwrap();
        let AdminCommand::App(AppCommand::Put(put)) = args.command else {
            panic!("not app put")
        };
        assert_eq!(
            split_list(&put.scopes),
            ["kv:read", "kv:write", "secrets:read"]
        );
    }

    #[test]
    fn install_needs_app_and_account() {
        assert!(parse(&["install", "inst"]).is_err());
        let args = parse(&["install", "inst", "--app", "a", "--account", "b"]).unwrap();
        let AdminCommand::Install(install) = args.command else {
            panic!("not install")
        };
        assert_eq!(
            (
                install.installation_id.as_str(),
                install.app.as_str(),
                install.account.as_str()
            ),
            ("inst", "a", "b")
        );
    }

    #[test]
    fn audit_flags_map_to_the_query() {
        let args = parse(&[
            "audit",
            "--installation",
            "i",
            "--account",
            "a",
            "--since",
            "2026-01-01T00:00:00Z",
            "--limit",
            "50",
            "--all",
        ])
        .unwrap();
        let AdminCommand::Audit(audit) = args.command else {
            panic!("not audit")
        };
        assert!(audit.all);
        assert_eq!(
            audit_query(&audit),
            AuditQuery {
                installation_id: Some("i".into()),
                account_id: Some("a".into()),
                since: Some("2026-01-01T00:00:00Z".into()),
                until: None,
                after: None,
                limit: Some(50),
            }
        );
    }

    #[test]
    fn provider_commands_parse() {
        let args = parse(&["provider", "put", "github", "-"]).unwrap();
        let AdminCommand::Provider(ProviderCommand::Put(put)) = args.command else {
            panic!("not provider put")
        };
        assert_eq!((put.name.as_str(), put.file.as_str()), ("github", "-"));
        assert!(matches!(
            parse(&["provider", "get", "github"]).unwrap().command,
            AdminCommand::Provider(ProviderCommand::Get(NameArg { name })) if name == "github"
        ));
        assert!(matches!(
            parse(&["provider", "ls"]).unwrap().command,
            AdminCommand::Provider(ProviderCommand::Ls)
        ));
        assert!(matches!(
            parse(&["provider", "rm", "github"]).unwrap().command,
            AdminCommand::Provider(ProviderCommand::Rm(NameArg { name })) if name == "github"
        ));
        // The document (and its client secret) never travels as an argument.
        assert!(parse(&["provider", "put", "github"]).is_err());
        assert!(
            parse(&[
                "provider",
                "put",
                "github",
                "f.json",
                "--client-secret",
                "x"
            ])
            .is_err()
        );
        assert!(parse(&["provider", "put", "github", "f.json", "{}"]).is_err());
    }

    #[test]
    fn provider_documents_come_from_a_file_or_stdin() {
        let document = r#"{"base_url": "https://api.example.com/", "inject": {"type": "bearer"},
            "oauth2": {"client_id": "abc", "client_secret": "hunter2"}}"#;
        let put = |file: &str| ProviderPutArgs {
            name: "p".into(),
            file: file.into(),
        };
        let from_stdin = read_provider_document(&put("-"), &mut document.as_bytes()).unwrap();
        assert_eq!(from_stdin["oauth2"]["client_secret"], "hunter2");
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("p.json");
        std::fs::write(&file, document).unwrap();
        let from_file =
            read_provider_document(&put(file.to_str().unwrap()), &mut "".as_bytes()).unwrap();
        assert_eq!(from_file, from_stdin);
        std::fs::write(&file, r#"{"oauth2": {"client_secret": hunter2}}"#).unwrap();
        let err =
            read_provider_document(&put(file.to_str().unwrap()), &mut "".as_bytes()).unwrap_err();
        assert_eq!(err.exit, 2);
        assert!(!err.message.contains("hunter2"), "{}", err.message);
        let err = read_provider_document(&put("-"), &mut "[]".as_bytes()).unwrap_err();
        assert_eq!(err.exit, 2);
    }

    #[test]
    fn token_commands_parse() {
        let args = parse(&[
            "token", "create", "inst", "--scope", "kv:read", "--ttl", "60",
        ])
        .unwrap();
        let AdminCommand::Token(TokenCommand::Create(create)) = args.command else {
            panic!("not token create")
        };
        assert_eq!(create.ttl, Some(60));
        assert!(parse(&["token", "revoke", "tid"]).is_ok());
        assert!(parse(&["token", "create", "inst", "--token", "x"]).is_err());
    }
}
