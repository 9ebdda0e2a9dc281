-- The SensorThings v1.1 schema for PostgreSQL with PostGIS: the tables, columns, keys and
-- indexes the SQLite migrations 0001 to 0006 end with, under the same names, so that one SQL
-- compiler serves both databases. A new backend starts from the current schema; later changes
-- come as new numbered files here, in step with the SQLite ones.
--
-- Types follow from the SQLite ones and from what the shared statements bind:
-- - Instants are bigint microseconds since the epoch, as in SQLite, not timestamps.
-- - JSON is `json`, not `jsonb`: the server returns JSON exactly as it was written, key order
--   and number spelling included, and jsonb would normalize both.
-- - Flags (`open_data`, `hub_admin`, `disabled`) stay integers 0 and 1, which the shared
--   statements bind; only `result_boolean` is boolean, since it holds a result's own type.
-- - Ids are bigint keys filled from sequences (`bigserial`), not identity columns: one style
--   for every table, and `observations` is to be range-partitioned by
--   `phenomenon_time_start`, which PostgreSQL 15 allows only without an identity column.
-- Derived Datastream fields are maintained by the application per batch; there are no
-- triggers.

-- The spatial functions below need it. Creating it takes a superuser; a database whose
-- administrator has created it already needs no privilege here.
CREATE EXTENSION IF NOT EXISTS postgis;

-- Projects (tenants): every entity belongs to one, and access rights are granted per project.
-- Project 1 is the default project every new entity starts in.
CREATE TABLE projects (
    id bigserial PRIMARY KEY,
    name text NOT NULL UNIQUE,
    -- Reads of an open-data project are public (ITU-T Y.4461); writes stay authenticated.
    open_data integer NOT NULL DEFAULT 0
);
INSERT INTO projects (id, name) VALUES (1, 'default');
-- Id 1 was given by hand, so the sequence has not used it.
ALTER SEQUENCE projects_id_seq RESTART WITH 2;

-- `project_id` refers to `projects` here, which SQLite could not add to existing tables. The
-- reference has no ON DELETE action: a project that still owns entities cannot be deleted,
-- which the application never tries anyway.

CREATE TABLE things (
    id bigserial PRIMARY KEY,
    name text NOT NULL,
    description text NOT NULL,
    properties json,
    project_id bigint NOT NULL DEFAULT 1 REFERENCES projects (id)
);

CREATE TABLE locations (
    id bigserial PRIMARY KEY,
    name text NOT NULL,
    description text NOT NULL,
    encoding_type text NOT NULL,
    location json NOT NULL,
    properties json,
    project_id bigint NOT NULL DEFAULT 1 REFERENCES projects (id)
);

CREATE TABLE thing_locations (
    thing_id bigint NOT NULL REFERENCES things (id) ON DELETE CASCADE,
    location_id bigint NOT NULL REFERENCES locations (id) ON DELETE CASCADE,
    PRIMARY KEY (thing_id, location_id)
);
CREATE INDEX thing_locations_location ON thing_locations (location_id);

CREATE TABLE historical_locations (
    id bigserial PRIMARY KEY,
    time bigint NOT NULL,
    thing_id bigint NOT NULL REFERENCES things (id) ON DELETE CASCADE,
    project_id bigint NOT NULL DEFAULT 1 REFERENCES projects (id)
);
CREATE INDEX historical_locations_thing ON historical_locations (thing_id, time);

CREATE TABLE historical_location_locations (
    historical_location_id bigint NOT NULL REFERENCES historical_locations (id) ON DELETE CASCADE,
    location_id bigint NOT NULL REFERENCES locations (id) ON DELETE CASCADE,
    PRIMARY KEY (historical_location_id, location_id)
);
CREATE INDEX historical_location_locations_location ON historical_location_locations (location_id);

-- `metadata` is any JSON value (often a string holding a URL), stored as JSON text as in SQLite.
CREATE TABLE sensors (
    id bigserial PRIMARY KEY,
    name text NOT NULL,
    description text NOT NULL,
    encoding_type text NOT NULL,
    metadata json NOT NULL,
    properties json,
    project_id bigint NOT NULL DEFAULT 1 REFERENCES projects (id)
);

CREATE TABLE observed_properties (
    id bigserial PRIMARY KEY,
    name text NOT NULL,
    definition text NOT NULL,
    description text NOT NULL,
    properties json,
    project_id bigint NOT NULL DEFAULT 1 REFERENCES projects (id)
);

