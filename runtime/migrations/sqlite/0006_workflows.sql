-- Workflows: reactors record refused commands they ignore in the parking table
-- (resolution 'ignored'); process managers keep their state per correlation key and their
-- deadlines, written in the runner's transaction with its checkpoint.

-- SQLite cannot change a CHECK constraint in place: the table is rebuilt, ids kept.
CREATE TABLE annals_parked_new (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    runner      TEXT    NOT NULL,
    position    INTEGER NOT NULL,
    event_type  TEXT    NOT NULL,
    event       TEXT    NOT NULL,
    error       TEXT    NOT NULL,
    attempts    INTEGER NOT NULL CHECK (attempts > 0),
    parked_at   INTEGER NOT NULL,
    resolved_at INTEGER,
    resolution  TEXT CHECK (resolution IN ('retried', 'skipped', 'ignored'))
) STRICT;
INSERT INTO annals_parked_new
    (id, runner, position, event_type, event, error, attempts, parked_at, resolved_at, resolution)
    SELECT id, runner, position, event_type, event, error, attempts, parked_at, resolved_at, resolution
    FROM annals_parked;
DROP TABLE annals_parked;
ALTER TABLE annals_parked_new RENAME TO annals_parked;
CREATE INDEX annals_parked_runner ON annals_parked (runner, id);

CREATE TABLE annals_process_states (
    process TEXT    NOT NULL,
    key     TEXT    NOT NULL,
    state   TEXT    NOT NULL,
    version INTEGER NOT NULL CHECK (version > 0),
    ended   INTEGER NOT NULL CHECK (ended IN (0, 1)),
    PRIMARY KEY (process, key)
) STRICT;

CREATE TABLE annals_deadlines (
    process TEXT    NOT NULL,
    key     TEXT    NOT NULL,
    name    TEXT    NOT NULL,
    id      TEXT    NOT NULL UNIQUE,
    due_at  INTEGER NOT NULL,
    correlation_id TEXT,
    causation_id   TEXT,
    PRIMARY KEY (process, key, name)
) STRICT;

CREATE INDEX annals_deadlines_due ON annals_deadlines (process, due_at);
