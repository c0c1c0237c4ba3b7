//! The hook behind the shredded list (DESIGN.md, "Cryptography"): an uninstall, or the
//! deletion of an app or an account, destroys namespace keys (crypto-shredding), but a backup
//! taken before still holds them wrapped. So each such deletion, once committed, is handed to a
//! [`ShreddedSink`] (the `tresor` binary appends it to a file beside the root key and syncs it)
//! before the request is answered, and `tresor restore` destroys those namespaces again in the
//! restored store.
//!
//! The namespaces are read just before the deletion commits. The one window: a namespace that
//! joins the deleted set between that read and the commit (an installation created inside an
//! app or account that is being deleted, or an uninstall racing an uninstall and reinstall of
//! the same id) is destroyed without being listed.

use std::sync::Arc;

use async_trait::async_trait;

use crate::backend::InstallationRow;
use crate::error::Result;
use crate::model::{Millis, Ns, now_millis};

use super::Service;

/// What a deletion destroyed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShreddedKind {
    /// An uninstall: the installation's namespace.
    Installation,
    /// An app: its shared store and every installation of it.
    App,
    /// An account: its credentials and every installation in it.
    Account,
}

impl ShreddedKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ShreddedKind::Installation => "installation",
            ShreddedKind::App => "app",
            ShreddedKind::Account => "account",
        }
    }
}

/// One committed deletion that destroyed namespace keys. Ids and namespace numbers only.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShreddedEntry {
    /// When the deletion was committed (this server's clock).
    pub at: Millis,
    pub kind: ShreddedKind,
    /// The id of the installation, app or account deleted.
    pub id: String,
    /// Every namespace whose key the deletion destroyed.
    pub namespaces: Vec<Ns>,
    /// The installations destroyed with it (the installation itself for an uninstall).
    pub installations: Vec<String>,
}

/// Where committed deletions are recorded.
#[async_trait]
pub trait ShreddedSink: Send + Sync {
    /// Records the entry durably (synced before it returns).
    async fn append(&self, entry: &ShreddedEntry) -> std::io::Result<()>;
    /// Where the list is, for log lines.
    fn location(&self) -> String;
}

impl Service {
    /// Records every later uninstall, app deletion and account deletion in `sink`.
    pub fn record_shredded_in(&mut self, sink: Arc<dyn ShreddedSink>) {
        self.shredded = Some(sink);
    }

    /// The entry of an uninstall of `row`, when a list is kept.
    pub(super) fn installation_shredding(&self, row: &InstallationRow) -> Option<ShreddedEntry> {
        self.shredded.as_ref()?;
        Some(ShreddedEntry {
            at: 0,
            kind: ShreddedKind::Installation,
            id: row.installation_id.clone(),
            namespaces: vec![row.ns],
            installations: vec![row.installation_id.clone()],
        })
    }

    /// What deleting the app will destroy, when a list is kept and the app exists.
    pub(super) async fn app_shredding(&self, app_id: &str) -> Result<Option<ShreddedEntry>> {
        if self.shredded.is_none() {
            return Ok(None);
        }
        let Some(app) = self.backend.get_app(app_id).await? else {
            return Ok(None);
        };
        let installations = self.backend.list_installations().await?;
        let doomed = installations.into_iter().filter(|i| i.app_id == app_id);
        Ok(Some(entry(ShreddedKind::App, app_id, app.ns, doomed)))
    }

    /// What deleting the account will destroy, when a list is kept and the account exists.
    pub(super) async fn account_shredding(
        &self,
        account_id: &str,
    ) -> Result<Option<ShreddedEntry>> {
        if self.shredded.is_none() {
            return Ok(None);
        }
        let Some(account) = self.backend.get_account(account_id).await? else {
            return Ok(None);
        };
        let installations = self.backend.list_installations().await?;
        let doomed = installations
            .into_iter()
            .filter(|i| i.account_id == account_id);
        Ok(Some(entry(
            ShreddedKind::Account,
            account_id,
            account.ns,
            doomed,
        )))
    }

    /// Records a committed deletion. A failure is logged loudly and the request still
    /// succeeds: the deletion is committed, and answering an error would only make the caller
    /// retry a deletion that finds nothing left to list.
    pub(super) async fn note_shredded(&self, entry: Option<ShreddedEntry>) {
        let (Some(sink), Some(mut entry)) = (&self.shredded, entry) else {
            return;
        };
        entry.at = now_millis();
        match sink.append(&entry).await {
            Ok(()) => tracing::info!(
                kind = entry.kind.as_str(),
                id = %entry.id,
                namespaces = ?entry.namespaces,
                list = %sink.location(),
                "recorded destroyed namespace keys in the shredded list"
            ),
            Err(e) => tracing::error!(
                error = %e,
                kind = entry.kind.as_str(),
                id = %entry.id,
                namespaces = ?entry.namespaces,
                list = %sink.location(),
                "the deletion is committed but could not be recorded in the shredded list: a \
                 restore of an older backup would bring these namespaces back; fix the file \
                 and record them (docs/operations.md, \"Backups and restore\")"
            ),
        }
    }
}

fn entry(
    kind: ShreddedKind,
    id: &str,
    own: Ns,
    installations: impl Iterator<Item = InstallationRow>,
) -> ShreddedEntry {
    let mut namespaces = vec![own];
    let mut ids = Vec::new();
    for i in installations {
        namespaces.push(i.ns);
        ids.push(i.installation_id);
    }
    ShreddedEntry {
        at: 0,
        kind,
        id: id.to_owned(),
        namespaces,
        installations: ids,
    }
}
