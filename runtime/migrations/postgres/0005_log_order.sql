-- The log's order is (writing transaction's id, position): readers follow it below the
-- oldest running transaction, so appends need no common lock. One index for the whole log,
-- one per event type for filtered readers.
--
-- Runs with search_path set to the store's schema: names here are unqualified.

CREATE INDEX annals_events_tx_position ON annals_events (tx_id, position);
CREATE INDEX annals_events_type_tx_position ON annals_events (event_type, tx_id, position);
