-- Projection checkpoints: the last position each projection has processed, moved by a
-- compare-and-set in the same transaction as the projection's read-model writes.
--
-- Runs with search_path set to the store's schema: names here are unqualified.

CREATE TABLE annals_checkpoints (
    name       text        NOT NULL,
    position   bigint      NOT NULL CHECK (position >= 0),
    updated_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT annals_checkpoints_pkey PRIMARY KEY (name)
);
