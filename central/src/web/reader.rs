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
    client: Mutex<Option<Arc<Client>>>,
}

impl Reader {
    pub fn new(url: String, tls: MakeRustlsConnect) -> Reader {
        Reader {
            url,
            tls,
            client: Mutex::new(None),
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
        client
            .batch_execute(
                "SET default_transaction_read_only = on; SET statement_timeout = '30s'; \
                 SET jit = off",
            )
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
