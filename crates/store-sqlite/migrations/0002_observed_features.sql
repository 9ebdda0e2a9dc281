-- Which FeaturesOfInterest each Datastream and MultiDatastream has Observations of. The
-- application extends `observed_area` only when a pair is new here, so the area costs one index
-- probe per batch and feature instead of geometry work per Observation.

CREATE TABLE datastream_features (
    datastream_id INTEGER NOT NULL REFERENCES datastreams (id) ON DELETE CASCADE,
    feature_id INTEGER NOT NULL REFERENCES features (id) ON DELETE CASCADE,
    PRIMARY KEY (datastream_id, feature_id)
) WITHOUT ROWID;
CREATE INDEX datastream_features_feature ON datastream_features (feature_id);

CREATE TABLE multi_datastream_features (
    multi_datastream_id INTEGER NOT NULL REFERENCES multi_datastreams (id) ON DELETE CASCADE,
    feature_id INTEGER NOT NULL REFERENCES features (id) ON DELETE CASCADE,
    PRIMARY KEY (multi_datastream_id, feature_id)
) WITHOUT ROWID;
CREATE INDEX multi_datastream_features_feature ON multi_datastream_features (feature_id);

INSERT INTO datastream_features (datastream_id, feature_id)
    SELECT DISTINCT datastream_id, feature_id FROM observations WHERE datastream_id IS NOT NULL;
INSERT INTO multi_datastream_features (multi_datastream_id, feature_id)
    SELECT DISTINCT multi_datastream_id, feature_id FROM observations WHERE multi_datastream_id IS NOT NULL;
