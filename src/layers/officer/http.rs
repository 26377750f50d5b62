//! The small HTTPS client of the officer verifier (JWKS fetches, introspection), on the
//! rest adapter's rustls connector.

use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use crate::common::error_chain;
use crate::tls::https::TlsConnector;

pub(super) struct HttpsClient {
    client: Client<TlsConnector, Full<Bytes>>,
    timeout: Duration,
}

impl HttpsClient {
    /// Trusts the CAs in `ca` (PEM); each exchange must finish within `timeout`.
    pub(super) fn new(ca: &Path, timeout: Duration) -> anyhow::Result<HttpsClient> {
        let connector = TlsConnector::new(ca, None)?;
        Ok(HttpsClient {
            client: Client::builder(TokioExecutor::new()).build(connector),
            timeout,
        })
    }

    /// Sends `request` and reads at most `limit` bytes of the answer. The error says what
    /// went wrong (never what was sent).
    pub(super) async fn send(
        &self,
        request: Request<Full<Bytes>>,
        limit: usize,
    ) -> Result<(StatusCode, Bytes), String> {
        let exchange = async {
            let response = self
                .client
                .request(request)
                .await
                .map_err(|e| error_chain(&e))?;
            let status = response.status();
            let body = Limited::new(response.into_body(), limit)
                .collect()
                .await
                .map_err(|e| format!("{status}, reading the answer: {}", error_chain(e.as_ref())))?
                .to_bytes();
            Ok((status, body))
        };
        tokio::time::timeout(self.timeout, exchange)
            .await
            .map_err(|_| format!("no answer within {} ms", self.timeout.as_millis()))?
    }
}
