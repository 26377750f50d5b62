//! Services that are in the contract but not built yet answer UNIMPLEMENTED, naming the
//! issue that builds them, so integrators can generate clients and code against them today.

use std::pin::Pin;

use tokio_stream::Stream;
use tonic::transport::server::Router;
use tonic::{Request, Response, Status, Streaming};

use crate::pb::v1::document_service_server::{DocumentService, DocumentServiceServer};
use crate::pb::v1::information_request_service_server::{
    InformationRequestService, InformationRequestServiceServer,
};
use crate::pb::v1::*;

pub fn not_built_yet(rpc: &str, issue: u32) -> Status {
    Status::unimplemented(format!(
        "{rpc} is part of the Jisr contract but not built yet (issue #{issue} builds it)"
    ))
}

/// Adds the contract's services that later issues build.
pub fn add_services<L>(router: Router<L>) -> Router<L> {
    router
        .add_service(InformationRequestServiceServer::new(NotBuilt))
        .add_service(DocumentServiceServer::new(NotBuilt))
}

#[derive(Debug, Clone, Copy)]
pub struct NotBuilt;

/// One impl of unary RPCs that all answer UNIMPLEMENTED.
macro_rules! not_built {
    ($trait:ident, $service:literal, issue $issue:literal, { $($method:ident($req:ty) -> $resp:ty = $rpc:literal;)* }) => {
        #[tonic::async_trait]
        impl $trait for NotBuilt {
            $(
                async fn $method(&self, request: Request<$req>) -> Result<Response<$resp>, Status> {
                    crate::auth::caller(&request)?; // records the request in the audit entry
                    Err(not_built_yet(concat!($service, "/", $rpc), $issue))
                }
            )*
        }
    };
}

not_built!(InformationRequestService, "jisr.v1.InformationRequestService", issue 6, {
    request_information(RequestInformationRequest) -> RequestInformationResponse = "RequestInformation";
    respond_to_information_request(RespondToInformationRequestRequest) -> RespondToInformationRequestResponse = "RespondToInformationRequest";
    get_information_request(GetInformationRequestRequest) -> GetInformationRequestResponse = "GetInformationRequest";
    list_information_requests(ListInformationRequestsRequest) -> ListInformationRequestsResponse = "ListInformationRequests";
});

type DownloadStream = Pin<Box<dyn Stream<Item = Result<DownloadDocumentResponse, Status>> + Send>>;

#[tonic::async_trait]
impl DocumentService for NotBuilt {
    async fn upload_document(
        &self,
        _: Request<Streaming<UploadDocumentRequest>>,
    ) -> Result<Response<UploadDocumentResponse>, Status> {
        Err(not_built_yet("jisr.v1.DocumentService/UploadDocument", 6))
    }

    type DownloadDocumentStream = DownloadStream;

    async fn download_document(
        &self,
        _: Request<DownloadDocumentRequest>,
    ) -> Result<Response<DownloadStream>, Status> {
        Err(not_built_yet("jisr.v1.DocumentService/DownloadDocument", 6))
    }
}
