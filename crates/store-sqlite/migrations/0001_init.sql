-- The SensorThings v1.1 entity tables. Instants are integer microseconds since the epoch;
-- JSON and GeoJSON are text. Derived Datastream fields are maintained by the application per
-- batch; there are no triggers.

CREATE TABLE things (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    description TEXT NOT NULL,
    properties TEXT
);

CREATE TABLE locations (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    description TEXT NOT NULL,
    encoding_type TEXT NOT NULL,
    location TEXT NOT NULL,
    properties TEXT
);

CREATE TABLE thing_locations (
    thing_id INTEGER NOT NULL REFERENCES things (id) ON DELETE CASCADE,
    location_id INTEGER NOT NULL REFERENCES locations (id) ON DELETE CASCADE,
    PRIMARY KEY (thing_id, location_id)
) WITHOUT ROWID;
CREATE INDEX thing_locations_location ON thing_locations (location_id);

CREATE TABLE historical_locations (
    id INTEGER PRIMARY KEY,
    time INTEGER NOT NULL,
    thing_id INTEGER NOT NULL REFERENCES things (id) ON DELETE CASCADE
);
CREATE INDEX historical_locations_thing ON historical_locations (thing_id, time);

CREATE TABLE historical_location_locations (
    historical_location_id INTEGER NOT NULL REFERENCES historical_locations (id) ON DELETE CASCADE,
    location_id INTEGER NOT NULL REFERENCES locations (id) ON DELETE CASCADE,
    PRIMARY KEY (historical_location_id, location_id)
) WITHOUT ROWID;
CREATE INDEX historical_location_locations_location ON historical_location_locations (location_id);

CREATE TABLE sensors (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    description TEXT NOT NULL,
    encoding_type TEXT NOT NULL,
    metadata TEXT NOT NULL,
    properties TEXT
);

CREATE TABLE observed_properties (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    definition TEXT NOT NULL,
    description TEXT NOT NULL,
    properties TEXT
);

CREATE TABLE datastreams (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    description TEXT NOT NULL,
    unit_of_measurement TEXT NOT NULL,
    observation_type TEXT NOT NULL,
    observed_area TEXT,
    phenomenon_time_start INTEGER,
    phenomenon_time_end INTEGER,
    result_time_start INTEGER,
    result_time_end INTEGER,
    properties TEXT,
    thing_id INTEGER NOT NULL REFERENCES things (id) ON DELETE CASCADE,
    sensor_id INTEGER NOT NULL REFERENCES sensors (id) ON DELETE CASCADE,
    observed_property_id INTEGER NOT NULL REFERENCES observed_properties (id) ON DELETE CASCADE
);
CREATE INDEX datastreams_thing ON datastreams (thing_id);
CREATE INDEX datastreams_sensor ON datastreams (sensor_id);
CREATE INDEX datastreams_observed_property ON datastreams (observed_property_id);

CREATE TABLE multi_datastreams (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    description TEXT NOT NULL,
    unit_of_measurements TEXT NOT NULL,
    observation_type TEXT NOT NULL,
    multi_observation_data_types TEXT NOT NULL,
    observed_area TEXT,
    phenomenon_time_start INTEGER,
    phenomenon_time_end INTEGER,
    result_time_start INTEGER,
    result_time_end INTEGER,
    properties TEXT,
    thing_id INTEGER NOT NULL REFERENCES things (id) ON DELETE CASCADE,
    sensor_id INTEGER NOT NULL REFERENCES sensors (id) ON DELETE CASCADE
);
CREATE INDEX multi_datastreams_thing ON multi_datastreams (thing_id);
CREATE INDEX multi_datastreams_sensor ON multi_datastreams (sensor_id);

-- The order of a MultiDatastream's ObservedProperties matters (it matches
-- multiObservationDataTypes), so links keep their insertion order in `rowid`.
CREATE TABLE multi_datastream_observed_properties (
    multi_datastream_id INTEGER NOT NULL REFERENCES multi_datastreams (id) ON DELETE CASCADE,
    observed_property_id INTEGER NOT NULL REFERENCES observed_properties (id) ON DELETE CASCADE,
    UNIQUE (multi_datastream_id, observed_property_id)
);
CREATE INDEX multi_datastream_observed_properties_property
    ON multi_datastream_observed_properties (observed_property_id);

CREATE TABLE features (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    description TEXT NOT NULL,
    encoding_type TEXT NOT NULL,
    feature TEXT NOT NULL,
    properties TEXT
);

-- The FeatureOfInterest generated from a Location, reused for every Observation of a Thing
-- at that Location.
CREATE TABLE location_features (
    location_id INTEGER PRIMARY KEY REFERENCES locations (id) ON DELETE CASCADE,
    feature_id INTEGER NOT NULL REFERENCES features (id) ON DELETE CASCADE
);

-- `result_number` has no declared type so SQLite keeps integers as integers and reals as reals.
CREATE TABLE observations (
    id INTEGER PRIMARY KEY,
    phenomenon_time_start INTEGER NOT NULL,
    phenomenon_time_end INTEGER,
    result_time INTEGER,
    result_number,
    result_string TEXT,
    result_boolean INTEGER,
    result_json TEXT,
    result_quality TEXT,
    valid_time_start INTEGER,
    valid_time_end INTEGER,
    parameters TEXT,
    datastream_id INTEGER REFERENCES datastreams (id) ON DELETE CASCADE,
    multi_datastream_id INTEGER REFERENCES multi_datastreams (id) ON DELETE CASCADE,
    feature_id INTEGER NOT NULL REFERENCES features (id) ON DELETE CASCADE
);
CREATE INDEX observations_datastream_time ON observations (datastream_id, phenomenon_time_start)
    WHERE datastream_id IS NOT NULL;
CREATE INDEX observations_multi_datastream_time ON observations (multi_datastream_id, phenomenon_time_start)
    WHERE multi_datastream_id IS NOT NULL;
CREATE INDEX observations_feature ON observations (feature_id);
