//! A client of the agent API for tests and benchmarks: a tonic channel over our rustls
//! client config (ALPN h2), authenticating the server as `spiffe://<td>/sigil/server`.

use std::net::SocketAddr;
use std::sync::Arc;

use hyper_util::rt::TokioIo;
use sigil_spiffe::tls::{TlsMaterial, client_config};
use sigil_spiffe::{Authorizer, SpiffeId};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tonic::transport::{Channel, Endpoint, Uri};
use tower::service_fn;

/// Connects to the agent API at `addr` presenting `material`'s SVID (or none).
pub(crate) async fn connect(
    addr: SocketAddr,
    material: Arc<TlsMaterial>,
    server_id: SpiffeId,
) -> Result<Channel, tonic::transport::Error> {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let mut config = client_config(material, Authorizer::exact(server_id)).unwrap();
    config.alpn_protocols = vec![b"h2".to_vec()];
    let connector = TlsConnector::from(Arc::new(config));
    Endpoint::from_shared(format!("https://{addr}"))
        .unwrap()
        .connect_with_connector(service_fn(move |_: Uri| {
            let connector = connector.clone();
            async move {
                let tcp = TcpStream::connect(addr).await?;
                // Without it, Nagle's algorithm holds back HTTP/2 window updates behind
                // delayed ACKs, and a client waiting on a large response stalls for tens of
                // milliseconds each time (tonic's own connector sets it too).
                tcp.set_nodelay(true)?;
                // SPIFFE authenticates the ID; the name only has to be well-formed.
                let name = rustls::pki_types::ServerName::try_from("sigil-server").unwrap();
                let tls = connector.connect(name, tcp).await?;
                Ok::<_, std::io::Error>(TokioIo::new(tls))
            }
        }))
        .await
}
