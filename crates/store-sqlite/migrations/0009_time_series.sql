-- The statistics kept of each (Multi)Datastream's Observations (`store::statistics`), so that
-- counts, latest values and aggregates never scan them: the number of Observations, the one
-- `$orderby=phenomenonTime desc` puts first (its phenomenonTime start and end, the end being
-- the start for an instant), and rollups per minute, hour and day (UTC).
--
-- Data stored before this migration gets its count and latest Observation here; its rollups
-- are built by the server in the background (`rollups_pending`), and aggregates of such a
-- (Multi)Datastream are computed from its Observations until then.
ALTER TABLE datastreams ADD COLUMN observation_count INTEGER NOT NULL DEFAULT 0;
ALTER TABLE datastreams ADD COLUMN latest_observation_id INTEGER;
ALTER TABLE datastreams ADD COLUMN latest_start INTEGER;
ALTER TABLE datastreams ADD COLUMN latest_end INTEGER;
ALTER TABLE datastreams ADD COLUMN rollups_pending INTEGER NOT NULL DEFAULT 0;
ALTER TABLE multi_datastreams ADD COLUMN observation_count INTEGER NOT NULL DEFAULT 0;
ALTER TABLE multi_datastreams ADD COLUMN latest_observation_id INTEGER;
ALTER TABLE multi_datastreams ADD COLUMN latest_start INTEGER;
ALTER TABLE multi_datastreams ADD COLUMN latest_end INTEGER;
ALTER TABLE multi_datastreams ADD COLUMN rollups_pending INTEGER NOT NULL DEFAULT 0;

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
    latest_start = (SELECT o.phenomenon_time_start FROM observations o
        WHERE o.id = multi_datastreams.latest_observation_id),
    latest_end = (SELECT COALESCE(o.phenomenon_time_end, o.phenomenon_time_start) FROM observations o
        WHERE o.id = multi_datastreams.latest_observation_id),
    rollups_pending = CASE WHEN latest_observation_id IS NULL THEN 0 ELSE 1 END;

-- One row per series (a Datastream, `parent` 0, member 0; or a member of a MultiDatastream's
-- result arrays, `parent` 1), level (bucket width in seconds) and bucket (start, in
-- microseconds). `numbers` of the `observations` had numeric results; `total`, `minimum` and
-- `maximum` are over those. `first_*` and `last_*` are the Observations with the earliest and
-- latest phenomenonTime start (then id), their results as JSON text.
CREATE TABLE observation_rollups (
    parent INTEGER NOT NULL,
    parent_id INTEGER NOT NULL,
    member INTEGER NOT NULL,
    level INTEGER NOT NULL,
    bucket INTEGER NOT NULL,
    observations INTEGER NOT NULL,
    numbers INTEGER NOT NULL,
    total REAL NOT NULL,
    minimum REAL,
    maximum REAL,
    first_time INTEGER NOT NULL,
    first_id INTEGER NOT NULL,
    first_result TEXT NOT NULL,
    last_time INTEGER NOT NULL,
    last_id INTEGER NOT NULL,
    last_result TEXT NOT NULL,
    PRIMARY KEY (parent, parent_id, level, bucket, member)
) WITHOUT ROWID;

-- Retention: how long the Observations (`raw_days`) and the rollups (`rollup_days`) of the
-- (Multi)Datastreams of a project, or of one (Multi)Datastream, are kept (NULL: for ever). A
-- series' own policy comes before its project's. `scope`: 0 a project, 1 a Datastream, 2 a
-- MultiDatastream.
CREATE TABLE retention_policies (
    scope INTEGER NOT NULL CHECK (scope IN (0, 1, 2)),
    scope_id INTEGER NOT NULL,
    raw_days INTEGER,
    rollup_days INTEGER,
    updated_at INTEGER NOT NULL,
    PRIMARY KEY (scope, scope_id)
);
