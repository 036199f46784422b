-- The log's order is (writing transaction's id, position): readers follow it below the
-- oldest running transaction, so appends need no common lock. One index for the whole log,
-- one per event type for filtered readers.
--
-- Runs with search_path set to the store's schema: names here are unqualified.

CREATE INDEX annals_events_tx_position ON annals_events (tx_id, position);
CREATE INDEX annals_events_type_tx_position ON annals_events (event_type, tx_id, position);

-- The events of one type after a cursor, in log order, below the horizon. Always through
-- the (event_type, tx_id, position) index, which reads just `max_rows` entries: on a table
-- without planner statistics (new, or with autovacuum off) the planner would otherwise
-- estimate few matching rows, pick a bitmap scan of every event of the type after the
-- cursor and sort them, hundreds of times slower per batch on a large log. The settings
-- apply inside the function only.
CREATE FUNCTION annals_log_of_type(
    wanted text, after_tx xid8, after_position bigint, horizon xid8, floor bigint,
    max_rows bigint
) RETURNS SETOF annals_events
LANGUAGE sql STABLE
SET search_path FROM CURRENT
SET enable_bitmapscan = off
SET enable_seqscan = off
AS $$
    SELECT * FROM annals_events
    WHERE event_type = wanted AND (tx_id, position) > (after_tx, after_position)
      AND tx_id < horizon AND position > floor
    ORDER BY tx_id, position
    LIMIT max_rows
$$;
