//! The SensorThings v1.1 data model as static metadata: entity types, their properties and
//! their navigation properties, with the storage names every backend uses.
//!
//! Everything that behaves per entity type (parsing, binding, SQL, JSON encoding, validation)
//! reads this table instead of matching on the entity type, so adding a property is one line.

/// One of the nine SensorThings Part 1 entity types.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum EntityType {
    Thing,
    Location,
    HistoricalLocation,
    Datastream,
    MultiDatastream,
    Sensor,
    ObservedProperty,
    Observation,
    FeatureOfInterest,
}

/// How a property's value is typed; decides validation, storage columns and filter typing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PropertyKind {
    /// A JSON string.
    Text,
    /// A JSON object (`properties`, `parameters`, `unitOfMeasurement`).
    Object,
    /// Any JSON value (`metadata`, `resultQuality`, `unitOfMeasurements`, ...).
    Json,
    /// An ISO 8601 instant.
    Instant,
    /// An ISO 8601 interval `start/end`.
    Interval,
    /// An instant or an interval (`Observation/phenomenonTime`).
    InstantOrInterval,
    /// A location or feature value whose type is given by the entity's `encodingType`
    /// (GeoJSON for `application/geo+json`).
    Geometry,
    /// `Observation/result`: any JSON value, stored by type so filters can compare it.
    Result,
}

/// A primitive property of an entity type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Property {
    /// The name on the wire, e.g. `phenomenonTime`.
    pub name: &'static str,
    /// The storage column, or the column prefix for kinds stored in several columns.
    pub column: &'static str,
    pub kind: PropertyKind,
    /// Must be present when the entity is created.
    pub required: bool,
    /// Maintained by the server; ignored when a client sends it.
    pub derived: bool,
}

/// How a navigation property is stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Link {
    /// This entity's table has a column holding the target's id (a to-one relation).
    Column(&'static str),
    /// The target's table has a column holding this entity's id (a to-many relation).
    Reverse(&'static str),
    /// A link table with a column for this entity's id and one for the target's id.
    /// `position` names a column that orders the links when their order means something (the
    /// ObservedProperties of a MultiDatastream match its `multiObservationDataTypes` by position).
    Table { table: &'static str, this: &'static str, target: &'static str, position: Option<&'static str> },
}

/// A navigation property from one entity type to another.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Navigation {
    /// The name on the wire, e.g. `Datastreams`.
    pub name: &'static str,
    pub target: EntityType,
    /// True for collections (`Datastreams`), false for single entities (`Thing`).
    pub many: bool,
    /// Must be given (by link or deep insert) when the entity is created.
    pub required: bool,
    pub link: Link,
}

use EntityType::*;
use PropertyKind::*;

const fn prop(name: &'static str, column: &'static str, kind: PropertyKind, required: bool) -> Property {
    Property { name, column, kind, required, derived: false }
}

const fn derived(name: &'static str, column: &'static str, kind: PropertyKind) -> Property {
    Property { name, column, kind, required: false, derived: true }
}

const fn to_one(name: &'static str, target: EntityType, column: &'static str, required: bool) -> Navigation {
    Navigation { name, target, many: false, required, link: Link::Column(column) }
}

const fn to_many(name: &'static str, target: EntityType, column: &'static str) -> Navigation {
    Navigation { name, target, many: true, required: false, link: Link::Reverse(column) }
}

const fn linked(
    name: &'static str,
    target: EntityType,
    table: &'static str,
    this: &'static str,
    other: &'static str,
) -> Navigation {
    Navigation {
        name,
        target,
        many: true,
        required: false,
        link: Link::Table { table, this, target: other, position: None },
    }
}

/// A link-table navigation whose links keep the order they were made in.
const fn linked_in_order(
    name: &'static str,
    target: EntityType,
    table: &'static str,
    this: &'static str,
    other: &'static str,
) -> Navigation {
    let link = Link::Table { table, this, target: other, position: Some("position") };
    Navigation { name, target, many: true, required: false, link }
}

const NAME: Property = prop("name", "name", Text, true);
const DESCRIPTION: Property = prop("description", "description", Text, true);
const PROPERTIES: Property = prop("properties", "properties", Object, false);
const ENCODING_TYPE: Property = prop("encodingType", "encoding_type", Text, true);

