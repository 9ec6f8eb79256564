//! How an HTTP POST is sent: hyper 1 with rustls (ring) over tokio, one
//! bounded attempt at a time. Retries live with the callers, which know what
//! is worth retrying.

use std::time::Duration;

use bytes::Bytes;
use http::header::{HeaderName, HeaderValue, CONTENT_TYPE, RETRY_AFTER};
use http::{Method, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Full, Limited};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use crate::error::{Error, Result};

/// A response that arrived in time and within the size limit.
#[derive(Debug)]
pub(crate) struct HttpResponse {
    pub(crate) status: StatusCode,
    pub(crate) retry_after: Option<Duration>,
    pub(crate) body: Bytes,
}

/// A pooled HTTP/1.1 client for `http://` and `https://` endpoints.
#[derive(Clone, Debug)]
pub(crate) struct HttpClient {
    inner: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
}

impl HttpClient {
    /// A client that verifies TLS against the system's roots. Without any
    /// system roots it still works for `http://` and fails `https://`
    /// handshakes (rather than failing to start).
    pub(crate) fn new() -> Result<Self> {
        let provider = || std::sync::Arc::new(rustls::crypto::ring::default_provider());
        let builder = match hyper_rustls::HttpsConnectorBuilder::new()
            .with_provider_and_native_roots(provider())
        {
            Ok(b) => b,
            Err(_) => {
                let cfg = rustls::ClientConfig::builder_with_provider(provider())
                    .with_safe_default_protocol_versions()
                    .map_err(|e| Error::Http(format!("tls config: {e}")))?
                    .with_root_certificates(rustls::RootCertStore::empty())
                    .with_no_client_auth();
                hyper_rustls::HttpsConnectorBuilder::new().with_tls_config(cfg)
            }
        };
        let connector = builder.https_or_http().enable_http1().build();
        let inner = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .build(connector);
        Ok(Self { inner })
    }

    /// POSTs a JSON body; the whole exchange (connect, headers, body) must
    /// finish within `timeout` and the body must not exceed `max_bytes`.
    pub(crate) async fn post_json(
        &self,
        uri: &Uri,
        headers: &[(HeaderName, HeaderValue)],
        body: Bytes,
        timeout: Duration,
        max_bytes: usize,
    ) -> Result<HttpResponse> {
        let mut req = Request::builder()
            .method(Method::POST)
            .uri(uri.clone())
            .header(CONTENT_TYPE, "application/json");
        for (k, v) in headers {
            req = req.header(k, v);
        }
        let req = req
            .body(Full::new(body))
            .map_err(|e| Error::Http(format!("building request: {e}")))?;
        let exchange = async {
            let resp = self
                .inner
                .request(req)
                .await
                .map_err(|e| Error::Http(format!("{e}")))?;
            let status = resp.status();
            let retry_after = resp
                .headers()
                .get(RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u64>().ok())
                .map(Duration::from_secs);
            let body = Limited::new(resp.into_body(), max_bytes)
                .collect()
                .await
                .map_err(|e| Error::Http(format!("reading body: {e}")))?
                .to_bytes();
            Ok(HttpResponse {
                status,
                retry_after,
                body,
            })
        };
        match tokio::time::timeout(timeout, exchange).await {
            Ok(r) => r,
            Err(_) => Err(Error::Timeout(timeout.as_millis() as u64)),
        }
    }
}

/// The start of a body for error messages, lossily decoded.
pub(crate) fn snippet(body: &[u8]) -> String {
    let s = String::from_utf8_lossy(&body[..body.len().min(200)]);
    s.into_owned()
}
