-- Events, stream versions, command outcomes and snapshots.
--
-- Runs with search_path set to the store's schema: names here are unqualified.
-- Payloads and headers are `json`, not `jsonb`: `json` keeps the text exactly as written
-- (key order, spacing, `\u0000` escapes, which `jsonb` refuses) and costs less to write and
-- read back; both still validate the JSON and support the `->`/`->>` operators.

CREATE TABLE annals_events (
    -- Positions are handed out under the store's append lock, which is held until commit,
    -- so they follow commit order. A sequence cache above 1 would hand them out per
    -- session, out of that order: keep CACHE 1.
    position       bigint      GENERATED ALWAYS AS IDENTITY (CACHE 1) PRIMARY KEY,
    stream_type    text        NOT NULL,
    stream_id      text        NOT NULL,
    version        bigint      NOT NULL CHECK (version > 0),
    event_type     text        NOT NULL,
    event_version  integer     NOT NULL CHECK (event_version >= 0),
    event_id       uuid        NOT NULL,
    command_id     uuid,
    correlation_id uuid,
    causation_id   uuid,
    recorded_at    timestamptz NOT NULL DEFAULT now(),
    headers        json        NOT NULL DEFAULT '{}',
    payload        json        NOT NULL,
    -- The writing transaction: groups the events of one commit, for diagnosis and for
    -- readers that track (tx_id, position).
    tx_id          xid8        NOT NULL DEFAULT pg_current_xact_id(),
    CONSTRAINT annals_events_stream_version_key UNIQUE (stream_type, stream_id, version),
    CONSTRAINT annals_events_event_id_key UNIQUE (event_id)
);

-- Global reads filtered by event type.
CREATE INDEX annals_events_type_position ON annals_events (event_type, position);

-- The current version of every stream: the row an append locks, so appends to one stream
-- serialize and appends to different streams do not wait on each other.
CREATE TABLE annals_streams (
    stream_type text   NOT NULL,
    stream_id   text   NOT NULL,
    version     bigint NOT NULL CHECK (version > 0),
    CONSTRAINT annals_streams_pkey PRIMARY KEY (stream_type, stream_id)
);

-- The outcome of every append that carried a command id (idempotency).
CREATE TABLE annals_commands (
    command_id    uuid        NOT NULL,
    stream_type   text        NOT NULL,
    stream_id     text        NOT NULL,
    first_version bigint      NOT NULL,
    last_version  bigint      NOT NULL,
    last_position bigint      NOT NULL,
    recorded_at   timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT annals_commands_pkey PRIMARY KEY (command_id)
);

CREATE TABLE annals_snapshots (
    stream_type      text        NOT NULL,
    stream_id        text        NOT NULL,
    version          bigint      NOT NULL,
    snapshot_version integer     NOT NULL,
    state            json        NOT NULL,
    recorded_at      timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT annals_snapshots_pkey PRIMARY KEY (stream_type, stream_id, version)
);
