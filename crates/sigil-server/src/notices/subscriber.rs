//! The subscribing end: this server's row in `server_peers`, refreshed every [`TICK`], and a
//! `WatchChanges` stream to every other running server found there, each notice passed to the
//! feed follower through [`PeerNotices`].

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use sigil_proto::server::v1 as pb;
use sigil_proto::server::v1::peer_client::PeerClient;
use sigil_spiffe::tls::{TlsMaterial, client_config};
use sigil_spiffe::{Authorizer, SpiffeId};
use tokio::net::TcpStream;
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;
use tokio_rustls::TlsConnector;
use tonic::transport::{Channel, Endpoint, Uri};

use crate::datastore::{DataStore, PeerNotices, PeerRecord};

/// How often this server refreshes its row and reads the others' (and at once when a server
/// it does not follow yet follows it).
pub const TICK: Duration = Duration::from_secs(2);
/// A row refreshed within this many seconds is a running server's.
pub const FRESH_SECS: i64 = 20;
/// A row not refreshed for this many seconds is deleted when a server stops.
pub const STALE_SECS: i64 = 3600;
/// How long a connection to another server may take (TCP and TLS).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// The longest wait between two attempts to open a stream to a server: while one is not open
/// every follower reads the feed every 200 ms, so reopening soon matters more than the cost
/// of a refused handshake.
const MAX_RETRY: Duration = Duration::from_secs(2);

/// Who this server is, for the others: its instance, where it takes their streams, and the TLS
/// identity it presents to them.
pub struct Subscriber {
    /// The datastore the servers share.
    pub datastore: DataStore,
    /// This server's instance ID.
    pub instance: String,
    /// Where the others reach this one, `HOST:PORT`; `None`: they cannot (they poll).
    pub address: Option<String>,
    /// The server's own SVID and the bundle it trusts (kept current by its owner).
    pub material: Arc<TlsMaterial>,
    /// The server SPIFFE ID, the only one accepted at the other end.
    pub server_id: SpiffeId,
}

/// Keeps this server's row and a stream to every other running server until `shutdown`,
/// then deletes the row (and rows of servers long dead).
pub async fn subscribe_to_peers(
    me: Subscriber,
    notices: Arc<PeerNotices>,
    arrivals: Arc<Notify>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut streams: HashMap<String, (String, JoinHandle<()>)> = HashMap::new();
    loop {
        if let Err(error) = me
            .datastore
            .announce_peer(&me.instance, me.address.as_deref())
            .await
        {
            tracing::warn!(%error, "cannot refresh this server's row in server_peers");
        }
        match me.datastore.live_peers(&me.instance, FRESH_SECS).await {
            Ok(peers) => reconcile(&me, &peers, &mut streams, &notices),
            // Who runs is unknown: the follower reads the feed at the short interval.
            Err(error) => {
                tracing::warn!(%error, "cannot read the other servers' rows");
                notices.expect(None);
            }
        }
        tokio::select! {
            () = tokio::time::sleep(TICK) => {}
            () = arrivals.notified() => {}
            _ = shutdown.wait_for(|stop| *stop) => break,
        }
    }
    for (_, (_, task)) in streams {
        task.abort();
    }
    if let Err(error) = me.datastore.withdraw_peer(&me.instance, STALE_SECS).await {
        tracing::warn!(%error, "cannot delete this server's row in server_peers");
    }
}

