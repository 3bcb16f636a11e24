//! HTTPS for an axum server (the gateway's API and dashboard, the central
//! web view): a TLS listener axum serves from like a TCP one, so routing,
//! graceful shutdown and everything else stay shared.
//!
//! Handshakes run on their own tasks with a deadline: one client that opens
//! a connection and never finishes its handshake (or speaks plain HTTP to
//! the TLS port) must not hold up the next one.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

use crate::sync::LockExt;

/// Longest a client may take to complete its TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Finished handshakes waiting for axum to pick them up.
const READY_QUEUE: usize = 64;

/// A TCP listener that hands out connections after their TLS handshake.
pub struct TlsListener {
    local_addr: SocketAddr,
    ready: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    acceptor_task: JoinHandle<()>,
}

impl TlsListener {
    pub fn new(tcp: TcpListener, config: rustls::ServerConfig) -> std::io::Result<TlsListener> {
        let local_addr = tcp.local_addr()?;
        let mut config = config;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        let acceptor = TlsAcceptor::from(Arc::new(config));
        let (tx, ready) = mpsc::channel(READY_QUEUE);
        let acceptor_task = tokio::spawn(accept_loop(tcp, acceptor, tx));
        Ok(TlsListener {
            local_addr,
            ready,
            acceptor_task,
        })
    }
}

impl Drop for TlsListener {
    fn drop(&mut self) {
        self.acceptor_task.abort();
    }
}

async fn accept_loop(
    tcp: TcpListener,
    acceptor: TlsAcceptor,
    ready: mpsc::Sender<(TlsStream<TcpStream>, SocketAddr)>,
) {
    // Failed handshakes (port scanners, plain HTTP to the HTTPS port, a
    // client that does not trust our certificate) are logged, at most one
    // line a minute.
    let failures = Arc::new(std::sync::Mutex::new(
        crate::log_limit::RateLimitedLog::new(Duration::from_secs(60)),
    ));
    loop {
        let (stream, peer) = match tcp.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of file descriptors and the like: back off, not spin.
                tracing::warn!(error = %e, "HTTPS accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let handshake = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream));
        let ready = ready.clone();
        let failures = failures.clone();
        tokio::spawn(async move {
            let reason = match handshake.await {
                Ok(Ok(tls)) => {
                    let _ = ready.send((tls, peer)).await;
                    return;
                }
                Ok(Err(e)) => e.to_string(),
                Err(_) => "timed out".to_string(),
            };
            let admitted = failures
                .locked()
                .admit("handshake", std::time::Instant::now());
            if let Some(suppressed) = admitted {
                tracing::info!(%peer, suppressed, "HTTPS: TLS handshake failed: {reason}");
            }
        });
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(accepted) => accepted,
            // The accept loop only ends when aborted by our own Drop.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local_addr)
    }
}

/// A server configuration from a PEM certificate chain and its key, with
/// errors that name the files.
pub fn server_config(
    cert_file: &std::path::Path,
    key_file: &std::path::Path,
    what: &str,
) -> anyhow::Result<rustls::ServerConfig> {
    use rustls::pki_types::pem::PemObject;
    let chain = crate::tls::load_certs(cert_file, &format!("{what} certificate"))?;
    crate::secret_files::refuse_world_readable(key_file, &format!("{what} key"))?;
    let key_pem = std::fs::read(key_file)
        .map_err(|e| anyhow::anyhow!("cannot read {what} key {}: {e}", key_file.display()))?;
    let key = rustls::pki_types::PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| {
        anyhow::anyhow!(
            "{what} key {} holds no usable private key ({e}); expected a PEM \"PRIVATE KEY\" block",
            key_file.display()
        )
    })?;
    rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| {
            anyhow::anyhow!(
                "{what} key {} does not match certificate {} ({e})",
                key_file.display(),
                cert_file.display()
            )
        })
}
