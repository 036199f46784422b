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
    pub(super) read_log: Sql,
    pub(super) read_log_types: Sql,
    pub(super) log_tail: Sql,
    pub(super) log_pending: Sql,
    pub(super) settle_target: Sql,
    pub(super) settled: Sql,
    pub(super) reached: Sql,
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
             AND EXISTS (SELECT FROM locked) \
             ON CONFLICT (stream_type, stream_id)"
        );
        let update_stream = format!(
            "UPDATE {streams} AS s SET version = s.version + $3 \
             WHERE s.stream_type = $1 AND s.stream_id = $2 AND NOT EXISTS (SELECT FROM prior) \
             AND EXISTS (SELECT FROM locked)"
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
                 (command_id, stream_type, stream_id, first_version, last_version, last_position, \
                  fingerprint) \
                 VALUES ($1, $2, $3, $4, $4, 0, $5) ON CONFLICT (command_id) DO NOTHING"
            )
            .into(),
            stream_version: format!(
                "SELECT version FROM {streams} WHERE stream_type = $1 AND stream_id = $2"
            )
            .into(),
            command_outcome: format!(
                "SELECT first_version, last_version, last_position, fingerprint FROM {commands} \
                 WHERE command_id = $1"
            )
            .into(),
            read_stream: format!(
                "SELECT {EVENT_COLUMNS} FROM {events} \
                 WHERE stream_type = $1 AND stream_id = $2 AND version BETWEEN $3 AND $4 \
                 ORDER BY version LIMIT $5"
            )
            .into(),
            taken_event_id: format!(
                "SELECT event_id FROM {events} WHERE event_id = ANY($1) ORDER BY position LIMIT 1"
            )
            .into(),
            load_stream: format!(
                "SELECT position, version, event_type, event_version, payload::text FROM {events} \
                 WHERE stream_type = $1 AND stream_id = $2 AND version BETWEEN $3 AND $4 \
                 ORDER BY version LIMIT $5"
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
                 ORDER BY version LIMIT $6"
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
            read_log: read_log_sql(&format!(
                "SELECT {EVENT_COLUMNS}, tx_id, tx_id::text AS tx FROM {events} \
                 WHERE (tx_id, position) > ($1::text::xid8, $2) \
                 AND tx_id < (SELECT horizon FROM h) AND position > $3 \
                 ORDER BY tx_id, position LIMIT $4"
            ))
            .into(),
            // One index range per type (`annals_log_of_type`, migration 5), merged: the plan
            // needs no statistics to be good.
            read_log_types: read_log_sql(&format!(
                "SELECT e.* FROM unnest($5::text[]) AS t(wanted) CROSS JOIN LATERAL ( \
                     SELECT {EVENT_COLUMNS}, tx_id, tx_id::text AS tx \
                     FROM {schema}.annals_log_of_type(t.wanted, $1::text::xid8, $2, \
                         (SELECT horizon FROM h), $3, $4) \
                 ) e ORDER BY e.tx_id, e.position LIMIT $4"
            ))
            .into(),
            log_tail: format!(
                "SELECT coalesce(max(position), 0) FROM {events} WHERE tx_id < $1::text::xid8"
            )
            .into(),
            // Whether events after the cursor are readable, and whether some are committed
            // but still at or above the horizon (readable once older transactions end).
            log_pending: format!(
                "WITH h AS (SELECT pg_snapshot_xmin(pg_current_snapshot()) AS horizon) \
                 SELECT EXISTS (SELECT FROM {events}, h \
                     WHERE (tx_id, position) > ($1::text::xid8, $2) AND position > $3 \
                     AND tx_id < h.horizon), \
                 EXISTS (SELECT FROM {events}, h \
                     WHERE (tx_id, position) > ($1::text::xid8, $2) AND position > $3 \
                     AND tx_id >= h.horizon)"
            )
            .into(),
            settle_target: "SELECT pg_snapshot_xmax(pg_current_snapshot())::text"
                .to_owned()
                .into(),
            settled: "SELECT pg_snapshot_xmin(pg_current_snapshot()) >= $1::text::xid8"
                .to_owned()
                .into(),
            reached: format!(
                "SELECT c.position, c.cursor, \
                 (SELECT e.tx_id::text FROM {events} e WHERE e.position = $2) \
                 FROM {checkpoints} c WHERE c.name = $1"
            )
            .into(),
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

/// A read of the log after a cursor, bounded by the horizon (the oldest running
/// transaction): the page's events (the event columns, then `tx_id` as text at 13), and the
/// horizon (14), on a row of its own (event columns null) when the page is empty.
///
/// Parameters: $1 transaction id (text), $2 position, $3 floor, $4 limit, $5 types.
fn read_log_sql(page: &str) -> String {
    format!(
        "WITH h AS (SELECT pg_snapshot_xmin(pg_current_snapshot()) AS horizon), \
         page AS ({page}) \
         SELECT p.position, p.stream_type, p.stream_id, p.version, p.event_type, \
             p.event_version, p.event_id, p.command_id, p.correlation_id, p.causation_id, \
             p.recorded_at, p.headers, p.payload, p.tx, h.horizon::text \
         FROM h LEFT JOIN page p ON true ORDER BY p.tx_id, p.position"
    )
}

/// One statement per append (one round trip): look up the command id, take the stream's
/// advisory lock, move the stream's version (the variant `stream` decides how, per expected
/// version; no row = mismatch), insert the events, record the command.
///
/// Parameters: $1 stream type, $2 stream id, $3 event count, $4..$7 arrays of event type,
/// event version, event id and payload, $8 command id, $9 correlation id, $10 causation id,
/// $11 recorded at, $12 headers, $13 the stream's lock key, $14 the command's fingerprint,
/// $15 expected version.
///
/// The stream lock is taken before anything is written, so the transaction id (assigned at
/// the first write) of an append to a stream is drawn after the previous append to it
/// committed: the log's (transaction id, position) order keeps each stream's versions in
/// order. No lock spans streams: appends to different streams commit in parallel. The
/// events are inserted from `claim`'s row, so their positions are drawn after the stream row
/// is locked.
fn append_sql(events: &str, commands: &str, stream: &str) -> String {
    format!(
        "WITH prior AS ( \
             SELECT first_version, last_version, last_position, fingerprint FROM {commands} \
             WHERE command_id = $8 \
         ), \
         locked AS (SELECT pg_advisory_xact_lock($13)), \
         stream AS ({stream}), \
         claim AS (SELECT s.version FROM stream s), \
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
                 last_version, last_position, fingerprint) \
             SELECT $8, $1, $2, c.version - $3 + 1, c.version, l.position, $14 \
             FROM claim c, last l WHERE $8::uuid IS NOT NULL \
         ) \
         SELECT false AS duplicate, c.version - $3 + 1, c.version, l.position, $14::text \
         FROM claim c, last l \
         UNION ALL \
         SELECT true, first_version, last_version, last_position, fingerprint FROM prior"
    )
}
