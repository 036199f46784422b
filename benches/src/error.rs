//! The harness's error type.

use annals_examples::bank::AccountError;

/// Why a benchmark run failed.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// A raw sqlx baseline query failed.
    #[error("raw {backend} baseline: {operation} failed")]
    Sqlx {
        /// "sqlite" or "postgres".
        backend: &'static str,
        /// What the baseline was doing.
        operation: &'static str,
        /// The database error.
        #[source]
        source: sqlx::Error,
    },
    /// A file system operation failed.
    #[error("cannot {what}")]
    Io {
        /// What the harness was doing.
        what: &'static str,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// The annals store failed.
    #[error(transparent)]
    Store(#[from] annals::StoreError),
    /// annals could not load or decode an aggregate.
    #[error(transparent)]
    Load(#[from] annals::Error),
    /// annals did not execute a command.
    #[error(transparent)]
    Execute(#[from] annals::ExecuteError<AccountError>),
    /// The annals projection runner failed.
    #[error(transparent)]
    Projection(#[from] annals::ProjectionError),
    /// A raw baseline met an event it cannot decode.
    #[error("raw baseline: cannot decode event `{event_type}` of stream {stream_id} at version {version}")]
    Decode {
        /// Stream id.
        stream_id: String,
        /// Version within the stream.
        version: u64,
        /// Stored type name.
        event_type: String,
        /// The JSON error, if the type was known.
        #[source]
        source: Option<serde_json::Error>,
    },
    /// A raw baseline refused a command the plan expects to succeed.
    #[error("raw baseline refused a command on {stream_id}: {reason}")]
    Refused {
        /// Stream id.
        stream_id: String,
        /// Why.
        reason: String,
    },
    /// An event could not be encoded.
    #[error("cannot encode an event: {0}")]
    Encode(#[from] serde_json::Error),
    /// A number does not fit the database's integer type, or one read back is negative.
    #[error("{what} {value} is out of range")]
    OutOfRange {
        /// What the number is.
        what: &'static str,
        /// The value.
        value: i128,
    },
    /// A run finished but left the wrong state.
    #[error("verification failed: {0}")]
    Verify(String),
    /// A worker task panicked or was cancelled.
    #[error("worker task failed: {0}")]
    Join(#[from] tokio::task::JoinError),
}

/// Wraps a sqlx error of a raw baseline with what it was doing.
pub fn sqlx_error(
    backend: &'static str,
    operation: &'static str,
) -> impl FnOnce(sqlx::Error) -> BenchError {
    move |source| BenchError::Sqlx {
        backend,
        operation,
        source,
    }
}
