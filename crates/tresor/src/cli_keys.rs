//! `tresor keys …`: root key rotation with an admin token — the status, the rotation, and the
//! retirement of a version no stored key uses any more (see `tresor_core::service` rotation) —
//! and the rotation of one installation's data key (`rotate-installation`).

use std::path::PathBuf;
use std::time::Duration;

use serde_json::Value;
use tresor_client::AdminClient;
use tresor_crypto::RootKeyRing;

use crate::cli_common::{CliError, CliResult, ConnArgs, EXIT_OK, TokenKind, connect, print_json};

/// Flags and subcommand of `tresor keys`.
#[derive(Debug, clap::Args)]
#[command(after_help = "Rotating the root key, on every server's key file:\n  \
    1. tresor keygen --add-version FILE   (each server reloads its file at its next heartbeat)\n  \
    2. tresor keys rotate --wait          (activates the new version, re-wraps the keys)\n  \
    3. tresor keys retire OLD --master-key-file FILE   (once `status` shows 0 keys under OLD)\n\
    The admin token comes from TRESOR_ADMIN_TOKEN, else --token-file PATH, else TRESOR_TOKEN, \
    else ./tresor-data/admin.token.\n\
    Rotating one installation's data key: tresor keys rotate-installation ID\n\
    Exit codes: 0 success, 2 usage, 3 API error (409: a running server lacks the version, or \
    the installation is being rotated already; 404: no such installation), \
    4 transport or configuration error.")]
pub struct KeysArgs {
    #[command(flatten)]
    pub conn: ConnArgs,
    #[command(subcommand)]
    pub command: KeysCommand,
}

#[derive(Debug, clap::Subcommand)]
pub enum KeysCommand {
    /// Root key versions, which servers hold which, keys per version, re-wrap progress.
    Status,
    /// Activate the newest root key version every running server holds, and re-wrap every
    /// installation key under it in the background.
    Rotate {
        /// Wait until the re-wrap is done, printing its progress.
        #[arg(long)]
        wait: bool,
    },
    /// Remove VERSION from a key file, once no stored key is wrapped under it (asks the
    /// server first). Do it on every server's key file.
    Retire {
        /// The version id to remove.
        #[arg(value_name = "VERSION")]
        id: String,
        /// The key file to remove it from.
        #[arg(long = "master-key-file", value_name = "FILE")]
        file: PathBuf,
    },
    /// Re-seal one installation's records, credentials and OAuth flows under a new data key,
    /// which replaces its old one. Online: its writes wait while it runs.
    RotateInstallation {
        /// The installation id.
        #[arg(value_name = "ID")]
        id: String,
    },
}

pub async fn run(args: KeysArgs) -> CliResult {
    let session = connect(&args.conn, TokenKind::Admin)?;
    let admin = session.client.admin();
    match keys(&admin, args.command).await {
        Ok(outcome) => outcome,
        Err(err) => Err(session.fail(err)),
    }
}

async fn keys(admin: &AdminClient, command: KeysCommand) -> tresor_client::Result<CliResult> {
    match command {
        KeysCommand::Status => Ok(print_json(&admin.keys().await?).map(|()| EXIT_OK)),
        KeysCommand::Rotate { wait } => {
            let mut status = admin.rotate_keys().await?;
            while wait && status["rewrap"]["done"] != true {
                if status["rewrap"]["running"] != true && status["rewrap"]["last_error"].is_string()
                {
                    break;
                }
                eprintln!(
                    "re-wrapping under version {}: {} of {} keys left",
                    status["active"], status["rewrap"]["remaining"], status["rewrap"]["total"]
                );
                tokio::time::sleep(Duration::from_millis(500)).await;
                status = admin.keys().await?;
            }
            Ok(print_json(&status).map(|()| EXIT_OK))
        }
        KeysCommand::RotateInstallation { id } => {
            let answer = admin.rotate_installation_key(&id).await?;
            Ok(print_json(&answer).map(|()| EXIT_OK))
        }
        KeysCommand::Retire { id, file } => {
            let status = admin.keys().await?;
            Ok(retire(&status, &id, &file))
        }
    }
}

/// Removes `version` from `file` when `status` (the server's answer) shows it unused.
fn retire(status: &Value, version: &str, file: &std::path::Path) -> CliResult {
    if status["active"] == version {
        return Err(CliError::local(format!(
            "version `{version}` is the store's active version; rotate to a newer one first"
        )));
    }
    let used = status["wrapped"][version].as_u64().unwrap_or(0);
    if used > 0 {
        return Err(CliError::local(format!(
            "version `{version}` still wraps {used} keys of the store; wait until \
             `tresor keys status` shows 0 (the re-wrap runs in the background)"
        )));
    }
    if status["wrapped"].get("(other)").is_some() {
        return Err(CliError::local(
            "some keys of the store are wrapped under a version this server does not hold; \
             nothing retired",
        ));
    }
    RootKeyRing::remove_version_from_file(file, version)
        .map_err(|e| CliError::local(format!("cannot retire version `{version}`: {e}")))?;
    eprintln!(
        "removed version `{version}` from {}; do the same on every server's key file (each \
         reloads it at its next heartbeat)",
        file.display()
    );
    Ok(EXIT_OK)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn retire_refuses_a_version_in_use_or_active() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("root.key");
        RootKeyRing::generate_file(&file).unwrap();
        RootKeyRing::add_version_to_file(&file).unwrap();
        let busy = json!({"active": "2", "wrapped": {"1": 3, "2": 4}});
        assert!(retire(&busy, "1", &file).is_err());
        let active = json!({"active": "1", "wrapped": {"1": 0, "2": 7}});
        assert!(retire(&active, "1", &file).is_err());
        let unknown = json!({"active": "2", "wrapped": {"1": 0, "2": 7, "(other)": 1}});
        assert!(retire(&unknown, "1", &file).is_err());
        assert_eq!(
            RootKeyRing::load_file(&file).unwrap().version_ids(),
            ["1", "2"]
        );
        let done = json!({"active": "2", "wrapped": {"1": 0, "2": 7}});
        assert_eq!(retire(&done, "1", &file).unwrap(), EXIT_OK);
        assert_eq!(RootKeyRing::load_file(&file).unwrap().version_ids(), ["2"]);
    }
}
