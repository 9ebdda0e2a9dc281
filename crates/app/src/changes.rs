//! Change events: what a committed write did, for subscribers (the MQTT extension now; other
//! Thingbase nodes through PostgreSQL `LISTEN/NOTIFY` or an external broker later).
//!
//! A write job runs against a [`Recording`] writer, which notes every entity created, updated,
//! deleted or linked while passing the calls through. The notes reach the [`ChangeBus`] only
//! after the transaction committed, in commit order; a rolled-back job publishes nothing.
//! Derived-field maintenance that does not go through `insert`/`update`/`delete`/`link` (time
//! extents) is not a change a subscriber is told about.

use std::sync::Arc;

use model::{EntityType, Id, Interval, Navigation};
use odata::{Expr, Query};
use store::{Paging, Principals, Reader, Record, Rows, StoreError, ThingLocation, Writer};

/// One thing a committed write did.
#[derive(Clone, Debug, PartialEq)]
pub enum Change {
    Created {
        entity: EntityType,
        id: Id,
        /// The stored Observation, complete and in schema order, when the bus asked for
        /// records ([`ChangeBus::wants_records`]): subscribers need not read it back.
        record: Option<Arc<Record>>,
    },
    Updated {
        entity: EntityType,
        id: Id,
    },
    Deleted {
        entity: EntityType,
        id: Id,
    },
    /// `to` was linked to `from` through `navigation` (e.g. a Location to a Thing).
    Linked {
        navigation: &'static Navigation,
        from: Id,
        to: Id,
    },
}

/// Where committed changes go. Implementations must return quickly: they are called on the
/// store's writer thread right after the commit, once per job, with the job's changes in order.
pub trait ChangeBus: Send + Sync + 'static {
    fn publish(&self, changes: &[Change]);

    /// Whether created Observations should carry their stored record, asked once per write
    /// job: it saves a subscriber a read-back per Observation and costs a copy of each row, so
    /// a bus with nobody listening says no.
    fn wants_records(&self) -> bool {
        false
    }
}

/// A writer that records the changes made through it.
pub struct Recording<'w> {
    inner: &'w mut dyn Writer,
    keep_records: bool,
    pub changes: Vec<Change>,
}

impl<'w> Recording<'w> {
    /// `keep_records`: created Observations carry their record (see [`ChangeBus::wants_records`]).
    pub fn new(inner: &'w mut dyn Writer, keep_records: bool) -> Recording<'w> {
        Recording { inner, keep_records, changes: Vec::new() }
    }

    fn record_of(&self, entity: EntityType, record: &Record) -> Option<Arc<Record>> {
        (self.keep_records && entity == EntityType::Observation).then(|| Arc::new(record.clone()))
    }
}

impl Reader for Recording<'_> {
    fn query_chunks(
        &mut self,
        entity: EntityType,
        constraint: Option<&Expr>,
        query: &Query,
        paging: Paging,
        chunk: usize,
        sink: &mut dyn FnMut(Rows) -> bool,
    ) -> Result<(), StoreError> {
        self.inner.query_chunks(entity, constraint, query, paging, chunk, sink)
    }

    fn exists(&mut self, entity: EntityType, constraint: &Expr) -> Result<bool, StoreError> {
        self.inner.exists(entity, constraint)
    }

    fn related(
        &mut self,
        entity: EntityType,
        from: Id,
        navigation: &'static Navigation,
    ) -> Result<Vec<Id>, StoreError> {
        self.inner.related(entity, from, navigation)
    }

    fn summary(&mut self, entity: EntityType, id: Id) -> Result<Option<store::statistics::Summary>, StoreError> {
        self.inner.summary(entity, id)
    }

    fn rollups(
        &mut self,
        entity: EntityType,
        id: Id,
        level: i64,
        from: model::Instant,
        to: model::Instant,
        sink: &mut dyn FnMut(store::statistics::Rollup),
    ) -> Result<(), StoreError> {
        self.inner.rollups(entity, id, level, from, to, sink)
    }

