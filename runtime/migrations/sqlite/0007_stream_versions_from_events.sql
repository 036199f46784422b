-- Stream versions come from the events themselves.
--
-- An append checked the stream's version in `annals_streams` and then wrote it there: one
-- more B-tree page written per commit, for a value the events' own unique index on
-- (stream_type, stream_id, version) already holds. The check now reads the stream's last
-- event through that index (one seek), and the table goes. Listing streams groups that
-- index. A stream head that disagrees with its events cannot happen any more on SQLite.
DROP TABLE annals_streams;
