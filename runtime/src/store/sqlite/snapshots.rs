//! Snapshots, several per stream.

use crate::error::{Operation, StoreError};
use crate::store::{validate_stream, Snapshot, SnapshotStore, StreamRef};

use super::{to_i64, SqliteStore};
use crate::store::sql::snapshot;

impl SnapshotStore for SqliteStore {
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
        sqlx::query(
            "INSERT INTO annals_snapshots (stream_type, stream_id, version, snapshot_version, state) \
             VALUES (?1, ?2, ?3, ?4, ?5) \
             ON CONFLICT (stream_type, stream_id, version) DO UPDATE \
             SET snapshot_version = excluded.snapshot_version, state = excluded.state",
        )
        .bind(stream_type)
        .bind(stream_id)
        .bind(to_i64(snapshot.version, "snapshot version")?)
        .bind(i64::from(snapshot.snapshot_version))
        .bind(snapshot.state)
        .execute(&self.pool)
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
        let max = max_version.map_or(i64::MAX, |m| i64::try_from(m).unwrap_or(i64::MAX));
        let row = sqlx::query(
            "SELECT version, snapshot_version, state FROM annals_snapshots \
             WHERE stream_type = ?1 AND stream_id = ?2 AND version <= ?3 \
             ORDER BY version DESC LIMIT 1",
        )
        .bind(stream_type)
        .bind(stream_id)
        .bind(max)
        .fetch_optional(&self.pool)
        .await
        .map_err(|e| StoreError::database(Operation::LoadSnapshot, e))?;
        row.map(|row| snapshot::<_, i64>(&row, stream)).transpose()
    }
}
