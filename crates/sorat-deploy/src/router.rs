//! The traffic switch of blue-green targets: a TCP router that listens on the service's
//! port and hands every new connection to the slot that serves, so that switching slots is
//! one assignment. Connections already open stay with the slot they started on until they
//! close (the old slot keeps running for the scale-down delay, so they can finish).
//!
//! On an SSH host the same router runs as a process of its own ([`serve_folder`], the
//! hidden `sorat __route` command, uploaded by Sorat and kept up by the remote supervisor):
//! Sorat writes the wanted slot to a file and sends SIGHUP; the router answers in another.
//!
//! Written here rather than taken from a crate: what is needed is an accept loop and
//! `tokio::io::copy_bidirectional` per connection with a switchable backend, a few dozen
//! lines over tokio; the proxies on crates.io are HTTP reverse proxies with their own
//! configuration models.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Mutex, watch};
use tokio::task::JoinHandle;

/// How long the router tries to reach a slot before it gives the client up.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// A TCP router in front of a service's slots.
#[derive(Debug)]
pub struct Router {
    listen: SocketAddr,
    backend: watch::Sender<Option<SocketAddr>>,
    accept: Mutex<Option<JoinHandle<()>>>,
    open: Arc<AtomicUsize>,
}

impl Router {
    /// A router that will listen on `listen` once it is first given a backend.
    pub fn new(listen: SocketAddr) -> Router {
        let (backend, _) = watch::channel(None);
        Router {
            listen,
            backend,
            accept: Mutex::new(None),
            open: Arc::new(AtomicUsize::new(0)),
        }
    }

    /// The address it listens on.
    pub fn listen(&self) -> SocketAddr {
        self.listen
    }

    /// Where new connections go now.
    pub fn backend(&self) -> Option<SocketAddr> {
        *self.backend.borrow()
    }

    /// How many connections are open through it.
    pub fn open_connections(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }

    /// Sends new connections to `backend` from now on (none: they are closed at once);
    /// starts listening first when it does not yet.
    pub async fn route(&self, backend: Option<SocketAddr>) -> std::io::Result<()> {
        let mut accept = self.accept.lock().await;
        if accept.is_none() && backend.is_some() {
            let listener = TcpListener::bind(self.listen).await.map_err(|error| {
                std::io::Error::new(
                    error.kind(),
                    format!("cannot listen on {}: {error}", self.listen),
                )
            })?;
            *accept = Some(tokio::spawn(serve(
                listener,
                self.backend.subscribe(),
                Arc::clone(&self.open),
            )));
        }
        self.backend.send_replace(backend);
        tracing::debug!(listen = %self.listen, ?backend, "router switched");
        Ok(())
    }

    /// Stops listening and closes every connection through it.
    pub async fn close(&self) {
        self.backend.send_replace(None);
        if let Some(task) = self.accept.lock().await.take() {
            task.abort();
            let _ = task.await;
        }
    }
}

impl Drop for Router {
    fn drop(&mut self) {
        if let Ok(mut accept) = self.accept.try_lock()
            && let Some(task) = accept.take()
        {
            task.abort();
        }
    }
}

/// The file (in a router's folder) that says where new connections go: `PORT TOKEN`.
pub const BACKEND_FILE: &str = "backend";
/// The file a folder router writes once it routes as [`BACKEND_FILE`] says: the same line.
pub const ROUTED_FILE: &str = "routed";
/// The file a folder router writes its process id to once it handles SIGHUP.
pub const PID_FILE: &str = "router.pid";

/// Reads `dir/backend` (`PORT TOKEN`, the slot's port on 127.0.0.1 and a token naming the
/// request) and routes there; returns the line it routes by. A missing file is no backend.
async fn apply_backend_file(router: &Router, dir: &std::path::Path) -> std::io::Result<String> {
    let line = match tokio::fs::read_to_string(dir.join(BACKEND_FILE)).await {
        Ok(text) => text.trim().to_owned(),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(error) => return Err(error),
    };
    let backend = match line.split_whitespace().next() {
        None => None,
        Some(port) => {
            let port: u16 = port.parse().map_err(|_| {
                std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!("{BACKEND_FILE} starts with `{port}`, not a port"),
                )
            })?;
            Some(SocketAddr::from(([127, 0, 0, 1], port)))
        }
    };
    router.route(backend).await?;
    write_atomically(&dir.join(ROUTED_FILE), &format!("{line}\n")).await?;
    Ok(line)
}

