//! `Reader` and `Writer` over one [`Connection`]: statements come from the `sql` compiler in the
//! connection's dialect, rows are decoded by property kind, and `$expand` runs one statement
//! per expand item.

use std::collections::{HashMap, HashSet};

use model::{EntityType, Id, Instant, Link, Navigation};
use odata::{Expr, Query, Visibility};
use sql::{Dialect, Page, Param, Statement};
use store::statistics::Point;
use store::{Expanded, Paging, Reader, Record, Row, Rows, StoreError, Writer};

use crate::values::{bind, decode};
use crate::{Connection, SqlRow, query_all, query_one};

/// The writer's memory of entities' projects (`Reader::project_of`), which authorizing each
/// Observation would otherwise read once per job. Entities never change project through the
/// API; the cache is emptied by every delete (an id may be used again), every project change
/// and every rollback, so it only ever holds projects of entities that exist.
pub type ProjectCache = HashMap<(EntityType, i64), i64>;

/// What the jobs of one write group learnt that its later jobs may take as known, inside the
/// same transaction: a stream of Observations to one Datastream then costs each job its
/// insert alone. Every fact was read in this transaction, and what it found is locked
/// (`Dialect::key_share_lock`) or can only change by a write of this writer; any write other
/// than of Observations, and every rolled-back job, empties it. It holds:
/// - entities found by id under a visibility (`Reader::exists`), found ones only;
/// - the Locations of (Multi)Datastreams' Things (`Writer::thing_locations`), which finding
///   a (Multi)Datastream by id looks up too, in the same round trip;
/// - the (Multi)Datastream and FeatureOfInterest pairs noted (`Writer::note_feature`), and
///   those the Locations' lookup found noted already (for the Locations' generated
///   features): a pair goes only with its feature or (Multi)Datastream, both locked.
#[derive(Debug, Default)]
pub struct GroupMemo {
    found: Vec<(EntityType, i64, Visibility)>,
    locations: HashMap<(EntityType, i64), Vec<store::ThingLocation>>,
    noted: HashSet<(EntityType, i64, i64)>,
}

impl GroupMemo {
    pub fn clear(&mut self) {
        self.found.clear();
        self.locations.clear();
        self.noted.clear();
    }
}

/// The id a constraint asks for, when it is exactly `store::id_eq`.
fn id_asked(constraint: &Expr) -> Option<i64> {
    match constraint {
        Expr::Binary { op: odata::BinaryOp::Eq, left, right } => match (&**left, &**right) {
            (
                Expr::Member(odata::MemberPath { hops, member: odata::Member::Id }),
                Expr::Literal(odata::Literal::Integer(id)),
            ) if hops.is_empty() => Some(*id),
            _ => None,
        },
        _ => None,
    }
}

/// Database access through one connection; inside the writer it runs within the open
/// transaction.
pub struct Access<'c> {
    pub conn: &'c dyn Connection,
    pub dialect: &'c dyn Dialect,
    /// What the job may see; every compiled statement applies it.
    pub visibility: &'c Visibility,
    /// The writer's cache of entities' projects; `None` on readers.
    pub projects: Option<&'c mut ProjectCache>,
    /// What earlier jobs of the write group found; `None` on readers.
    pub memo: Option<&'c mut GroupMemo>,
    /// What this write job leaves to be written just before its group commits (see
    /// `crate::commit::Pending`); `None` where every change is written at once.
    pub pending: Option<&'c mut crate::commit::Pending>,
    /// The deadline the job set (`Reader::set_deadline`).
    pub deadline: Option<std::time::Instant>,
    /// How long exact counts may take under it (`Reader::set_count_time`); else `COUNT_TIME`.
    pub count_time: Option<std::time::Duration>,
}

