//! The accept loops: serve a warp filter over hyper-util on our own listeners, so the
//! connection (its TLS session and peer certificate, or the unix socket) is ours to
//! inspect before routing. The caller goes into each request's extensions.
//!
//! Per connection: the TLS handshake runs in the connection's own task under a 10 s limit
//! (a slow or dead client never blocks the accept loop), a header read timeout, HTTP/1.1
//! and HTTP/2, graceful shutdown, and a lingering close (a response already written is
//! never lost to a reset; [`crate::lingering_close`]). Per listener: a cap on concurrent connections; accept
//! errors such as EMFILE back off instead of spinning.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use hyper::body::Incoming;
use hyper::Request;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use lxmetrics_core::daemon_metrics::{DaemonTelemetry, EntityType, RequestResult};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, UnixListener};
use tokio::sync::{watch, Semaphore};
use tokio_rustls::TlsAcceptor;
use tower_service::Service;
use warp::filters::BoxedFilter;
use warp::reply::Response;

use crate::caller::{Caller, PeerCertificate};
use crate::lingering_close::LingeringClose;

/// How long a client may take to finish the TLS handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a client may take to send its request headers.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections served at once per listener; more wait in the kernel's backlog.
const MAX_CONNECTIONS: usize = 4096;
/// How long in-flight requests get to finish at shutdown.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(4);

/// Where connections come from.
enum Socket {
    Tls(TcpListener, TlsAcceptor),
    Unix(UnixListener, PathBuf),
}

/// A bound listener with what it serves.
pub struct HttpListener {
    socket: Socket,
    routes: BoxedFilter<(Response,)>,
    telemetry: Arc<DaemonTelemetry>,
}

impl HttpListener {
    /// Binds a TLS listener on `addr` (dual-stack when it is `[::]`).
    pub fn bind_tls(
        addr: SocketAddr,
        tls: Arc<rustls::ServerConfig>,
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
            socket: Socket::Tls(listener, TlsAcceptor::from(tls)),
            routes,
            telemetry,
        })
    }

    /// Binds the unix socket at `path` (mode 0660), replacing a stale socket file.
    ///
    /// The socket is created with its final mode (a umask around `bind`), never
    /// `chmod`-ed afterwards: a chmod follows a symlink swapped in at the path, and a
    /// socket that is briefly wider open lets a local user in before the mode is set.
    /// Only a socket is ever removed from the path; anything else there is an error.
    pub fn bind_unix(
        path: &Path,
        routes: BoxedFilter<(Response,)>,
        telemetry: Arc<DaemonTelemetry>,
    ) -> std::io::Result<Self> {
        use std::os::unix::fs::FileTypeExt;
        match std::fs::symlink_metadata(path) {
            Ok(meta) if meta.file_type().is_socket() => {
                // A live daemon answers; a stale file from a crash is removed.
                if std::os::unix::net::UnixStream::connect(path).is_ok() {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::AddrInUse,
                        "another daemon is serving this state directory",
                    ));
                }
                std::fs::remove_file(path)?;
            }
            Ok(_) => {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::AlreadyExists,
                    "the path exists and is not a socket (a symlink or a file): remove it",
                ))
            }
            Err(_) => {}
        }
        let listener = {
            use rustix::fs::Mode;
            // Owner and group read/write, nothing for others: 0660 from the start.
            let previous = rustix::process::umask(Mode::from_raw_mode(0o117));
            let bound = UnixListener::bind(path);
            rustix::process::umask(previous);
            bound?
        };
        Ok(HttpListener {
            socket: Socket::Unix(listener, path.to_owned()),
            routes,
            telemetry,
        })
    }

    /// The address a TLS listener bound (with the kernel's port when 0 was asked).
    pub fn local_addr(&self) -> Option<SocketAddr> {
        match &self.socket {
            Socket::Tls(l, _) => l.local_addr().ok(),
            Socket::Unix(..) => None,
        }
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
            let context = Connection {
                builder: builder.clone(),
                watcher: graceful.watcher(),
                routes: self.routes.clone(),
                telemetry: self.telemetry.clone(),
            };
            let accepted = tokio::select! {
                accepted = accept(&self.socket) => accepted,
                _ = shutdown.wait_for(|stop| *stop) => break,
            };
            match accepted {
                Ok(Accepted::Tcp(stream, acceptor)) => {
                    tokio::spawn(async move {
                        let _permit = permit;
                        let _ = stream.set_nodelay(true);
                        let tls =
                            match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream))
                                .await
                            {
                                Ok(Ok(tls)) => tls,
                                Ok(Err(e)) => return tracing::debug!("TLS handshake failed: {e}"),
                                Err(_) => return tracing::debug!("TLS handshake timed out"),
                            };
                        let peer = tls
                            .get_ref()
                            .1
                            .peer_certificates()
                            .and_then(|chain| chain.first())
                            .map(|der| PeerCertificate::new(der));
                        context
                            .serve(LingeringClose::new(tls), Caller::Tls(peer))
                            .await;
                    });
                }
                Ok(Accepted::Unix(stream)) => {
                    tokio::spawn(async move {
                        let _permit = permit;
                        context
                            .serve(LingeringClose::new(stream), Caller::UnixSocket)
                            .await;
                    });
                }
                Err(e) => {
                    // EMFILE and friends: wait for connections to close instead of spinning.
                    tracing::warn!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
        if let Socket::Unix(_, path) = &self.socket {
            let _ = std::fs::remove_file(path);
        }
        drop(self.socket);
        if tokio::time::timeout(SHUTDOWN_GRACE, graceful.shutdown())
            .await
            .is_err()
        {
            tracing::warn!("some connections did not finish within {SHUTDOWN_GRACE:?}");
        }
    }
}