/// Opens a stream to every running server not followed yet, ends those to servers gone (or
/// moved), and says how many streams cover them all.
fn reconcile(
    me: &Subscriber,
    peers: &[PeerRecord],
    streams: &mut HashMap<String, (String, JoinHandle<()>)>,
    notices: &Arc<PeerNotices>,
) {
    let unreachable: Vec<&str> = peers
        .iter()
        .filter(|peer| peer.address.is_none())
        .map(|peer| peer.instance_id.as_str())
        .collect();
    if !unreachable.is_empty() {
        tracing::debug!(
            ?unreachable,
            "servers without an advertised address: reading the feed every 200 ms"
        );
    }
    notices.expect(unreachable.is_empty().then_some(peers.len()));
    streams.retain(|instance, (address, task)| {
        let keep = peers.iter().any(|peer| {
            &peer.instance_id == instance && peer.address.as_deref() == Some(address.as_str())
        });
        if !keep {
            task.abort();
        }
        keep
    });
    for peer in peers {
        let Some(address) = &peer.address else {
            continue;
        };
        if streams.contains_key(&peer.instance_id) {
            continue;
        }
        let target = Target {
            instance: peer.instance_id.clone(),
            address: address.clone(),
            caller: me.instance.clone(),
            tls: match client_config(
                Arc::clone(&me.material),
                Authorizer::exact(me.server_id.clone()),
            ) {
                Ok(mut config) => {
                    config.alpn_protocols = vec![b"h2".to_vec()];
                    TlsConnector::from(Arc::new(config))
                }
                Err(error) => {
                    tracing::warn!(%error, "cannot make the tls configuration for change notices");
                    return;
                }
            },
        };
        let task = tokio::spawn(follow(target, Arc::clone(notices)));
        streams.insert(peer.instance_id.clone(), (address.clone(), task));
    }
}

/// One other server to follow.
struct Target {
    instance: String,
    address: String,
    caller: String,
    tls: TlsConnector,
}

/// Follows one server's notices, reopening the stream with backoff whenever it ends, until
/// aborted.
async fn follow(target: Target, notices: Arc<PeerNotices>) {
    let mut retry = Duration::from_millis(200);
    loop {
        match watch_once(&target, &notices).await {
            Ok(true) => retry = Duration::from_millis(200),
            Ok(false) => {}
            Err(error) => {
                tracing::debug!(peer = %target.instance, address = %target.address, "change notices: {error}")
            }
        }
        tokio::time::sleep(retry).await;
        retry = (retry * 2).min(MAX_RETRY);
    }
}

/// One stream: `Ok(true)` when it opened and later ended, `Ok(false)` when it reached another
/// instance than the row said, an error when it could not open or broke.
async fn watch_once(target: &Target, notices: &Arc<PeerNotices>) -> Result<bool, tonic::Status> {
    let mut stream = PeerClient::new(channel(target))
        .watch_changes(pb::WatchChangesRequest {
            instance_id: target.caller.clone(),
        })
        .await?
        .into_inner();
    let Some(first) = stream.message().await? else {
        return Ok(false);
    };
    if first.instance_id != target.instance {
        tracing::warn!(
            address = %target.address,
            expected = %target.instance,
            found = %first.instance_id,
            "another server answers at this address than the datastore says"
        );
        return Ok(false);
    }
    let _open = notices.stream_opened();
    tracing::info!(peer = %target.instance, address = %target.address, "following another server's change notices");
    // Commits made before the stream opened had no notice here.
    notices.notice();
    while stream.message().await?.is_some() {
        notices.notice();
    }
    tracing::info!(peer = %target.instance, "another server's change notices ended");
    Ok(true)
}

/// A channel to one server, TLS checked against the server SPIFFE ID.
fn channel(target: &Target) -> Channel {
    let tls = target.tls.clone();
    let address = target.address.clone();
    Endpoint::from_static("https://sigil-server").connect_with_connector_lazy(tower::service_fn(
        move |_: Uri| {
            let tls = tls.clone();
            let address = address.clone();
            async move {
                let open = async {
                    let tcp = TcpStream::connect(address.as_str()).await?;
                    tcp.set_nodelay(true)?;
                    // SPIFFE authenticates the server by its ID; the name is never checked.
                    let name = ServerName::try_from("sigil-server").expect("a valid DNS name");
                    tls.connect(name, tcp).await
                };
                let stream =
                    tokio::time::timeout(CONNECT_TIMEOUT, open)
                        .await
                        .map_err(|_| {
                            std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out")
                        })??;
                Ok::<_, std::io::Error>(TokioIo::new(stream))
            }
        },
    ))
}
