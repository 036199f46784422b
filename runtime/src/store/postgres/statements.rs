//! Every statement the store runs, built once per store with its schema quoted in.

use crate::store::sql::Sql;

use super::quote_ident;

/// The store's SQL, with the schema name quoted in once.
pub(super) struct Statements {
    pub(super) append_any: Sql,
    pub(super) append_new: Sql,
    pub(super) append_exists: Sql,
    pub(super) append_exact: Sql,
    pub(super) record_command: Sql,
    pub(super) stream_version: Sql,
    pub(super) command_outcome: Sql,
    pub(super) read_stream: Sql,
    pub(super) load_stream: Sql,
    pub(super) taken_event_id: Sql,
    pub(super) read_stream_until: Sql,
    pub(super) read_all: Sql,
    pub(super) read_all_types: Sql,
    pub(super) head: Sql,
    pub(super) save_snapshot: Sql,
    pub(super) load_snapshot: Sql,
    pub(super) checkpoint: Sql,
    pub(super) advance_checkpoint: Sql,
    pub(super) park: Sql,
    pub(super) parked: Sql,
    pub(super) resolve_parked: Sql,
    pub(super) update_parked: Sql,
}

const EVENT_COLUMNS: &str = "position, stream_type, stream_id, version, event_type, \
    event_version, event_id, command_id, correlation_id, causation_id, recorded_at, \
    headers::text, payload::text";

impl Statements {
    pub(super) fn new(schema: &str) -> Self {
        let schema = quote_ident(schema);
        let events = format!("{schema}.annals_events");
        let streams = format!("{schema}.annals_streams");
        let commands = format!("{schema}.annals_commands");
        let snapshots = format!("{schema}.annals_snapshots");
        let checkpoints = format!("{schema}.annals_checkpoints");
        let parked = format!("{schema}.annals_parked");
        let insert_stream = format!(
            "INSERT INTO {streams} AS s (stream_type, stream_id, version) \
             SELECT $1, $2, $3 WHERE NOT EXISTS (SELECT FROM prior) \
             ON CONFLICT (stream_type, stream_id)"
        );
        let update_stream = format!(
            "UPDATE {streams} AS s SET version = s.version + $3 \
             WHERE s.stream_type = $1 AND s.stream_id = $2 AND NOT EXISTS (SELECT FROM prior)"
        );
        let append = |stream: String| append_sql(&events, &commands, &stream);
        Statements {
            append_any: append(format!(
                "{insert_stream} DO UPDATE SET version = s.version + $3 RETURNING s.version"
            ))
            .into(),
            append_new: append(format!("{insert_stream} DO NOTHING RETURNING s.version")).into(),
            append_exists: append(format!("{update_stream} RETURNING s.version")).into(),
            append_exact: append(format!(
                "{update_stream} AND s.version = $15 RETURNING s.version"
            ))
            .into(),
            record_command: format!(
                "INSERT INTO {commands} \
                 (command_id, stream_type, stream_id, first_version, last_version, last_position) \
                 VALUES ($1, $2, $3, $4, $4, 0) ON CONFLICT (command_id) DO NOTHING"
            )
            .into(),
            stream_version: format!(
                "SELECT version FROM {streams} WHERE stream_type = $1 AND stream_id = $2"
            )
            .into(),
            command_outcome: format!(
                "SELECT first_version, last_version, last_position FROM {commands} \
                 WHERE command_id = $1"
            )
            .into(),
            read_stream: format!(
                "SELECT {EVENT_COLUMNS} FROM {events} \
                 WHERE stream_type = $1 AND stream_id = $2 AND version BETWEEN $3 AND $4 \
                 ORDER BY version"
            )
            .into(),
            taken_event_id: format!(
                "SELECT event_id FROM {events} WHERE event_id = ANY($1) ORDER BY position LIMIT 1"
            )
            .into(),
            load_stream: format!(
                "SELECT position, version, event_type, event_version, payload::text FROM {events} \
                 WHERE stream_type = $1 AND stream_id = $2 AND version BETWEEN $3 AND $4 \
                 ORDER BY version"
            )
            .into(),
            // Like the other stores, stop at the first event recorded after `until` (clocks
            // of several writers need not agree): the result is always a prefix.
            read_stream_until: format!(
                "SELECT {EVENT_COLUMNS} FROM {events} \
                 WHERE stream_type = $2 AND stream_id = $3 AND version BETWEEN $4 AND $5 \
                 AND version < coalesce((SELECT min(version) FROM {events} \
                     WHERE stream_type = $2 AND stream_id = $3 AND version >= $4 \
                     AND recorded_at > $1), 9223372036854775807) \
                 ORDER BY version"
            )
            .into(),
            read_all: format!(
                "SELECT {EVENT_COLUMNS} FROM {events} WHERE position > $1 \
                 ORDER BY position LIMIT $2"
            )
            .into(),
            read_all_types: format!(
                "SELECT {EVENT_COLUMNS} FROM {events} \
                 WHERE event_type = ANY($1) AND position > $2 ORDER BY position LIMIT $3"
            )
            .into(),
            head: format!("SELECT coalesce(max(position), 0) FROM {events}").into(),
            save_snapshot: format!(
                "INSERT INTO {snapshots} \
                 (stream_type, stream_id, version, snapshot_version, state) \
                 VALUES ($1, $2, $3, $4, $5::json) \
                 ON CONFLICT (stream_type, stream_id, version) DO UPDATE \
                 SET snapshot_version = excluded.snapshot_version, state = excluded.state, \
                     recorded_at = now()"
            )
            .into(),
            load_snapshot: format!(
                "SELECT version, snapshot_version, state::text FROM {snapshots} \
                 WHERE stream_type = $1 AND stream_id = $2 AND version <= $3 \
                 ORDER BY version DESC LIMIT 1"
            )
            .into(),
            checkpoint: format!("SELECT position, cursor FROM {checkpoints} WHERE name = $1")
                .into(),
            // Compare-and-set, a missing row reading as the default checkpoint ($6). A
            // concurrent mover holds the row (or the key, for a first insert) until it
            // commits; this statement then sees the committed checkpoint and does nothing.
            advance_checkpoint: format!(
                "WITH moved AS ( \
                     UPDATE {checkpoints} SET position = $4, cursor = $5, updated_at = now() \
                     WHERE name = $1 AND position = $2 AND cursor IS NOT DISTINCT FROM $3 \
                     RETURNING 1 \
                 ), \
                 created AS ( \
                     INSERT INTO {checkpoints} (name, position, cursor) \
                     SELECT $1, $4, $5 WHERE $6 AND NOT EXISTS (SELECT FROM moved) \
                     ON CONFLICT (name) DO NOTHING RETURNING 1 \
                 ) \
                 SELECT EXISTS (SELECT FROM moved) OR EXISTS (SELECT FROM created)"
            )
            .into(),
            park: format!(
                "INSERT INTO {parked} (runner, position, event_type, event, error, attempts) \
                 VALUES ($1, $2, $3, $4::jsonb, $5, $6) RETURNING id"
            )
            .into(),
            parked: format!(
                "SELECT id, runner, event::text, error, attempts, resolution, parked_at \
                 FROM {parked} WHERE ($1::text IS NULL OR runner = $1) \
                 AND ($2 OR resolved_at IS NULL) ORDER BY id"
            )
            .into(),
            resolve_parked: format!(
                "UPDATE {parked} SET resolved_at = now(), resolution = $2 \
                 WHERE id = $1 AND resolved_at IS NULL"
            )
            .into(),
            update_parked: format!("UPDATE {parked} SET error = $2, attempts = $3 WHERE id = $1")
                .into(),
        }
    }
}

