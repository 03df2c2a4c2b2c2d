//! The publishing end: `WatchChanges` on the agent API port, for other servers only.

use std::pin::Pin;
use std::sync::Arc;

use sigil_proto::server::v1 as pb;
use sigil_proto::server::v1::peer_server::Peer;
use tokio::sync::{Notify, mpsc, watch};
use tokio_stream::Stream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use crate::agent_api::PeerInfo;
use crate::state::ServerState;

/// `sigil.server.v1.Peer`: notices of this server's commits.
#[derive(Debug)]
pub struct PeerEndpoint {
    state: Arc<ServerState>,
    instance: Arc<str>,
    stop: watch::Receiver<bool>,
    arrivals: Arc<Notify>,
}

impl PeerEndpoint {
    /// The endpoint of instance `instance`; its streams end when `stop` turns true (a
    /// graceful shutdown waits for open calls, and these would never end by themselves).
    /// Each caller is announced on `arrivals`: a server that just started follows this one
    /// before this one knows it runs, and this one's subscriber then looks at once.
    pub fn new(
        state: Arc<ServerState>,
        instance: &str,
        stop: watch::Receiver<bool>,
        arrivals: Arc<Notify>,
    ) -> Self {
        Self {
            state,
            instance: instance.into(),
            stop,
            arrivals,
        }
    }
}

type NoticeStream = Pin<Box<dyn Stream<Item = Result<pb::ChangeNotice, Status>> + Send>>;

#[tonic::async_trait]
impl Peer for PeerEndpoint {
    type WatchChangesStream = NoticeStream;

    async fn watch_changes(
        &self,
        request: Request<pb::WatchChangesRequest>,
    ) -> Result<Response<NoticeStream>, Status> {
        let peer = request
            .extensions()
            .get::<PeerInfo>()
            .ok_or_else(|| Status::internal("connection information missing"))?;
        // Only another server: an agent (or anyone else of the trust domain) learns nothing.
        // Entries can never name the server ID (its path is reserved), so only servers hold it.
        let caller_is_server = peer
            .svid
            .as_ref()
            .is_some_and(|(id, _)| id == self.state.server_id());
        if !caller_is_server {
            tracing::info!(addr = %peer.addr, "change notices refused: the caller is not a server");
            return Err(Status::permission_denied("permission denied"));
        }
        let addr = peer.addr;
        let caller = request.into_inner().instance_id;
        tracing::info!(peer = %caller, %addr, "another server follows this one's changes");
        self.arrivals.notify_one();
        let mut commits = self.state.datastore().commits();
        let mut stop = self.stop.clone();
        let instance = self.instance.to_string();
        // One slot: a notice not yet taken already says "read the feed", so later commits
        // need no slot of their own.
        let (sender, receiver) = mpsc::channel(1);
        tokio::spawn(async move {
            let notice = || pb::ChangeNotice {
                instance_id: instance.clone(),
            };
            // The first notice at once: it tells the caller whom it reached, and makes it read
            // the feed for whatever was committed before the stream existed.
            if sender.send(Ok(notice())).await.is_err() {
                return;
            }
            loop {
                tokio::select! {
                    changed = commits.changed() => if changed.is_err() { return },
                    _ = stop.wait_for(|stop| *stop) => return,
                    () = sender.closed() => {
                        tracing::info!(peer = %caller, %addr, "another server stopped following this one's changes");
                        return;
                    }
                }
                // Full: a notice is waiting already and covers this commit too.
                if let Err(mpsc::error::TrySendError::Closed(_)) = sender.try_send(Ok(notice())) {
                    return;
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(receiver))))
    }
}