    fn observation_points(
        &mut self,
        entity: EntityType,
        id: Id,
        filter: Option<&Expr>,
        from: model::Instant,
        to: model::Instant,
        sink: &mut dyn FnMut(store::statistics::RawPoint) -> bool,
    ) -> Result<(), StoreError> {
        self.inner.observation_points(entity, id, filter, from, to, sink)
    }

    fn principals(&mut self) -> &mut dyn Principals {
        self.inner.principals()
    }

    fn project_of(&mut self, entity: EntityType, id: Id) -> Result<Option<i64>, StoreError> {
        self.inner.project_of(entity, id)
    }
}

impl Writer for Recording<'_> {
    fn insert(&mut self, entity: EntityType, record: &Record) -> Result<Id, StoreError> {
        let id = self.inner.insert(entity, record)?;
        let record = self.record_of(entity, record);
        self.changes.push(Change::Created { entity, id, record });
        Ok(id)
    }

    fn insert_many(&mut self, entity: EntityType, records: &[Record]) -> Result<Vec<Id>, StoreError> {
        let ids = self.inner.insert_many(entity, records)?;
        for (&id, record) in ids.iter().zip(records) {
            let record = self.record_of(entity, record);
            self.changes.push(Change::Created { entity, id, record });
        }
        Ok(ids)
    }

    fn update(&mut self, entity: EntityType, id: Id, record: &Record) -> Result<bool, StoreError> {
        let found = self.inner.update(entity, id, record)?;
        if found && (!record.values.is_empty() || !record.links.is_empty()) {
            self.changes.push(Change::Updated { entity, id });
        }
        Ok(found)
    }

    fn update_derived(&mut self, entity: EntityType, id: Id, record: &Record) -> Result<bool, StoreError> {
        let found = self.inner.update_derived(entity, id, record)?;
        if found && (!record.values.is_empty() || !record.links.is_empty()) {
            self.changes.push(Change::Updated { entity, id });
        }
        Ok(found)
    }

    fn delete(&mut self, entity: EntityType, id: Id) -> Result<bool, StoreError> {
        let found = self.inner.delete(entity, id)?;
        if found {
            self.changes.push(Change::Deleted { entity, id });
        }
        Ok(found)
    }

    fn link(&mut self, navigation: &'static Navigation, from: Id, to: Id) -> Result<(), StoreError> {
        self.inner.link(navigation, from, to)?;
        self.changes.push(Change::Linked { navigation, from, to });
        Ok(())
    }

    fn unlink(&mut self, navigation: &'static Navigation, from: Id, to: Id) -> Result<bool, StoreError> {
        self.inner.unlink(navigation, from, to)
    }

    fn unlink_all(&mut self, navigation: &'static Navigation, from: Id) -> Result<(), StoreError> {
        self.inner.unlink_all(navigation, from)
    }

    fn extend_times(
        &mut self,
        entity: EntityType,
        id: Id,
        phenomenon: Interval,
        result: Option<Interval>,
    ) -> Result<(), StoreError> {
        self.inner.extend_times(entity, id, phenomenon, result)
    }

    fn recompute_times(&mut self, entity: EntityType, id: Id) -> Result<(), StoreError> {
        self.inner.recompute_times(entity, id)
    }

    fn thing_locations(&mut self, entity: EntityType, id: Id) -> Result<Vec<ThingLocation>, StoreError> {
        self.inner.thing_locations(entity, id)
    }

    fn note_feature(&mut self, entity: EntityType, id: Id, feature: Id) -> Result<bool, StoreError> {
        self.inner.note_feature(entity, id, feature)
    }

    fn remember_generated_feature(&mut self, location: Id, feature: Id) -> Result<(), StoreError> {
        self.inner.remember_generated_feature(location, feature)
    }

    fn announce(&mut self, message: &str) -> Result<(), StoreError> {
        self.inner.announce(message)
    }
}
