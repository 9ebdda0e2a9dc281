-- The (Multi)Datastream indexes of Observations hold the whole order `$orderby=phenomenonTime`
-- asks for (start, then end, then id), so that a time window or the latest N are read in
-- order instead of sorted again. As PostgreSQL's 0006_observation_order.sql, whose planner
-- needs it most. On a large file this rebuilds both indexes.
DROP INDEX observations_datastream_time;
CREATE INDEX observations_datastream_time ON observations
    (datastream_id, phenomenon_time_start, COALESCE(phenomenon_time_end, phenomenon_time_start), id)
    WHERE datastream_id IS NOT NULL;
DROP INDEX observations_multi_datastream_time;
CREATE INDEX observations_multi_datastream_time ON observations
    (multi_datastream_id, phenomenon_time_start, COALESCE(phenomenon_time_end, phenomenon_time_start), id)
    WHERE multi_datastream_id IS NOT NULL;
