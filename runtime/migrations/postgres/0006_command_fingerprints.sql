-- Command fingerprints beside command ids: a repeated command (same id, same fingerprint)
-- gets its first outcome back, a different command reusing the id is refused. Records
-- written before this migration have none and compare equal to anything.
--
-- (Version 6 belongs to the workflow tables.)
ALTER TABLE annals_commands ADD COLUMN fingerprint text;
