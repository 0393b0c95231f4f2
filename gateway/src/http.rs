//! The gateway's HTTP endpoints: `/healthz`, `/metrics` (Prometheus text) and
//! `/api/v1/nodes` (JSON). A small hyper server: three read-only routes need no framework.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::{Request, Response, StatusCode};
use tokio::sync::watch;

use crate::metrics::Metrics;
use crate::nodes::Nodes;

#[derive(Clone)]
pub struct AppState {
    pub nodes: Arc<Mutex<Nodes>>,
    pub metrics: Arc<Metrics>,
}

fn reply(status: StatusCode, ctype: &str, body: String) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    if let Ok(v) = hyper::header::HeaderValue::from_str(ctype) {
        r.headers_mut().insert(hyper::header::CONTENT_TYPE, v);
    }
    r
}

fn route(state: &AppState, path: &str) -> Response<Full<Bytes>> {
    match path {
        "/healthz" => reply(StatusCode::OK, "text/plain", "ok\n".into()),
        "/metrics" => reply(
            StatusCode::OK,
            "text/plain; version=0.0.4",
            state.metrics.render(),
        ),
        "/api/v1/nodes" => {
            let list = state.nodes.lock().map(|n| n.list()).unwrap_or_default();
            let body = serde_json::json!({ "nodes": list });
            reply(StatusCode::OK, "application/json", body.to_string())
        }
        _ => reply(
            StatusCode::NOT_FOUND,
            "text/plain",
            "not found; try /healthz, /metrics or /api/v1/nodes\n".into(),
        ),
    }
}

/// Serves until shutdown; the listener is bound by the caller so a bad address fails early.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: AppState,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        let (stream, peer): (tokio::net::TcpStream, SocketAddr) = tokio::select! {
            r = listener.accept() => match r {
                Ok(v) => v,
                Err(e) => {
                    tracing::warn!(error = %e, "HTTP accept failed");
                    continue;
                }
            },
            _ = shutdown.changed() => return,
        };
        let st = state.clone();
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                let resp = route(&st, req.uri().path());
                async move { Ok::<_, Infallible>(resp) }
            });
            let io = hyper_util::rt::TokioIo::new(stream);
            if let Err(e) = hyper::server::conn::http1::Builder::new()
                .serve_connection(io, svc)
                .await
            {
                tracing::debug!(peer = %peer, error = %e, "HTTP connection ended");
            }
        });
    }
}