CREATE TABLE datastreams (
    id bigserial PRIMARY KEY,
    name text NOT NULL,
    description text NOT NULL,
    unit_of_measurement json NOT NULL,
    observation_type text NOT NULL,
    observed_area json,
    phenomenon_time_start bigint,
    phenomenon_time_end bigint,
    result_time_start bigint,
    result_time_end bigint,
    properties json,
    thing_id bigint NOT NULL REFERENCES things (id) ON DELETE CASCADE,
    sensor_id bigint NOT NULL REFERENCES sensors (id) ON DELETE CASCADE,
    observed_property_id bigint NOT NULL REFERENCES observed_properties (id) ON DELETE CASCADE,
    project_id bigint NOT NULL DEFAULT 1 REFERENCES projects (id)
);
CREATE INDEX datastreams_thing ON datastreams (thing_id);
CREATE INDEX datastreams_sensor ON datastreams (sensor_id);
CREATE INDEX datastreams_observed_property ON datastreams (observed_property_id);

CREATE TABLE multi_datastreams (
    id bigserial PRIMARY KEY,
    name text NOT NULL,
    description text NOT NULL,
    unit_of_measurements json NOT NULL,
    observation_type text NOT NULL,
    multi_observation_data_types json NOT NULL,
    observed_area json,
    phenomenon_time_start bigint,
    phenomenon_time_end bigint,
    result_time_start bigint,
    result_time_end bigint,
    properties json,
    thing_id bigint NOT NULL REFERENCES things (id) ON DELETE CASCADE,
    sensor_id bigint NOT NULL REFERENCES sensors (id) ON DELETE CASCADE,
    project_id bigint NOT NULL DEFAULT 1 REFERENCES projects (id)
);
CREATE INDEX multi_datastreams_thing ON multi_datastreams (thing_id);
CREATE INDEX multi_datastreams_sensor ON multi_datastreams (sensor_id);

-- The ObservedProperties of a MultiDatastream keep the order they were linked in (it matches
-- `multiObservationDataTypes` and the result arrays), in `position`, which a sequence numbers
-- as links come.
CREATE TABLE multi_datastream_observed_properties (
    position bigserial PRIMARY KEY,
    multi_datastream_id bigint NOT NULL REFERENCES multi_datastreams (id) ON DELETE CASCADE,
    observed_property_id bigint NOT NULL REFERENCES observed_properties (id) ON DELETE CASCADE,
    UNIQUE (multi_datastream_id, observed_property_id)
);
CREATE INDEX multi_datastream_observed_properties_property
    ON multi_datastream_observed_properties (observed_property_id);

CREATE TABLE features (
    id bigserial PRIMARY KEY,
    name text NOT NULL,
    description text NOT NULL,
    encoding_type text NOT NULL,
    feature json NOT NULL,
    properties json,
    project_id bigint NOT NULL DEFAULT 1 REFERENCES projects (id)
);

-- The FeatureOfInterest generated from a Location, reused for every Observation of a Thing
-- at that Location.
CREATE TABLE location_features (
    location_id bigint PRIMARY KEY REFERENCES locations (id) ON DELETE CASCADE,
    feature_id bigint NOT NULL REFERENCES features (id) ON DELETE CASCADE
);

-- A result is stored by its JSON type so filters can compare it: numbers in `result_number`
-- (numeric keeps integers and decimals exact; a scale of 0 reads back as an integer), strings
-- in `result_string`, booleans in `result_boolean`, anything else as JSON text.
--
-- The ids come from a sequence that the table does not own: when the table is rebuilt as a
-- partitioned one, the sequence stays and the new table keeps numbering where the old one
-- stopped.
CREATE SEQUENCE observations_id_seq;
CREATE TABLE observations (
    id bigint PRIMARY KEY DEFAULT nextval('observations_id_seq'),
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
    datastream_id bigint REFERENCES datastreams (id) ON DELETE CASCADE,
    multi_datastream_id bigint REFERENCES multi_datastreams (id) ON DELETE CASCADE,
    feature_id bigint NOT NULL REFERENCES features (id) ON DELETE CASCADE,
    project_id bigint NOT NULL DEFAULT 1 REFERENCES projects (id)
);
-- Deleting a (Multi)Datastream finds its Observations through these too: the cascade's
-- `datastream_id = $1` implies the index condition.
CREATE INDEX observations_datastream_time ON observations (datastream_id, phenomenon_time_start)
    WHERE datastream_id IS NOT NULL;
