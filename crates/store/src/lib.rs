//! The storage boundary: what `app` asks of a database, in domain terms.
//!
//! A backend implements [`Store`]: it runs read jobs against a [`Reader`] and write jobs
//! against a [`Writer`] inside a transaction. Writes are group-committed: a backend may run many
//! jobs in one transaction (each in its own savepoint, so one job's failure does not undo the
//! others) and reports every job's outcome only after the transaction is durable.
//!
//! This crate knows no database driver and no SQL; it has no async runtime either, so jobs are
//! plain closures and outcomes arrive through callbacks.

#[cfg(feature = "conformance")]
pub mod conformance;
pub mod dump;
mod principals;
pub mod sample;
pub mod statistics;

pub use principals::{
    AuditEntry, AuthorityRecord, CertificateRecord, DeviceClassRecord, DeviceRecord, DeviceState, Devices, Feed,
    NewDevice, NewToken, Principals, ProjectRecord, TokenRecord, TokenRefusal, TokenScope, UserRecord,
};

use model::{EntityType, Id, Instant, Interval, Navigation, Property};
use odata::{Expr, Query, Visibility};

/// A stored value of one property, typed by the property's kind.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    Null,
    Boolean(bool),
    Integer(i64),
    Real(f64),
    Text(String),
    /// JSON text, known to be valid JSON.
    Json(String),
    Instant(Instant),
    Interval(Interval),
}

/// One entity as read: its id and the values of the selected properties, in selection order,
/// followed by the results of each `$expand` item, in query order.
#[derive(Clone, Debug, PartialEq)]
pub struct Row {
    pub id: Id,
    pub values: Vec<Value>,
    pub expanded: Vec<Expanded>,
}

/// The expanded value of a navigation property on one entity.
#[derive(Clone, Debug, PartialEq)]
pub enum Expanded {
    One { fields: Vec<&'static Property>, row: Option<Box<Row>> },
    Many(Rows),
}

/// A page of entities.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct Rows {
    /// The properties each row holds values of.
    pub fields: Vec<&'static Property>,
    pub rows: Vec<Row>,
    /// The total without paging, when `$count=true` asked for it.
    pub count: Option<u64>,
    /// `count` is an estimate: counting exactly would have taken longer than counts may.
    pub estimated: bool,
    /// Whether entities follow this page (so a next link is due).
    pub more: bool,
}

/// The paging a read applies when the query gives none, and its ceiling.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Paging {
    pub default_top: u64,
    pub max_top: u64,
}

/// Read access, used by read jobs and, for reads inside a transaction, by write jobs.
pub trait Reader {
    /// The entities of `entity` matching `constraint` (the resource path's condition) and the
    /// query's options, with `$expand` resolved in one statement per expand item.
    fn query(
        &mut self,
        entity: EntityType,
        constraint: Option<&Expr>,
        query: &Query,
        paging: Paging,
    ) -> Result<Rows, StoreError> {
        let mut all = Rows::default();
        self.query_chunks(entity, constraint, query, paging, usize::MAX, &mut |chunk| {
            all.fields = chunk.fields;
            all.rows.extend(chunk.rows);
            all.count = all.count.or(chunk.count);
            all.estimated |= chunk.estimated;
            all.more = chunk.more;
            true
        })?;
        Ok(all)
    }

    /// What [`Reader::query`] returns, handed to `sink` in chunks of at most `chunk` entities
    /// (each chunk with its `$expand` resolved) while the rows are read, so a large answer is
    /// never held whole. The first chunk carries `count`, the last `more`; `sink` is called at
    /// least once, and stops the read by returning false.
    fn query_chunks(
        &mut self,
        entity: EntityType,
        constraint: Option<&Expr>,
        query: &Query,
        paging: Paging,
        chunk: usize,
        sink: &mut dyn FnMut(Rows) -> bool,
    ) -> Result<(), StoreError>;

    /// Whether an entity of `entity` matches `constraint` (e.g. `id eq 5`).
    fn exists(&mut self, entity: EntityType, constraint: &Expr) -> Result<bool, StoreError>;

