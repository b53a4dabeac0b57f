//! The metrics and health listener: `GET /metrics`, `/healthz`, `/readyz` over HTTP/1.1,
//! served by hyper on a tokio runtime of its own (one thread, every connection a task).
//!
//! A slow or idle client costs a task and a socket, never another request's turn: a
//! kubelet probe answers while hundreds of connections sit open. Bounds: at most
//! [`MAX_CONNECTIONS`] at once (past that, new ones are closed at once), request headers
//! within [`HEADER_TIMEOUT`] and [`MAX_HEADER_BYTES`], and no connection lives longer than
//! [`CONNECTION_LIFETIME`] (which also bounds a reader that stops reading the answer).

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// Connections served at once; more are accepted and closed at once.
pub const MAX_CONNECTIONS: usize = 1024;
/// Time a client has to send a request's headers.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest life of one connection, keep-alive included.
pub const CONNECTION_LIFETIME: Duration = Duration::from_secs(60);
/// Largest request head read (hyper's smallest buffer).
pub const MAX_HEADER_BYTES: usize = 8 * 1024;

/// The media type of the protobuf exposition format.
pub const PROTOBUF: &str =
    "application/vnd.google.protobuf; proto=io.prometheus.client.MetricFamily; encoding=delimited";

/// The text exposition format's media type (the default).
pub const TEXT: &str = "text/plain; version=0.0.4";

/// Whether an `Accept` header asks for the protobuf exposition (Prometheus lists it
/// first when native histograms are enabled, with the text format as a fallback).
pub fn wants_protobuf(accept: &str) -> bool {
    accept.split(',').any(|part| {
        let p = part.trim();
        p.starts_with("application/vnd.google.protobuf")
            && p.contains("proto=io.prometheus.client.MetricFamily")
            && p.contains("encoding=delimited")
    })
}

/// What the listener answers from.
pub trait Endpoints: Send + Sync + 'static {
    /// The metrics in the text exposition format.
    fn metrics(&self) -> String;
    /// The same metrics in the protobuf exposition format.
    fn metrics_protobuf(&self) -> Vec<u8>;
    fn ready(&self) -> Result<(), String>;
}

/// Binds `addr` and serves until the process exits. Returns the bound address (port 0
/// picks a free port).
pub fn serve(addr: &str, endpoints: Arc<dyn Endpoints>) -> std::io::Result<SocketAddr> {
    let listener = std::net::TcpListener::bind(addr)?;
    listener.set_nonblocking(true)?;
    let local = listener.local_addr()?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        .build()?;
    std::thread::Builder::new()
        .name("slatrack-http".into())
        .spawn(move || runtime.block_on(accept(listener, endpoints)))?;
    Ok(local)
}

async fn accept(listener: std::net::TcpListener, endpoints: Arc<dyn Endpoints>) {
    let listener = match tokio::net::TcpListener::from_std(listener) {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(error = %e, "metrics listener cannot start; /metrics, /healthz and /readyz are not served");
            return;
        }
    };
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                // Out of file descriptors, most likely: wait for connections to close.
                tracing::warn!(error = %e, "metrics listener cannot accept a connection");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            tracing::debug!("metrics listener at {MAX_CONNECTIONS} connections: closing a new one");
            continue;
        };
        let endpoints = endpoints.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                let endpoints = endpoints.clone();
                async move { Ok::<_, Infallible>(answer(&*endpoints, &req)) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .max_buf_size(MAX_HEADER_BYTES)
                .serve_connection(TokioIo::new(stream), service);
            // Past its lifetime a connection is dropped, whatever it was doing.
            if let Ok(Err(e)) = tokio::time::timeout(CONNECTION_LIFETIME, conn).await {
                tracing::debug!(error = %e, "metrics connection ended with an error");
            }
            drop(slot);
        });
    }
}

fn answer(e: &dyn Endpoints, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    let text = |s: &str| Bytes::from(s.to_string());
    let (status, body, ctype) = if req.method() != Method::GET && req.method() != Method::HEAD {
        (
            StatusCode::METHOD_NOT_ALLOWED,
            text("GET only\n"),
            "text/plain",
        )
    } else {
        match req.uri().path() {
            "/metrics" => {
                let accept = req
                    .headers()
                    .get(hyper::header::ACCEPT)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("");
                if wants_protobuf(accept) {
                    (StatusCode::OK, Bytes::from(e.metrics_protobuf()), PROTOBUF)
                } else {
                    (StatusCode::OK, Bytes::from(e.metrics()), TEXT)
                }
            }
            "/healthz" => (StatusCode::OK, text("ok\n"), "text/plain"),
            "/readyz" => match e.ready() {
                Ok(()) => (StatusCode::OK, text("ready\n"), "text/plain"),
                Err(why) => (
                    StatusCode::SERVICE_UNAVAILABLE,
                    Bytes::from(format!("not ready: {why}\n")),
                    "text/plain",
                ),
            },
            _ => (
                StatusCode::NOT_FOUND,
                text("paths: /metrics /healthz /readyz\n"),
                "text/plain",
            ),
        }
    };
    let mut r = Response::new(Full::new(body));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(ctype));
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prometheus_accept_headers_choose_the_format() {
        // Prometheus 2.42 with --enable-feature=native-histograms, and without.
        assert!(wants_protobuf("application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=delimited;q=0.7,text/plain;version=0.0.4;q=0.3,*/*;q=0.2"));
        assert!(!wants_protobuf(
            "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1"
        ));
        assert!(!wants_protobuf("*/*"));
    }
}
