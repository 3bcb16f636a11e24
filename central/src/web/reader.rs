//! The web view's database connections: a few, used in turn, so the
//! queries of one page run side by side (one connection runs its queries
//! one after another); read-only; each made again when the server or the
//! network dropped it.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::sync::Mutex;
use tokio_postgres::Client;
use tokio_postgres_rustls::MakeRustlsConnect;

/// Connections kept: a page runs at most three queries at once, and a
/// fourth lets another page start meanwhile.
const CONNECTIONS: usize = 4;

pub struct Reader {
    url: String,
    tls: MakeRustlsConnect,
    read_only: bool,
    slots: Vec<Mutex<Option<Arc<Client>>>>,
    next: AtomicUsize,
}

impl Reader {
    /// Connections that only read (the web view).
    pub fn new(url: String, tls: MakeRustlsConnect) -> Reader {
        Reader {
            url,
            tls,
            read_only: true,
            slots: (0..CONNECTIONS).map(|_| Mutex::new(None)).collect(),
            next: AtomicUsize::new(0),
        }
    }

    /// One connection that may also write (the mail sender's record).
    pub fn writable(url: String, tls: MakeRustlsConnect) -> Reader {
        Reader {
            read_only: false,
            slots: vec![Mutex::new(None)],
            ..Reader::new(url, tls)
        }
    }

    /// The next connection in turn, made first when there is none or it
    /// was lost.
    pub async fn client(&self) -> anyhow::Result<Arc<Client>> {
        let n = self.next.fetch_add(1, Ordering::Relaxed) % self.slots.len();
        let mut slot = self.slots[n].lock().await;
        if let Some(client) = slot.as_ref().filter(|c| !c.is_closed()) {
            return Ok(client.clone());
        }
        let database = crate::database::Database::connect(&self.url, &self.tls).await?;
        let client = database.into_client();
        // A page only reads; a slow one gives up rather than pile up.
        let read_only = if self.read_only {
            "SET default_transaction_read_only = on; "
        } else {
            ""
        };
        client
            .batch_execute(&format!(
                "{read_only}SET statement_timeout = '30s'; SET jit = off"
            ))
            .await
            .map_err(|e| {
                anyhow::anyhow!(
                    "cannot set up the session: {}",
                    crate::database::describe(&e)
                )
            })?;
        let client = Arc::new(client);
        *slot = Some(client.clone());
        Ok(client)
    }
}
