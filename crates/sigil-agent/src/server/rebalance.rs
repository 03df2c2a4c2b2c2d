//! Moving back to the preferred server: after a failover the agent stays on the server it
//! moved to (its connection works), so every `interval` it checks whether a server ahead of
//! that one in its order of preference answers again, and moves when one does.
//!
//! Only an agent not on its first choice probes, and it probes only the servers it prefers, so
//! a trust domain whose servers are all up costs nothing here; when a server returns, the
//! agents that prefer it (about 1/N of them) move back, and no one else does.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use super::ServerChannel;
use crate::backoff::unit_random;

/// Checks every `interval` (with up to 20% jitter, so agents do not probe in step) until
/// `shutdown`.
pub async fn keep_preferred(
    server: Arc<ServerChannel>,
    interval: Duration,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        let wait = interval.mul_f64(0.8 + 0.2 * unit_random());
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            _ = shutdown.wait_for(|stop| *stop) => return,
        }
        // Not connected yet (or never): the next connection picks in order by itself.
        let Some(current) = server.connected() else {
            continue;
        };
        if let Some(preferred) = preferred_answering(&server, current).await {
            tracing::info!(from = %current, to = %preferred, "a preferred server answers; moving to it");
            if let Err(error) = server.move_to_preferred() {
                tracing::warn!("cannot move to the preferred server: {error}");
            }
        }
    }
}

/// The first server ahead of `current` in the order of preference that completes a
/// handshake. When `current` is no longer among the addresses (DNS changed), every server is
/// ahead of it.
async fn preferred_answering(server: &ServerChannel, current: SocketAddr) -> Option<SocketAddr> {
    for candidate in server.candidates().await {
        if candidate == current {
            return None;
        }
        match server.probe(candidate).await {
            Ok(()) => return Some(candidate),
            Err(error) => {
                tracing::debug!(server = %candidate, "preferred server still down: {error}")
            }
        }
    }
    None
}