/// Decodes a row laid out as `skip` key columns, the id, then the fields' columns.
fn decode_row(
    row: &dyn SqlRow,
    fields: &[&'static model::Property],
    skip: usize,
) -> Result<(Vec<i64>, Row), StoreError> {
    let mut keys = Vec::with_capacity(skip);
    for i in 0..skip {
        keys.push(row.required_integer(i)?);
    }
    let id = row.required_integer(skip)?;
    let mut at = skip + 1;
    let mut values = Vec::with_capacity(fields.len());
    for field in fields {
        let (value, next) = decode(field, row, at)?;
        values.push(value);
        at = next;
    }
    Ok((keys, Row { id: Id(id), values, expanded: Vec::new() }))
}

/// The most ids one existence check of `look_ahead` asks for.
const CHECKED_AT_ONCE: usize = 64;

/// Looks up the (Multi)Datastreams `wanted` by id, each under its visibility, with their
/// Things' Locations, all in one round trip where the backend pipelines: into `memo`, as the
/// write jobs' own [`Reader::exists`] would (the statement it compiles, asked for several ids
/// at once; the same locks).
pub fn look_ahead(
    conn: &dyn Connection,
    dialect: &dyn Dialect,
    projects: &mut ProjectCache,
    memo: &mut GroupMemo,
    wanted: &[(EntityType, i64, &Visibility)],
) -> Result<(), StoreError> {
    // One existence check per entity type and visibility (of up to `CHECKED_AT_ONCE` ids):
    // what each job's own `exists` asks, for all of them at once (`id = a OR id = b ...`),
    // locked alike.
    let mut checks: Vec<(EntityType, &Visibility, Vec<i64>)> = Vec::new();
    // The check of each wanted.
    let mut check_of: Vec<usize> = Vec::with_capacity(wanted.len());
    for &(entity, id, visibility) in wanted {
        if !matches!(entity, EntityType::Datastream | EntityType::MultiDatastream) {
            return Err(StoreError::Rejected(format!("cannot look {} up ahead", entity.set_name())));
        }
        let open =
            checks.iter().position(|(e, v, ids)| *e == entity && *v == visibility && ids.len() < CHECKED_AT_ONCE);
        match open {
            Some(at) => {
                checks[at].2.push(id);
                check_of.push(at);
            }
            None => {
                checks.push((entity, visibility, vec![id]));
                check_of.push(checks.len() - 1);
            }
        }
    }
    let mut statements: Vec<(String, Vec<Param>)> = Vec::with_capacity(checks.len() + 2);
    for (entity, visibility, ids) in &checks {
        let constraint = ids
            .iter()
            .map(|id| store::id_eq(Id(*id)))
            .reduce(|left, right| Expr::Binary {
                op: odata::BinaryOp::Or,
                left: Box::new(left),
                right: Box::new(right),
            })
            .ok_or_else(|| StoreError::Rejected("nothing to look up ahead".into()))?;
        let access = Access {
            conn,
            dialect,
            visibility,
            projects: Some(&mut *projects),
            memo: None,
            pending: None,
            deadline: None,
            count_time: None,
        };
        let (exists, _) = access.exists_statement(*entity, &constraint, None);
        statements.push((exists.sql, exists.params));
    }
    // The Locations of every (Multi)Datastream wanted, whatever the visibility (they count only
    // for those found): one statement per entity type.
    let mut kinds: Vec<(EntityType, Vec<i64>)> = Vec::new();
    for &(entity, id, _) in wanted {
        match kinds.iter_mut().find(|(e, _)| *e == entity) {
            Some((_, ids)) if !ids.contains(&id) => ids.push(id),
            Some(_) => {}
            None => kinds.push((entity, vec![id])),
        }
    }
    for (entity, ids) in &kinds {
        let sql_text = sql::fixed::thing_locations_of_each(dialect, *entity, ids.len());
        statements.push((sql_text, ids.iter().map(|id| Param::Integer(*id)).collect()));
    }
    let queries: Vec<(&str, &[Param])> =
        statements.iter().map(|(sql, params)| (sql.as_str(), params.as_slice())).collect();
    // (check, id) of each id a check found.
    let mut found: HashSet<(usize, i64)> = HashSet::new();
    let mut locations: HashMap<(EntityType, i64), Vec<store::ThingLocation>> = HashMap::new();
    let mut noted: Vec<(EntityType, i64, i64)> = Vec::new();
    conn.query_many(&queries, &mut |i, row| {
        if i < checks.len() {
            found.insert((i, row.required_integer(0)?));
            return Ok(());
        }
        let entity = kinds[i - checks.len()].0;
        let id = row.required_integer(7)?;
        locations.entry((entity, id)).or_default().push(thing_location(row)?);
        noted.extend(noted_feature(row)?.map(|feature| (entity, id, feature)));
        Ok(())
    })?;
    for (at, &(entity, id, visibility)) in wanted.iter().enumerate() {
        if found.contains(&(check_of[at], id)) {
            memo.found.push((entity, id, visibility.clone()));
            memo.locations.insert((entity, id), locations.get(&(entity, id)).cloned().unwrap_or_default());
        }
    }
    for (entity, id, feature) in noted {
        if memo.locations.contains_key(&(entity, id)) {
            memo.noted.insert((entity, id, feature));
        }
    }
    Ok(())
}

/// Whether a row of `sql::fixed::thing_locations_of` says its (Multi)Datastream has
/// Observations of the Location's generated feature already: the feature, if so.
fn noted_feature(r: &dyn SqlRow) -> Result<Option<i64>, StoreError> {
    Ok(match (r.integer(1)?, r.integer(6)?) {
        (Some(feature), Some(1)) => Some(feature),
        _ => None,
    })
}

/// A row of `sql::fixed::thing_locations_of`.
fn thing_location(r: &dyn SqlRow) -> Result<store::ThingLocation, StoreError> {
    Ok(store::ThingLocation {
        location: Id(r.required_integer(0)?),
        generated_feature: r.integer(1)?.map(Id),
        encoding_type: r.required_text(2)?,
        location_json: r.json(3)?.unwrap_or_default(),
        name: r.required_text(4)?,
        description: r.required_text(5)?,
    })
}

/// The entity types Observations refer to: inside a write job, reading one locks it against
/// deletion until the job commits (see `Dialect::key_share_lock`).
const OBSERVATION_OWNERS: [EntityType; 3] =
    [EntityType::Datastream, EntityType::MultiDatastream, EntityType::FeatureOfInterest];

impl Access<'_> {
    /// Before a write that may change what the group's memo holds.
    fn changing(&mut self) {
        if let Some(memo) = self.memo.as_mut() {
            memo.clear();
        }
    }

    /// What the write job leaves for the end of its group; only writers have it.
    fn statistics(&mut self) -> Result<&mut crate::statistics::Statistics, StoreError> {
        match self.pending.as_mut() {
            Some(pending) => Ok(&mut pending.statistics),
            None => Err(StoreError::Rejected("statistics change only inside a write job".into())),
        }
    }

    /// `statement` with the dialect's lock when a write job reads an entity Observations can
    /// refer to.
    fn locking(&self, entity: EntityType, mut statement: Statement) -> Statement {
        if self.projects.is_some()
            && OBSERVATION_OWNERS.contains(&entity)
            && let Some(lock) = self.dialect.key_share_lock()
        {
            statement.sql.push_str(lock);
        }
        statement
    }

    /// What [`Reader::exists`] asks: the ids (up to `limit`) that `constraint` and the
    /// visibility allow, locked where a write job needs it.
    fn exists_statement(
        &self,
        entity: EntityType,
        constraint: &Expr,
        limit: Option<u64>,
    ) -> (Statement, sql::Selection) {
        let query = Query { select: Some(Vec::new()), ..Query::default() };
        let page = Page { limit, offset: 0 };
        let (statement, selection) =
            sql::select(self.dialect, self.visibility, entity, &query, Some(constraint), page, Instant::now());
        (self.locking(entity, statement), selection)
    }

    fn run_select(
        &self,
        statement: &Statement,
        fields: &[&'static model::Property],
        skip: usize,
    ) -> Result<Vec<(Vec<i64>, Row)>, StoreError> {
        query_all(self.conn, &statement.sql, &statement.params, |row| decode_row(row, fields, skip))
    }

    fn scalar_i64(&self, statement: &Statement) -> Result<i64, StoreError> {
        query_one(self.conn, &statement.sql, &statement.params, |row| row.required_integer(0))?
            .ok_or_else(|| StoreError::Database("a count without a row".into()))
    }

    /// Resolves the expand items of `query` for `rows` (entities of `entity`).
    fn expand(
        &self,
        entity: EntityType,
        query: &Query,
        rows: &mut [Row],
        paging: Paging,
        now: Instant,
    ) -> Result<(), StoreError> {
        if query.expand.is_empty() || rows.is_empty() {
            return Ok(());
        }
        let parents: Vec<i64> = rows.iter().map(|r| r.id.0).collect();
        for item in &query.expand {
            let nav = item.navigation;
            let sub = &item.query;
            if self.pending.is_none()
                && matches!(entity, EntityType::Datastream | EntityType::MultiDatastream)
                && nav.target == EntityType::Observation
                && nav.many
                && sub.filter.is_none()
                && sub.skip == 0
                && sub.top.unwrap_or(paging.default_top).min(paging.max_top) == 1
                && is_latest_first(&sub.order_by)
            {
                self.expand_latest(entity, item, rows, &parents, paging, now)?;
                continue;
            }
            let page = if nav.many {
                Page { limit: Some(sub.top.unwrap_or(paging.default_top).min(paging.max_top) + 1), offset: sub.skip }
            } else {
                Page { limit: None, offset: 0 }
            };
            let expanded = sql::select_expanded(self.dialect, self.visibility, entity, nav, sub, &parents, page, now);
            let found = self.run_select(&expanded.statement, &expanded.selection.fields, 1)?;
            let mut children: Vec<Row> = Vec::with_capacity(found.len());
            let mut owners: Vec<i64> = Vec::with_capacity(found.len());
            for (keys, row) in found {
                owners.push(keys[0]);
                children.push(row);
            }
            // Nested expands run once for all children of all parents.
            self.expand(nav.target, sub, &mut children, paging, now)?;
            let counts = if nav.many && sub.count == Some(true) {
                let statement =
                    sql::count_expanded(self.dialect, self.visibility, entity, nav, sub.filter.as_ref(), &parents, now);
                let mut counts = HashMap::new();
                self.conn.query(&statement.sql, &statement.params, &mut |row| {
                    counts.insert(row.required_integer(0)?, row.required_integer(1)? as u64);
                    Ok(true)
                })?;
                Some(counts)
            } else {
                None
            };
            let mut grouped: HashMap<i64, Vec<Row>> = HashMap::new();
            for (owner, child) in owners.into_iter().zip(children) {
                grouped.entry(owner).or_default().push(child);
            }
            let limit = page.limit.map(|l| l as usize - 1);
            for row in rows.iter_mut() {
                let mut mine = grouped.remove(&row.id.0).unwrap_or_default();
                if nav.many {
                    let more = limit.is_some_and(|l| mine.len() > l);
                    if let Some(l) = limit {
                        mine.truncate(l);
                    }
                    row.expanded.push(Expanded::Many(Rows {
                        fields: expanded.selection.fields.clone(),
                        rows: mine,
                        count: counts.as_ref().map(|c| c.get(&row.id.0).copied().unwrap_or(0)),
                        estimated: false,
                        more,
                    }));
                } else {
                    row.expanded.push(Expanded::One {
                        fields: expanded.selection.fields.clone(),
                        row: mine.pop().map(Box::new),
                    });
                }
            }
        }
        Ok(())
    }
}

impl Access<'_> {
    /// `$expand=Observations($top=1;$orderby=phenomenonTime desc)` of (Multi)Datastreams: their
    /// latest Observations and counts as kept on them, in two statements.
    fn expand_latest(
        &self,
        entity: EntityType,
        item: &odata::Expand,
        rows: &mut [Row],
        parents: &[i64],
        paging: Paging,
        now: Instant,
    ) -> Result<(), StoreError> {
        let sub = &item.query;
        let mut summaries: HashMap<i64, (u64, Option<i64>)> = HashMap::with_capacity(parents.len());
        self.conn.query(
            &sql::statistics::summaries(self.dialect, entity),
            &[Param::IdList(parents.to_vec())],
            &mut |row| {
                summaries.insert(row.required_integer(0)?, (row.required_integer(1)?.max(0) as u64, row.integer(2)?));
                Ok(true)
            },
        )?;
        let mut latest: Vec<i64> = summaries.values().filter_map(|(_, id)| *id).collect();
        latest.sort_unstable();
        let target = item.navigation.target;
        let (statement, selection) = sql::select_by_ids(self.dialect, self.visibility, target, sub, &latest, now);
        let mut children: Vec<Row> =
            self.run_select(&statement, &selection.fields, 0)?.into_iter().map(|(_, row)| row).collect();
        self.expand(target, sub, &mut children, paging, now)?;
        let mut by_id: HashMap<i64, Row> = children.into_iter().map(|row| (row.id.0, row)).collect();
        for row in rows.iter_mut() {
            let (observations, latest) = summaries.get(&row.id.0).copied().unwrap_or((0, None));
            let mine: Vec<Row> = latest.and_then(|id| by_id.remove(&id)).into_iter().collect();
            let more = !mine.is_empty() && observations > 1;
            row.expanded.push(Expanded::Many(Rows {
                fields: selection.fields.clone(),
                rows: mine,
                count: (sub.count == Some(true)).then_some(observations),
                estimated: false,
                more,
            }));
        }
        Ok(())
    }
}

