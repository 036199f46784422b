//! Leases: a session advisory lock on a connection of its own.

use std::fmt;
use std::sync::PoisonError;
use std::time::Duration;

use sqlx::postgres::PgConnection;
use sqlx::Connection;

use crate::error::{Operation, StoreError};
use crate::store::{validate_runner_name, LeaseStore};

use super::{lock_key, PgStore};

/// How long a lease's connection may take to answer a ping before the lease counts as lost.
const LEASE_PING_TIMEOUT: Duration = Duration::from_secs(5);

impl LeaseStore for PgStore {
    type Lease = PgLease;

    async fn try_lease(&self, name: &str) -> Result<Option<PgLease>, StoreError> {
        validate_runner_name(name)?;
        const OP: Operation = Operation::Lease;
        let key = lock_key("projection", &format!("{}/{name}", self.inner.schema));
        let spare = self
            .inner
            .spare_lease_connection
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        let kept = match spare {
            // `Err`: the kept connection went away meanwhile; try on a new one.
            Some(mut connection) => try_advisory_lock(&mut connection, key)
                .await
                .ok()
                .map(|held| (connection, held)),
            None => None,
        };
        let (connection, held) = match kept {
            Some(kept) => kept,
            None => {
                let mut connection = self.lease_connection().await?;
                let held = try_advisory_lock(&mut connection, key)
                    .await
                    .map_err(|e| StoreError::database(OP, e))?;
                (connection, held)
            }
        };
        if !held {
            *self
                .inner
                .spare_lease_connection
                .lock()
                .unwrap_or_else(PoisonError::into_inner) = Some(connection);
            return Ok(None);
        }
        Ok(Some(PgLease {
            connection,
            projection: name.to_owned(),
        }))
    }

    async fn lease_alive<'a>(&'a self, lease: &'a mut PgLease) -> Result<bool, StoreError> {
        // A session lock lives as long as its session: a live connection still holds it.
        let ping = tokio::time::timeout(LEASE_PING_TIMEOUT, lease.connection.ping()).await;
        Ok(matches!(ping, Ok(Ok(()))))
    }
}

/// The lease of a projection on a [`PgStore`]: a session advisory lock held on a
/// connection of its own (keyed by schema and projection name). Dropping the lease closes
/// the connection, which releases the lock; so does the death of the holding process.
pub struct PgLease {
    connection: PgConnection,
    projection: String,
}

impl PgLease {
    /// The projection this lease is for.
    pub fn projection(&self) -> &str {
        &self.projection
    }
}

impl fmt::Debug for PgLease {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PgLease")
            .field("projection", &self.projection)
            .finish_non_exhaustive()
    }
}

async fn try_advisory_lock(connection: &mut PgConnection, key: i64) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
        .bind(key)
        .fetch_one(connection)
        .await
}

impl PgStore {
    /// A connection outside the pool, for a lease: it must not go back to the pool while
    /// holding the lock, and closing it must release the lock.
    async fn lease_connection(&self) -> Result<PgConnection, StoreError> {
        let options = (*self.inner.pool.connect_options())
            .clone()
            .application_name("annals projection lease");
        PgConnection::connect_with(&options)
            .await
            .map_err(|e| StoreError::database(Operation::Lease, e))
    }
}
