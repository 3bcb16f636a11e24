//! Serving the API until shutdown, over plain HTTP or HTTPS.

use tokio::sync::watch;

use super::routes::router;
use super::state::ApiState;

/// Where the API is served: plain HTTP, or HTTPS when a certificate is
/// configured.
pub enum HttpListener {
    Plain(tokio::net::TcpListener),
    Tls(super::https::TlsListener),
}

/// Serves until shutdown.
pub async fn serve(listener: HttpListener, state: ApiState, mut shutdown: watch::Receiver<bool>) {
    let stop = async move {
        let _ = shutdown.wait_for(|stop| *stop).await;
    };
    let result = match listener {
        HttpListener::Plain(l) => {
            axum::serve(l, router(state))
                .with_graceful_shutdown(stop)
                .await
        }
        HttpListener::Tls(l) => {
            axum::serve(l, router(state))
                .with_graceful_shutdown(stop)
                .await
        }
    };
    if let Err(e) = result {
        tracing::error!(error = %e, "HTTP server failed");
    }
}