/// The (Multi)Datastream a resource path's constraint on Observations names, when that is all
/// it says (`Datastreams(7)/Observations`: `Datastream/id eq 7`).
pub(crate) fn parent_of(constraint: Option<&Expr>) -> Option<(EntityType, Id)> {
    let Some(Expr::Binary { op: odata::BinaryOp::Eq, left, right }) = constraint else { return None };
    let (Expr::Member(path), Expr::Literal(odata::Literal::Integer(id))) = (left.as_ref(), right.as_ref()) else {
        return None;
    };
    match (path.hops.as_slice(), &path.member) {
        ([hop], odata::Member::Id)
            if matches!(hop.target, EntityType::Datastream | EntityType::MultiDatastream) && !hop.many =>
        {
            Some((hop.target, Id(*id)))
        }
        _ => None,
    }
}

/// The error of a read stopped at its deadline.
pub fn over_budget() -> StoreError {
    StoreError::OverBudget("the request ran out of its time budget before its answer was complete".into())
}

/// Whether `$orderby` is `phenomenonTime desc` and nothing else.
fn is_latest_first(order_by: &[odata::OrderBy]) -> bool {
    match order_by {
        [odata::OrderBy { expr: Expr::Member(path), descending: true }] => {
            path.hops.is_empty() && matches!(path.member, odata::Member::Property(p) if p.name == "phenomenonTime")
        }
        _ => false,
    }
}

