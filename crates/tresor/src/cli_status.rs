//! `tresor status`: the running system at a glance, from `GET /v1/admin/status` (admin token).

use crate::cli_common::{CliResult, ConnArgs, EXIT_OK, TokenKind, connect, print_json};

/// Flags of `tresor status`.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Prints one JSON document: version, backend, this server's node id, what the \
    store holds (apps, accounts, installations, records, credentials, audit events, bytes on \
    disk), the root key versions (active, held by each server, keys per version, re-wrap \
    progress) and the last backup of the embedded store (`tresor backup`).\n\
    The admin token comes from TRESOR_ADMIN_TOKEN, else --token-file PATH, else TRESOR_TOKEN, \
    else ./tresor-data/admin.token.\n\
    Exit codes: 0 success, 3 API error, 4 transport or configuration error."
)]
pub struct StatusArgs {
    #[command(flatten)]
    pub conn: ConnArgs,
}

pub async fn run(args: StatusArgs) -> CliResult {
    let session = connect(&args.conn, TokenKind::Admin)?;
    match session.client.admin().status().await {
        Ok(status) => print_json(&status).map(|()| EXIT_OK),
        Err(err) => Err(session.fail(err)),
    }
}