CREATE INDEX observations_multi_datastream_time ON observations (multi_datastream_id, phenomenon_time_start)
    WHERE multi_datastream_id IS NOT NULL;
CREATE INDEX observations_feature ON observations (feature_id);

-- Which FeaturesOfInterest each Datastream and MultiDatastream has Observations of. The
-- application extends `observed_area` only when a pair is new here, so the area costs one index
-- probe per batch and feature instead of geometry work per Observation.

CREATE TABLE datastream_features (
    datastream_id bigint NOT NULL REFERENCES datastreams (id) ON DELETE CASCADE,
    feature_id bigint NOT NULL REFERENCES features (id) ON DELETE CASCADE,
    PRIMARY KEY (datastream_id, feature_id)
);
CREATE INDEX datastream_features_feature ON datastream_features (feature_id);

CREATE TABLE multi_datastream_features (
    multi_datastream_id bigint NOT NULL REFERENCES multi_datastreams (id) ON DELETE CASCADE,
    feature_id bigint NOT NULL REFERENCES features (id) ON DELETE CASCADE,
    PRIMARY KEY (multi_datastream_id, feature_id)
);
CREATE INDEX multi_datastream_features_feature ON multi_datastream_features (feature_id);

-- Principals: users with their roles per project, and API tokens. Secrets are stored only as
-- hashes: Argon2id PHC strings for passwords, SHA-256 hex for tokens.

CREATE TABLE users (
    id bigserial PRIMARY KEY,
    name text NOT NULL UNIQUE,
    -- NULL: the user signs in with tokens only.
    password_hash text,
    hub_admin integer NOT NULL DEFAULT 0,
    disabled integer NOT NULL DEFAULT 0,
    created_at bigint NOT NULL
);

CREATE TABLE memberships (
    user_id bigint NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    project_id bigint NOT NULL REFERENCES projects (id) ON DELETE CASCADE,
    role text NOT NULL CHECK (role IN ('viewer', 'contributor', 'editor', 'admin')),
    PRIMARY KEY (user_id, project_id)
);

CREATE TABLE tokens (
    id bigserial PRIMARY KEY,
    user_id bigint NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    hash text NOT NULL UNIQUE,
    label text NOT NULL,
    -- 'user': everything its user may do; 'grants': only its own grants, within the user's.
    scope text NOT NULL CHECK (scope IN ('user', 'grants')),
    created_at bigint NOT NULL,
    -- Microseconds since the epoch; NULL never expires.
    expires_at bigint,
    revoked_at bigint
);

CREATE TABLE token_grants (
    token_id bigint NOT NULL REFERENCES tokens (id) ON DELETE CASCADE,
    project_id bigint NOT NULL REFERENCES projects (id) ON DELETE CASCADE,
    role text NOT NULL CHECK (role IN ('viewer', 'contributor', 'editor', 'admin')),
    PRIMARY KEY (token_id, project_id)
);

-- The audit log: security-relevant events, append-only and hash-chained. Each row's `hash` is
-- the SHA-256 of the previous row's hash and this row's fields, so changing, removing or
-- reordering rows breaks the chain (`thingbase audit verify`). `detail` is `json`, which keeps
-- the text the hash was computed over.
CREATE TABLE audit_log (
    id bigserial PRIMARY KEY,
    -- Microseconds since the epoch.
    at bigint NOT NULL,
    -- Who: `user:<id>`, `token:<id>`, `anonymous`, `server`, or the name a failed sign-in gave.
    actor text NOT NULL,
    event text NOT NULL,
    -- JSON with the event's particulars; never a secret.
    detail json NOT NULL,
    previous_hash text NOT NULL,
    hash text NOT NULL
);

