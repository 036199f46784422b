-- Projection checkpoints: the last position each projection has processed, written in
-- the same transaction as its read model.
CREATE TABLE annals_checkpoints (
    name       TEXT    NOT NULL PRIMARY KEY,
    position   INTEGER NOT NULL CHECK (position >= 0),
    updated_at INTEGER NOT NULL
) STRICT;
