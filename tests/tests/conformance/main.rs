//! The store conformance suite: the same behaviour tests against every store.
//!
//! Each case is a generic `async fn(store)` in [`store_cases`] (the storage contract, with
//! raw events), [`repository_cases`] (what `annals::Repository` guarantees on top of it)
//! or [`projection_cases`] (runners and inline projections). [`conformance!`] instantiates
//! every case once per store as a `#[tokio::test]`, each on a fresh store: a new
//! `MemoryStore`, a new SQLite file in a temporary directory, a new PostgreSQL schema
//! (dropped afterwards), and a new [`stream_only_store::StreamOnlyStore`], which has only the
//! stream and snapshot capabilities: the cases that need more are listed as ignored for it,
//! with the capability they need as the reason. With feature `dynamodb`, a new table on the
//! local DynamoDB server (`DYNAMODB_ENDPOINT`) runs the same stream cases, and lists the
//! others as ignored like the stream-only store.

mod catalog_cases;
mod domain;
mod projection_cases;
mod repository_cases;
mod store_cases;
mod stores;
mod stream_only_store;
mod validation_cases;

use annals::store::{
    CheckpointStore, EventLog, EventStore, LeaseStore, ParkingStore, SnapshotStore, TxStore,
    WakeUps,
};

/// What a repository needs of a store: streams and snapshots, and [`Log`] for the cases'
/// "nothing else changed" checks.
pub trait Streams: EventStore + SnapshotStore + Log {}

impl<S: EventStore + SnapshotStore + Log> Streams for S {}

/// The global log as a case sees it: `None` for a store that has none, on which the
/// stream cases check the streams alone.
pub trait Log {
    fn log(&self) -> impl std::future::Future<Output = Option<GlobalLog>> + Send;
}

/// The head and every event of a global log.
#[derive(Debug, Clone, PartialEq)]
pub struct GlobalLog {
    pub head: u64,
    pub events: Vec<annals::RecordedEvent>,
}

macro_rules! log_of_full_store {
    ($($store:ty),*) => {$(
        impl Log for $store {
            async fn log(&self) -> Option<GlobalLog> {
                Some(GlobalLog {
                    head: self.head().await.expect("head failed"),
                    events: crate::store_cases::read_all(self).await,
                })
            }
        }
    )*};
}

log_of_full_store!(annals::MemoryStore, annals::SqliteStore);
#[cfg(feature = "postgres")]
log_of_full_store!(annals::PgStore);

/// DynamoDB has no global log: its feed is the table's stream, a source for runners.
#[cfg(feature = "dynamodb")]
impl Log for annals::DynamoDbStore {
    async fn log(&self) -> Option<GlobalLog> {
        None
    }
}

impl Log for stream_only_store::StreamOnlyStore {
    async fn log(&self) -> Option<GlobalLog> {
        None
    }
}

/// The log's head, or `expected` on a store without a global log (nothing to check there).
pub async fn head_or<S: Log>(store: &S, expected: u64) -> u64 {
    store.log().await.map_or(expected, |log| log.head)
}

/// A store with every capability: what runners and inline projections need.
pub trait Store:
    Streams + EventLog + TxStore + CheckpointStore + LeaseStore + WakeUps + ParkingStore
{
}

impl<S> Store for S where
    S: Streams + EventLog + TxStore + CheckpointStore + LeaseStore + WakeUps + ParkingStore
{
}

/// Instantiates each listed case (`module::function`) as a test in `mod memory`,
/// `mod sqlite`, `mod postgres` (feature `postgres`) and `mod stream_only`, named after the
/// function. The `streams` cases ask only for [`Streams`]; the `full` ones (with the
/// capability they need) are ignored on the stream-only store.
macro_rules! conformance {
    (
        streams: [$($smodule:ident :: $scase:ident),* $(,)?],
        full: [$($fmodule:ident :: $fcase:ident ($needs:literal)),* $(,)?] $(,)?
    ) => {
        conformance!(@store memory, $($smodule::$scase,)* $($fmodule::$fcase,)*);
        conformance!(@store sqlite, $($smodule::$scase,)* $($fmodule::$fcase,)*);
        #[cfg(feature = "postgres")]
        conformance!(@store postgres, $($smodule::$scase,)* $($fmodule::$fcase,)*);

        #[cfg(feature = "dynamodb")]
        mod dynamodb {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $scase() {
                    let store = crate::stores::dynamodb().await;
                    crate::stores::run_then(
                        crate::$smodule::$scase(store.clone()),
                        crate::stores::drop_dynamodb(&store),
                    )
                    .await;
                }
            )*
            $(
                #[tokio::test]
                #[ignore = $needs]
                async fn $fcase() {}
            )*
        }

        mod stream_only {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $scase() {
                    crate::$smodule::$scase(crate::stream_only_store::StreamOnlyStore::new()).await;
                }
            )*
            $(
                #[tokio::test]
                #[ignore = $needs]
                async fn $fcase() {}
            )*
        }
    };
    (@store memory, $($module:ident :: $case:ident,)*) => {
        mod memory {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    crate::$module::$case(crate::stores::memory()).await;
                }
            )*
        }
    };
    (@store sqlite, $($module:ident :: $case:ident,)*) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    let (store, dir) = crate::stores::sqlite().await;
                    crate::stores::run_then(crate::$module::$case(store), async move {
                        drop(dir);
                    })
                    .await;
                }
            )*
        }
    };
    (@store postgres, $($module:ident :: $case:ident,)*) => {
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    let store = crate::stores::postgres().await;
                    crate::stores::run_then(
                        crate::$module::$case(store.clone()),
                        crate::stores::drop_postgres(&store),
                    )
                    .await;
                }
            )*
        }
    };
}

