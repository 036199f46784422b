-- Command fingerprints beside command ids, and stream versions that must be positive.
--
-- `fingerprint` tells a repeated command (same id, same command: its first outcome is
-- returned) from a different command reusing the id (refused). Records written before
-- this migration have none and compare equal to anything.
ALTER TABLE annals_commands ADD COLUMN fingerprint TEXT;

-- SQLite adds a CHECK constraint only by rebuilding the table: a new table with the
-- constraint, the rows copied with their positions, the old one dropped, the new one
-- renamed. The migration runs in one transaction, so a failure leaves the old table. A
-- database holding a version of 0 or below (corrupted by hand) fails here, naming the
-- constraint, rather than migrating with the corruption in place.
CREATE TABLE annals_events_rebuilt (
    position       INTEGER PRIMARY KEY AUTOINCREMENT,
    stream_type    TEXT    NOT NULL,
    stream_id      TEXT    NOT NULL,
    version        INTEGER NOT NULL CONSTRAINT annals_events_version_positive CHECK (version > 0),
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

INSERT INTO annals_events_rebuilt (position, stream_type, stream_id, version, event_type,
    event_version, event_id, command_id, correlation_id, causation_id, recorded_at, headers,
    payload)
SELECT position, stream_type, stream_id, version, event_type, event_version, event_id,
    command_id, correlation_id, causation_id, recorded_at, headers, payload
FROM annals_events ORDER BY position;

-- AUTOINCREMENT never hands out a position twice, even after the last events were
-- deleted: carry the old table's counter over, not just the highest position copied.
UPDATE sqlite_sequence
SET seq = MAX(seq, COALESCE((SELECT seq FROM sqlite_sequence WHERE name = 'annals_events'), 0))
WHERE name = 'annals_events_rebuilt';
INSERT INTO sqlite_sequence (name, seq)
SELECT 'annals_events_rebuilt', seq FROM sqlite_sequence
WHERE name = 'annals_events'
  AND NOT EXISTS (SELECT 1 FROM sqlite_sequence WHERE name = 'annals_events_rebuilt');

DROP TABLE annals_events;
ALTER TABLE annals_events_rebuilt RENAME TO annals_events;
CREATE INDEX annals_events_by_type ON annals_events (event_type, position);

CREATE TABLE annals_streams_rebuilt (
    stream_type TEXT    NOT NULL,
    stream_id   TEXT    NOT NULL,
    version     INTEGER NOT NULL CONSTRAINT annals_streams_version_positive CHECK (version > 0),
    PRIMARY KEY (stream_type, stream_id)
) STRICT, WITHOUT ROWID;
INSERT INTO annals_streams_rebuilt (stream_type, stream_id, version)
SELECT stream_type, stream_id, version FROM annals_streams;
DROP TABLE annals_streams;
ALTER TABLE annals_streams_rebuilt RENAME TO annals_streams;
