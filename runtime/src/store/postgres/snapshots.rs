//! Snapshots, several per stream.

use crate::error::{Operation, StoreError};
use crate::store::{validate_stream, Snapshot, SnapshotStore, StreamRef};

use super::{to_i32, to_i64, PgStore};
use crate::store::sql::snapshot;

impl SnapshotStore for PgStore {
    async fn save_snapshot(
        &self,
        stream: StreamRef<'_>,
        snapshot: Snapshot,
    ) -> Result<(), StoreError> {
        let StreamRef {
            stream_type,
            stream_id,
        } = stream;
        validate_stream(stream)?;
        sqlx::query(&self.inner.sql.save_snapshot)
            .bind(stream_type)
            .bind(stream_id)
            .bind(to_i64(snapshot.version, "snapshot stream version")?)
            .bind(to_i32(snapshot.snapshot_version, "snapshot version")?)
            .bind(snapshot.state)
            .execute(&self.inner.pool)
            .await
            .map_err(|e| StoreError::database(Operation::SaveSnapshot, e))?;
        Ok(())
    }

    async fn load_snapshot(
        &self,
        stream: StreamRef<'_>,
        max_version: Option<u64>,
    ) -> Result<Option<Snapshot>, StoreError> {
        let StreamRef {
            stream_type,
            stream_id,
        } = stream;
        validate_stream(stream)?;
        let max = max_version.map_or(i64::MAX, |v| i64::try_from(v).unwrap_or(i64::MAX));
        let row = sqlx::query(&self.inner.sql.load_snapshot)
            .bind(stream_type)
            .bind(stream_id)
            .bind(max)
            .fetch_optional(&self.inner.pool)
            .await
            .map_err(|e| StoreError::database(Operation::LoadSnapshot, e))?;
        row.map(|row| snapshot::<_, i32>(&row, stream)).transpose()
    }
}