conformance! {
    streams: [
        validation_cases::event_types_and_versions_are_checked,
        store_cases::append_any,
        store_cases::append_no_stream,
        store_cases::append_exists,
        store_cases::append_exact,
        store_cases::wrong_expected_version_names_the_stream,
        store_cases::append_outcome_versions_and_positions,
        store_cases::empty_append_without_command_id,
        store_cases::streams_are_isolated,
        store_cases::read_stream_ranges,
        store_cases::read_stream_until,
        store_cases::load_stream_matches_read_stream,
        store_cases::metadata_round_trips,
        store_cases::payloads_round_trip,
        store_cases::command_id_appends_once,
        store_cases::command_id_with_another_fingerprint_is_refused,
        store_cases::empty_append_records_command_id,
        store_cases::hostile_ids_are_stored_verbatim,
        store_cases::invalid_ids_are_refused,
        store_cases::concurrent_appends_never_share_a_version,
        store_cases::snapshots_save_and_load,
        store_cases::large_numbers_never_wrap,
        store_cases::duplicate_event_id_is_refused,
        repository_cases::execute_checks_policies,
        repository_cases::upcasts_stored_old_versions,
        repository_cases::malformed_payload_is_a_decode_error,
        repository_cases::mistyped_payload_is_a_decode_error,
        repository_cases::unknown_event_type_is_a_decode_error,
        repository_cases::unknown_event_version_is_a_decode_error,
        repository_cases::no_lost_update,
        repository_cases::conflicts_surface_after_max_attempts,
        repository_cases::snapshot_every_n_events,
        repository_cases::load_uses_snapshot_and_newer_events,
        repository_cases::snapshot_version_change_ignores_snapshot,
        repository_cases::command_id_executes_once,
        repository_cases::command_id_without_events_executes_once,
        repository_cases::concurrent_command_id_executes_once,
        repository_cases::command_id_reused_on_another_stream_is_refused,
        repository_cases::command_id_reused_by_another_command_is_refused,
        repository_cases::load_at_version,
        repository_cases::load_as_of,
        repository_cases::long_streams_load_in_pages,
    ],
    full: [
        projection_cases::waiting_for_a_commands_position("needs checkpoints and the global log"),
        projection_cases::waiting_for_every_runner_of_a_set("needs checkpoints and the global log"),
        validation_cases::runner_names_are_checked("needs checkpoints and leases"),
        store_cases::stream_version_and_head("needs the global log (EventLog)"),
        store_cases::positions_strictly_increase("needs the global log (EventLog)"),
        store_cases::read_all_filters_event_types("needs the global log (EventLog)"),
        store_cases::read_all_pages("needs the global log (EventLog)"),
        store_cases::read_all_pages_through_every_filter("needs the global log (EventLog)"),
        store_cases::appends_in_a_transaction_commit_or_roll_back_with_it("needs transactions (TxStore)"),
        store_cases::checkpoints_move_by_compare_and_set("needs checkpoints (CheckpointStore)"),
        store_cases::checkpoints_carry_a_cursor("needs checkpoints (CheckpointStore)"),
        projection_cases::catch_up_applies_each_event_once("needs transactions, checkpoints, leases and wake-ups"),
        projection_cases::checkpoint_survives_the_runner("needs transactions, checkpoints, leases and wake-ups"),
        projection_cases::failing_handler_keeps_the_checkpoint("needs transactions, checkpoints, leases and wake-ups"),
        projection_cases::rebuild_replays_everything("needs transactions, checkpoints, leases and wake-ups"),
        projection_cases::status_reports_the_lag("needs transactions, checkpoints, leases and wake-ups"),
        projection_cases::leases_are_exclusive("needs transactions, checkpoints, leases and wake-ups"),
        projection_cases::run_wakes_on_appends("needs transactions, checkpoints, leases and wake-ups"),
        projection_cases::runner_follows_another_source("needs transactions, checkpoints and leases"),
        projection_cases::parking_sets_failing_events_aside("needs transactions, checkpoints and parking"),
        catalog_cases::streams_are_listed_in_pages("needs the stream catalog (StreamCatalog)"),
        projection_cases::inline_projection_commits_with_the_events("needs transactions, checkpoints, leases and wake-ups"),
        projection_cases::failing_inline_projection_appends_nothing("needs transactions, checkpoints, leases and wake-ups"),
    ],
}
