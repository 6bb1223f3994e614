//! The accept loop: serves a warp filter over hyper-util on our own listener, so the
//! connection (and later its TLS session and peer certificate) is ours to inspect before
//! routing.
//!
//! Per connection: a header read timeout (slow clients cannot hold a connection forever),
//! HTTP/1.1 and HTTP/2, graceful shutdown. Per listener: a cap on concurrent connections;
//! accept errors such as EMFILE back off instead of spinning.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::body::Incoming;
use hyper::Request;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use lxmetrics_core::daemon_metrics::{DaemonTelemetry, RequestResult};
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};
use tower_service::Service;
use warp::filters::BoxedFilter;
use warp::reply::Response;

use crate::caller::Caller;
use crate::routes::entity_type;

/// How long a client may take to send its request headers.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections served at once per listener; more wait in the kernel's backlog.
const MAX_CONNECTIONS: usize = 4096;
/// How long in-flight requests get to finish at shutdown.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(4);

/// A bound listener with what it serves.
pub struct HttpListener {
    listener: TcpListener,
    routes: BoxedFilter<(Response,)>,
    telemetry: Arc<DaemonTelemetry>,
}

impl HttpListener {
    /// Binds `addr` (dual-stack when it is `[::]`).
    pub fn bind(
        addr: SocketAddr,
        routes: BoxedFilter<(Response,)>,
        telemetry: Arc<DaemonTelemetry>,
    ) -> std::io::Result<Self> {
        let socket = socket2::Socket::new(
            socket2::Domain::for_address(addr),
            socket2::Type::STREAM,
            Some(socket2::Protocol::TCP),
        )?;
        if addr.is_ipv6() {
            socket.set_only_v6(false)?;
        }
        socket.set_reuse_address(true)?;
        socket.set_nonblocking(true)?;
        socket.bind(&addr.into())?;
        socket.listen(1024)?;
        let listener = TcpListener::from_std(socket.into())?;
        Ok(HttpListener {
            listener,
            routes,
            telemetry,
        })
    }

    /// The address actually bound (with the kernel's port when 0 was asked).
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until `shutdown` turns true, then lets in-flight requests finish for up to
    /// [`SHUTDOWN_GRACE`].
    pub async fn serve(self, mut shutdown: watch::Receiver<bool>) {
        let mut builder = auto::Builder::new(TokioExecutor::new());
        builder
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(HEADER_READ_TIMEOUT)
            .max_buf_size(64 * 1024);
        builder
            .http2()
            .timer(TokioTimer::new())
            .max_concurrent_streams(64)
            .max_header_list_size(64 * 1024);
        let builder = Arc::new(builder);
        let graceful = GracefulShutdown::new();
        let permits = Arc::new(Semaphore::new(MAX_CONNECTIONS));

        loop {
            let permit = tokio::select! {
                permit = permits.clone().acquire_owned() => match permit {
                    Ok(p) => p,
                    Err(_) => break,
                },
                _ = shutdown.wait_for(|stop| *stop) => break,
            };
            let accepted = tokio::select! {
                accepted = self.listener.accept() => accepted,
                _ = shutdown.wait_for(|stop| *stop) => break,
            };
            let (stream, _peer) = match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    // EMFILE and friends: wait for connections to close instead of spinning.
                    tracing::warn!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let _ = stream.set_nodelay(true);
            let service = request_service(
                self.routes.clone(),
                self.telemetry.clone(),
                Caller::PlainLoopback,
            );
            let builder = builder.clone();
            let watcher = graceful.watcher();
            tokio::spawn(async move {
                let _permit = permit;
                let connection = builder
                    .serve_connection(TokioIo::new(stream), service)
                    .into_owned();
                if let Err(e) = watcher.watch(connection).await {
                    tracing::debug!("connection ended: {e}");
                }
            });
        }
        drop(self.listener);
        if tokio::time::timeout(SHUTDOWN_GRACE, graceful.shutdown())
            .await
            .is_err()
        {
            tracing::warn!("some connections did not finish within {SHUTDOWN_GRACE:?}");
        }
    }
}

/// The per-connection hyper service: tags the request with its caller, runs the routes,
/// and counts the request for the daemon metrics.
fn request_service(
    routes: BoxedFilter<(Response,)>,
    telemetry: Arc<DaemonTelemetry>,
    caller: Caller,
) -> impl hyper::service::Service<
    Request<Incoming>,
    Response = Response,
    Error = Infallible,
    Future = impl Future<Output = Result<Response, Infallible>> + Send,
> + Clone {
    let warp_service = warp::service(routes);
    hyper::service::service_fn(move |mut request: Request<Incoming>| {
        request.extensions_mut().insert(caller.clone());
        let entity = entity_type(request.uri().path());
        let telemetry = telemetry.clone();
        let mut warp_service = warp_service.clone();
        async move {
            let _ongoing = telemetry.request_started();
            let response = warp_service.call(request).await?;
            telemetry.request_completed(
                entity,
                RequestResult::from_status(response.status().as_u16()),
            );
            Ok(response)
        }
    })
}
