//! Per backend: fresh databases for every workload, the W4 read model, and clean-up.

use std::collections::HashMap;
use std::future::Future;
use std::time::Duration;

pub mod dynamodb;
mod postgres;
mod sqlite;

use annals::store::{CheckpointStore, EventLog, ParkingStore, SnapshotStore};
use annals::MemoryStore;

use crate::annals_runs::{self, MemoryBalances};
use crate::cli::{Backend, Workload};
use crate::error::BenchError;
use crate::raw::RawBaseline;

pub use postgres::PostgresSetup;
pub use sqlite::SqliteSetup;

/// What the harness needs from a backend.
pub trait Setup {
    /// The backend's name in RESULT lines.
    const BACKEND: Backend;
    /// The annals store.
    type Store: CheckpointStore + EventLog + ParkingStore + SnapshotStore;
    /// The raw sqlx baseline.
    type Raw: RawBaseline;

    /// A fresh, empty store for one workload.
    fn store(
        &mut self,
        workload: Workload,
    ) -> impl Future<Output = Result<Self::Store, BenchError>>;

    /// W4 on a store holding the seeded events: creates the read model beside the store,
    /// times `ProjectionRunner::catch_up()` with the backend's `#[projection]`, and reads
    /// back what the read model holds.
    fn replay(
        &mut self,
        store: Self::Store,
        batch: usize,
    ) -> impl Future<Output = Result<Replayed, BenchError>>;

    /// A fresh raw baseline for one workload; `None` when the backend has none.
    fn raw(
        &mut self,
        workload: Workload,
    ) -> impl Future<Output = Result<Option<Self::Raw>, BenchError>>;

    /// Drops what the runs created.
    fn finish(self) -> impl Future<Output = Result<(), BenchError>>;
}

/// What W4 through annals did.
#[derive(Debug)]
pub struct Replayed {
    /// Time spent in `catch_up()`.
    pub elapsed: Duration,
    /// Events the projection handled.
    pub handled: u64,
    /// (version, balance) per account, read back from the read model.
    pub balances: HashMap<String, (u64, u64)>,
}

/// `MemoryStore`, with the read model in a `HashMap`; no raw baseline.
pub struct MemorySetup;

impl Setup for MemorySetup {
    const BACKEND: Backend = Backend::Memory;
    type Store = MemoryStore;
    type Raw = crate::raw::sqlite::RawSqlite;

    async fn store(&mut self, _workload: Workload) -> Result<MemoryStore, BenchError> {
        Ok(MemoryStore::new())
    }

    async fn replay(&mut self, store: MemoryStore, batch: usize) -> Result<Replayed, BenchError> {
        let (elapsed, handled, model) =
            annals_runs::replay(store, MemoryBalances::default(), batch).await?;
        Ok(Replayed {
            elapsed,
            handled,
            balances: model.accounts,
        })
    }

    async fn raw(&mut self, _workload: Workload) -> Result<Option<Self::Raw>, BenchError> {
        Ok(None)
    }

    async fn finish(self) -> Result<(), BenchError> {
        Ok(())
    }
}

/// Reads `(account, version, balance)` rows of a `balances` table.
pub(crate) fn balance_rows(
    rows: Vec<(String, i64, i64)>,
) -> Result<HashMap<String, (u64, u64)>, BenchError> {
    rows.into_iter()
        .map(|(account, version, balance)| {
            Ok((
                account,
                (
                    crate::raw::to_u64("version", version)?,
                    crate::raw::to_u64("balance", balance)?,
                ),
            ))
        })
        .collect()
}
