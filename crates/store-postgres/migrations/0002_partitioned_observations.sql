-- Observations range-partitioned by `phenomenon_time_start` (microseconds), one partition per
-- calendar month (UTC), so that a time window reads only its months and old months can be
-- dropped or archived whole. `tb_observation_partitions` creates the partitions around a time;
-- the server calls it on start and every hour for the months around now, ahead of the data.
-- Rows of months without a partition (a backfill of old data) go to `observations_default`.
--
-- The primary key includes the partition key, as PostgreSQL requires; ids still come from one
-- sequence and stay unique. Nothing refers to an Observation by foreign key.
--
-- Observations hold no foreign keys either: checking three per row took two thirds of the
-- time of an insert (500,000 rows: 6.4 s with them, 1.9 s without). The application keeps
-- what they kept: a write job that reads a Datastream, MultiDatastream or FeatureOfInterest
-- locks it against deletion until it commits (FOR KEY SHARE, what a check would take), and
-- deleting one of those (or a Thing, Sensor or ObservedProperty) deletes its Observations
-- first (`sql::fixed::delete_dependents`). TimescaleDB and Citus advise against foreign keys
-- from such tables anyway.

ALTER TABLE observations RENAME TO observations_unpartitioned;
ALTER INDEX observations_pkey RENAME TO observations_unpartitioned_pkey;
ALTER INDEX observations_datastream_time RENAME TO observations_unpartitioned_datastream_time;
ALTER INDEX observations_multi_datastream_time RENAME TO observations_unpartitioned_multi_datastream_time;
ALTER INDEX observations_feature RENAME TO observations_unpartitioned_feature;

CREATE TABLE observations (
    id bigint NOT NULL DEFAULT nextval('observations_id_seq'),
    phenomenon_time_start bigint NOT NULL,
    phenomenon_time_end bigint,
    result_time bigint,
    result_number numeric,
    result_string text,
    result_boolean boolean,
    result_json json,
    result_quality json,
    valid_time_start bigint,
    valid_time_end bigint,
    parameters json,
    datastream_id bigint,
    multi_datastream_id bigint,
    feature_id bigint NOT NULL,
    project_id bigint NOT NULL DEFAULT 1,
    PRIMARY KEY (id, phenomenon_time_start)
) PARTITION BY RANGE (phenomenon_time_start);

CREATE INDEX observations_datastream_time ON observations (datastream_id, phenomenon_time_start)
    WHERE datastream_id IS NOT NULL;
CREATE INDEX observations_multi_datastream_time ON observations (multi_datastream_id, phenomenon_time_start)
    WHERE multi_datastream_id IS NOT NULL;
CREATE INDEX observations_feature ON observations (feature_id);

CREATE TABLE observations_default PARTITION OF observations DEFAULT;

INSERT INTO observations SELECT * FROM observations_unpartitioned;
DROP TABLE observations_unpartitioned;

-- Creates the monthly partitions from `months_before` months before the month of `around`
-- (microseconds since the epoch) to `months_after` months after it, where missing; returns
-- how many it made. A month whose rows already sit in the default partition keeps them there
-- (creating its partition would have to move them under a lock; do that in a quiet hour by
-- detaching the default partition, creating the months and attaching it again). Nodes calling
-- it at once take turns.
CREATE FUNCTION tb_observation_partitions(around bigint, months_before integer, months_after integer)
RETURNS integer LANGUAGE plpgsql AS $$
DECLARE
    first timestamp := date_trunc('month', to_timestamp(around / 1000000.0) AT TIME ZONE 'UTC');
    low timestamp;
    high timestamp;
    name text;
    made integer := 0;
BEGIN
    PERFORM pg_advisory_xact_lock(7526411283660641649);
    FOR m IN -months_before..months_after LOOP
        low := first + make_interval(months => m);
        high := low + interval '1 month';
        name := 'observations_' || to_char(low, 'YYYY_MM');
        CONTINUE WHEN to_regclass(name) IS NOT NULL;
        BEGIN
            EXECUTE format('CREATE TABLE %I PARTITION OF observations FOR VALUES FROM (%s) TO (%s)',
                name,
                CAST(EXTRACT(EPOCH FROM low) * 1000000 AS bigint),
                CAST(EXTRACT(EPOCH FROM high) * 1000000 AS bigint));
            made := made + 1;
        EXCEPTION WHEN check_violation THEN
            RAISE NOTICE 'observations of % stay in the default partition', to_char(low, 'YYYY-MM');
        END;
    END LOOP;
    RETURN made;
END
$$;
