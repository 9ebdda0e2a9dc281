-- The statistics kept of each (Multi)Datastream's Observations, as SQLite's
-- 0009_time_series.sql (see there).
ALTER TABLE datastreams ADD COLUMN observation_count bigint NOT NULL DEFAULT 0,
    ADD COLUMN latest_observation_id bigint, ADD COLUMN latest_start bigint, ADD COLUMN latest_end bigint,
    ADD COLUMN rollups_pending bigint NOT NULL DEFAULT 0;
ALTER TABLE multi_datastreams ADD COLUMN observation_count bigint NOT NULL DEFAULT 0,
    ADD COLUMN latest_observation_id bigint, ADD COLUMN latest_start bigint, ADD COLUMN latest_end bigint,
    ADD COLUMN rollups_pending bigint NOT NULL DEFAULT 0;

UPDATE datastreams SET
    observation_count = (SELECT COUNT(*) FROM observations o WHERE o.datastream_id = datastreams.id),
    latest_observation_id = (SELECT o.id FROM observations o WHERE o.datastream_id = datastreams.id
        ORDER BY o.phenomenon_time_start DESC, COALESCE(o.phenomenon_time_end, o.phenomenon_time_start) DESC, o.id
        LIMIT 1);
UPDATE datastreams SET
    latest_start = (SELECT o.phenomenon_time_start FROM observations o WHERE o.id = datastreams.latest_observation_id),
    latest_end = (SELECT COALESCE(o.phenomenon_time_end, o.phenomenon_time_start) FROM observations o
        WHERE o.id = datastreams.latest_observation_id),
    rollups_pending = CASE WHEN latest_observation_id IS NULL THEN 0 ELSE 1 END;
UPDATE multi_datastreams SET
    observation_count = (SELECT COUNT(*) FROM observations o WHERE o.multi_datastream_id = multi_datastreams.id),
    latest_observation_id = (SELECT o.id FROM observations o WHERE o.multi_datastream_id = multi_datastreams.id
        ORDER BY o.phenomenon_time_start DESC, COALESCE(o.phenomenon_time_end, o.phenomenon_time_start) DESC, o.id
        LIMIT 1);
UPDATE multi_datastreams SET
    latest_start = (SELECT o.phenomenon_time_start FROM observations o WHERE o.id = multi_datastreams.latest_observation_id),
    latest_end = (SELECT COALESCE(o.phenomenon_time_end, o.phenomenon_time_start) FROM observations o
        WHERE o.id = multi_datastreams.latest_observation_id),
    rollups_pending = CASE WHEN latest_observation_id IS NULL THEN 0 ELSE 1 END;

CREATE TABLE observation_rollups (
    parent bigint NOT NULL,
    parent_id bigint NOT NULL,
    member bigint NOT NULL,
    level bigint NOT NULL,
    bucket bigint NOT NULL,
    observations bigint NOT NULL,
    numbers bigint NOT NULL,
    total double precision NOT NULL,
    minimum double precision,
    maximum double precision,
    first_time bigint NOT NULL,
    first_id bigint NOT NULL,
    first_result text NOT NULL,
    last_time bigint NOT NULL,
    last_id bigint NOT NULL,
    last_result text NOT NULL,
    PRIMARY KEY (parent, parent_id, level, bucket, member)
);

CREATE TABLE retention_policies (
    scope bigint NOT NULL CHECK (scope IN (0, 1, 2)),
    scope_id bigint NOT NULL,
    raw_days bigint,
    rollup_days bigint,
    updated_at bigint NOT NULL,
    PRIMARY KEY (scope, scope_id)
);
