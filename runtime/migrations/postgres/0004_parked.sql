-- Events a runner's handler kept failing on, set aside with the error in the runner's
-- transaction (which moved its checkpoint past them), until retried or skipped.
--
-- Runs with search_path set to the store's schema: names here are unqualified.

CREATE TABLE annals_parked (
    id          bigint      GENERATED ALWAYS AS IDENTITY,
    runner      text        NOT NULL,
    position    bigint      NOT NULL,
    event_type  text        NOT NULL,
    event       jsonb       NOT NULL,
    error       text        NOT NULL,
    attempts    integer     NOT NULL CHECK (attempts > 0),
    parked_at   timestamptz NOT NULL DEFAULT now(),
    resolved_at timestamptz,
    resolution  text CHECK (resolution IN ('retried', 'skipped')),
    CONSTRAINT annals_parked_pkey PRIMARY KEY (id)
);

CREATE INDEX annals_parked_runner ON annals_parked (runner, id);