const THING_PROPERTIES: &[Property] = &[NAME, DESCRIPTION, PROPERTIES];
const THING_NAVIGATIONS: &[Navigation] = &[
    linked("Locations", Location, "thing_locations", "thing_id", "location_id"),
    to_many("HistoricalLocations", HistoricalLocation, "thing_id"),
    to_many("Datastreams", Datastream, "thing_id"),
    to_many("MultiDatastreams", MultiDatastream, "thing_id"),
];

const LOCATION_PROPERTIES: &[Property] =
    &[NAME, DESCRIPTION, ENCODING_TYPE, prop("location", "location", Geometry, true), PROPERTIES];
const LOCATION_NAVIGATIONS: &[Navigation] = &[
    linked("Things", Thing, "thing_locations", "location_id", "thing_id"),
    linked(
        "HistoricalLocations",
        HistoricalLocation,
        "historical_location_locations",
        "location_id",
        "historical_location_id",
    ),
];

const HISTORICAL_LOCATION_PROPERTIES: &[Property] = &[prop("time", "time", Instant, true)];
const HISTORICAL_LOCATION_NAVIGATIONS: &[Navigation] = &[
    to_one("Thing", Thing, "thing_id", true),
    linked("Locations", Location, "historical_location_locations", "historical_location_id", "location_id"),
];

const DATASTREAM_PROPERTIES: &[Property] = &[
    NAME,
    DESCRIPTION,
    prop("unitOfMeasurement", "unit_of_measurement", Object, true),
    prop("observationType", "observation_type", Text, true),
    derived("observedArea", "observed_area", Geometry),
    derived("phenomenonTime", "phenomenon_time", Interval),
    derived("resultTime", "result_time", Interval),
    PROPERTIES,
];
const DATASTREAM_NAVIGATIONS: &[Navigation] = &[
    to_one("Thing", Thing, "thing_id", true),
    to_one("Sensor", Sensor, "sensor_id", true),
    to_one("ObservedProperty", ObservedProperty, "observed_property_id", true),
    to_many("Observations", Observation, "datastream_id"),
];

const MULTI_DATASTREAM_PROPERTIES: &[Property] = &[
    NAME,
    DESCRIPTION,
    prop("unitOfMeasurements", "unit_of_measurements", Json, true),
    prop("observationType", "observation_type", Text, true),
    prop("multiObservationDataTypes", "multi_observation_data_types", Json, true),
    derived("observedArea", "observed_area", Geometry),
    derived("phenomenonTime", "phenomenon_time", Interval),
    derived("resultTime", "result_time", Interval),
    PROPERTIES,
];
const MULTI_DATASTREAM_NAVIGATIONS: &[Navigation] = &[
    to_one("Thing", Thing, "thing_id", true),
    to_one("Sensor", Sensor, "sensor_id", true),
    linked_in_order(
        "ObservedProperties",
        ObservedProperty,
        "multi_datastream_observed_properties",
        "multi_datastream_id",
        "observed_property_id",
    ),
    to_many("Observations", Observation, "multi_datastream_id"),
];

const SENSOR_PROPERTIES: &[Property] =
    &[NAME, DESCRIPTION, ENCODING_TYPE, prop("metadata", "metadata", Json, true), PROPERTIES];
const SENSOR_NAVIGATIONS: &[Navigation] =
    &[to_many("Datastreams", Datastream, "sensor_id"), to_many("MultiDatastreams", MultiDatastream, "sensor_id")];

const OBSERVED_PROPERTY_PROPERTIES: &[Property] =
    &[NAME, prop("definition", "definition", Text, true), DESCRIPTION, PROPERTIES];
const OBSERVED_PROPERTY_NAVIGATIONS: &[Navigation] = &[
    to_many("Datastreams", Datastream, "observed_property_id"),
    linked(
        "MultiDatastreams",
        MultiDatastream,
        "multi_datastream_observed_properties",
        "observed_property_id",
        "multi_datastream_id",
    ),
];

const OBSERVATION_PROPERTIES: &[Property] = &[
    // Required by the spec, but the server fills it with the creation time when it is absent.
    prop("phenomenonTime", "phenomenon_time", InstantOrInterval, false),
    prop("resultTime", "result_time", Instant, false),
    prop("result", "result", Result, true),
    prop("resultQuality", "result_quality", Json, false),
    prop("validTime", "valid_time", Interval, false),
    prop("parameters", "parameters", Object, false),
];
const OBSERVATION_NAVIGATIONS: &[Navigation] = &[
    // Exactly one of the two is required; `app` checks that rule.
    to_one("Datastream", Datastream, "datastream_id", false),
    to_one("MultiDatastream", MultiDatastream, "multi_datastream_id", false),
    // Required, but generated from the Thing's Location when absent.
    to_one("FeatureOfInterest", FeatureOfInterest, "feature_id", false),
];