impl Reader for Access<'_> {
    fn query_chunks(
        &mut self,
        entity: EntityType,
        constraint: Option<&Expr>,
        query: &Query,
        paging: Paging,
        chunk: usize,
        sink: &mut dyn FnMut(Rows) -> bool,
    ) -> Result<(), StoreError> {
        let now = Instant::now();
        let limit = query.top.unwrap_or(paging.default_top).min(paging.max_top);
        let page = Page { limit: Some(limit + 1), offset: query.skip };
        let (statement, selection) = sql::select(self.dialect, self.visibility, entity, query, constraint, page, now);
        let statement = if query.expand.is_empty() && query.count != Some(true) {
            self.locking(entity, statement)
        } else {
            statement
        };
        // Counts and latest Observations of whole (Multi)Datastreams are kept on them.
        // (Not inside a write job: what its group changed is written only before the commit.)
        let kept = entity == EntityType::Observation && self.pending.is_none() && query.filter.is_none();
        let parent = if kept { parent_of(constraint) } else { None };
        let whole = kept && (constraint.is_none() || parent.is_some());
        let mut estimated = false;
        let mut count = if query.count == Some(true) {
            if whole {
                let statement =
                    sql::count_from_summaries(self.dialect, self.visibility, parent.map(|(e, id)| (e, id.0)), now);
                Some(self.scalar_i64(&statement)? as u64)
            } else {
                let (n, estimate) = self.bounded_count(entity, constraint, query.filter.as_ref(), now)?;
                estimated = estimate;
                Some(n)
            }
        } else {
            None
        };
        if let Some((parent, parent_id)) = parent
            && whole
            && limit == 1
            && query.skip == 0
            && is_latest_first(&query.order_by)
        {
            let summary = crate::statistics::summary(self.conn, self.dialect, parent, parent_id)?.unwrap_or_default();
            let ids: Vec<i64> = summary.latest.iter().map(|l| l.id).collect();
            let (statement, selection) = sql::select_by_ids(self.dialect, self.visibility, entity, query, &ids, now);
            let mut rows: Vec<Row> =
                self.run_select(&statement, &selection.fields, 0)?.into_iter().map(|(_, row)| row).collect();
            self.expand(entity, query, &mut rows, paging, now)?;
            let more = !rows.is_empty() && summary.observations > 1;
            sink(Rows { fields: selection.fields, rows, count, estimated, more });
            return Ok(());
        }
        if let (0, Some(total), false) = (limit, count, estimated) {
            // `$top=0&$count=true`: the count says whether entities follow; reading one to
            // find out would cost an ordered scan.
            let more = total > query.skip;
            sink(Rows { fields: selection.fields, rows: Vec::new(), count, estimated, more });
            return Ok(());
        }
        let chunk = chunk.clamp(1, limit.max(1).min(usize::MAX as u64) as usize);
        let fields = &selection.fields;
        let mut buffer: Vec<Row> = Vec::with_capacity(chunk.min(4096));
        let mut read: u64 = 0;
        let mut more = false;
        let mut stopped = false;
        let this = &*self;
        // Pages of many rows are read in pieces, so the first goes out before the last is read.
        let fetch = |sql: &str, params: &[Param], each: &mut dyn FnMut(&dyn SqlRow) -> Result<bool, StoreError>| {
            if limit > LARGE_PAGE && query.expand.is_empty() {
                // Nothing but the sink sees the rows: the next ones may be read meanwhile.
                this.conn.query_ahead(sql, params, each)
            } else if limit > LARGE_PAGE {
                this.conn.query_large(sql, params, each)
            } else {
                this.conn.query(sql, params, each)
            }
        };
        fetch(&statement.sql, &statement.params, &mut |row| {
            if read == limit {
                more = true;
                return Ok(false);
            }
            read += 1;
            buffer.push(decode_row(row, fields, 0)?.1);
            if buffer.len() == chunk {
                this.expand(entity, query, &mut buffer, paging, now)?;
                let rows = std::mem::replace(&mut buffer, Vec::with_capacity(chunk.min(4096)));
                if !sink(Rows { fields: fields.clone(), rows, count: count.take(), estimated, more: false }) {
                    stopped = true;
                    return Ok(false);
                }
            }
            Ok(true)
        })?;
        if stopped {
            return Ok(());
        }
        self.expand(entity, query, &mut buffer, paging, now)?;
        sink(Rows { fields: fields.clone(), rows: buffer, count, estimated, more });
        Ok(())
    }

    fn exists(&mut self, entity: EntityType, constraint: &Expr) -> Result<bool, StoreError> {
        let asked = id_asked(constraint);
        if let (Some(id), Some(memo)) = (asked, self.memo.as_ref())
            && memo.found.iter().any(|(e, i, v)| *e == entity && *i == id && v == self.visibility)
        {
            return Ok(true);
        }
        let (statement, selection) = self.exists_statement(entity, constraint, Some(1));
        let found = match (asked, self.memo.as_ref()) {
            // A write job that finds a (Multi)Datastream mostly creates Observations of it,
            // which need its Thing's Locations when they name no FeatureOfInterest: looked up
            // in the same round trip, to the memo.
            (Some(id), Some(memo))
                if matches!(entity, EntityType::Datastream | EntityType::MultiDatastream)
                    && !memo.locations.contains_key(&(entity, id)) =>
            {
                let locations_sql = sql::fixed::thing_locations_of(self.dialect, entity);
                let key = [Param::Integer(id)];
                let (mut found, mut locations, mut noted) = (false, Vec::new(), Vec::new());
                // Neither reads Observations (the visibility of a (Multi)Datastream is its
                // project's), so those held for the group stay held.
                self.conn.query_two_reading_no_observations(
                    (&statement.sql, &statement.params),
                    (&locations_sql, &key),
                    &mut |_| {
                        found = true;
                        Ok(false)
                    },
                    &mut |row| {
                        locations.push(thing_location(row)?);
                        noted.extend(noted_feature(row)?);
                        Ok(true)
                    },
                )?;
                if found && let Some(memo) = self.memo.as_mut() {
                    memo.locations.insert((entity, id), locations);
                    memo.noted.extend(noted.into_iter().map(|feature| (entity, id, feature)));
                }
                found
            }
            _ => !self.run_select(&statement, &selection.fields, 0)?.is_empty(),
        };
        if let (true, Some(id), Some(memo)) = (found, asked, self.memo.as_mut()) {
            memo.found.push((entity, id, self.visibility.clone()));
        }
        Ok(found)
    }

    fn related(
        &mut self,
        entity: EntityType,
        from: Id,
        navigation: &'static Navigation,
    ) -> Result<Vec<Id>, StoreError> {
        let query = Query { select: Some(Vec::new()), ..Query::default() };
        let page = Page { limit: None, offset: 0 };
        let expanded = sql::select_expanded(
            self.dialect,
            self.visibility,
            entity,
            navigation,
            &query,
            &[from.0],
            page,
            Instant::now(),
        );
        Ok(self.run_select(&expanded.statement, &[], 1)?.into_iter().map(|(_, row)| row.id).collect())
    }

    fn set_deadline(&mut self, deadline: Option<std::time::Instant>) -> Result<(), StoreError> {
        if let Some(deadline) = deadline
            && std::time::Instant::now() >= deadline
        {
            return Err(over_budget());
        }
        self.deadline = deadline;
        self.conn.set_deadline(deadline)
    }

    fn lift_deadline_when(&mut self, lifted: std::sync::Arc<std::sync::atomic::AtomicBool>) {
        self.conn.lift_deadline_when(lifted);
    }

    fn set_count_time(&mut self, limit: std::time::Duration) {
        self.count_time = Some(limit);
    }

    fn summary(&mut self, entity: EntityType, id: Id) -> Result<Option<store::statistics::Summary>, StoreError> {
        crate::statistics::summary(self.conn, self.dialect, entity, id)
    }

    fn rollups(
        &mut self,
        entity: EntityType,
        id: Id,
        level: i64,
        from: Instant,
        to: Instant,
        sink: &mut dyn FnMut(store::statistics::Rollup),
    ) -> Result<(), StoreError> {
        crate::statistics::read_rollups(self.conn, self.dialect, entity, id, level, from, to, sink)
    }

    fn retention_policies(&mut self) -> Result<Vec<store::statistics::RetentionPolicy>, StoreError> {
        query_all(self.conn, sql::statistics::retention_policies(), &[], |row| {
            let scope =
                store::statistics::RetentionScope::from_code(row.required_integer(0)?, row.required_integer(1)?)
                    .ok_or_else(|| StoreError::Database("a retention policy of no known scope".into()))?;
            let days = |i: usize| -> Result<Option<u32>, StoreError> {
                Ok(row.integer(i)?.map(|d| u32::try_from(d.max(0)).unwrap_or(u32::MAX)))
            };
            Ok(store::statistics::RetentionPolicy {
                scope,
                raw_days: days(2)?,
                rollup_days: days(3)?,
                updated_at: Instant::from_micros(row.required_integer(4)?),
            })
        })
    }

    fn series_of_project(&mut self, project: i64) -> Result<Vec<(EntityType, Id)>, StoreError> {
        query_all(self.conn, &sql::statistics::series_of_project(self.dialect), &[Param::Integer(project)], |row| {
            let entity =
                if row.required_integer(0)? == 0 { EntityType::Datastream } else { EntityType::MultiDatastream };
            Ok((entity, Id(row.required_integer(1)?)))
        })
    }

    fn observation_points(
        &mut self,
        entity: EntityType,
        id: Id,
        filter: Option<&Expr>,
        from: Instant,
        to: Instant,
        sink: &mut dyn FnMut(store::statistics::RawPoint) -> bool,
    ) -> Result<(), StoreError> {
        let statement =
            sql::select_points(self.dialect, self.visibility, entity, id.0, filter, from, to, Instant::now());
        self.conn.query_large(&statement.sql, &statement.params, &mut |row| {
            let point = store::statistics::RawPoint {
                id: Id(row.required_integer(0)?),
                start: Instant::from_micros(row.required_integer(1)?),
                result: crate::statistics::result_at(row, 2)?,
            };
            Ok(sink(point))
        })
    }

    fn principals(&mut self) -> &mut dyn store::Principals {
        self
    }

    fn dump_rows(
        &mut self,
        table: &'static store::dump::Table,
        after: Option<&[i64]>,
        limit: usize,
    ) -> Result<Vec<Vec<store::Value>>, StoreError> {
        self.dump_table(table, after, limit)
    }

    fn project_of(&mut self, entity: EntityType, id: Id) -> Result<Option<i64>, StoreError> {
        if let Some(project) = self.projects.as_ref().and_then(|cache| cache.get(&(entity, id.0))) {
            return Ok(Some(*project));
        }
        let sql_text = sql::fixed::project_of(self.dialect, entity);
        let project = query_one(self.conn, &sql_text, &[Param::Integer(id.0)], |row| row.required_integer(0))?;
        if let (Some(project), Some(cache)) = (project, self.projects.as_mut()) {
            cache.insert((entity, id.0), project);
        }
        Ok(project)
    }
}

