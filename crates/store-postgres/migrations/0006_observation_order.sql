-- The (Multi)Datastream indexes of Observations hold the whole order `$orderby=phenomenonTime`
-- asks for (start, then end, then id), as SQLite's 0010_observation_order.sql. Before, they
-- held the start only: a time window or the latest N were then read and sorted again, and the
-- planner, which cannot estimate the conditions on the end, sorted a one-day window of 86,400
-- rows on disk. The index expression also gives the planner statistics of the end. On a large
-- table this rebuilds both indexes; plan the upgrade for a quiet hour.
DROP INDEX observations_datastream_time;
CREATE INDEX observations_datastream_time ON observations
    (datastream_id, phenomenon_time_start, (COALESCE(phenomenon_time_end, phenomenon_time_start)), id)
    WHERE datastream_id IS NOT NULL;
DROP INDEX observations_multi_datastream_time;
CREATE INDEX observations_multi_datastream_time ON observations
    (multi_datastream_id, phenomenon_time_start, (COALESCE(phenomenon_time_end, phenomenon_time_start)), id)
    WHERE multi_datastream_id IS NOT NULL;
