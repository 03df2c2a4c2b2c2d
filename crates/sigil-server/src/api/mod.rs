//! The gRPC services of the server: the admin services served on the admin Unix socket
//! ([`admin_routes`]), and the agent API (mTLS) next.

pub mod entry;
pub mod health;
pub mod status;

use std::sync::Arc;

use sigil_proto::server::v1::entry_server::EntryServer;
use tonic::service::Routes;
use tonic_health::pb::health_server::HealthServer;

pub use entry::EntryApi;
pub use health::HealthApi;

use crate::state::ServerState;

/// Every service of the admin socket.
pub fn admin_routes(state: &Arc<ServerState>) -> Routes {
    Routes::new(EntryServer::new(EntryApi::new(Arc::clone(state))))
        .add_service(HealthServer::new(HealthApi::new(Arc::clone(state))))
}