/// The key columns a record sets: its to-one links and, when given, its project.
fn foreign_keys(record: &Record) -> (Vec<&'static str>, Vec<Param>) {
    let mut names = Vec::new();
    let mut values = Vec::new();
    for (nav, id) in &record.links {
        if let Link::Column(column) = nav.link {
            names.push(column);
            values.push(id.map(|i| Param::Integer(i.0)).unwrap_or(Param::Null));
        }
    }
    if let Some(project) = record.project {
        names.push(sql::PROJECT_COLUMN);
        values.push(Param::Integer(project));
    }
    (names, values)
}

fn record_values(record: &Record) -> Vec<Param> {
    let mut values = Vec::new();
    for (property, value) in &record.values {
        bind(property, value, &mut values);
    }
    values
}

/// Pages of more rows than this are read with `Connection::query_large`.
const LARGE_PAGE: u64 = 1_000;

/// From this many records on, an insert takes the backend's bulk path when it has one.
const BULK_ROWS: usize = 64;

/// Whether two records set the same properties and keys (so they share a column list).
fn same_shape(a: &Record, b: &Record) -> bool {
    a.project.is_some() == b.project.is_some()
        && a.values.len() == b.values.len()
        && a.values.iter().zip(&b.values).all(|((p, _), (q, _))| p.name == q.name)
        && a.links.len() == b.links.len()
        && a.links.iter().zip(&b.links).all(|((n, _), (m, _))| n.name == m.name)
}