/// One statement per append (one round trip): look up the command id, move the stream's
/// version (the variant `stream` decides how, per expected version; no row = mismatch),
/// take the append lock, insert the events, record the command, notify.
///
/// Parameters: $1 stream type, $2 stream id, $3 event count, $4..$7 arrays of event type,
/// event version, event id and payload, $8 command id, $9 correlation id, $10 causation id,
/// $11 recorded at, $12 headers, $13 append lock key, $14 channel, $15 expected version.
///
/// The CTEs run in data-dependency order: `claim` reads `stream`'s row, so the stream row
/// is locked before the append lock is taken, and the events are inserted from `claim`'s
/// row, so their positions are drawn after it.
fn append_sql(events: &str, commands: &str, stream: &str) -> String {
    format!(
        "WITH prior AS ( \
             SELECT first_version, last_version, last_position FROM {commands} \
             WHERE command_id = $8 \
         ), \
         stream AS ({stream}), \
         claim AS ( \
             SELECT s.version FROM stream s CROSS JOIN LATERAL pg_advisory_xact_lock($13) \
         ), \
         appended AS ( \
             INSERT INTO {events} (stream_type, stream_id, version, event_type, event_version, \
                 event_id, command_id, correlation_id, causation_id, recorded_at, headers, \
                 payload) \
             SELECT $1, $2, c.version - $3 + u.ord, u.event_type, u.event_version, u.event_id, \
                 $8, $9, $10, $11, $12::json, u.payload::json \
             FROM claim c, \
                 unnest($4::text[], $5::int4[], $6::uuid[], $7::text[]) WITH ORDINALITY \
                     AS u(event_type, event_version, event_id, payload, ord) \
             ORDER BY u.ord \
             RETURNING position \
         ), \
         last AS (SELECT max(position) AS position FROM appended), \
         command AS ( \
             INSERT INTO {commands} (command_id, stream_type, stream_id, first_version, \
                 last_version, last_position) \
             SELECT $8, $1, $2, c.version - $3 + 1, c.version, l.position \
             FROM claim c, last l WHERE $8::uuid IS NOT NULL \
         ) \
         SELECT false AS duplicate, c.version - $3 + 1, c.version, l.position, \
             (SELECT count(*) FROM pg_notify($14, l.position::text)) AS notified \
         FROM claim c, last l \
         UNION ALL \
         SELECT true, first_version, last_version, last_position, 0 FROM prior"
    )
}
