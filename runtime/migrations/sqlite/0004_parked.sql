-- Events a runner's handler kept failing on, set aside with the error in the runner's
-- transaction (which moved its checkpoint past them), until retried or skipped.
CREATE TABLE annals_parked (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    runner      TEXT    NOT NULL,
    position    INTEGER NOT NULL,
    event_type  TEXT    NOT NULL,
    event       TEXT    NOT NULL,
    error       TEXT    NOT NULL,
    attempts    INTEGER NOT NULL CHECK (attempts > 0),
    parked_at   INTEGER NOT NULL,
    resolved_at INTEGER,
    resolution  TEXT CHECK (resolution IN ('retried', 'skipped'))
) STRICT;

CREATE INDEX annals_parked_runner ON annals_parked (runner, id);