fn link_table_only(navigation: &Navigation) -> StoreError {
    StoreError::Rejected(format!("{} is not a link-table navigation", navigation.name))
}

/// An Observation as its (Multi)Datastream's statistics see it.
struct ObservationFacts {
    parent: (EntityType, Id),
    start: Instant,
    end: Option<Instant>,
    result: store::Value,
}

/// The Observation statistics' view of the records of inserted Observations, by parent.
fn points_by_parent<'r>(records: &'r [Record], ids: &[Id]) -> Vec<((EntityType, Id), Vec<Point<'r>>)> {
    static NULL: store::Value = store::Value::Null;
    let mut by_parent: HashMap<(EntityType, Id), Vec<Point<'r>>> = HashMap::new();
    for (record, id) in records.iter().zip(ids) {
        let link = |name: &str| record.links.iter().find(|(n, _)| n.name == name).and_then(|(_, id)| *id);
        let parent = match (link("Datastream"), link("MultiDatastream")) {
            (Some(ds), _) => (EntityType::Datastream, ds),
            (_, Some(mds)) => (EntityType::MultiDatastream, mds),
            _ => continue,
        };
        let value = |name: &str| record.values.iter().find(|(p, _)| p.name == name).map(|(_, v)| v);
        let (start, end) = match value("phenomenonTime") {
            Some(store::Value::Instant(i)) => (*i, None),
            Some(store::Value::Interval(i)) => (i.start(), Some(i.end())),
            _ => continue,
        };
        let result = value("result").unwrap_or(&NULL);
        by_parent.entry(parent).or_default().push(Point { id: *id, start, end, result });
    }
    let mut parents: Vec<_> = by_parent.into_iter().collect();
    parents.sort_unstable_by_key(|(key, _)| *key);
    parents
}

impl Access<'_> {
    fn insert_rows(&mut self, entity: EntityType, records: &[Record]) -> Result<Vec<Id>, StoreError> {
        let Some(first) = records.first() else { return Ok(Vec::new()) };
        let fields: Vec<&model::Property> = first.values.iter().map(|(p, _)| *p).collect();
        let (keys, _) = foreign_keys(first);
        // One multi-row statement per chunk keeps parsing and stepping off the hot path (a
        // single-row statement per record measured ~45 % slower on SQLite). The SQL text is
        // built once per chunk size, and chunks stay far below SQLite's 32,766-parameter limit
        // and PostgreSQL's 65,535.
        let columns = record_values(first).len() + keys.len();
        // Many rows go by the backend's bulk path; a few Observations may be held by the write
        // group, to go with its other jobs' (`crate::buffer`).
        let bulk = records.len() >= BULK_ROWS;
        let held = entity == EntityType::Observation && !bulk;
        if (bulk || held) && records.iter().all(|r| same_shape(first, r)) {
            let mut names: Vec<String> = fields.iter().flat_map(|f| sql::columns(f)).map(|c| c.0).collect();
            names.extend(keys.iter().map(|k| (*k).to_owned()));
            let names: Vec<&str> = names.iter().map(String::as_str).collect();
            let mut values = Vec::with_capacity(records.len() * columns);
            for record in records {
                for (property, value) in &record.values {
                    bind(property, value, &mut values);
                }
                values.extend(foreign_keys(record).1);
            }
            let inserted = if bulk {
                self.conn.bulk_insert(entity.table(), "id", &names, &values)?
            } else {
                self.conn.hold_insert(entity.table(), "id", &names, &values)?
            };
            if let Some(ids) = inserted {
                return Ok(ids.into_iter().map(Id).collect());
            }
        }
        let chunk_rows = (16_000 / columns.max(1)).clamp(1, 256);
        let mut texts: Vec<(usize, String)> = Vec::with_capacity(2);
        let mut ids = Vec::with_capacity(records.len());
        let mut values = Vec::with_capacity(chunk_rows * columns);
        for chunk in records.chunks(chunk_rows) {
            let text = match texts.iter().position(|(rows, _)| *rows == chunk.len()) {
                Some(i) => &texts[i].1,
                None => {
                    texts.push((chunk.len(), sql::insert(self.dialect, entity, &fields, &keys, chunk.len())));
                    &texts[texts.len() - 1].1
                }
            };
            values.clear();
            for record in chunk {
                for (property, value) in &record.values {
                    bind(property, value, &mut values);
                }
                values.extend(foreign_keys(record).1);
            }
            self.conn.query(text, &values, &mut |row| {
                ids.push(Id(row.required_integer(0)?));
                Ok(true)
            })?;
        }
        Ok(ids)
    }

    fn update_row(&mut self, entity: EntityType, id: Id, record: &Record) -> Result<bool, StoreError> {
        if let (Some(_), Some(cache)) = (record.project, self.projects.as_mut()) {
            cache.remove(&(entity, id.0));
        }
        let fields: Vec<&model::Property> = record.values.iter().map(|(p, _)| *p).collect();
        let (keys, key_values) = foreign_keys(record);
        if fields.is_empty() && keys.is_empty() {
            let constraint = store::id_eq(id);
            return self.exists(entity, &constraint);
        }
        let sql_text = sql::update(self.dialect, entity, &fields, &keys);
        let mut values = record_values(record);
        values.extend(key_values);
        values.push(Param::Integer(id.0));
        Ok(self.conn.execute(&sql_text, &values)? > 0)
    }

    fn delete_rows(&mut self, entity: EntityType, id: Id) -> Result<bool, StoreError> {
        let key = [Param::Integer(id.0)];
        for sql_text in sql::fixed::lock_owners(self.dialect, entity) {
            self.conn.query(&sql_text, &key, &mut |_| Ok(true))?;
        }
        for sql_text in sql::fixed::delete_dependents(self.dialect, entity) {
            self.conn.execute(&sql_text, &key)?;
        }
        Ok(self.conn.execute(&sql::delete(self.dialect, entity), &key)? > 0)
    }

    /// Counts inserted Observations into their parents' statistics.
    fn count_in(&mut self, records: &[Record], ids: &[Id]) -> Result<(), StoreError> {
        for ((parent, parent_id), points) in points_by_parent(records, ids) {
            self.statistics()?.added(parent, parent_id, &points)?;
        }
        Ok(())
    }

    fn observation_facts(&self, id: Id) -> Result<Option<ObservationFacts>, StoreError> {
        let found =
            query_one(self.conn, &sql::statistics::observation_facts(self.dialect), &[Param::Integer(id.0)], |row| {
                let parent = match (row.integer(0)?, row.integer(1)?) {
                    (Some(ds), _) => Some((EntityType::Datastream, Id(ds))),
                    (_, Some(mds)) => Some((EntityType::MultiDatastream, Id(mds))),
                    _ => None,
                };
                let start = Instant::from_micros(row.required_integer(2)?);
                let end = row.integer(3)?.map(Instant::from_micros);
                let result = crate::statistics::result_at(row, 4)?;
                Ok(parent.map(|parent| ObservationFacts { parent, start, end, result }))
            })?;
        Ok(found.flatten())
    }
}

