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
    /// `auth.insecure`: said by `/healthz`.
    pub insecure: bool,
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
        "/healthz" if state.insecure => reply(
            StatusCode::OK,
            "text/plain",
            "ok, INSECURE: auth.insecure = true, any client of the broker can speak for any node\n"
                .into(),
        ),
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

/// What one client may hold.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Connections served at once; one more is closed at once (and counted in the log).
    pub max_connections: usize,
    /// A client must have sent its request head within this: a slow or silent client cannot
    /// hold a connection open.
    pub header_read_timeout: std::time::Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: 64,
            header_read_timeout: std::time::Duration::from_secs(10),
        }
    }
}
/// After a failed `accept` (out of file descriptors, say), wait this long before the next.
const ACCEPT_BACKOFF: std::time::Duration = std::time::Duration::from_millis(100);

/// Serves until shutdown; the listener is bound by the caller so a bad address fails early.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: AppState,
    shutdown: watch::Receiver<bool>,
) {
    serve_with(listener, state, shutdown, Limits::default()).await
}

pub async fn serve_with(
    listener: tokio::net::TcpListener,
    state: AppState,
    mut shutdown: watch::Receiver<bool>,
    limits: Limits,
) {
    let slots = Arc::new(tokio::sync::Semaphore::new(limits.max_connections));
    let mut refused: u64 = 0;
    loop {
        let (stream, peer): (tokio::net::TcpStream, SocketAddr) = tokio::select! {
            r = listener.accept() => match r {
                Ok(v) => v,
                Err(e) => {
                    tracing::warn!(error = %e, "HTTP accept failed");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                    continue;
                }
            },
            _ = shutdown.changed() => return,
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            refused += 1;
            if refused.is_power_of_two() {
                tracing::warn!(peer = %peer, max = limits.max_connections, refused_total = refused,
                    "HTTP connection refused: too many open");
            }
            drop(stream);
            continue;
        };
        let st = state.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let svc = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                let resp = route(&st, req.uri().path());
                async move { Ok::<_, Infallible>(resp) }
            });
            let io = hyper_util::rt::TokioIo::new(stream);
            if let Err(e) = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(limits.header_read_timeout)
                .serve_connection(io, svc)
                .await
            {
                tracing::debug!(peer = %peer, error = %e, "HTTP connection ended");
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// Reads until the server closes; the bytes read.
    async fn drain(c: &mut tokio::net::TcpStream) -> Vec<u8> {
        let mut buf = Vec::new();
        let _ =
            tokio::time::timeout(std::time::Duration::from_secs(5), c.read_to_end(&mut buf)).await;
        buf
    }

    #[tokio::test(flavor = "current_thread")]
    async fn silent_clients_are_cut_and_connections_capped() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let state = AppState {
            nodes: Arc::new(Mutex::new(Nodes::new(crate::liveness::Liveness::new(
                std::time::Duration::from_secs(15),
            )))),
            metrics: Arc::default(),
            insecure: false,
        };
        let (_tx, rx) = watch::channel(false);
        let limits = Limits {
            max_connections: 2,
            header_read_timeout: std::time::Duration::from_millis(300),
        };
        tokio::spawn(serve_with(listener, state, rx, limits));
        // two silent clients take both slots; a third is closed at once, unanswered
        let mut a = tokio::net::TcpStream::connect(addr).await.expect("a");
        let mut b = tokio::net::TcpStream::connect(addr).await.expect("b");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        let mut c = tokio::net::TcpStream::connect(addr).await.expect("c");
        let _ = c
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            .await;
        let t = std::time::Instant::now();
        assert!(drain(&mut c).await.is_empty(), "the third is not served");
        assert!(t.elapsed() < std::time::Duration::from_millis(250));
        // the silent ones are cut after the header timeout, freeing their slots
        drain(&mut a).await;
        drain(&mut b).await;
        assert!(t.elapsed() < std::time::Duration::from_secs(2));
        let mut d = tokio::net::TcpStream::connect(addr).await.expect("d");
        d.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .expect("write");
        let body = String::from_utf8_lossy(&drain(&mut d).await).to_string();
        assert!(
            body.starts_with("HTTP/1.1 200") && body.ends_with("ok\n"),
            "{body}"
        );
    }
}