    /// The ids of the entities `navigation` leads to from `from` (an entity of `entity`).
    fn related(&mut self, entity: EntityType, from: Id, navigation: &'static Navigation)
    -> Result<Vec<Id>, StoreError>;

    /// The principal tables (users, tokens, projects) through the same connection.
    fn principals(&mut self) -> &mut dyn Principals;

    /// From now until the job ends, statements running past `deadline` are stopped and fail
    /// with [`StoreError::OverBudget`]; `None` lifts it.
    fn set_deadline(&mut self, deadline: Option<std::time::Instant>) -> Result<(), StoreError> {
        let _ = deadline;
        Ok(())
    }

    /// From when `lifted` becomes true, the deadline no longer applies (an answer that started
    /// going out must not be cut short).
    fn lift_deadline_when(&mut self, lifted: std::sync::Arc<std::sync::atomic::AtomicBool>) {
        let _ = lifted;
    }

    /// Under a deadline, how long an exact `$count` may take before an estimate answers
    /// instead (`Rows::estimated`).
    fn set_count_time(&mut self, limit: std::time::Duration) {
        let _ = limit;
    }

    /// Every retention policy, by scope.
    fn retention_policies(&mut self) -> Result<Vec<statistics::RetentionPolicy>, StoreError> {
        Err(StoreError::Rejected("this store keeps no retention policies".into()))
    }

    /// The Datastreams and MultiDatastreams of a project, whatever the job's visibility.
    fn series_of_project(&mut self, project: i64) -> Result<Vec<(EntityType, Id)>, StoreError> {
        let _ = project;
        Err(StoreError::Rejected("this store keeps no retention policies".into()))
    }

    /// The Observations of the Datastream or MultiDatastream `id` whose phenomenonTime starts
    /// in `[from, to)` and that pass `filter`, in (start, id) order, handed to `sink` until it
    /// returns false: the raw input of aggregates.
    fn observation_points(
        &mut self,
        entity: EntityType,
        id: Id,
        filter: Option<&Expr>,
        from: Instant,
        to: Instant,
        sink: &mut dyn FnMut(statistics::RawPoint) -> bool,
    ) -> Result<(), StoreError> {
        let _ = (entity, id, filter, from, to, sink);
        Err(StoreError::Rejected("this store cannot aggregate".into()))
    }

    /// The statistics kept on the Datastream or MultiDatastream `id`, whatever the job's
    /// visibility; `None` if it does not exist.
    fn summary(&mut self, entity: EntityType, id: Id) -> Result<Option<statistics::Summary>, StoreError> {
        let _ = (entity, id);
        Err(StoreError::Rejected("this store keeps no statistics".into()))
    }

    /// The stored rollups of width `level` seconds of the Datastream or MultiDatastream `id`
    /// (every member) whose buckets start in `[from, to)`, in bucket order, handed to `sink`.
    fn rollups(
        &mut self,
        entity: EntityType,
        id: Id,
        level: i64,
        from: Instant,
        to: Instant,
        sink: &mut dyn FnMut(statistics::Rollup),
    ) -> Result<(), StoreError> {
        let _ = (entity, id, level, from, to, sink);
        Err(StoreError::Rejected("this store keeps no rollups".into()))
    }

    /// The project of an entity, whatever the job's visibility; `None` if it does not exist.
    fn project_of(&mut self, entity: EntityType, id: Id) -> Result<Option<access::ProjectId>, StoreError>;

    /// Up to `limit` rows of `table` with keys after `after` (all rows when `None`), in key
    /// order, each a value per column of the table (see [`dump`]), for `thingbase export`.
    fn dump_rows(
        &mut self,
        table: &'static dump::Table,
        after: Option<&[i64]>,
        limit: usize,
    ) -> Result<Vec<Vec<Value>>, StoreError> {
        let _ = (table, after, limit);
        Err(StoreError::Rejected("this store cannot be exported".into()))
    }
}

/// One entity's stored values to write: properties with values and to-one links by id.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct Record {
    pub values: Vec<(&'static Property, Value)>,
    /// To-one navigations stored as a column of this entity, with the target id (or `None` to
    /// clear the link).
    pub links: Vec<(&'static Navigation, Option<Id>)>,
    /// The project the entity belongs to: set on insert (`None`: the default project, 1) and
    /// changed on update when `Some`.
    pub project: Option<i64>,
}

/// Write access inside a transaction.
pub trait Writer: Reader {
    fn insert(&mut self, entity: EntityType, record: &Record) -> Result<Id, StoreError>;

    /// Inserts many entities of one type with the same properties and links, in order.
    fn insert_many(&mut self, entity: EntityType, records: &[Record]) -> Result<Vec<Id>, StoreError>;

    /// Overwrites the given properties and links; false if there is no such entity.
    fn update(&mut self, entity: EntityType, id: Id, record: &Record) -> Result<bool, StoreError>;

    /// [`Writer::update`] for a derived field the server maintains (a Datastream's
    /// `observedArea`), not a change the caller asked for: writers that authorize let it pass.
    fn update_derived(&mut self, entity: EntityType, id: Id, record: &Record) -> Result<bool, StoreError> {
        self.update(entity, id, record)
    }

    /// Deletes the entity and what the SensorThings cascade rules delete with it; false if there
    /// is no such entity.
    fn delete(&mut self, entity: EntityType, id: Id) -> Result<bool, StoreError>;

    /// Adds a link through a link-table navigation; adding an existing link is a no-op.
    fn link(&mut self, navigation: &'static Navigation, from: Id, to: Id) -> Result<(), StoreError>;

    /// Removes a link through a link-table navigation; false if there was none.
    fn unlink(&mut self, navigation: &'static Navigation, from: Id, to: Id) -> Result<bool, StoreError>;

    /// Removes every link of `from` through a link-table navigation.
    fn unlink_all(&mut self, navigation: &'static Navigation, from: Id) -> Result<(), StoreError>;

    /// Widens the derived phenomenonTime and resultTime of a Datastream or MultiDatastream to
    /// cover new Observations.
    fn extend_times(
        &mut self,
        entity: EntityType,
        id: Id,
        phenomenon: Interval,
        result: Option<Interval>,
    ) -> Result<(), StoreError>;

    /// Recomputes the derived phenomenonTime and resultTime of a Datastream or MultiDatastream
    /// from its Observations; needed when Observations go away or their times shrink, which
    /// [`Writer::extend_times`] cannot express.
    fn recompute_times(&mut self, entity: EntityType, id: Id) -> Result<(), StoreError>;

    /// The Locations of the Thing of a Datastream or MultiDatastream, with the feature
    /// generated from each so far.
    fn thing_locations(&mut self, entity: EntityType, id: Id) -> Result<Vec<ThingLocation>, StoreError>;

    /// Records that the Datastream or MultiDatastream `id` has Observations of `feature`; true
    /// if that is new.
    fn note_feature(&mut self, entity: EntityType, id: Id, feature: Id) -> Result<bool, StoreError>;

    /// Records that `feature` was generated from `location`, for reuse.
    fn remember_generated_feature(&mut self, location: Id, feature: Id) -> Result<(), StoreError>;

    /// Stores a retention policy (replacing the one of its scope).
    fn set_retention_policy(&mut self, policy: &statistics::RetentionPolicy) -> Result<(), StoreError> {
        let _ = policy;
        Err(StoreError::Rejected("this store keeps no retention policies".into()))
    }

    /// Removes the retention policy of `scope`; false if there was none.
    fn clear_retention_policy(&mut self, scope: statistics::RetentionScope) -> Result<bool, StoreError> {
        let _ = scope;
        Err(StoreError::Rejected("this store keeps no retention policies".into()))
    }

    /// Deletes up to `limit` of the oldest Observations of the Datastream or MultiDatastream
    /// `id` whose phenomenonTime starts before `before`, keeping its rollups as they are (its
    /// count and latest Observation follow); returns how many went. No change notifications.
    /// Where nodes share the database, a series another node is expiring in a transaction
    /// still open is left to it: none go.
    fn expire_observations(
        &mut self,
        entity: EntityType,
        id: Id,
        before: Instant,
        limit: usize,
    ) -> Result<u64, StoreError> {
        let _ = (entity, id, before, limit);
        Err(StoreError::Rejected("this store keeps no retention policies".into()))
    }

    /// Deletes the rollups of the Datastream or MultiDatastream `id` that end at or before
    /// `before`; returns how many went.
    fn expire_rollups(&mut self, entity: EntityType, id: Id, before: Instant) -> Result<u64, StoreError> {
        let _ = (entity, id, before);
        Err(StoreError::Rejected("this store keeps no retention policies".into()))
    }

    /// Builds the rollups of up to `limit` (Multi)Datastreams stored before rollups existed;
    /// returns how many it took on (0: none is left).
    fn build_pending_rollups(&mut self, limit: usize) -> Result<usize, StoreError> {
        let _ = limit;
        Ok(0)
    }

    /// Tells the other nodes sharing this database `message` once (and only if) the job's
    /// transaction commits, before the job is reported done; a backend no other node can share
    /// ignores it. Each message is at most [`ANNOUNCEMENT_BYTES`] long. Every
    /// [`Store::listen`]er hears a node's messages in the order of its commits, and a message
    /// of a job that was answered before another began before the other's. A message is
    /// lines: the messages of one write group that share their first line may arrive joined,
    /// as that line and then the other lines of each, in order, within the same limit.
    fn announce(&mut self, message: &str) -> Result<(), StoreError> {
        let _ = message;
        Ok(())
    }

    /// Writes `rows` of `table` as they are, keys included (`thingbase import`); none may
    /// exist yet.
    fn load_rows(&mut self, table: &'static dump::Table, rows: &[Vec<Value>]) -> Result<(), StoreError> {
        let _ = (table, rows);
        Err(StoreError::Rejected("this store cannot be imported into".into()))
    }

    /// After loading `table`: new rows get keys after the loaded ones.
    fn finish_load(&mut self, table: &'static dump::Table) -> Result<(), StoreError> {
        let _ = table;
        Ok(())
    }

    /// Deletes every row of `table` (the default project, before an import).
    fn empty_table(&mut self, table: &'static dump::Table) -> Result<(), StoreError> {
        let _ = table;
        Err(StoreError::Rejected("this store cannot be imported into".into()))
    }
}

/// The longest message [`Writer::announce`] carries (PostgreSQL's NOTIFY takes 8000 bytes).
pub const ANNOUNCEMENT_BYTES: usize = 7900;

/// Receives the announcements of the nodes sharing a database (its own included).
pub type Listener = Box<dyn Fn(&str) + Send + Sync>;

/// A Location of a Thing, as needed to generate a FeatureOfInterest from it.
#[derive(Clone, Debug, PartialEq)]
pub struct ThingLocation {
    pub location: Id,
    pub generated_feature: Option<Id>,
    pub encoding_type: String,
    /// The location as JSON text.
    pub location_json: String,
    pub name: String,
    pub description: String,
}

/// `id eq <id>` as a bound expression.
pub fn id_eq(id: Id) -> Expr {
    Expr::Binary {
        op: odata::BinaryOp::Eq,
        left: Box::new(Expr::Member(odata::MemberPath { hops: Vec::new(), member: odata::Member::Id })),
        right: Box::new(Expr::Literal(odata::Literal::Integer(id.0))),
    }
}

/// A read job, run on one of the backend's reader connections.
pub type ReadJob = Box<dyn FnOnce(&mut dyn Reader) + Send>;

/// A write job, run inside a transaction; an `Err` undoes this job's changes only.
pub type WriteJob = Box<dyn FnOnce(&mut dyn Writer) -> Result<(), StoreError> + Send>;

/// Called once a write job's transaction is committed (`Ok`) or the job failed or was rolled
/// back (`Err`).
pub type WriteDone = Box<dyn FnOnce(Result<(), StoreError>) + Send>;

/// A database backend.
///
/// Every job runs with the [`Visibility`] of whoever asked: each statement the backend compiles
/// for it (reads, existence checks, links resolved inside writes) sees only what that
/// visibility allows. The backend's own maintenance (derived times, generated features,
/// cascades) sees everything.
/// The (Multi)Datastreams a write job will look up by id ([`Store::write_touching`]).
pub type Touches = Vec<(EntityType, Id)>;

pub trait Store: Send + Sync + 'static {
    /// Runs `job` on a reader; returns at once.
    fn read(&self, visibility: Visibility, job: ReadJob);

    /// Queues `job` for the writer; `done` runs after its transaction committed or failed.
    fn write(&self, visibility: Visibility, job: WriteJob, done: WriteDone);

    /// [`Store::write`] of a job that will look up the (Multi)Datastreams of `touches` by id
    /// (those of the Observations it creates): a backend whose statements cost a round trip
    /// may look them up, under the job's visibility, for its whole write group at once, and a
    /// backend of several writers gives the writes of one (Multi)Datastream to one of them, in
    /// the order they came (writes of none keep their order too). Only a hint: the job looks
    /// them up all the same, and what it was told it may not touch.
    fn write_touching(&self, visibility: Visibility, touches: Touches, job: WriteJob, done: WriteDone) {
        let _ = touches;
        self.write(visibility, job, done);
    }

    /// [`Store::write`] for a job that writes many rows (a Data Array, a backfill): a backend
    /// with writers to spare may run it beside the groups of small jobs, in another order.
    fn write_large(&self, visibility: Visibility, job: WriteJob, done: WriteDone) {
        self.write(visibility, job, done);
    }

    /// Stops accepting work, finishes queued writes and commits them.
    fn shutdown(&self);

    /// Hands every announcement committed from now on (by any node) to `listener`, in commit
    /// order, on a thread of the store's; `false` when no other node can share this store, so
    /// nobody needs to announce anything.
    fn listen(&self, listener: Listener) -> bool {
        let _ = listener;
        false
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A uniqueness or reference rule of the data was broken (e.g. a link to a missing entity).
    #[error("conflict: {0}")]
    Conflict(String),
    /// The caller's job rejected its own input; the message is for the client.
    #[error("{0}")]
    Rejected(String),
    /// The job's principal may not do this (an `app` writer that authorizes says so).
    #[error("{1}")]
    Denied(access::Decision, String),
    /// The store is shutting down.
    #[error("the store is shutting down")]
    ShuttingDown,
    /// The database gave up on the job for now (a deadlock with another writer, a
    /// serialization conflict); the same job may well succeed if tried again.
    #[error("the database is busy: {0}")]
    Busy(String),
    /// The read ran past the deadline its job set ([`Reader::set_deadline`]).
    #[error("{0}")]
    OverBudget(String),
    /// Anything else the database reported; details are logged, not shown to clients.
    #[error("database error: {}", with_causes(&**.0))]
    Database(Box<dyn std::error::Error + Send + Sync>),
}

/// An error's message followed by those of its causes ("invalid configuration: password
/// missing"): drivers often keep what went wrong in the cause alone.
fn with_causes(error: &(dyn std::error::Error + 'static)) -> String {
    let mut message = error.to_string();
    let mut cause = error.source();
    while let Some(next) = cause {
        let text = next.to_string();
        if !message.ends_with(&text) {
            message.push_str(": ");
            message.push_str(&text);
        }
        cause = next.source();
    }
    message
}

#[cfg(test)]
mod error_tests {
    use super::StoreError;

    #[derive(Debug, thiserror::Error)]
    #[error("invalid configuration")]
    struct Driver(#[source] std::io::Error);

    #[test]
    fn a_database_error_says_what_its_causes_say() {
        let error = StoreError::Database(Box::new(Driver(std::io::Error::other("password missing"))));
        assert_eq!(error.to_string(), "database error: invalid configuration: password missing");
        let plain = StoreError::Database("no such table: x".into());
        assert_eq!(plain.to_string(), "database error: no such table: x");
    }
}
