//! The `tresor` binary: the server (`serve`), schema migrations (`migrate`), root key files
//! (`keygen`), online backups of the embedded store and their restore (`backup`, `restore`),
//! and the command-line client of the record stores (`secrets`, `settings`, `kv`,
//! `shared`), of write-only credentials (`creds`) and of the administration API (`admin`).

mod cli_admin;
mod cli_backup;
mod cli_common;
mod cli_creds;
mod cli_dump;
mod cli_keys;
mod cli_status;
mod cli_store;
mod database;
mod keygen;
mod migrate;
mod serve;
mod shredded;

use std::process::ExitCode;

use clap::Parser;
use tresor_client::Store;

/// tresor: a secrets store for app platforms.
#[derive(Debug, Parser)]
#[command(name = "tresor", version, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, clap::Subcommand)]
enum Command {
    /// Run the server.
    Serve(serve::ServeArgs),
    /// Apply pending schema migrations (PostgreSQL or the embedded store); needs no root key.
    #[command(long_about = migrate::LONG_ABOUT)]
    Migrate(migrate::MigrateArgs),
    /// Write a new root key file, or add a version to one.
    Keygen(keygen::KeygenArgs),
    /// Root key rotation: status, rotate, retire a version (admin token).
    Keys(cli_keys::KeysArgs),
    /// The running system: version, backend, key versions, counts, last backup (admin token).
    Status(cli_status::StatusArgs),
    /// Write every row of a store to a file, as stored (nothing is decrypted).
    #[command(long_about = cli_dump::EXPORT_ABOUT)]
    Export(cli_dump::ExportArgs),
    /// Load a file written by `export` into an empty store.
    #[command(long_about = cli_dump::IMPORT_ABOUT)]
    Import(cli_dump::ImportArgs),
    /// Copy the running embedded store to a file, consistently (the root key is NOT in it).
    #[command(long_about = cli_backup::BACKUP_ABOUT)]
    Backup(cli_backup::BackupArgs),
    /// Bring a backup back into a fresh data directory, re-applying the shredded list.
    #[command(long_about = cli_backup::RESTORE_ABOUT)]
    Restore(cli_backup::RestoreArgs),
    /// The `secrets` store (installation token).
    Secrets(cli_store::StoreArgs),
    /// The `settings` store (installation token).
    Settings(cli_store::StoreArgs),
    /// The `kv` store (installation token).
    Kv(cli_store::StoreArgs),
    /// The app's `shared` store (installation token).
    Shared(cli_store::StoreArgs),
    /// Write-only credentials for providers' APIs (installation token).
    Creds(cli_creds::CredsArgs),
    /// Apps, accounts, installations, tokens, providers and audit (admin token).
    Admin(cli_admin::AdminArgs),
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve(args) => report(serve::run(args).await),
        Command::Migrate(args) => report(migrate::run(args).await),
        Command::Keygen(args) => report(keygen::run(args)),
        Command::Keys(args) => cli_common::finish(cli_keys::run(args).await),
        Command::Status(args) => cli_common::finish(cli_status::run(args).await),
        Command::Export(args) => report(cli_dump::export(args).await),
        Command::Import(args) => report(cli_dump::import(args).await),
        Command::Backup(args) => report(cli_backup::backup(args).await),
        Command::Restore(args) => report(cli_backup::restore(args).await),
        Command::Secrets(args) => cli_common::finish(cli_store::run(Store::Secrets, args).await),
        Command::Settings(args) => cli_common::finish(cli_store::run(Store::Settings, args).await),
        Command::Kv(args) => cli_common::finish(cli_store::run(Store::Kv, args).await),
        Command::Shared(args) => cli_common::finish(cli_store::run(Store::Shared, args).await),
        Command::Creds(args) => cli_common::finish(cli_creds::run(args).await),
        Command::Admin(args) => cli_common::finish(cli_admin::run(args).await),
    }
}

/// The exit of the operator commands: 0, or 1 with the error chain on stderr.
fn report(result: anyhow::Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn every_store_has_a_subcommand() {
        for store in Store::ALL {
            let cli = Cli::try_parse_from(["tresor", store.as_str(), "exists", "k"]).unwrap();
            let matched = matches!(
                (store, cli.command),
                (Store::Secrets, Command::Secrets(_))
                    | (Store::Settings, Command::Settings(_))
                    | (Store::Kv, Command::Kv(_))
                    | (Store::Shared, Command::Shared(_))
            );
            assert!(matched, "{store}");
        }
    }

    #[test]
    fn usage_errors_exit_2() {
        let err = Cli::try_parse_from(["tresor", "kv", "frobnicate"]).unwrap_err();
        assert_eq!(err.exit_code(), 2);
        let err = Cli::try_parse_from(["tresor", "kv", "put", "k"]).unwrap_err();
        assert_eq!(err.exit_code(), 2);
    }

    #[test]
    fn keygen_and_admin_parse() {
        assert!(Cli::try_parse_from(["tresor", "keygen", "--add-version", "root.key"]).is_ok());
        assert!(Cli::try_parse_from(["tresor", "admin", "app", "ls"]).is_ok());
        assert!(Cli::try_parse_from(["tresor", "admin", "uninstall", "inst"]).is_ok());
        assert!(Cli::try_parse_from(["tresor", "admin", "provider", "put", "p", "-"]).is_ok());
    }

    #[test]
    fn creds_parse() {
        let put = [
            "tresor",
            "creds",
            "put",
            "k",
            "--provider",
            "p",
            "--api-key-stdin",
        ];
        assert!(matches!(
            Cli::try_parse_from(put).unwrap().command,
            Command::Creds(_)
        ));
        assert!(Cli::try_parse_from(["tresor", "creds", "ls", "--json"]).is_ok());
        let err =
            Cli::try_parse_from(["tresor", "creds", "put", "k", "--provider", "p"]).unwrap_err();
        assert_eq!(err.exit_code(), 2);
    }
}
