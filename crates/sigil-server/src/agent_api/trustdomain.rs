//! The `TrustDomain` service on the agent API: every method is administrative, so each one
//! answers PermissionDenied, as the admin halves of the split services do, rather than the
//! `Unimplemented` an absent service would give.

use sigil_proto::server::v1 as pb;
use sigil_proto::server::v1::trust_domain_server::TrustDomain;
use tonic::{Request, Response, Status};

use super::attest::admin_only;

/// Refuses every call.
#[derive(Debug, Default)]
pub(super) struct TrustDomainDenied;

#[tonic::async_trait]
impl TrustDomain for TrustDomainDenied {
    async fn list_federation_relationships(
        &self,
        _request: Request<pb::ListFederationRelationshipsRequest>,
    ) -> Result<Response<pb::ListFederationRelationshipsResponse>, Status> {
        Err(admin_only())
    }

    async fn get_federation_relationship(
        &self,
        _request: Request<pb::GetFederationRelationshipRequest>,
    ) -> Result<Response<pb::FederationRelationship>, Status> {
        Err(admin_only())
    }

    async fn batch_create_federation_relationship(
        &self,
        _request: Request<pb::BatchCreateFederationRelationshipRequest>,
    ) -> Result<Response<pb::BatchFederationRelationshipResponse>, Status> {
        Err(admin_only())
    }

    async fn batch_update_federation_relationship(
        &self,
        _request: Request<pb::BatchUpdateFederationRelationshipRequest>,
    ) -> Result<Response<pb::BatchFederationRelationshipResponse>, Status> {
        Err(admin_only())
    }

    async fn batch_delete_federation_relationship(
        &self,
        _request: Request<pb::BatchDeleteFederationRelationshipRequest>,
    ) -> Result<Response<pb::BatchDeleteFederationRelationshipResponse>, Status> {
        Err(admin_only())
    }

    async fn refresh_bundle(
        &self,
        _request: Request<pb::RefreshBundleRequest>,
    ) -> Result<Response<pb::RefreshBundleResponse>, Status> {
        Err(admin_only())
    }
}