const FEATURE_PROPERTIES: &[Property] =
    &[NAME, DESCRIPTION, ENCODING_TYPE, prop("feature", "feature", Geometry, true), PROPERTIES];
const FEATURE_NAVIGATIONS: &[Navigation] = &[to_many("Observations", Observation, "feature_id")];

impl EntityType {
    pub const ALL: [EntityType; 9] = [
        Thing,
        Location,
        HistoricalLocation,
        Datastream,
        MultiDatastream,
        Sensor,
        ObservedProperty,
        Observation,
        FeatureOfInterest,
    ];

    /// The singular name, e.g. `Thing`.
    pub fn name(self) -> &'static str {
        match self {
            Thing => "Thing",
            Location => "Location",
            HistoricalLocation => "HistoricalLocation",
            Datastream => "Datastream",
            MultiDatastream => "MultiDatastream",
            Sensor => "Sensor",
            ObservedProperty => "ObservedProperty",
            Observation => "Observation",
            FeatureOfInterest => "FeatureOfInterest",
        }
    }

    /// The entity set name, e.g. `Things`.
    pub fn set_name(self) -> &'static str {
        match self {
            Thing => "Things",
            Location => "Locations",
            HistoricalLocation => "HistoricalLocations",
            Datastream => "Datastreams",
            MultiDatastream => "MultiDatastreams",
            Sensor => "Sensors",
            ObservedProperty => "ObservedProperties",
            Observation => "Observations",
            FeatureOfInterest => "FeaturesOfInterest",
        }
    }

    /// The storage table.
    pub fn table(self) -> &'static str {
        match self {
            Thing => "things",
            Location => "locations",
            HistoricalLocation => "historical_locations",
            Datastream => "datastreams",
            MultiDatastream => "multi_datastreams",
            Sensor => "sensors",
            ObservedProperty => "observed_properties",
            Observation => "observations",
            FeatureOfInterest => "features",
        }
    }

    pub fn from_set_name(name: &str) -> Option<EntityType> {
        Self::ALL.into_iter().find(|t| t.set_name() == name)
    }

    pub fn properties(self) -> &'static [Property] {
        match self {
            Thing => THING_PROPERTIES,
            Location => LOCATION_PROPERTIES,
            HistoricalLocation => HISTORICAL_LOCATION_PROPERTIES,
            Datastream => DATASTREAM_PROPERTIES,
            MultiDatastream => MULTI_DATASTREAM_PROPERTIES,
            Sensor => SENSOR_PROPERTIES,
            ObservedProperty => OBSERVED_PROPERTY_PROPERTIES,
            Observation => OBSERVATION_PROPERTIES,
            FeatureOfInterest => FEATURE_PROPERTIES,
        }
    }

    pub fn navigations(self) -> &'static [Navigation] {
        match self {
            Thing => THING_NAVIGATIONS,
            Location => LOCATION_NAVIGATIONS,
            HistoricalLocation => HISTORICAL_LOCATION_NAVIGATIONS,
            Datastream => DATASTREAM_NAVIGATIONS,
            MultiDatastream => MULTI_DATASTREAM_NAVIGATIONS,
            Sensor => SENSOR_NAVIGATIONS,
            ObservedProperty => OBSERVED_PROPERTY_NAVIGATIONS,
            Observation => OBSERVATION_NAVIGATIONS,
            FeatureOfInterest => FEATURE_NAVIGATIONS,
        }
    }

    pub fn property(self, name: &str) -> Option<&'static Property> {
        self.properties().iter().find(|p| p.name == name)
    }

    pub fn navigation(self, name: &str) -> Option<&'static Navigation> {
        self.navigations().iter().find(|n| n.name == name)
    }

    /// The navigation property on `target` that leads back here, if the relation is navigable
    /// both ways (every relation of Part 1 is).
    pub fn inverse(self, nav: &Navigation) -> Option<&'static Navigation> {
        nav.target.navigations().iter().find(|back| {
            back.target == self
                && match (nav.link, back.link) {
                    (Link::Column(c), Link::Reverse(r)) | (Link::Reverse(r), Link::Column(c)) => c == r,
                    (Link::Table { table: a, .. }, Link::Table { table: b, .. }) => a == b,
                    _ => false,
                }
        })
    }
}

impl std::fmt::Display for EntityType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}