-- The spatial functions of the filter language, named and answering as the SQLite backend's
-- (store-sqlite's functions.rs, computed there with the `geo` crate), so the shared compiler
-- writes the same calls for both. Geometries are planar and have no SRID (PostGIS would give
-- GeoJSON 4326 and WKT 0, and then refuse to compare the two).
--
-- An argument is a location or feature column (`json`) or a parameter (`text`), so each
-- function comes in one overload per combination. It holds what `model::Geometry::parse`
-- reads: GeoJSON text (it starts with `{`), a geometry or a Feature whose geometry counts, or
-- else WKT. Anything else (a location in another encoding, a malformed value) is NULL rather
-- than an error, so it simply never matches, as in SQLite.

-- The geometry in `value`, or NULL. PostGIS's parsers raise errors on bad input, hence the
-- exception block. Two more things make a value no geometry here:
-- - An `SRID=...;` prefix, PostGIS's extension of WKT (EWKT), which the `wkt` crate behind
--   SQLite does not read.
-- - Rings that are not closed and lines of one point, which the GeoJSON reader lets through
--   (and the measures would then fail on). Reading the geometry's WKB back applies the checks
--   of the WKT reader, and leaves SRID 0. The `geo` crate closes such rings instead, so
--   SQLite finds a geometry where PostgreSQL finds none; the two differ only on values that
--   RFC 7946 and the WKT standard forbid.
CREATE FUNCTION tb_geometry(value text) RETURNS geometry
    LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE
AS $$
DECLARE
    object json;
    parsed geometry;
BEGIN
    IF ltrim(value, E' \t\n\r') LIKE '{%' THEN
        object := value::json;
        IF object ->> 'type' = 'Feature' THEN
            object := object -> 'geometry';
        END IF;
        parsed := ST_GeomFromGeoJSON(object);
    ELSIF value ~* '^\s*SRID\s*=' THEN
        RETURN NULL;
    ELSE
        parsed := ST_GeomFromText(value);
    END IF;
    RETURN ST_GeomFromWKB(ST_AsBinary(parsed));
EXCEPTION
    WHEN OTHERS THEN
        RETURN NULL;
END
$$;

-- A json value's text is exactly the stored text, so it reads as a text argument does.
CREATE FUNCTION tb_geometry(value json) RETURNS geometry
    LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
    RETURN tb_geometry(value::text);

-- The predicates, true or false for two geometries and NULL otherwise. Their bodies are thin
-- enough for the planner to inline.
CREATE FUNCTION tb_st_equals(a json, b json) RETURNS boolean LANGUAGE sql IMMUTABLE PARALLEL SAFE
    RETURN ST_Equals(tb_geometry(a), tb_geometry(b));
CREATE FUNCTION tb_st_equals(a json, b text) RETURNS boolean LANGUAGE sql IMMUTABLE PARALLEL SAFE
    RETURN ST_Equals(tb_geometry(a), tb_geometry(b));
CREATE FUNCTION tb_st_equals(a text, b json) RETURNS boolean LANGUAGE sql IMMUTABLE PARALLEL SAFE
    RETURN ST_Equals(tb_geometry(a), tb_geometry(b));
CREATE FUNCTION tb_st_equals(a text, b text) RETURNS boolean LANGUAGE sql IMMUTABLE PARALLEL SAFE
    RETURN ST_Equals(tb_geometry(a), tb_geometry(b));

CREATE FUNCTION tb_st_disjoint(a json, b json) RETURNS boolean LANGUAGE sql IMMUTABLE PARALLEL SAFE
    RETURN ST_Disjoint(tb_geometry(a), tb_geometry(b));
CREATE FUNCTION tb_st_disjoint(a json, b text) RETURNS boolean LANGUAGE sql IMMUTABLE PARALLEL SAFE
    RETURN ST_Disjoint(tb_geometry(a), tb_geometry(b));
CREATE FUNCTION tb_st_disjoint(a text, b json) RETURNS boolean LANGUAGE sql IMMUTABLE PARALLEL SAFE
    RETURN ST_Disjoint(tb_geometry(a), tb_geometry(b));
CREATE FUNCTION tb_st_disjoint(a text, b text) RETURNS boolean LANGUAGE sql IMMUTABLE PARALLEL SAFE
    RETURN ST_Disjoint(tb_geometry(a), tb_geometry(b));

CREATE FUNCTION tb_st_touches(a json, b json) RETURNS boolean LANGUAGE sql IMMUTABLE PARALLEL SAFE
    RETURN ST_Touches(tb_geometry(a), tb_geometry(b));
CREATE FUNCTION tb_st_touches(a json, b text) RETURNS boolean LANGUAGE sql IMMUTABLE PARALLEL SAFE
    RETURN ST_Touches(tb_geometry(a), tb_geometry(b));
CREATE FUNCTION tb_st_touches(a text, b json) RETURNS boolean LANGUAGE sql IMMUTABLE PARALLEL SAFE
    RETURN ST_Touches(tb_geometry(a), tb_geometry(b));
CREATE FUNCTION tb_st_touches(a text, b text) RETURNS boolean LANGUAGE sql IMMUTABLE PARALLEL SAFE
    RETURN ST_Touches(tb_geometry(a), tb_geometry(b));

CREATE FUNCTION tb_st_within(a json, b json) RETURNS boolean LANGUAGE sql IMMUTABLE PARALLEL SAFE
    RETURN ST_Within(tb_geometry(a), tb_geometry(b));
CREATE FUNCTION tb_st_within(a json, b text) RETURNS boolean LANGUAGE sql IMMUTABLE PARALLEL SAFE
    RETURN ST_Within(tb_geometry(a), tb_geometry(b));
CREATE FUNCTION tb_st_within(a text, b json) RETURNS boolean LANGUAGE sql IMMUTABLE PARALLEL SAFE
    RETURN ST_Within(tb_geometry(a), tb_geometry(b));
CREATE FUNCTION tb_st_within(a text, b text) RETURNS boolean LANGUAGE sql IMMUTABLE PARALLEL SAFE
    RETURN ST_Within(tb_geometry(a), tb_geometry(b));

CREATE FUNCTION tb_st_overlaps(a json, b json) RETURNS boolean LANGUAGE sql IMMUTABLE PARALLEL SAFE
    RETURN ST_Overlaps(tb_geometry(a), tb_geometry(b));
CREATE FUNCTION tb_st_overlaps(a json, b text) RETURNS boolean LANGUAGE sql IMMUTABLE PARALLEL SAFE
    RETURN ST_Overlaps(tb_geometry(a), tb_geometry(b));
CREATE FUNCTION tb_st_overlaps(a text, b json) RETURNS boolean LANGUAGE sql IMMUTABLE PARALLEL SAFE
    RETURN ST_Overlaps(tb_geometry(a), tb_geometry(b));
CREATE FUNCTION tb_st_overlaps(a text, b text) RETURNS boolean LANGUAGE sql IMMUTABLE PARALLEL SAFE
    RETURN ST_Overlaps(tb_geometry(a), tb_geometry(b));

CREATE FUNCTION tb_st_crosses(a json, b json) RETURNS boolean LANGUAGE sql IMMUTABLE PARALLEL SAFE
    RETURN ST_Crosses(tb_geometry(a), tb_geometry(b));
CREATE FUNCTION tb_st_crosses(a json, b text) RETURNS boolean LANGUAGE sql IMMUTABLE PARALLEL SAFE
    RETURN ST_Crosses(tb_geometry(a), tb_geometry(b));
CREATE FUNCTION tb_st_crosses(a text, b json) RETURNS boolean LANGUAGE sql IMMUTABLE PARALLEL SAFE
    RETURN ST_Crosses(tb_geometry(a), tb_geometry(b));
CREATE FUNCTION tb_st_crosses(a text, b text) RETURNS boolean LANGUAGE sql IMMUTABLE PARALLEL SAFE
    RETURN ST_Crosses(tb_geometry(a), tb_geometry(b));

CREATE FUNCTION tb_st_intersects(a json, b json) RETURNS boolean LANGUAGE sql IMMUTABLE PARALLEL SAFE
    RETURN ST_Intersects(tb_geometry(a), tb_geometry(b));
CREATE FUNCTION tb_st_intersects(a json, b text) RETURNS boolean LANGUAGE sql IMMUTABLE PARALLEL SAFE
    RETURN ST_Intersects(tb_geometry(a), tb_geometry(b));
CREATE FUNCTION tb_st_intersects(a text, b json) RETURNS boolean LANGUAGE sql IMMUTABLE PARALLEL SAFE
    RETURN ST_Intersects(tb_geometry(a), tb_geometry(b));
CREATE FUNCTION tb_st_intersects(a text, b text) RETURNS boolean LANGUAGE sql IMMUTABLE PARALLEL SAFE
    RETURN ST_Intersects(tb_geometry(a), tb_geometry(b));

CREATE FUNCTION tb_st_contains(a json, b json) RETURNS boolean LANGUAGE sql IMMUTABLE PARALLEL SAFE
    RETURN ST_Contains(tb_geometry(a), tb_geometry(b));
CREATE FUNCTION tb_st_contains(a json, b text) RETURNS boolean LANGUAGE sql IMMUTABLE PARALLEL SAFE
    RETURN ST_Contains(tb_geometry(a), tb_geometry(b));
CREATE FUNCTION tb_st_contains(a text, b json) RETURNS boolean LANGUAGE sql IMMUTABLE PARALLEL SAFE
    RETURN ST_Contains(tb_geometry(a), tb_geometry(b));
CREATE FUNCTION tb_st_contains(a text, b text) RETURNS boolean LANGUAGE sql IMMUTABLE PARALLEL SAFE
    RETURN ST_Contains(tb_geometry(a), tb_geometry(b));

-- Whether the DE-9IM matrix of the two matches `pattern`. As in SQLite, a pattern that is not
-- nine characters from T, F, *, 0, 1, 2 (either case) gives NULL rather than an error.
CREATE FUNCTION tb_st_relate(a json, b json, pattern text) RETURNS boolean LANGUAGE sql IMMUTABLE PARALLEL SAFE
    RETURN CASE WHEN pattern ~ '^[TFtf*012]{9}$' THEN ST_Relate(tb_geometry(a), tb_geometry(b), upper(pattern)) END;
CREATE FUNCTION tb_st_relate(a json, b text, pattern text) RETURNS boolean LANGUAGE sql IMMUTABLE PARALLEL SAFE
    RETURN CASE WHEN pattern ~ '^[TFtf*012]{9}$' THEN ST_Relate(tb_geometry(a), tb_geometry(b), upper(pattern)) END;
CREATE FUNCTION tb_st_relate(a text, b json, pattern text) RETURNS boolean LANGUAGE sql IMMUTABLE PARALLEL SAFE
    RETURN CASE WHEN pattern ~ '^[TFtf*012]{9}$' THEN ST_Relate(tb_geometry(a), tb_geometry(b), upper(pattern)) END;
CREATE FUNCTION tb_st_relate(a text, b text, pattern text) RETURNS boolean LANGUAGE sql IMMUTABLE PARALLEL SAFE
    RETURN CASE WHEN pattern ~ '^[TFtf*012]{9}$' THEN ST_Relate(tb_geometry(a), tb_geometry(b), upper(pattern)) END;

-- The planar distance between the closest points of the two.
CREATE FUNCTION tb_geo_distance(a json, b json) RETURNS double precision LANGUAGE sql IMMUTABLE PARALLEL SAFE
    RETURN ST_Distance(tb_geometry(a), tb_geometry(b));
CREATE FUNCTION tb_geo_distance(a json, b text) RETURNS double precision LANGUAGE sql IMMUTABLE PARALLEL SAFE
    RETURN ST_Distance(tb_geometry(a), tb_geometry(b));
CREATE FUNCTION tb_geo_distance(a text, b json) RETURNS double precision LANGUAGE sql IMMUTABLE PARALLEL SAFE
    RETURN ST_Distance(tb_geometry(a), tb_geometry(b));
CREATE FUNCTION tb_geo_distance(a text, b text) RETURNS double precision LANGUAGE sql IMMUTABLE PARALLEL SAFE
    RETURN ST_Distance(tb_geometry(a), tb_geometry(b));

-- The planar length of the lines in the geometry: 0 for points and for polygons, whose
-- perimeter is no length in OGC terms (ST_Length agrees).
CREATE FUNCTION tb_geo_length(a json) RETURNS double precision LANGUAGE sql IMMUTABLE PARALLEL SAFE
    RETURN ST_Length(tb_geometry(a));
CREATE FUNCTION tb_geo_length(a text) RETURNS double precision LANGUAGE sql IMMUTABLE PARALLEL SAFE
    RETURN ST_Length(tb_geometry(a));

-- Microseconds since the epoch of an ISO 8601 instant, NULL for text that is not one (as the
-- SQLite backend's `unixepoch(..., 'subsec')`): filters compare JSON strings with instants.
-- STABLE, not IMMUTABLE: text without an offset is read in the session's time zone, which the
-- server sets to UTC.
CREATE FUNCTION tb_micros(value text) RETURNS bigint LANGUAGE plpgsql STABLE PARALLEL SAFE AS $$
BEGIN
    RETURN CAST(floor(EXTRACT(EPOCH FROM CAST(value AS timestamptz)) * 1000000) AS bigint);
EXCEPTION WHEN others THEN
    RETURN NULL;
END
$$;
