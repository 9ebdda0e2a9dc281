//! Writes: deep insert, updates (merge, replace, JSON Patch), deletes, links through `$ref`,
//! and the Data Array extension. Everything here runs inside one write transaction.
//!
//! The model's rules live here once for every transport: required properties and relations, an
//! Observation belonging to exactly one (Multi)Datastream, the FeatureOfInterest generated from
//! the Thing's Location, a HistoricalLocation whenever a Thing's Locations change, and the
//! derived time extents of Datastreams.

use std::collections::HashMap;

use model::{EntityType, Id, Instant, Interval, Link, Navigation, PropertyKind, TimeValue};
use odata::{ResourcePath, Tail};
use serde_json::{Map, Value as Json};
use store::{Record, Value, Writer};

use crate::AppError;
use crate::convert::{check_geometry, to_json, to_value};
use crate::read::{addresses_collection, constraint, describe, ensure_exists};

const COMPLEX_OBSERVATION: &str = "http://www.opengis.net/def/observationType/OGC-OM/2.0/OM_ComplexObservation";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UpdateMode {
    /// PATCH with a JSON object: the given properties change, the others stay.
    Merge,
    /// PUT: every property is replaced; absent optional ones become null.
    Replace,
    /// PATCH with `application/json-patch+json` (RFC 6902).
    JsonPatch,
}

#[derive(Clone, Debug)]
pub enum WriteOp {
    /// POST to a collection or a navigation collection.
    Create {
        path: ResourcePath,
        body: Json,
    },
    Update {
        path: ResourcePath,
        body: Json,
        mode: UpdateMode,
    },
    Delete {
        path: ResourcePath,
    },
    /// DELETE of a collection with a `$filter` (an extension, as FROST-Server has): every
    /// entity of the collection the filter matches, up to [`MAX_FILTERED_DELETE`].
    DeleteMatching {
        path: ResourcePath,
        query: odata::Query,
    },
    /// POST or PUT of `.../Nav/$ref`: link the entity `id` of the navigation's target type.
    Link {
        path: ResourcePath,
        id: Id,
    },
    /// DELETE of `.../Nav(id)/$ref` or `.../Nav/$ref?$id=...`.
    Unlink {
        path: ResourcePath,
        id: Option<Id>,
    },
}

#[derive(Clone, Debug, PartialEq)]
pub enum WriteOutcome {
    /// `row` holds the stored entity when it is known without reading it back.
    Created {
        entity: EntityType,
        id: Id,
        row: Option<Box<store::Row>>,
    },
    Updated {
        entity: EntityType,
        id: Id,
    },
    Deleted {
        entity: EntityType,
        id: Id,
    },
    /// A filtered delete: how many entities it deleted.
    DeletedMatching {
        entity: EntityType,
        count: u64,
    },
    Linked,
    Unlinked,
}

/// One Data Array block: rows of values for the given components, for one (Multi)Datastream.
#[derive(Clone, Debug)]
pub struct DataArrayItem {
    pub datastream: Option<Id>,
    pub multi_datastream: Option<Id>,
    pub components: Vec<String>,
    pub rows: Vec<Vec<Json>>,
}

impl WriteOp {
    /// The resource path the change addresses.
    pub fn path(&self) -> &ResourcePath {
        match self {
            WriteOp::Create { path, .. }
            | WriteOp::Update { path, .. }
            | WriteOp::Delete { path }
            | WriteOp::DeleteMatching { path, .. }
            | WriteOp::Link { path, .. }
            | WriteOp::Unlink { path, .. } => path,
        }
    }
}

pub fn apply(w: &mut dyn Writer, op: WriteOp) -> Result<WriteOutcome, AppError> {
    match op {
        WriteOp::Create { path, body } => create_at(w, &path, &body),
        WriteOp::Update { path, body, mode } => update_at(w, &path, &body, mode),
        WriteOp::Delete { path } => {
            let (entity, id) = entity_at(w, &path)?;
            let parents = match entity {
                EntityType::Observation => observation_parents(w, id)?,
                EntityType::FeatureOfInterest => feature_parents(w, id)?,
                _ => Vec::new(),
            };
            if w.delete(entity, id)? {
                for (parent, parent_id) in parents {
                    w.recompute_times(parent, parent_id)?;
                    if entity == EntityType::FeatureOfInterest {
                        recompute_observed_area(w, parent, parent_id)?;
                    }
                }
                Ok(WriteOutcome::Deleted { entity, id })
            } else {
                Err(AppError::NotFound(format!("{}({id}) does not exist", entity.set_name())))
            }
        }
        WriteOp::DeleteMatching { path, query } => delete_matching(w, &path, &query),
        WriteOp::Link { path, id } => link_at(w, &path, id),
        WriteOp::Unlink { path, id } => unlink_at(w, &path, id),
    }
}

/// The most entities one filtered DELETE removes; a filter matching more is refused before
/// anything is deleted (narrow it, e.g. by time windows), so one request never holds the
/// writer for long.
pub const MAX_FILTERED_DELETE: u64 = 100_000;