async fn write_atomically(path: &std::path::Path, text: &str) -> std::io::Result<()> {
    let temporary = path.with_extension("tmp");
    tokio::fs::write(&temporary, text).await?;
    tokio::fs::rename(&temporary, path).await
}

/// Runs a router on `listen` driven by the files in `dir`, as an SSH host's router process
/// does: it routes as `backend` says at start and on every SIGHUP, confirming each time in
/// `routed`, and ends on SIGTERM or SIGINT (removing `router.pid`). A backend it cannot
/// apply at start (its port taken, a bad file) ends it with the error, and its supervisor
/// restarts it; later, one it cannot apply leaves the route as it was, unconfirmed.
pub async fn serve_folder(dir: &std::path::Path, listen: SocketAddr) -> std::io::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut hangup = signal(SignalKind::hangup())?;
    let mut terminate = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    let router = Router::new(listen);
    // The pid is written once SIGHUP is handled: a signal sent earlier would end the process.
    write_atomically(&dir.join(PID_FILE), &format!("{}\n", std::process::id())).await?;
    let result = async {
        let line = apply_backend_file(&router, dir).await?;
        tracing::info!(%listen, backend = %line, "router started");
        loop {
            tokio::select! {
                _ = hangup.recv() => match apply_backend_file(&router, dir).await {
                    Ok(line) => tracing::info!(backend = %line, "router switched"),
                    // Sorat sees no confirmation and says so; the route stays as it was.
                    Err(error) => tracing::warn!(%error, "router: cannot apply the backend file"),
                },
                _ = terminate.recv() => return Ok(()),
                _ = interrupt.recv() => return Ok(()),
            }
        }
    }
    .await;
    router.close().await;
    let _ = tokio::fs::remove_file(dir.join(PID_FILE)).await;
    result
}

