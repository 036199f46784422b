//! Snapshots, several per stream.

use crate::error::{Operation, StoreError};
use crate::store::sql::stored_u64;
use crate::store::{validate_stream, Snapshot, SnapshotStore, StreamRef};

use super::reads::column;
use super::{to_i32, to_i64, PgStore};

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
        row.map(|row| {
            let version: i64 = column(&row, 0, "version", None)?;
            let snapshot_version: i32 = column(&row, 1, "snapshot_version", None)?;
            Ok(Snapshot {
                version: stored_u64(version, "snapshot stream version", None)?,
                snapshot_version: u32::try_from(snapshot_version).map_err(|_| {
                    StoreError::Corrupt {
                        position: None,
                        reason: format!(
                            "snapshot of {stream_type}/{stream_id} at version {version} has \
                             snapshot version {snapshot_version}"
                        ),
                    }
                })?,
                state: column(&row, 2, "state", None)?,
            })
        })
        .transpose()
    }
}
