-- The ObservedProperties of a MultiDatastream keep the order they were linked in (it matches
-- `multiObservationDataTypes` and the result arrays), in an explicit `position` that is also
-- the row id, so new links are numbered as they come.

CREATE TABLE multi_datastream_observed_properties_ordered (
    position INTEGER PRIMARY KEY,
    multi_datastream_id INTEGER NOT NULL REFERENCES multi_datastreams (id) ON DELETE CASCADE,
    observed_property_id INTEGER NOT NULL REFERENCES observed_properties (id) ON DELETE CASCADE,
    UNIQUE (multi_datastream_id, observed_property_id)
);
INSERT INTO multi_datastream_observed_properties_ordered (position, multi_datastream_id, observed_property_id)
    SELECT rowid, multi_datastream_id, observed_property_id FROM multi_datastream_observed_properties;
DROP TABLE multi_datastream_observed_properties;
ALTER TABLE multi_datastream_observed_properties_ordered RENAME TO multi_datastream_observed_properties;
CREATE INDEX multi_datastream_observed_properties_property
    ON multi_datastream_observed_properties (observed_property_id);
