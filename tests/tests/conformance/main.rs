//! The store conformance suite: the same behaviour tests against every store.
//!
//! Each case is a generic `async fn(store)` in [`store_cases`] (the `EventStore` and
//! `SnapshotStore` contract, with raw events) or [`repository_cases`] (what
//! `annals::Repository` guarantees on top of it). [`conformance!`] instantiates every case
//! once per store as a `#[tokio::test]`, each on a fresh store: a new `MemoryStore`, a new
//! SQLite file in a temporary directory, a new PostgreSQL schema (dropped afterwards).

mod domain;
mod projection_cases;
mod repository_cases;
mod store_cases;
mod stores;

/// What every case needs of a store: what `annals::Repository` needs.
pub trait Store: annals::EventStore + annals::SnapshotStore + annals::CheckpointStore {}

impl<S: annals::EventStore + annals::SnapshotStore + annals::CheckpointStore> Store for S {}

/// Instantiates each listed case (`module::function`) as a test in `mod memory`,
/// `mod sqlite` and `mod postgres` (feature `postgres`), named after the function.
macro_rules! conformance {
    ($($module:ident :: $case:ident),* $(,)?) => {
        mod memory {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    crate::$module::$case(crate::stores::memory()).await;
                }
            )*
        }

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

        #[cfg(feature = "postgres")]
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
    store_cases::append_any,
    store_cases::append_no_stream,
    store_cases::append_exists,
    store_cases::append_exact,
    store_cases::wrong_expected_version_names_the_stream,
    store_cases::append_outcome_versions_and_positions,
    store_cases::empty_append_without_command_id,
    store_cases::stream_version_and_head,
    store_cases::streams_are_isolated,
    store_cases::read_stream_ranges,
    store_cases::read_stream_until,
    store_cases::load_stream_matches_read_stream,
    store_cases::read_all_pages,
    store_cases::read_all_filters_event_types,
    store_cases::positions_strictly_increase,
    store_cases::metadata_round_trips,
    store_cases::payloads_round_trip,
    store_cases::command_id_appends_once,
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
    repository_cases::load_at_version,
    repository_cases::load_as_of,
    projection_cases::catch_up_applies_each_event_once,
    projection_cases::checkpoint_survives_the_runner,
    projection_cases::failing_handler_keeps_the_checkpoint,
    projection_cases::rebuild_replays_everything,
    projection_cases::leases_are_exclusive,
    projection_cases::run_wakes_on_appends,
    projection_cases::inline_projection_commits_with_the_events,
    projection_cases::failing_inline_projection_appends_nothing,
}
