//! The web view's database connection: one client (tokio-postgres
//! pipelines concurrent queries over it), read-only, made again when the
//! server or the network dropped it.

use std::sync::Arc;

use tokio::sync::Mutex;
use tokio_postgres::Client;
use tokio_postgres_rustls::MakeRustlsConnect;

pub struct Reader {
    url: String,
    tls: MakeRustlsConnect,
    read_only: bool,
    client: Mutex<Option<Arc<Client>>>,
}

impl Reader {
    /// A connection that only reads (the web view).
    pub fn new(url: String, tls: MakeRustlsConnect) -> Reader {
        Reader {
            url,
            tls,
            read_only: true,
            client: Mutex::new(None),
        }
    }

    /// A connection that may also write (the mail sender's record).
    pub fn writable(url: String, tls: MakeRustlsConnect) -> Reader {
        Reader {
            read_only: false,
            ..Reader::new(url, tls)
        }
    }

    /// The connection, made first when there is none or it was lost.
    pub async fn client(&self) -> anyhow::Result<Arc<Client>> {
        let mut slot = self.client.lock().await;
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