/// Deletes the entities of the collection at `path` that `query`'s `$filter` matches, in one
/// transaction, then puts the derived times of the Datastreams they belonged to right once
/// each.
fn delete_matching(w: &mut dyn Writer, path: &ResourcePath, query: &odata::Query) -> Result<WriteOutcome, AppError> {
    if query.filter.is_none() {
        return Err(AppError::MethodNotAllowed(
            "DELETE of a collection needs a $filter saying which entities to delete".into(),
        ));
    }
    let entity = path.segments[path.segments.len() - 1].entity;
    let ids_only = odata::Query {
        select: Some(vec![odata::SelectItem::Id]),
        expand: Vec::new(),
        order_by: Vec::new(),
        top: Some(MAX_FILTERED_DELETE + 1),
        skip: 0,
        count: None,
        ..query.clone()
    };
    let paging = store::Paging { default_top: MAX_FILTERED_DELETE + 1, max_top: MAX_FILTERED_DELETE + 1 };
    let mut ids = Vec::new();
    crate::read::read_chunks(w, path, &ids_only, paging, 10_000, &mut |rows| {
        ids.extend(rows.rows.iter().map(|row| row.id));
        true
    })?;
    if ids.len() as u64 > MAX_FILTERED_DELETE {
        return Err(AppError::bad(
            "too_many_matches",
            format!("the filter matches more than {MAX_FILTERED_DELETE} entities; delete them in smaller parts"),
        ));
    }
    let mut parents: Vec<(EntityType, Id)> = Vec::new();
    let mut count = 0;
    for id in ids {
        let of = match entity {
            EntityType::Observation => observation_parents(w, id)?,
            EntityType::FeatureOfInterest => feature_parents(w, id)?,
            _ => Vec::new(),
        };
        if w.delete(entity, id)? {
            count += 1;
            for parent in of {
                if !parents.contains(&parent) {
                    parents.push(parent);
                }
            }
        }
    }
    for (parent, parent_id) in parents {
        // A parent deleted with its children (a cascade) has nothing left to recompute.
        if w.project_of(parent, parent_id)?.is_none() {
            continue;
        }
        w.recompute_times(parent, parent_id)?;
        if entity == EntityType::FeatureOfInterest {
            recompute_observed_area(w, parent, parent_id)?;
        }
    }
    Ok(WriteOutcome::DeletedMatching { entity, count })
}

/// The type and id of the one entity `path` addresses; 404 if there is none.
fn entity_at(w: &mut dyn Writer, path: &ResourcePath) -> Result<(EntityType, Id), AppError> {
    if addresses_collection(path) {
        return Err(AppError::MethodNotAllowed(format!(
            "{} is a collection; this method needs one entity",
            describe(path, path.segments.len() - 1)
        )));
    }
    let last = path.segments.len() - 1;
    entity_of_segment(w, path, last)
}

/// The (Multi)Datastreams a write will look up by id (`store::Store::write_touching`), which
/// also choose the writer it waits for: that of Observations created at
/// `Datastreams(1)/Observations` (or `MultiDatastreams(1)/...`, also at the end of a longer path
/// such as `Things(2)/Datastreams(1)/Observations`), or at `Observations` or
/// `FeaturesOfInterest(3)/Observations` with `"Datastream": {"@iot.id": 1}` (or
/// `"MultiDatastream"`).
pub fn touches(op: &WriteOp) -> store::Touches {
    let WriteOp::Create { path, body } = op else { return Vec::new() };
    let [.., last] = path.segments.as_slice() else { return Vec::new() };
    if last.entity != EntityType::Observation || last.key.is_some() || path.tail != Tail::None {
        return Vec::new();
    }
    match path.segments.as_slice() {
        [.., parent, _] if matches!(parent.entity, EntityType::Datastream | EntityType::MultiDatastream) => {
            parent.key.map(|id| vec![(parent.entity, id)]).unwrap_or_default()
        }
        [_] | [_, _] => [EntityType::Datastream, EntityType::MultiDatastream]
            .into_iter()
            .filter_map(|entity| {
                let id = body.get(entity.name())?.get("@iot.id")?.as_i64()?;
                Some((entity, Id(id)))
            })
            .collect(),
        _ => Vec::new(),
    }
}

/// What Data Array items will look up (`store::Store::write_touching`): their
/// (Multi)Datastreams, each once, in order.
pub fn data_array_touches(items: &[DataArrayItem]) -> store::Touches {
    let mut touches: store::Touches = Vec::new();
    for item in items {
        let named = [(EntityType::Datastream, item.datastream), (EntityType::MultiDatastream, item.multi_datastream)];
        for (entity, id) in named {
            if let Some(id) = id
                && !touches.contains(&(entity, id))
            {
                touches.push((entity, id));
            }
        }
    }
    touches
}

/// The segment of `path` whose entity's project new entities of the request join: the parent
/// of a collection (`Things(1)/Datastreams`), or the entity itself (`Things(1)`, for the
/// entities a deep update creates); `None` for a top-level collection.
pub fn placing_segment(path: &ResourcePath) -> Option<usize> {
    let last = path.segments.len().checked_sub(1)?;
    if addresses_collection(path) { last.checked_sub(1) } else { Some(last) }
}

pub fn entity_of_segment(w: &mut dyn Writer, path: &ResourcePath, j: usize) -> Result<(EntityType, Id), AppError> {
    if j > 0 {
        ensure_exists(w, path, j - 1)?;
    }
    let entity = path.segments[j].entity;
    // An entity addressed by its id alone (`Datastreams(1)`): what the write group already
    // found need not be looked up again (see `store_sql::GroupMemo`).
    if let (0, Some(id)) = (j, path.segments[j].key) {
        return match w.exists(entity, &store::id_eq(id))? {
            true => Ok((entity, id)),
            false => Err(AppError::NotFound(format!("nothing exists at {}", describe(path, j)))),
        };
    }
    let query = odata::Query { select: Some(Vec::new()), top: Some(1), ..odata::Query::default() };
    let paging = store::Paging { default_top: 1, max_top: 1 };
    let rows = w.query(entity, constraint(path, j).as_ref(), &query, paging)?;
    match rows.rows.first() {
        Some(row) => Ok((entity, row.id)),
        None => Err(AppError::NotFound(format!("nothing exists at {}", describe(path, j)))),
    }
}

fn create_at(w: &mut dyn Writer, path: &ResourcePath, body: &Json) -> Result<WriteOutcome, AppError> {
    if !addresses_collection(path) || path.tail != Tail::None {
        return Err(AppError::MethodNotAllowed("POST creates entities in a collection only".into()));
    }
    let last = path.segments.len() - 1;
    let entity = path.segments[last].entity;
    let Some(via) = path.segments[last].via else {
        let (id, row) = create_entity(w, entity, body, None)?;
        return Ok(WriteOutcome::Created { entity, id, row: row.map(Box::new) });
    };
    let (parent, parent_id) = entity_of_segment(w, path, last - 1)?;
    let id = match via.link {
        Link::Reverse(_) => {
            let back = parent.inverse(via).ok_or_else(|| AppError::Internal("navigation without inverse".into()))?;
            let (id, row) = create_entity(w, entity, body, Some((back, parent_id)))?;
            return Ok(WriteOutcome::Created { entity, id, row: row.map(Box::new) });
        }
        Link::Table { .. } => {
            let id = create(w, entity, body, None)?;
            w.link(via, parent_id, id)?;
            after_link(w, parent, via, parent_id, &[id])?;
            id
        }
        Link::Column(_) => {
            return Err(AppError::MethodNotAllowed(format!(
                "{} is a single entity; POST to a collection to create one",
                describe(path, last)
            )));
        }
    };
    Ok(WriteOutcome::Created { entity, id, row: None })
}