async fn serve(
    listener: TcpListener,
    backend: watch::Receiver<Option<SocketAddr>>,
    open: Arc<AtomicUsize>,
) {
    // Dropping the set (when this task is aborted) aborts every connection's task.
    let mut connections = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (client, peer) = match accepted {
                    Ok(accepted) => accepted,
                    Err(error) => {
                        // Out of descriptors and the like: wait a little rather than spin.
                        tracing::warn!(%error, "router: accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let Some(target) = *backend.borrow() else {
                    continue;
                };
                let open = Arc::clone(&open);
                connections.spawn(async move {
                    open.fetch_add(1, Ordering::Relaxed);
                    if let Err(error) = forward(client, target).await {
                        tracing::debug!(%peer, %target, %error, "router: connection ended");
                    }
                    open.fetch_sub(1, Ordering::Relaxed);
                });
            }
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

async fn forward(mut client: TcpStream, target: SocketAddr) -> std::io::Result<()> {
    let mut server = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(target))
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out"))??;
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    tokio::io::copy_bidirectional(&mut client, &mut server).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A TCP server on loopback that answers every connection with `name` and closes.
    async fn named_server(name: &'static str) -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let _ = stream.write_all(name.as_bytes()).await;
            }
        });
        address
    }

    async fn ask(address: SocketAddr) -> std::io::Result<String> {
        let mut stream = TcpStream::connect(address).await?;
        let mut answer = String::new();
        stream.read_to_string(&mut answer).await?;
        Ok(answer)
    }

    fn loopback() -> SocketAddr {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap()
    }

    #[tokio::test]
    async fn new_connections_follow_the_switch_and_close_when_there_is_no_backend() {
        let blue = named_server("blue").await;
        let green = named_server("green").await;
        let router = Router::new(loopback());
        // Not listening before the first backend.
        assert!(TcpStream::connect(router.listen()).await.is_err());
        router.route(Some(blue)).await.unwrap();
        assert_eq!(ask(router.listen()).await.unwrap(), "blue");
        router.route(Some(green)).await.unwrap();
        assert_eq!(ask(router.listen()).await.unwrap(), "green");
        assert_eq!(router.backend(), Some(green));
        router.route(None).await.unwrap();
        assert_eq!(ask(router.listen()).await.unwrap_or_default(), "");
        router.close().await;
        assert!(TcpStream::connect(router.listen()).await.is_err());
    }

    #[tokio::test]
    async fn an_open_connection_stays_with_its_slot_across_a_switch() {
        // An echo server that prefixes its name: the connection opened before the switch
        // must keep talking to blue.
        async fn echo(name: &'static str) -> SocketAddr {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let address = listener.local_addr().unwrap();
            tokio::spawn(async move {
                while let Ok((mut stream, _)) = listener.accept().await {
                    tokio::spawn(async move {
                        let mut buffer = [0u8; 64];
                        while let Ok(read) = stream.read(&mut buffer).await {
                            if read == 0 {
                                break;
                            }
                            let mut answer = name.as_bytes().to_vec();
                            answer.extend_from_slice(&buffer[..read]);
                            if stream.write_all(&answer).await.is_err() {
                                break;
                            }
                        }
                    });
                }
            });
            address
        }
        let blue = echo("blue:").await;
        let green = echo("green:").await;
        let router = Router::new(loopback());
        router.route(Some(blue)).await.unwrap();
        let mut old = TcpStream::connect(router.listen()).await.unwrap();
        old.write_all(b"a").await.unwrap();
        let mut buffer = [0u8; 64];
        let read = old.read(&mut buffer).await.unwrap();
        assert_eq!(&buffer[..read], b"blue:a");
        router.route(Some(green)).await.unwrap();
        old.write_all(b"b").await.unwrap();
        let read = old.read(&mut buffer).await.unwrap();
        assert_eq!(&buffer[..read], b"blue:b");
        let mut new = TcpStream::connect(router.listen()).await.unwrap();
        new.write_all(b"c").await.unwrap();
        let read = new.read(&mut buffer).await.unwrap();
        assert_eq!(&buffer[..read], b"green:c");
        assert_eq!(router.open_connections(), 2);
    }

    #[tokio::test]
    async fn a_folder_router_follows_its_backend_file_on_each_hangup() {
        let blue = named_server("blue").await;
        let green = named_server("green").await;
        let dir = tempfile::tempdir().unwrap();
        let router = Router::new(loopback());
        let write = |port: u16, token: &str| {
            std::fs::write(dir.path().join(BACKEND_FILE), format!("{port} {token}\n")).unwrap();
        };
        // No file yet: nothing is routed and nothing listens.
        assert_eq!(apply_backend_file(&router, dir.path()).await.unwrap(), "");
        assert!(TcpStream::connect(router.listen()).await.is_err());
        write(blue.port(), "a");
        assert_eq!(
            apply_backend_file(&router, dir.path()).await.unwrap(),
            format!("{} a", blue.port())
        );
        assert_eq!(ask(router.listen()).await.unwrap(), "blue");
        assert_eq!(
            std::fs::read_to_string(dir.path().join(ROUTED_FILE)).unwrap(),
            format!("{} a\n", blue.port())
        );
        write(green.port(), "b");
        apply_backend_file(&router, dir.path()).await.unwrap();
        assert_eq!(ask(router.listen()).await.unwrap(), "green");
        // A bad file is an error and changes nothing.
        std::fs::write(dir.path().join(BACKEND_FILE), "green b\n").unwrap();
        let error = apply_backend_file(&router, dir.path()).await.unwrap_err();
        assert!(error.to_string().contains("not a port"), "{error}");
        assert_eq!(ask(router.listen()).await.unwrap(), "green");
        assert_eq!(
            std::fs::read_to_string(dir.path().join(ROUTED_FILE)).unwrap(),
            format!("{} b\n", green.port())
        );
    }

    #[tokio::test]
    async fn a_taken_port_is_a_clear_error() {
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let router = Router::new(taken.local_addr().unwrap());
        let error = router
            .route(Some(named_server("x").await))
            .await
            .unwrap_err();
        assert!(
            error.to_string().contains("cannot listen on 127.0.0.1:"),
            "{error}"
        );
    }
}
