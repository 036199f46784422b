-- Events, stream versions, command outcomes and snapshots.
--
-- Ids are hyphenated lowercase UUID text; times are integer unix microseconds (UTC), which
-- round-trip exactly and compare fast. STRICT keeps every column at its declared type.

CREATE TABLE annals_events (
    position       INTEGER PRIMARY KEY AUTOINCREMENT,
    stream_type    TEXT    NOT NULL,
    stream_id      TEXT    NOT NULL,
    version        INTEGER NOT NULL,
    event_type     TEXT    NOT NULL,
    event_version  INTEGER NOT NULL,
    event_id       TEXT    NOT NULL UNIQUE,
    command_id     TEXT,
    correlation_id TEXT,
    causation_id   TEXT,
    recorded_at    INTEGER NOT NULL,
    headers        TEXT    NOT NULL,
    payload        TEXT    NOT NULL,
    UNIQUE (stream_type, stream_id, version)
) STRICT;

-- Global reads filtered by event type: one index range per type, in position order.
CREATE INDEX annals_events_by_type ON annals_events (event_type, position);

-- The current version of every stream, so an append checks it with one key lookup.
CREATE TABLE annals_streams (
    stream_type TEXT    NOT NULL,
    stream_id   TEXT    NOT NULL,
    version     INTEGER NOT NULL,
    PRIMARY KEY (stream_type, stream_id)
) STRICT, WITHOUT ROWID;

-- The outcome of every append that carried a command id (idempotency).
CREATE TABLE annals_commands (
    command_id    TEXT    NOT NULL PRIMARY KEY,
    stream_type   TEXT    NOT NULL,
    stream_id     TEXT    NOT NULL,
    first_version INTEGER NOT NULL,
    last_version  INTEGER NOT NULL,
    last_position INTEGER NOT NULL
) STRICT, WITHOUT ROWID;

CREATE TABLE annals_snapshots (
    stream_type      TEXT    NOT NULL,
    stream_id        TEXT    NOT NULL,
    version          INTEGER NOT NULL,
    snapshot_version INTEGER NOT NULL,
    state            TEXT    NOT NULL,
    PRIMARY KEY (stream_type, stream_id, version)
) STRICT;