impl Writer for Access<'_> {
    fn insert(&mut self, entity: EntityType, record: &Record) -> Result<Id, StoreError> {
        Ok(self.insert_many(entity, std::slice::from_ref(record))?.pop().unwrap_or(Id(0)))
    }

    fn insert_many(&mut self, entity: EntityType, records: &[Record]) -> Result<Vec<Id>, StoreError> {
        if entity != EntityType::Observation {
            self.changing();
        }
        let ids = self.insert_rows(entity, records)?;
        if entity == EntityType::Observation {
            self.count_in(records, &ids)?;
        }
        Ok(ids)
    }

    fn update(&mut self, entity: EntityType, id: Id, record: &Record) -> Result<bool, StoreError> {
        self.changing();
        if entity != EntityType::Observation {
            return self.update_row(entity, id, record);
        }
        let before = self.observation_facts(id)?;
        let updated = self.update_row(entity, id, record)?;
        if let Some(before) = before {
            self.statistics()?.removed(before.parent.0, before.parent.1, &[before.start])?;
            if let Some(after) = self.observation_facts(id)? {
                let point = Point { id, start: after.start, end: after.end, result: &after.result };
                self.statistics()?.added(after.parent.0, after.parent.1, &[point])?;
            }
        }
        Ok(updated)
    }

    fn delete(&mut self, entity: EntityType, id: Id) -> Result<bool, StoreError> {
        // Cascades delete more than this entity, and a database may give a deleted id again.
        self.changing();
        if let Some(cache) = self.projects.as_mut() {
            cache.clear();
        }
        // The statistics of the (Multi)Datastreams whose Observations go.
        let removed = if entity == EntityType::Observation { self.observation_facts(id)? } else { None };
        let mut affected = Vec::new();
        if let Some(sql_text) = sql::statistics::affected_parents(self.dialect, entity) {
            self.conn.query(&sql_text, &[Param::Integer(id.0)], &mut |row| {
                let parent =
                    if row.required_integer(0)? == 0 { EntityType::Datastream } else { EntityType::MultiDatastream };
                affected.push((parent, Id(row.required_integer(1)?)));
                Ok(true)
            })?;
        }
        // A feature's Observations: the days they were on, per series.
        let mut days = Vec::new();
        if entity == EntityType::FeatureOfInterest {
            self.conn.query(&sql::statistics::feature_days(self.dialect), &[Param::Integer(id.0)], &mut |row| {
                let parent =
                    if row.required_integer(0)? == 0 { EntityType::Datastream } else { EntityType::MultiDatastream };
                let count = row.required_integer(3)?.max(0) as u64;
                days.push((parent, Id(row.required_integer(1)?), row.required_integer(2)?, count));
                Ok(true)
            })?;
        }
        let deleted = self.delete_rows(entity, id)?;
        if deleted {
            if let Some(facts) = removed {
                self.statistics()?.removed(facts.parent.0, facts.parent.1, &[facts.start])?;
            }
            // Series deleted with the entity: nothing of what their jobs left is written.
            for (parent, parent_id) in affected {
                self.statistics()?.rebuild(parent, parent_id)?;
            }
            for (parent, parent_id, day, count) in days {
                self.statistics()?.removed_on_day(parent, parent_id, day, count)?;
            }
        }
        Ok(deleted)
    }

    fn link(&mut self, navigation: &'static Navigation, from: Id, to: Id) -> Result<(), StoreError> {
        self.changing();
        let sql_text = sql::insert_link(self.dialect, navigation).ok_or_else(|| link_table_only(navigation))?;
        self.conn.execute(&sql_text, &[Param::Integer(from.0), Param::Integer(to.0)])?;
        Ok(())
    }

    fn unlink(&mut self, navigation: &'static Navigation, from: Id, to: Id) -> Result<bool, StoreError> {
        self.changing();
        let sql_text = sql::delete_link(self.dialect, navigation).ok_or_else(|| link_table_only(navigation))?;
        Ok(self.conn.execute(&sql_text, &[Param::Integer(from.0), Param::Integer(to.0)])? > 0)
    }

    fn unlink_all(&mut self, navigation: &'static Navigation, from: Id) -> Result<(), StoreError> {
        self.changing();
        let sql_text = sql::delete_links_of(self.dialect, navigation).ok_or_else(|| link_table_only(navigation))?;
        self.conn.execute(&sql_text, &[Param::Integer(from.0)])?;
        Ok(())
    }

    fn extend_times(
        &mut self,
        entity: EntityType,
        id: Id,
        phenomenon: model::Interval,
        result: Option<model::Interval>,
    ) -> Result<(), StoreError> {
        if let Some(pending) = self.pending.as_mut().filter(|p| p.defers_extents) {
            pending.extend(entity, id, phenomenon, result);
            return Ok(());
        }
        crate::commit::write_extent(self.conn, self.dialect, entity, id, phenomenon, result)
    }

    fn recompute_times(&mut self, entity: EntityType, id: Id) -> Result<(), StoreError> {
        self.conn.execute(&sql::fixed::recompute_times(self.dialect, entity), &[Param::Integer(id.0)])?;
        if let Some(pending) = self.pending.as_mut().filter(|p| p.defers_extents) {
            // Computed from every Observation this group wrote: what was pending is in it.
            pending.recomputed(entity, id);
        }
        Ok(())
    }

    fn thing_locations(&mut self, entity: EntityType, id: Id) -> Result<Vec<store::ThingLocation>, StoreError> {
        if let Some(known) = self.memo.as_ref().and_then(|m| m.locations.get(&(entity, id.0))) {
            return Ok(known.clone());
        }
        let sql_text = sql::fixed::thing_locations_of(self.dialect, entity);
        let rows = query_all(self.conn, &sql_text, &[Param::Integer(id.0)], |row| {
            Ok((thing_location(row)?, noted_feature(row)?))
        })?;
        let mut locations = Vec::with_capacity(rows.len());
        let mut noted = Vec::new();
        for (location, feature) in rows {
            locations.push(location);
            noted.extend(feature);
        }
        if let Some(memo) = self.memo.as_mut() {
            memo.locations.insert((entity, id.0), locations.clone());
            memo.noted.extend(noted.into_iter().map(|feature| (entity, id.0, feature)));
        }
        Ok(locations)
    }

    fn note_feature(&mut self, entity: EntityType, id: Id, feature: Id) -> Result<bool, StoreError> {
        // Noted by an earlier job of this transaction: the pair is there, and new no more.
        if self.memo.as_ref().is_some_and(|m| m.noted.contains(&(entity, id.0, feature.0))) {
            return Ok(false);
        }
        let sql_text = sql::fixed::note_feature(self.dialect, entity);
        let added = self.conn.execute(&sql_text, &[Param::Integer(id.0), Param::Integer(feature.0)])? > 0;
        if let Some(memo) = self.memo.as_mut() {
            memo.noted.insert((entity, id.0, feature.0));
        }
        Ok(added)
    }

    fn remember_generated_feature(&mut self, location: Id, feature: Id) -> Result<(), StoreError> {
        self.changing();
        let sql_text = sql::fixed::remember_generated_feature(self.dialect);
        self.conn.execute(&sql_text, &[Param::Integer(location.0), Param::Integer(feature.0)])?;
        Ok(())
    }

    fn load_rows(&mut self, table: &'static store::dump::Table, rows: &[Vec<store::Value>]) -> Result<(), StoreError> {
        self.changing();
        if let Some(cache) = self.projects.as_mut() {
            cache.clear();
        }
        self.load_table(table, rows)
    }

    fn finish_load(&mut self, table: &'static store::dump::Table) -> Result<(), StoreError> {
        self.finish_table(table)
    }

    fn empty_table(&mut self, table: &'static store::dump::Table) -> Result<(), StoreError> {
        self.changing();
        if let Some(cache) = self.projects.as_mut() {
            cache.clear();
        }
        self.empty(table)
    }

    fn set_retention_policy(&mut self, policy: &store::statistics::RetentionPolicy) -> Result<(), StoreError> {
        let (scope, id) = policy.scope.code();
        let days = |d: Option<u32>| d.map_or(Param::Null, |d| Param::Integer(i64::from(d)));
        let params = [
            Param::Integer(scope),
            Param::Integer(id),
            days(policy.raw_days),
            days(policy.rollup_days),
            Param::Integer(policy.updated_at.micros()),
        ];
        self.conn.execute(&sql::statistics::set_retention_policy(self.dialect), &params)?;
        Ok(())
    }

    fn clear_retention_policy(&mut self, scope: store::statistics::RetentionScope) -> Result<bool, StoreError> {
        let (scope, id) = scope.code();
        let params = [Param::Integer(scope), Param::Integer(id)];
        Ok(self.conn.execute(&sql::statistics::clear_retention_policy(self.dialect), &params)? > 0)
    }

    fn expire_observations(
        &mut self,
        entity: EntityType,
        id: Id,
        before: Instant,
        limit: usize,
    ) -> Result<u64, StoreError> {
        self.changing();
        // Another node expiring this series keeps it; this one leaves it for this pass.
        if let Some(claim) = self.dialect.claim_series() {
            let key = sql::statistics::claim_key(entity, id.0).map(Param::Integer);
            let claimed = query_one(self.conn, claim, &key, |row| row.boolean(0))?.flatten();
            if claimed != Some(true) {
                return Ok(0);
            }
        }
        let params = [Param::Integer(id.0), Param::Integer(before.micros()), Param::Integer(limit as i64)];
        let gone = self.conn.execute(&sql::statistics::expire_observations(self.dialect, entity), &params)?;
        if gone > 0 {
            self.conn.execute(&sql::statistics::earliest_start(self.dialect, entity), &[Param::Integer(id.0)])?;
            self.statistics()?.expired(entity, id, gone)?;
        }
        Ok(gone)
    }

    fn expire_rollups(&mut self, entity: EntityType, id: Id, before: Instant) -> Result<u64, StoreError> {
        let parent = store::statistics::Parent::of(entity)
            .ok_or_else(|| StoreError::Rejected(format!("{} keeps no rollups", entity.set_name())))?;
        let params = [Param::Integer(parent.code()), Param::Integer(id.0), Param::Integer(before.micros())];
        self.conn.execute(&sql::statistics::expire_rollups(self.dialect), &params)
    }

    fn build_pending_rollups(&mut self, limit: usize) -> Result<usize, StoreError> {
        if !self.statistics()?.keeps_rollups() {
            return Ok(0);
        }
        let pending = crate::statistics::pending_rollups(self.conn, self.dialect, limit)?;
        for (entity, id) in &pending {
            self.statistics()?.rebuild(*entity, *id)?;
        }
        Ok(pending.len())
    }

    fn announce(&mut self, message: &str) -> Result<(), StoreError> {
        // Only write groups write, and they announce after their commit (`commit_group`).
        let pending = self
            .pending
            .as_mut()
            .ok_or_else(|| StoreError::Database("an announcement outside a write group".into()))?;
        pending.announcements.push(message.to_owned());
        Ok(())
    }
}
