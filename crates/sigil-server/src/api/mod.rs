//! The gRPC services of the server: the admin services served on the admin Unix socket
//! ([`admin_routes`], plus [`TrustDomainApi`], which `run` adds since it needs the running
//! federation fetchers). The agent API is in [`crate::agent_api`].

pub mod agent_admin;
pub mod bundle;
pub mod entry;
pub mod health;
pub mod status;
pub mod svid_admin;
pub mod trustdomain;

use std::sync::Arc;

use sigil_proto::server::v1::agent_server::AgentServer;
use sigil_proto::server::v1::bundle_server::BundleServer;
use sigil_proto::server::v1::entry_server::EntryServer;
use sigil_proto::server::v1::svid_server::SvidServer;
use tonic::service::Routes;
use tonic_health::pb::health_server::HealthServer;

pub use agent_admin::AgentAdminApi;
pub use bundle::BundleApi;
pub use entry::EntryApi;
pub use health::HealthApi;
pub use svid_admin::SvidAdminApi;
pub use trustdomain::TrustDomainApi;

use crate::state::ServerState;

/// Every service of the admin socket.
pub fn admin_routes(state: &Arc<ServerState>) -> Routes {
    Routes::new(EntryServer::new(EntryApi::new(Arc::clone(state))))
        .add_service(BundleServer::new(BundleApi::new(Arc::clone(state))))
        .add_service(SvidServer::new(SvidAdminApi::new(Arc::clone(state))))
        .add_service(AgentServer::new(AgentAdminApi::new(Arc::clone(state))))
        .add_service(HealthServer::new(HealthApi::new(Arc::clone(state))))
}
