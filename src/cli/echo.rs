//! The baseline `jisr bench --baseline` measures against: an echo of ReferralService over the
//! gateway's own transport (the same mTLS acceptor, client-certificate check, HTTP/2 server
//! settings and message types) that does no work. SubmitReferral answers the referral it was
//! sent, GetReferral a stored copy of one: the same bytes on the wire as the gateway, none of
//! the validation, audit, storage or delivery. What the gateway costs beyond it is ours.

use std::net::SocketAddr;
use std::pin::Pin;

use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_stream::Stream;
use tonic::{Request, Response, Status};

use crate::pb::v1::referral_service_server::{ReferralService, ReferralServiceServer};
use crate::pb::v1::*;
use crate::server::config::Config;
use crate::server::{transport, Listener};
use crate::tls::Registry;

/// The echo service.
#[derive(Clone)]
struct Echo {
    /// What GetReferral answers: a referral as the gateway would return it.
    stored: Referral,
}

type Events = Pin<Box<dyn Stream<Item = Result<WatchReferralEventsResponse, Status>> + Send>>;

#[tonic::async_trait]
impl ReferralService for Echo {
    async fn submit_referral(
        &self,
        request: Request<SubmitReferralRequest>,
    ) -> Result<Response<SubmitReferralResponse>, Status> {
        Ok(Response::new(SubmitReferralResponse {
            referral: request.into_inner().referral,
            audit_receipt: Some(AuditReceipt {
                log_id: "echo".into(),
                leaf_index: 0,
                leaf_hash: vec![0; 32],
            }),
        }))
    }

    async fn get_referral(
        &self,
        _request: Request<GetReferralRequest>,
    ) -> Result<Response<GetReferralResponse>, Status> {
        Ok(Response::new(GetReferralResponse {
            referral: Some(self.stored.clone()),
        }))
    }

    async fn list_referrals(
        &self,
        _request: Request<ListReferralsRequest>,
    ) -> Result<Response<ListReferralsResponse>, Status> {
        Err(Status::unimplemented(
            "the echo baseline answers Submit and Get only",
        ))
    }

    async fn update_referral_status(
        &self,
        _request: Request<UpdateReferralStatusRequest>,
    ) -> Result<Response<UpdateReferralStatusResponse>, Status> {
        Err(Status::unimplemented(
            "the echo baseline answers Submit and Get only",
        ))
    }

    type WatchReferralEventsStream = Events;

    async fn watch_referral_events(
        &self,
        _request: Request<WatchReferralEventsRequest>,
    ) -> Result<Response<Events>, Status> {
        Err(Status::unimplemented(
            "the echo baseline answers Submit and Get only",
        ))
    }
}

/// A running echo.
pub struct EchoServer {
    pub addr: SocketAddr,
    stop: watch::Sender<bool>,
    task: JoinHandle<Result<(), tonic::transport::Error>>,
}

impl EchoServer {
    /// Serves the echo on 127.0.0.1 (any port) with `config`'s TLS material and limits;
    /// GetReferral answers `stored`.
    pub async fn start(config: &Config, stored: Referral) -> anyhow::Result<EchoServer> {
        let mut config = config.clone();
        config.listen_addr = "127.0.0.1:0".parse()?;
        let Listener { addr, incoming, .. } =
            Listener::bind(&config, &Registry::new(config.agency_ids())).await?;
        let (stop, mut stopped) = watch::channel(false);
        let router = transport(&config).add_service(
            ReferralServiceServer::new(Echo { stored })
                .max_decoding_message_size(config.limits.max_message_bytes),
        );
        let task = tokio::spawn(router.serve_with_incoming_shutdown(incoming, async move {
            let _ = stopped.wait_for(|s| *s).await;
        }));
        Ok(EchoServer { addr, stop, task })
    }

    pub async fn stop(self) -> anyhow::Result<()> {
        let _ = self.stop.send(true);
        self.task.await??;
        Ok(())
    }
}
