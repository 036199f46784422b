//! Per backend: fresh databases for every workload, the W4 read model, and clean-up.

use std::collections::HashMap;
use std::future::Future;

// mod postgres;
// mod sqlite;

use annals::{CheckpointStore, EventStore, MemoryStore, Projection, SnapshotStore};

use crate::annals_runs::MemoryBalances;
use crate::cli::{Backend, Workload};
use crate::error::BenchError;
use crate::raw::RawBaseline;

// pub use postgres::PostgresSetup;
// pub use sqlite::SqliteSetup;

/// What the harness needs from a backend.
pub trait Setup {
    /// The backend's name in RESULT lines.
    const BACKEND: Backend;
    /// The annals store.
    type Store: EventStore + SnapshotStore + CheckpointStore;
    /// W4's projection, writing in the store's transaction.
    type ReadModel: Projection<<Self::Store as CheckpointStore>::Tx>;
    /// The raw sqlx baseline.
    type Raw: RawBaseline;

    /// A fresh, empty store for one workload.
    fn store(
        &mut self,
        workload: Workload,
    ) -> impl Future<Output = Result<Self::Store, BenchError>>;

    /// A fresh read model (its table created beside the store's) for W4.
    fn read_model(
        &mut self,
        store: &Self::Store,
    ) -> impl Future<Output = Result<Self::ReadModel, BenchError>>;

    /// What the read model holds: (version, balance) per account.
    fn balances(
        &mut self,
        store: &Self::Store,
        model: Self::ReadModel,
    ) -> impl Future<Output = Result<HashMap<String, (u64, u64)>, BenchError>>;

    /// A fresh raw baseline for one workload; `None` when the backend has none.
    fn raw(
        &mut self,
        workload: Workload,
    ) -> impl Future<Output = Result<Option<Self::Raw>, BenchError>>;

    /// Drops what the runs created.
    fn finish(self) -> impl Future<Output = Result<(), BenchError>>;
}

/// `MemoryStore`, with the read model in a `HashMap`; no raw baseline.
pub struct MemorySetup;

impl Setup for MemorySetup {
    const BACKEND: Backend = Backend::Memory;
    type Store = MemoryStore;
    type ReadModel = MemoryBalances;
    type Raw = crate::raw::sqlite::RawSqlite;

    async fn store(&mut self, _workload: Workload) -> Result<MemoryStore, BenchError> {
        Ok(MemoryStore::new())
    }

    async fn read_model(&mut self, _store: &MemoryStore) -> Result<MemoryBalances, BenchError> {
        Ok(MemoryBalances::default())
    }

    async fn balances(
        &mut self,
        _store: &MemoryStore,
        model: MemoryBalances,
    ) -> Result<HashMap<String, (u64, u64)>, BenchError> {
        Ok(model.accounts)
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
