//! `GET /v1/admin/status` (`tresor status`): what an operator looks at first — the backend,
//! this server, the root key versions and the re-wrap, and what the store holds.

use super::Service;
use super::rotation::KeysStatus;
use crate::audit::RequestContext;
use crate::backend::StoreCounts;
use crate::error::Result;
use crate::model::Principal;

/// The running system, as the service sees it.
#[derive(Debug, Clone)]
pub struct SystemStatus {
    /// The backend's short name (`sqlite`, `postgres`).
    pub backend: &'static str,
    /// This server in the node registry.
    pub node_id: String,
    pub counts: StoreCounts,
    pub keys: KeysStatus,
}

impl Service {
    /// The status of the running system; admin only, audited as a read.
    pub async fn status(&self, p: &Principal, ctx: &RequestContext) -> Result<SystemStatus> {
        self.admin(p, ctx, "admin.status", async || {
            let status = SystemStatus {
                backend: self.backend.name(),
                node_id: self.node_id.clone(),
                counts: self.backend.store_counts().await?,
                keys: self.key_status().await?,
            };
            self.audit_read(p, ctx, "admin.status")?;
            Ok(status)
        })
        .await
    }
}