enum Accepted {
    Tcp(tokio::net::TcpStream, TlsAcceptor),
    Unix(tokio::net::UnixStream),
}

async fn accept(socket: &Socket) -> std::io::Result<Accepted> {
    match socket {
        Socket::Tls(listener, acceptor) => {
            let (stream, _) = listener.accept().await?;
            Ok(Accepted::Tcp(stream, acceptor.clone()))
        }
        Socket::Unix(listener, _) => Ok(Accepted::Unix(listener.accept().await?.0)),
    }
}

/// What serving one connection needs.
struct Connection {
    builder: Arc<auto::Builder<TokioExecutor>>,
    watcher: Watcher,
    routes: BoxedFilter<(Response,)>,
    telemetry: Arc<DaemonTelemetry>,
}

impl Connection {
    async fn serve<I>(self, io: I, caller: Caller)
    where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let service = request_service(self.routes, self.telemetry, caller);
        let connection = self
            .builder
            .serve_connection(TokioIo::new(io), service)
            .into_owned();
        if let Err(e) = self.watcher.watch(connection).await {
            tracing::debug!("connection ended: {e}");
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
        let entity = EntityType::of_path(request.uri().path());
        // HEAD is answered as GET without the body, on HTTP/1.1 and HTTP/2 alike (HTTP/2
        // does not strip a body the server sends, and a client treats one as a
        // protocol error).
        let head = request.method() == http::Method::HEAD;
        if head {
            *request.method_mut() = http::Method::GET;
        }
        let telemetry = telemetry.clone();
        let mut warp_service = warp_service.clone();
        async move {
            let _ongoing = telemetry.request_started(entity);
            let response = warp_service.call(request).await?;
            telemetry.request_completed(
                entity,
                RequestResult::from_status(response.status().as_u16()),
            );
            Ok(if head {
                without_body(response)
            } else {
                response
            })
        }
    })
}

/// A HEAD response: the GET response's head, its length in `Content-Length` (as the
/// handler said it, or as the body knows it), no body.
fn without_body(response: Response) -> Response {
    let (mut head, body) = response.into_parts();
    if let Some(length) = http_body::Body::size_hint(&body).exact() {
        head.headers
            .entry(http::header::CONTENT_LENGTH)
            .or_insert_with(|| http::HeaderValue::from(length));
    }
    Response::from_parts(head, Default::default())
}
