//! The HTTP/1.1 server of the API and metrics ports, bounded against slow and hostile clients:
//! a cap on open connections (further ones wait in the listen backlog, so keep-alive publishers
//! already connected are not starved), a deadline for a request's headers (slowloris: a client
//! sending them a byte at a time is cut off; an idle keep-alive connection counts as waiting for
//! headers), a header size limit (431 beyond), and a deadline for a whole request (408). Every
//! request carries the peer's address (`ConnectInfo`), which the security log records.
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ConnectInfo;
use axum::response::{IntoResponse, Response};
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tower::ServiceExt;

/// The bounds.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Connections open at once.
    pub max_connections: usize,
    /// Time a client has to send a request's headers (from the connection's start or the end of
    /// its previous response).
    pub header_read_timeout: Duration,
    /// Largest request head, in bytes.
    pub max_header_bytes: usize,
    /// Time for a whole request: reading its body and answering it.
    pub request_timeout: Duration,
    /// After the stop signal, how long requests in flight may take to finish.
    pub drain_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_connections: 1024,
            header_read_timeout: Duration::from_secs(10),
            max_header_bytes: 32 * 1024,
            request_timeout: Duration::from_secs(60),
            drain_timeout: Duration::from_secs(10),
        }
    }
}

/// Serves `router` on `listener` within `limits` until `shutdown` resolves, then lets requests in
/// flight finish (up to `drain_timeout`).
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: Limits,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) {
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(%addr, max_connections = limits.max_connections, "serving HTTP");
    }
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        let slot = tokio::select! {
            _ = &mut shutdown => break,
            slot = slots.clone().acquire_owned() => match slot {
                Ok(slot) => slot,
                Err(_) => break,
            },
        };
        let (tcp, peer) = tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of file descriptors, typically: back off instead of spinning.
                    tracing::warn!(%error, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let app = router.clone();
        let service = hyper::service::service_fn(move |request: hyper::Request<Incoming>| {
            answer(app.clone(), request, peer, limits.request_timeout)
        });
        let connection = hyper::server::conn::http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(limits.header_read_timeout)
            .max_header_size(limits.max_header_bytes)
            .serve_connection(TokioIo::new(tcp), service);
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(%peer, %error, "connection ended with an error");
            }
            drop(slot);
        });
    }
    drop(listener);
    if tokio::time::timeout(limits.drain_timeout, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("requests still in flight after the drain timeout were cut off");
    }
}

/// One request through the router, with the peer's address, within the request deadline.
async fn answer(
    app: Router,
    mut request: hyper::Request<Incoming>,
    peer: SocketAddr,
    timeout: Duration,
) -> Result<Response, Infallible> {
    request.extensions_mut().insert(ConnectInfo(peer));
    let request = request.map(axum::body::Body::new);
    match tokio::time::timeout(timeout, app.oneshot(request)).await {
        Ok(response) => response,
        Err(_) => Ok((
            http::StatusCode::REQUEST_TIMEOUT,
            format!("the request took longer than {} s", timeout.as_secs()),
        )
            .into_response()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;

    async fn start(limits: Limits) -> (SocketAddr, tokio::sync::oneshot::Sender<()>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let router = Router::new()
            .route("/", axum::routing::get(|| async { "ok" }))
            .route(
                "/peer",
                axum::routing::get(|ConnectInfo(peer): ConnectInfo<SocketAddr>| async move {
                    peer.ip().to_string()
                }),
            )
            .route(
                "/slow",
                axum::routing::post(
                    |body: axum::body::Bytes| async move { body.len().to_string() },
                ),
            );
        let (stop, stopped) = tokio::sync::oneshot::channel();
        tokio::spawn(serve(listener, router, limits, async {
            let _ = stopped.await;
        }));
        (addr, stop)
    }

    fn limits() -> Limits {
        Limits {
            max_connections: 4,
            header_read_timeout: Duration::from_millis(300),
            max_header_bytes: 8 * 1024,
            request_timeout: Duration::from_millis(500),
            drain_timeout: Duration::from_secs(1),
        }
    }

    /// Reads until the server closes the connection; what it sent.
    async fn until_closed(stream: &mut TcpStream) -> String {
        let mut out = Vec::new();
        let read =
            tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut out)).await;
        assert!(read.is_ok(), "the server closed the connection");
        String::from_utf8_lossy(&out).into_owned()
    }

    async fn get(addr: SocketAddr, path: &str) -> String {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        let request = format!("GET {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await.unwrap();
        until_closed(&mut stream).await
    }

    #[tokio::test]
    async fn a_client_sending_headers_a_byte_at_a_time_is_cut_off() {
        let (addr, _stop) = start(limits()).await;
        let mut slow = TcpStream::connect(addr).await.unwrap();
        let request = b"GET / HTTP/1.1\r\nhost: x\r\nx-padding: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n\r\n";
        let mut cut_off = false;
        for byte in request {
            if slow.write_all(&[*byte]).await.is_err() {
                cut_off = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let answer = if cut_off {
            String::new()
        } else {
            until_closed(&mut slow).await
        };
        assert!(
            !answer.contains("200 OK"),
            "the slow client was not answered: {answer}"
        );
        // Everyone else is.
        assert!(get(addr, "/").await.contains("200 OK"));
    }

    #[tokio::test]
    async fn idle_connections_are_closed_and_capped() {
        let (addr, _stop) = start(limits()).await;
        // Idle connections beyond the cap wait in the backlog; each is closed after the header
        // deadline, freeing its slot, so a real request still gets through.
        let mut idle = Vec::new();
        for _ in 0..8 {
            idle.push(TcpStream::connect(addr).await.unwrap());
        }
        assert!(get(addr, "/").await.contains("200 OK"));
        for stream in &mut idle {
            until_closed(stream).await;
        }
    }

    #[tokio::test]
    async fn oversized_headers_get_431_and_the_peer_is_known() {
        let (addr, _stop) = start(limits()).await;
        let mut stream = TcpStream::connect(addr).await.unwrap();
        let request = format!(
            "GET / HTTP/1.1\r\nhost: x\r\nx-big: {}\r\n\r\n",
            "a".repeat(16 * 1024)
        );
        stream.write_all(request.as_bytes()).await.unwrap();
        assert!(until_closed(&mut stream).await.starts_with("HTTP/1.1 431"));
        assert!(get(addr, "/peer").await.ends_with("127.0.0.1"));
    }

    #[tokio::test]
    async fn a_body_that_never_finishes_gets_408() {
        let (addr, _stop) = start(limits()).await;
        let mut stream = TcpStream::connect(addr).await.unwrap();
        let head = "POST /slow HTTP/1.1\r\nhost: x\r\ncontent-length: 100\r\n\r\npartial";
        stream.write_all(head.as_bytes()).await.unwrap();
        assert!(until_closed(&mut stream).await.starts_with("HTTP/1.1 408"));
    }
}