/// The id an object refers to with `@iot.id`, if it is a reference.
fn reference(json: &Json) -> Result<Option<Id>, AppError> {
    let Some(value) = json.as_object().and_then(|o| o.get("@iot.id")) else { return Ok(None) };
    let id = match value {
        Json::Number(n) => n.as_i64(),
        Json::String(s) => s.parse().ok(),
        _ => None,
    };
    id.map(|i| Some(Id(i)))
        .ok_or_else(|| AppError::bad("invalid_id", format!("`@iot.id` must be an integer, not {value}")))
}

fn require_exists(w: &mut dyn Writer, entity: EntityType, id: Id) -> Result<(), AppError> {
    if w.exists(entity, &store::id_eq(id))? {
        Ok(())
    } else {
        Err(AppError::bad("missing_entity", format!("{}({id}) does not exist", entity.set_name())))
    }
}

/// The id of the entity `json` references, or of the entity it creates.
fn resolve_or_create(
    w: &mut dyn Writer,
    entity: EntityType,
    json: &Json,
    fixed: Option<(&'static Navigation, Id)>,
) -> Result<Id, AppError> {
    match reference(json)? {
        Some(id) => {
            require_exists(w, entity, id)?;
            Ok(id)
        }
        None => create(w, entity, json, fixed),
    }
}

/// Keys that carry annotations (`@iot.id`, `Datastreams@iot.navigationLink`), not data.
fn is_annotation(key: &str) -> bool {
    key.contains('@')
}

/// Creates an entity of `entity` from `json`, with nested entities (deep insert). `fixed` is a
/// to-one link the context imposes (POST to `Things(1)/Datastreams` links the Thing).
pub fn create(
    w: &mut dyn Writer,
    entity: EntityType,
    json: &Json,
    fixed: Option<(&'static Navigation, Id)>,
) -> Result<Id, AppError> {
    create_entity(w, entity, json, fixed).map(|(id, _)| id)
}

/// [`create`], also returning the stored row when it is known without reading it back (for
/// Observations, the hot path).
fn create_entity(
    w: &mut dyn Writer,
    entity: EntityType,
    json: &Json,
    fixed: Option<(&'static Navigation, Id)>,
) -> Result<(Id, Option<store::Row>), AppError> {
    let object = json
        .as_object()
        .ok_or_else(|| AppError::bad("invalid_entity", format!("a {} must be a JSON object", entity.name())))?;
    let mut record = Record::default();
    let mut to_many: Vec<(&'static Navigation, &Json)> = Vec::new();
    for (key, value) in object {
        if let Some(nav) = read_key(entity, key, value, &mut record)? {
            if nav.many {
                to_many.push((nav, value));
            } else if fixed.is_some_and(|(f, _)| f.name == nav.name) {
                // The context decides this link; a body naming another one is ignored.
            } else {
                let id = resolve_or_create(w, nav.target, value, None)?;
                record.links.push((nav, Some(id)));
            }
        }
    }
    if let Some((nav, id)) = fixed {
        record.links.push((nav, Some(id)));
    }
    check_required(entity, object, &record, &to_many)?;
    if entity == EntityType::Observation {
        let mut records = [record];
        // A parent fixed by the context was found or created by this job already.
        let known = fixed.map(|(nav, id)| (nav.target, id));
        let id = create_observations(w, &mut records, known)?[0];
        let [record] = records;
        // The record is complete and in schema order: it is the stored row, so the reply
        // needs no read-back.
        let row = store::Row { id, values: record.values.into_iter().map(|(_, v)| v).collect(), expanded: Vec::new() };
        return Ok((id, Some(row)));
    }
    let id = w.insert(entity, &record)?;
    for (nav, value) in to_many {
        let items = value.as_array().ok_or_else(|| {
            AppError::bad("invalid_entity", format!("{}/{} must be an array", entity.name(), nav.name))
        })?;
        let mut linked = Vec::with_capacity(items.len());
        for item in items {
            match nav.link {
                Link::Reverse(_) => {
                    let back =
                        entity.inverse(nav).ok_or_else(|| AppError::Internal("navigation without inverse".into()))?;
                    match reference(item)? {
                        Some(child) => {
                            require_exists(w, nav.target, child)?;
                            w.update(
                                nav.target,
                                child,
                                &Record { values: Vec::new(), links: vec![(back, Some(id))], project: None },
                            )?;
                        }
                        None => {
                            create(w, nav.target, item, Some((back, id)))?;
                        }
                    }
                }
                Link::Table { .. } => {
                    let child = resolve_or_create(w, nav.target, item, None)?;
                    w.link(nav, id, child)?;
                    linked.push(child);
                }
                Link::Column(_) => {}
            }
        }
        after_link(w, entity, nav, id, &linked)?;
    }
    if entity == EntityType::MultiDatastream {
        check_multi_datastream(w, id, object)?;
    }
    Ok((id, None))
}

/// Takes one key of an entity object: annotations are skipped, properties are converted into
/// `record`, and a navigation property is returned for the caller, whose handling differs
/// between create and update. Unknown keys are a 400.
fn read_key(
    entity: EntityType,
    key: &str,
    value: &Json,
    record: &mut Record,
) -> Result<Option<&'static Navigation>, AppError> {
    if is_annotation(key) {
        return Ok(None);
    }
    if let Some(property) = entity.property(key) {
        if !property.derived {
            record.values.push((property, to_value(entity, property, value)?));
        }
        return Ok(None);
    }
    entity.navigation(key).map(Some).ok_or_else(|| unknown_property(entity, key))
}

fn unknown_property(entity: EntityType, key: &str) -> AppError {
    AppError::bad("unknown_property", format!("{} has no property or relation `{key}`", entity.name()))
}

/// Rules checked before an entity is inserted: required properties and relations, encodings.
fn check_required(
    entity: EntityType,
    object: &Map<String, Json>,
    record: &Record,
    to_many: &[(&'static Navigation, &Json)],
) -> Result<(), AppError> {
    for property in entity.properties() {
        let present = record.values.iter().any(|(p, _)| p.name == property.name);
        if property.required && !present {
            return Err(AppError::bad(
                "missing_property",
                format!("{} needs the property `{}`", entity.name(), property.name),
            ));
        }
    }
    for nav in entity.navigations() {
        if nav.required && !record.links.iter().any(|(n, _)| n.name == nav.name) {
            return Err(AppError::bad(
                "missing_relation",
                format!("{} needs a {} (by `@iot.id` or inline)", entity.name(), nav.name),
            ));
        }
    }
    match entity {
        EntityType::Location => check_geometry(entity, object, "location")?,
        EntityType::FeatureOfInterest => check_geometry(entity, object, "feature")?,
        EntityType::MultiDatastream => {
            let kind = object.get("observationType").and_then(Json::as_str);
            if kind != Some(COMPLEX_OBSERVATION) {
                return Err(AppError::bad(
                    "invalid_property",
                    format!("MultiDatastream/observationType must be {COMPLEX_OBSERVATION}"),
                ));
            }
            if !to_many.iter().any(|(n, _)| n.name == "ObservedProperties") {
                return Err(AppError::bad("missing_relation", "MultiDatastream needs ObservedProperties"));
            }
        }
        _ => {}
    }
    Ok(())
}

fn check_multi_datastream(w: &mut dyn Writer, id: Id, object: &Map<String, Json>) -> Result<(), AppError> {
    let nav = EntityType::MultiDatastream
        .navigation("ObservedProperties")
        .ok_or_else(|| AppError::Internal("schema".into()))?;
    let properties = w.related(EntityType::MultiDatastream, id, nav)?.len();
    let len = |key: &str| object.get(key).and_then(Json::as_array).map(Vec::len);
    let units = len("unitOfMeasurements");
    let types = len("multiObservationDataTypes");
    if units != Some(properties) || types != Some(properties) {
        return Err(AppError::bad(
            "invalid_multi_datastream",
            format!(
                "a MultiDatastream needs as many unitOfMeasurements ({}) and multiObservationDataTypes ({}) as ObservedProperties ({properties})",
                units.map_or("none".into(), |n| n.to_string()),
                types.map_or("none".into(), |n| n.to_string())
            ),
        ));
    }
    Ok(())
}

/// What follows a change of links: a Thing whose Locations changed gets a HistoricalLocation.
fn after_link(w: &mut dyn Writer, entity: EntityType, nav: &Navigation, id: Id, linked: &[Id]) -> Result<(), AppError> {
    if linked.is_empty() {
        return Ok(());
    }
    let things: Vec<(Id, Vec<Id>)> = match (entity, nav.name) {
        (EntityType::Thing, "Locations") => vec![(id, linked.to_vec())],
        (EntityType::Location, "Things") => linked.iter().map(|thing| (*thing, vec![id])).collect(),
        _ => return Ok(()),
    };
    let hl = EntityType::HistoricalLocation;
    let (Some(time), Some(thing_nav), Some(locations_nav)) =
        (hl.property("time"), hl.navigation("Thing"), hl.navigation("Locations"))
    else {
        return Err(AppError::Internal("schema".into()));
    };
    for (thing, locations) in things {
        let record = Record {
            values: vec![(time, Value::Instant(Instant::now()))],
            links: vec![(thing_nav, Some(thing))],
            project: None,
        };
        let hl_id = w.insert(hl, &record)?;
        for location in locations {
            w.link(locations_nav, hl_id, location)?;
        }
    }
    Ok(())
}

/// Where new Observations go, and what they need from it.
struct ObservationParent {
    entity: EntityType,
    id: Id,
    /// For a MultiDatastream: how many values each result must hold.
    arity: Option<usize>,
    /// The FeatureOfInterest generated for Observations without one, once looked up.
    generated: Option<Id>,
}

/// Inserts Observations (records with values and links checked by the caller), adding default
/// phenomenonTime and generated FeaturesOfInterest, and widening the parents' time extents once
/// per parent.
/// Creates `records` (Observations), checking that each one's Datastream or MultiDatastream
/// exists unless it is `known` to.
fn create_observations(
    w: &mut dyn Writer,
    records: &mut [Record],
    known: Option<(EntityType, Id)>,
) -> Result<Vec<Id>, AppError> {
    let ty = EntityType::Observation;
    let (Some(phenomenon), Some(result_time), Some(result), Some(ds_nav), Some(mds_nav), Some(foi_nav)) = (
        ty.property("phenomenonTime"),
        ty.property("resultTime"),
        ty.property("result"),
        ty.navigation("Datastream"),
        ty.navigation("MultiDatastream"),
        ty.navigation("FeatureOfInterest"),
    ) else {
        return Err(AppError::Internal("schema".into()));
    };
    let mut parents: HashMap<(EntityType, Id), ObservationParent> = HashMap::new();
    let mut extents: HashMap<(EntityType, Id), (Interval, Option<Interval>)> = HashMap::new();
    let now = Instant::now();
    for record in records.iter_mut() {
        let ds = record.links.iter().find(|(n, _)| n.name == ds_nav.name).and_then(|(_, id)| *id);
        let mds = record.links.iter().find(|(n, _)| n.name == mds_nav.name).and_then(|(_, id)| *id);
        let key = match (ds, mds) {
            (Some(id), None) => (EntityType::Datastream, id),
            (None, Some(id)) => (EntityType::MultiDatastream, id),
            (None, None) => {
                return Err(AppError::bad(
                    "missing_relation",
                    "an Observation needs a Datastream or a MultiDatastream",
                ));
            }
            (Some(_), Some(_)) => {
                return Err(AppError::bad(
                    "invalid_relation",
                    "an Observation belongs to a Datastream or to a MultiDatastream, not both",
                ));
            }
        };
        let parent = match parents.entry(key) {
            std::collections::hash_map::Entry::Occupied(known) => known.into_mut(),
            std::collections::hash_map::Entry::Vacant(slot) => {
                if known != Some(key) {
                    require_exists(w, key.0, key.1)?;
                }
                let arity = if key.0 == EntityType::MultiDatastream {
                    let nav =
                        key.0.navigation("ObservedProperties").ok_or_else(|| AppError::Internal("schema".into()))?;
                    Some(w.related(key.0, key.1, nav)?.len())
                } else {
                    None
                };
                slot.insert(ObservationParent { entity: key.0, id: key.1, arity, generated: None })
            }
        };
        if let Some(arity) = parent.arity {
            let value = record.values.iter().find(|(p, _)| p.name == result.name).map(|(_, v)| v);
            check_arity(value, arity, parent.id)?;
        }
        if !record.values.iter().any(|(p, _)| p.name == phenomenon.name) {
            record.values.push((phenomenon, Value::Instant(now)));
        }
        if !record.values.iter().any(|(p, _)| p.name == result_time.name) {
            record.values.push((result_time, Value::Null));
        }
        if !record.links.iter().any(|(n, _)| n.name == foi_nav.name) {
            let feature = match parent.generated {
                Some(feature) => feature,
                None => {
                    let feature = generated_feature(w, parent.entity, parent.id)?;
                    parent.generated = Some(feature);
                    feature
                }
            };
            record.links.push((foi_nav, Some(feature)));
        }
        let time = match record.values.iter().find(|(p, _)| p.name == phenomenon.name) {
            Some((_, Value::Instant(i))) => TimeValue::Instant(*i).extent(),
            Some((_, Value::Interval(i))) => *i,
            _ => {
                return Err(AppError::bad("missing_property", "Observation/phenomenonTime cannot be null"));
            }
        };
        let result_extent = match record.values.iter().find(|(p, _)| p.name == result_time.name) {
            Some((_, Value::Instant(i))) => Some(TimeValue::Instant(*i).extent()),
            _ => None,
        };
        let entry = extents.entry(key).or_insert((time, result_extent));
        entry.0 = entry.0.union(time);
        entry.1 = match (entry.1, result_extent) {
            (Some(a), Some(b)) => Some(a.union(b)),
            (a, b) => a.or(b),
        };
        // Every record of one insert needs the same columns in the same order.
        normalize(record);
    }
    let mut pairs: Vec<(EntityType, Id, Id)> = records
        .iter()
        .filter_map(|record| {
            let link = |name: &str| record.links.iter().find(|(n, _)| n.name == name).and_then(|(_, id)| *id);
            let feature = link("FeatureOfInterest")?;
            match (link("Datastream"), link("MultiDatastream")) {
                (Some(ds), _) => Some((EntityType::Datastream, ds, feature)),
                (_, Some(mds)) => Some((EntityType::MultiDatastream, mds, feature)),
                _ => None,
            }
        })
        .collect();
    // Noted before the insert, which a backend that holds single inserts for the write
    // group (`store_sql::buffer`) then need not send on its own ahead of the pair.
    pairs.sort_unstable();
    pairs.dedup();
    for (entity, id, feature) in pairs {
        if w.note_feature(entity, id, feature)? {
            extend_observed_area(w, entity, id, feature)?;
        }
    }
    let ids = insert_grouped(w, records)?;
    for ((entity, id), (phenomenon, result)) in extents {
        w.extend_times(entity, id, phenomenon, result)?;
    }
    Ok(ids)
}

/// Widens the derived `observedArea` of a (Multi)Datastream to the bounding box that also
/// covers `feature`. Features that are not GeoJSON have no place on a map and are skipped.
fn extend_observed_area(w: &mut dyn Writer, entity: EntityType, id: Id, feature: Id) -> Result<(), AppError> {
    let Some(feature_geometry) = geometry_of(w, EntityType::FeatureOfInterest, feature, "feature")? else {
        return Ok(());
    };
    let current = geometry_of(w, entity, id, "observedArea")?;
    let area = match current {
        Some(area) => area.envelope_union(&feature_geometry),
        None => feature_geometry.envelope(),
    };
    let (Some(area), Some(property)) = (area, entity.property("observedArea")) else { return Ok(()) };
    let record = Record {
        values: vec![(property, Value::Json(area.to_geojson().to_string()))],
        links: Vec::new(),
        project: None,
    };
    w.update_derived(entity, id, &record)?;
    Ok(())
}

/// The GeoJSON geometry held by the property `name` of an entity, if it has one.
fn geometry_of(
    w: &mut dyn Writer,
    entity: EntityType,
    id: Id,
    name: &str,
) -> Result<Option<model::Geometry>, AppError> {
    let property = entity.property(name).ok_or_else(|| AppError::Internal("schema".into()))?;
    let query = odata::Query {
        select: Some(vec![odata::SelectItem::Property(property)]),
        top: Some(1),
        ..odata::Query::default()
    };
    let paging = store::Paging { default_top: 1, max_top: 1 };
    let rows = w.query(entity, Some(&store::id_eq(id)), &query, paging)?;
    let Some(Value::Json(text)) = rows.rows.first().and_then(|r| r.values.first()) else { return Ok(None) };
    Ok(serde_json::from_str::<Json>(text).ok().and_then(|json| model::Geometry::from_geojson(&json).ok()))
}

/// Fails unless `result` is an array of `arity` values, as an Observation of the
/// MultiDatastream `id` with `arity` ObservedProperties needs.
fn check_arity(result: Option<&Value>, arity: usize, id: Id) -> Result<(), AppError> {
    let ok = match result {
        Some(Value::Json(text)) => {
            serde_json::from_str::<Json>(text).ok().and_then(|j| j.as_array().map(Vec::len)) == Some(arity)
        }
        _ => false,
    };
    if ok {
        Ok(())
    } else {
        Err(AppError::bad(
            "invalid_result",
            format!("the result of an Observation of MultiDatastreams({id}) must be an array of {arity} values"),
        ))
    }
}

/// Puts an Observation record's values and links in schema order, with every property present,
/// so records can share one multi-row INSERT.
fn normalize(record: &mut Record) {
    let ty = EntityType::Observation;
    let mut values = Vec::with_capacity(ty.properties().len());
    for property in ty.properties() {
        let value = record
            .values
            .iter()
            .position(|(p, _)| p.name == property.name)
            .map(|i| record.values.swap_remove(i).1)
            .unwrap_or(Value::Null);
        values.push((property, value));
    }
    record.values = values;
    let mut links = Vec::with_capacity(3);
    for nav in ty.navigations() {
        let id = record.links.iter().find(|(n, _)| n.name == nav.name).and_then(|(_, id)| *id);
        links.push((nav, id));
    }
    record.links = links;
}

fn insert_grouped(w: &mut dyn Writer, records: &[Record]) -> Result<Vec<Id>, AppError> {
    Ok(w.insert_many(EntityType::Observation, records)?)
}

/// The FeatureOfInterest generated from the Location of the Thing of a (Multi)Datastream,
/// created on first use.
fn generated_feature(w: &mut dyn Writer, entity: EntityType, id: Id) -> Result<Id, AppError> {
    let locations = w.thing_locations(entity, id)?;
    if let Some(feature) = locations.iter().find_map(|l| l.generated_feature) {
        return Ok(feature);
    }
    let Some(location) = locations.into_iter().next() else {
        return Err(AppError::bad(
            "missing_feature",
            format!(
                "the Observation has no FeatureOfInterest and the Thing of {}({id}) has no Location to generate one from",
                entity.set_name()
            ),
        ));
    };
    let feature = EntityType::FeatureOfInterest;
    let field = |name: &str| feature.property(name).ok_or_else(|| AppError::Internal("schema".into()));
    let record = Record {
        values: vec![
            (field("name")?, Value::Text(location.name)),
            (field("description")?, Value::Text(location.description)),
            (field("encodingType")?, Value::Text(location.encoding_type)),
            (field("feature")?, Value::Json(location.location_json)),
        ],
        links: Vec::new(),
        project: None,
    };
    let feature_id = w.insert(feature, &record)?;
    w.remember_generated_feature(location.location, feature_id)?;
    Ok(feature_id)
}

fn update_at(w: &mut dyn Writer, path: &ResourcePath, body: &Json, mode: UpdateMode) -> Result<WriteOutcome, AppError> {
    if path.tail != Tail::None {
        return Err(AppError::MethodNotAllowed("only entities can be updated, not properties or references".into()));
    }
    let (entity, id) = entity_at(w, path)?;
    let object = match mode {
        UpdateMode::JsonPatch => {
            let current = current_json(w, entity, id)?;
            let patched = crate::patch::apply(current.clone(), body)?;
            let mut object = patched.as_object().cloned().unwrap_or_default();
            // Only properties can be patched; derived ones are the server's.
            object.retain(|k, _| entity.property(k).is_some_and(|p| !p.derived));
            // A property the patch removed becomes null (an error for required ones); left out
            // of the update, it would silently stay.
            for key in current.as_object().into_iter().flat_map(|c| c.keys()) {
                if entity.property(key).is_some_and(|p| !p.derived) && !object.contains_key(key) {
                    object.insert(key.clone(), Json::Null);
                }
            }
            Json::Object(object)
        }
        _ => body.clone(),
    };
    let object = object.as_object().ok_or_else(|| {
        AppError::bad("invalid_entity", format!("an update of a {} must be a JSON object", entity.name()))
    })?;
    let mut record = Record::default();
    let mut linked: Vec<(&'static Navigation, Vec<Id>)> = Vec::new();
    for (key, value) in object {
        if let Some(nav) = read_key(entity, key, value, &mut record)? {
            match nav.link {
                Link::Column(_) => {
                    let target = resolve_or_create(w, nav.target, value, None)?;
                    record.links.push((nav, Some(target)));
                }
                Link::Table { .. } => {
                    let items = value.as_array().ok_or_else(|| {
                        AppError::bad("invalid_entity", format!("{}/{} must be an array", entity.name(), nav.name))
                    })?;
                    let mut ids = Vec::with_capacity(items.len());
                    for item in items {
                        ids.push(resolve_or_create(w, nav.target, item, None)?);
                    }
                    linked.push((nav, ids));
                }
                Link::Reverse(_) => {
                    return Err(AppError::bad(
                        "unsupported_update",
                        format!(
                            "{}/{} cannot be changed by an update; link each one through its own relation",
                            entity.name(),
                            nav.name
                        ),
                    ));
                }
            }
        }
    }
    if mode == UpdateMode::Replace {
        for property in entity.properties().iter().filter(|p| !p.derived) {
            if !record.values.iter().any(|(p, _)| p.name == property.name) {
                if property.required {
                    return Err(AppError::bad(
                        "missing_property",
                        format!("PUT replaces the whole {}; `{}` is required", entity.name(), property.name),
                    ));
                }
                record.values.push((property, Value::Null));
            }
        }
    }
    if matches!(entity, EntityType::Location | EntityType::FeatureOfInterest) && !record.values.is_empty() {
        let merged = merged_json(w, entity, id, object)?;
        let key = if entity == EntityType::Location { "location" } else { "feature" };
        check_geometry(entity, &merged, key)?;
    }
    let mut old_parents = Vec::new();
    if entity == EntityType::Observation {
        check_observation_update(&record)?;
        old_parents = observation_parents(w, id)?;
    }
    if !w.update(entity, id, &record)? {
        return Err(AppError::NotFound(format!("{}({id}) does not exist", entity.set_name())));
    }
    if entity == EntityType::Observation {
        // Times may have shrunk and the Observation may have moved to another Datastream, so
        // the extents of the old and the new parents are computed afresh.
        let mut parents = observation_parents(w, id)?;
        parents.extend(old_parents);
        parents.sort_unstable();
        parents.dedup();
        for (parent, parent_id) in parents {
            w.recompute_times(parent, parent_id)?;
        }
    }
    for (nav, ids) in linked {
        w.unlink_all(nav, id)?;
        for target in &ids {
            w.link(nav, id, *target)?;
        }
        after_link(w, entity, nav, id, &ids)?;
    }
    Ok(WriteOutcome::Updated { entity, id })
}

/// Rejects an update that would leave an Observation without a phenomenonTime.
fn check_observation_update(record: &Record) -> Result<(), AppError> {
    if record.values.iter().any(|(p, v)| p.name == "phenomenonTime" && *v == Value::Null) {
        return Err(AppError::bad("missing_property", "Observation/phenomenonTime cannot be null"));
    }
    Ok(())
}

/// The Datastream or MultiDatastream an Observation belongs to.
fn observation_parents(w: &mut dyn Writer, id: Id) -> Result<Vec<(EntityType, Id)>, AppError> {
    let ty = EntityType::Observation;
    let mut parents = Vec::new();
    for nav_name in ["Datastream", "MultiDatastream"] {
        let nav = ty.navigation(nav_name).ok_or_else(|| AppError::Internal("schema".into()))?;
        parents.extend(w.related(ty, id, nav)?.into_iter().map(|parent| (nav.target, parent)));
    }
    Ok(parents)
}

/// A path of navigation names from `entity`, ending in `id eq <id>`.
fn linked_to(entity: EntityType, hops: &[&str], id: Id) -> Result<odata::Expr, AppError> {
    let mut navigations = Vec::with_capacity(hops.len());
    let mut at = entity;
    for name in hops {
        let nav = at.navigation(name).ok_or_else(|| AppError::Internal("schema".into()))?;
        navigations.push(nav);
        at = nav.target;
    }
    Ok(odata::Expr::Binary {
        op: odata::BinaryOp::Eq,
        left: Box::new(odata::Expr::Member(odata::MemberPath { hops: navigations, member: odata::Member::Id })),
        right: Box::new(odata::Expr::Literal(odata::Literal::Integer(id.0))),
    })
}

/// A read of every match, for derived-field maintenance inside a transaction.
fn all_of(
    w: &mut dyn Writer,
    entity: EntityType,
    constraint: &odata::Expr,
    select: Vec<odata::SelectItem>,
) -> Result<store::Rows, AppError> {
    let query = odata::Query { select: Some(select), top: Some(u64::from(u32::MAX)), ..odata::Query::default() };
    let paging = store::Paging { default_top: u64::from(u32::MAX), max_top: u64::from(u32::MAX) };
    Ok(w.query(entity, Some(constraint), &query, paging)?)
}

/// The Datastreams and MultiDatastreams with Observations of `feature`: their derived fields
/// change when the feature (and with it those Observations) is deleted.
fn feature_parents(w: &mut dyn Writer, feature: Id) -> Result<Vec<(EntityType, Id)>, AppError> {
    let mut parents = Vec::new();
    for entity in [EntityType::Datastream, EntityType::MultiDatastream] {
        let constraint = linked_to(entity, &["Observations", "FeatureOfInterest"], feature)?;
        parents.extend(all_of(w, entity, &constraint, Vec::new())?.rows.into_iter().map(|r| (entity, r.id)));
    }
    Ok(parents)
}

/// Rebuilds `observedArea` from the features the (Multi)Datastream still has Observations of.
fn recompute_observed_area(w: &mut dyn Writer, entity: EntityType, id: Id) -> Result<(), AppError> {
    let feature = EntityType::FeatureOfInterest;
    let back = if entity == EntityType::Datastream { "Datastream" } else { "MultiDatastream" };
    let constraint = linked_to(feature, &["Observations", back], id)?;
    let property = feature.property("feature").ok_or_else(|| AppError::Internal("schema".into()))?;
    let rows = all_of(w, feature, &constraint, vec![odata::SelectItem::Property(property)])?;
    let mut area: Option<model::Geometry> = None;
    for row in rows.rows {
        let Some(Value::Json(text)) = row.values.first() else { continue };
        let Some(geometry) =
            serde_json::from_str::<Json>(text).ok().and_then(|j| model::Geometry::from_geojson(&j).ok())
        else {
            continue;
        };
        area = match area {
            Some(a) => a.envelope_union(&geometry),
            None => geometry.envelope(),
        };
    }
    let observed_area = entity.property("observedArea").ok_or_else(|| AppError::Internal("schema".into()))?;
    let value = area.map_or(Value::Null, |a| Value::Json(a.to_geojson().to_string()));
    w.update_derived(entity, id, &Record { values: vec![(observed_area, value)], links: Vec::new(), project: None })?;
    Ok(())
}

/// The current properties of an entity as a JSON object.
fn current_json(w: &mut dyn Writer, entity: EntityType, id: Id) -> Result<Json, AppError> {
    let query = odata::Query { top: Some(1), ..odata::Query::default() };
    let paging = store::Paging { default_top: 1, max_top: 1 };
    let rows = w.query(entity, Some(&store::id_eq(id)), &query, paging)?;
    let row =
        rows.rows.first().ok_or_else(|| AppError::NotFound(format!("{}({id}) does not exist", entity.set_name())))?;
    let mut object = Map::new();
    for (field, value) in rows.fields.iter().zip(&row.values) {
        if *value != Value::Null || field.kind != PropertyKind::Result {
            object.insert(field.name.to_owned(), to_json(value));
        }
    }
    Ok(Json::Object(object))
}

fn merged_json(
    w: &mut dyn Writer,
    entity: EntityType,
    id: Id,
    changes: &Map<String, Json>,
) -> Result<Map<String, Json>, AppError> {
    let mut current = current_json(w, entity, id)?.as_object().cloned().unwrap_or_default();
    for (k, v) in changes {
        current.insert(k.clone(), v.clone());
    }
    Ok(current)
}

/// The parent entity and navigation of a `.../Nav/$ref` or `.../Nav(id)/$ref` path.
fn ref_parts(w: &mut dyn Writer, path: &ResourcePath) -> Result<(EntityType, Id, &'static Navigation), AppError> {
    let last = path.segments.len() - 1;
    let nav = match (path.tail == Tail::Ref, path.segments[last].via) {
        (true, Some(nav)) => nav,
        _ => {
            return Err(AppError::MethodNotAllowed(
                "links are changed through a navigation property's $ref, e.g. /Things(1)/Locations/$ref".into(),
            ));
        }
    };
    let (parent, parent_id) = entity_of_segment(w, path, last - 1)?;
    Ok((parent, parent_id, nav))
}

fn link_at(w: &mut dyn Writer, path: &ResourcePath, id: Id) -> Result<WriteOutcome, AppError> {
    let (parent, parent_id, nav) = ref_parts(w, path)?;
    if !w.exists(nav.target, &store::id_eq(id))? {
        return Err(AppError::NotFound(format!("{}({id}) does not exist", nav.target.set_name())));
    }
    match nav.link {
        Link::Table { .. } => {
            w.link(nav, parent_id, id)?;
            after_link(w, parent, nav, parent_id, &[id])?;
        }
        Link::Reverse(_) => {
            let back = parent.inverse(nav).ok_or_else(|| AppError::Internal("navigation without inverse".into()))?;
            w.update(
                nav.target,
                id,
                &Record { values: Vec::new(), links: vec![(back, Some(parent_id))], project: None },
            )?;
        }
        Link::Column(_) => {
            w.update(parent, parent_id, &Record { values: Vec::new(), links: vec![(nav, Some(id))], project: None })?;
        }
    }
    Ok(WriteOutcome::Linked)
}

fn unlink_at(w: &mut dyn Writer, path: &ResourcePath, id: Option<Id>) -> Result<WriteOutcome, AppError> {
    let (parent, parent_id, nav) = ref_parts(w, path)?;
    let last = path.segments.len() - 1;
    let target = id.or(path.segments[last].key);
    match nav.link {
        Link::Table { .. } => {
            let target = target.ok_or_else(|| {
                AppError::bad("missing_id", "say which link to remove: .../Nav(id)/$ref or ?$id=<selfLink>")
            })?;
            if !w.unlink(nav, parent_id, target)? {
                return Err(AppError::NotFound(format!(
                    "{}({parent_id}) is not linked to {}({target})",
                    parent.set_name(),
                    nav.target.set_name()
                )));
            }
            Ok(WriteOutcome::Unlinked)
        }
        Link::Reverse(_) | Link::Column(_) => {
            let back = match nav.link {
                Link::Reverse(_) => parent.inverse(nav),
                _ => Some(nav),
            };
            let required = back.is_some_and(|b| b.required || b.name == "Datastream" || b.name == "FeatureOfInterest");
            Err(AppError::Conflict(if required {
                format!(
                    "{} cannot lose its {}: the relation is required; delete or relink instead",
                    nav.target.name(),
                    nav.name
                )
            } else {
                format!("{}/{} cannot be unlinked", parent.name(), nav.name)
            }))
        }
    }
}

/// Creates the Observations of Data Array blocks; each row's outcome is reported separately.
pub fn create_data_arrays(
    w: &mut dyn Writer,
    items: Vec<DataArrayItem>,
) -> Result<Vec<Result<Id, AppError>>, AppError> {
    let ty = EntityType::Observation;
    let mut outcomes = Vec::new();
    for item in items {
        let (nav_name, parent) = match (item.datastream, item.multi_datastream) {
            (Some(id), None) => ("Datastream", id),
            (None, Some(id)) => ("MultiDatastream", id),
            _ => {
                return Err(AppError::bad(
                    "invalid_data_array",
                    "each Data Array block names one Datastream or one MultiDatastream by @iot.id",
                ));
            }
        };
        let nav = ty.navigation(nav_name).ok_or_else(|| AppError::Internal("schema".into()))?;
        // Rows with the wrong number of values for a MultiDatastream are reported one by one,
        // like every other bad row, instead of failing the whole request.
        let arity = match nav_name {
            "MultiDatastream" => {
                require_exists(w, EntityType::MultiDatastream, parent)?;
                let properties = EntityType::MultiDatastream
                    .navigation("ObservedProperties")
                    .ok_or_else(|| AppError::Internal("schema".into()))?;
                Some(w.related(EntityType::MultiDatastream, parent, properties)?.len())
            }
            _ => None,
        };
        // `Err(())` marks the FeatureOfInterest id column.
        let mut columns: Vec<Result<&'static model::Property, ()>> = Vec::with_capacity(item.components.len());
        for component in &item.components {
            match component.as_str() {
                "FeatureOfInterest/id" | "FeatureOfInterest/@iot.id" => columns.push(Err(())),
                name => match ty.property(name) {
                    Some(property) => columns.push(Ok(property)),
                    None => {
                        return Err(AppError::bad(
                            "invalid_data_array",
                            format!("unknown Data Array component `{component}`"),
                        ));
                    }
                },
            }
        }
        if !item.components.iter().any(|c| c == "result") {
            return Err(AppError::bad("invalid_data_array", "the components must include `result`"));
        }
        let mut records = Vec::with_capacity(item.rows.len());
        let mut slots = Vec::with_capacity(item.rows.len());
        for row in &item.rows {
            let built = (|| -> Result<Record, AppError> {
                if row.len() != columns.len() {
                    return Err(AppError::bad(
                        "invalid_data_array",
                        format!("a row has {} values for {} components", row.len(), columns.len()),
                    ));
                }
                let mut record =
                    Record { values: Vec::with_capacity(row.len()), links: vec![(nav, Some(parent))], project: None };
                for (column, value) in columns.iter().zip(row) {
                    match column {
                        Ok(property) => record.values.push((property, to_value(ty, property, value)?)),
                        Err(()) => {
                            let feature = reference(&serde_json::json!({ "@iot.id": value }))
                                .ok()
                                .flatten()
                                .ok_or_else(|| {
                                    AppError::bad(
                                        "invalid_id",
                                        format!("FeatureOfInterest/id must be an integer id, not {value}"),
                                    )
                                })?;
                            require_exists(w, EntityType::FeatureOfInterest, feature)?;
                            let foi = ty
                                .navigation("FeatureOfInterest")
                                .ok_or_else(|| AppError::Internal("schema".into()))?;
                            record.links.push((foi, Some(feature)));
                        }
                    }
                }
                if let Some(arity) = arity {
                    let result = record.values.iter().find(|(p, _)| p.name == "result").map(|(_, v)| v);
                    check_arity(result, arity, parent)?;
                }
                Ok(record)
            })();
            match built {
                Ok(record) => {
                    slots.push(Ok(records.len()));
                    records.push(record);
                }
                Err(e) => slots.push(Err(e)),
            }
        }
        let ids = create_observations(w, &mut records, None)?;
        for slot in slots {
            outcomes.push(slot.map(|i| ids[i]));
        }
    }
    Ok(outcomes)
}
