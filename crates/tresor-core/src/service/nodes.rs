//! This server process in the store's node registry: an id new at every start, registered with
//! the root key versions the process holds (ids only, never key material), refreshed by a
//! heartbeat and removed at a clean shutdown. Key rotation reads the registry to activate only a
//! version that every live server holds.

use std::time::Duration;

use super::Service;
use crate::backend::NodeRow;
use crate::error::Result;

/// How often a running server refreshes its registration (its `last_seen`).
pub const NODE_HEARTBEAT: Duration = Duration::from_secs(30);

impl Service {
    /// This process's id in the node registry: `node_` and 16 hex digits, random per start.
    pub fn node_id(&self) -> &str {
        &self.node_id
    }

    /// Registers this process with the root key versions it holds, or refreshes the
    /// registration (the heartbeat); the backend stamps the times on its own clock.
    pub async fn register_node(&self) -> Result<()> {
        let row = NodeRow {
            node_id: self.node_id.clone(),
            key_versions: self.keys.root().version_ids(),
            started_at: 0,
            last_seen: 0,
        };
        self.backend.register_node(&row).await
    }

    /// Removes this process's registration (at a clean shutdown); true if it was there.
    pub async fn unregister_node(&self) -> Result<bool> {
        self.backend.unregister_node(&self.node_id).await
    }

    /// Every registered server process, in `node_id` order. A process that died without a clean
    /// shutdown stays until its registration is removed; `last_seen` tells how fresh each is.
    pub async fn nodes(&self) -> Result<Vec<NodeRow>> {
        self.backend.list_nodes().await
    }
}

/// How many of `nodes` are alive: registered or refreshed within three heartbeats of the
/// freshest registration (times compared on the backend's clock only, so the servers' clock
/// skew does not matter). A process that died without unregistering stops counting after
/// three heartbeats. At least 1.
pub fn live_node_count(nodes: &[NodeRow]) -> usize {
    live_nodes(nodes).len().max(1)
}

/// The registrations of [`live_node_count`].
pub(super) fn live_nodes(nodes: &[NodeRow]) -> Vec<&NodeRow> {
    let Some(freshest) = nodes.iter().map(|n| n.last_seen).max() else {
        return Vec::new();
    };
    let window = i64::try_from(NODE_HEARTBEAT.as_millis() * 3).unwrap_or(i64::MAX);
    let since = freshest.saturating_sub(window);
    nodes.iter().filter(|n| n.last_seen >= since).collect()
}

/// A new node id: 64 random bits, so two processes (on one machine or many) never share one.
pub(super) fn new_node_id() -> Result<String> {
    let bytes = tresor_crypto::random_bytes::<8>()?;
    let mut id = String::with_capacity(5 + 16);
    id.push_str("node_");
    for b in bytes {
        id.push_str(&format!("{b:02x}"));
    }
    Ok(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn live_nodes_are_those_seen_within_three_heartbeats_of_the_freshest() {
        let row = |last_seen: i64| NodeRow {
            node_id: String::new(),
            key_versions: Vec::new(),
            started_at: 0,
            last_seen,
        };
        assert_eq!(live_node_count(&[]), 1);
        let now = 1_000_000_000;
        let rows = [
            row(now),
            row(now - 30_000),
            row(now - 90_000),
            row(now - 90_001),
        ];
        assert_eq!(live_node_count(&rows), 3);
    }

    #[test]
    fn node_ids_are_prefixed_hex_and_distinct() {
        let a = new_node_id().unwrap();
        let b = new_node_id().unwrap();
        assert_ne!(a, b);
        for id in [&a, &b] {
            let hex = id.strip_prefix("node_").unwrap();
            assert_eq!(hex.len(), 16, "{id}");
            assert!(
                hex.bytes()
                    .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
            );
        }
    }
}
