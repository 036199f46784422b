-- Workflows: reactors record refused commands they ignore in the parking table
-- (resolution 'ignored'); process managers keep their state per correlation key and their
-- deadlines, written in the runner's transaction with its checkpoint.
--
-- Runs with search_path set to the store's schema: names here are unqualified.

ALTER TABLE annals_parked DROP CONSTRAINT annals_parked_resolution_check;
ALTER TABLE annals_parked ADD CONSTRAINT annals_parked_resolution_check
    CHECK (resolution IN ('retried', 'skipped', 'ignored'));

CREATE TABLE annals_process_states (
    process text    NOT NULL,
    key     text    NOT NULL,
    state   jsonb   NOT NULL,
    version bigint  NOT NULL CHECK (version > 0),
    ended   boolean NOT NULL,
    CONSTRAINT annals_process_states_pkey PRIMARY KEY (process, key)
);

CREATE TABLE annals_deadlines (
    process text        NOT NULL,
    key     text        NOT NULL,
    name    text        NOT NULL,
    id      uuid        NOT NULL UNIQUE,
    due_at  timestamptz NOT NULL,
    correlation_id uuid,
    causation_id   uuid,
    CONSTRAINT annals_deadlines_pkey PRIMARY KEY (process, key, name)
);

CREATE INDEX annals_deadlines_due ON annals_deadlines (process, due_at);
