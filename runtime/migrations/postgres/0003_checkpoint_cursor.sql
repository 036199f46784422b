-- Checkpoints carry their source's cursor beside the position: what a runner needs to
-- resume exactly when a position alone does not say (a transaction id, a shard sequence).
--
-- Runs with search_path set to the store's schema: names here are unqualified.

ALTER TABLE annals_checkpoints ADD COLUMN cursor text;
