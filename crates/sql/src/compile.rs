//! The compiler from bound queries to SELECT statements: filters, ordering, paging, counts and
//! the batched follow-up queries of `$expand`.
//!
//! Members reached through to-one navigation become correlated scalar subqueries; a predicate
//! that reaches through a to-many navigation (`Things?$filter=Datastreams/name eq 'x'`) becomes
//! `EXISTS (...)` around that predicate, which is OData's "any" reading. An `$expand` of a
//! collection is one statement for all parents: the ids of the parents are one parameter and
//! each parent's page is picked by a correlated `IN (SELECT ... LIMIT n)`, so the cost is one
//! index probe per parent and never one query per parent.
//!
//! Every statement takes the reader's [`Visibility`]: every alias of an entity table a
//! statement introduces (the entities read, each navigation hop, each expanded level) gets the
//! condition `alias.project_id IN (...)`, so nothing hidden is returned, counted or matched, and
//! a hidden entity on a to-one path reads as absent. This is the only place the access rule
//! becomes SQL.

use model::{EntityType, Instant, Link, Navigation, Property, PropertyKind};
use odata::{BinaryOp, Expr, Function, Literal, Member, MemberPath, Query, Visibility};

use crate::columns::columns;
use crate::dialect::{DatePart, Dialect, JsonAs};
use crate::{Param, Statement};

/// Which slice of a collection to read; for expanded collections, per parent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Page {
    pub limit: Option<u64>,
    pub offset: u64,
}

/// The properties a statement returns after the id, in row order; each takes
/// `columns(property).len()` columns.
#[derive(Clone, Debug, PartialEq)]
pub struct Selection {
    pub fields: Vec<&'static Property>,
}

/// A statement for an expanded collection: rows are `(parent id, id, fields...)`.
#[derive(Clone, Debug, PartialEq)]
pub struct ExpandedPage {
    pub statement: Statement,
    pub selection: Selection,
}

/// `SELECT id, fields FROM entity WHERE filter ORDER BY ... LIMIT ... OFFSET ...`.
///
/// `constraint` is ANDed with the query's own `$filter` (the resource path's condition).
pub fn select(
    dialect: &dyn Dialect,
    visibility: &Visibility,
    entity: EntityType,
    query: &Query,
    constraint: Option<&Expr>,
    page: Page,
    now: Instant,
) -> (Statement, Selection) {
    let mut c = Compiler::new(dialect, visibility, now);
    let selection = selection(entity, query);
    let root = c.alias();
    let scope = Scope::root(&root, entity);
    let mut sql = format!("SELECT {}", c.field_list(&root, &selection));
    sql.push_str(&format!(" FROM {} {root}", entity.table()));
    let conditions = c.conditions(query.filter.as_ref(), constraint, &scope);
    if !conditions.is_empty() {
        sql.push_str(" WHERE ");
        sql.push_str(&conditions.join(" AND "));
    }
    sql.push_str(" ORDER BY ");
    sql.push_str(&c.order_by(query, &scope));
    c.page(&mut sql, page);
    (c.finish(sql), selection)
}

/// `SELECT COUNT(*)` of what [`select`] would return without paging.
pub fn count(
    dialect: &dyn Dialect,
    visibility: &Visibility,
    entity: EntityType,
    filter: Option<&Expr>,
    constraint: Option<&Expr>,
    now: Instant,
) -> Statement {
    let mut c = Compiler::new(dialect, visibility, now);
    let root = c.alias();
    let scope = Scope::root(&root, entity);
    let mut sql = format!("SELECT COUNT(*) FROM {} {root}", entity.table());
    let conditions = c.conditions(filter, constraint, &scope);
    if !conditions.is_empty() {
        sql.push_str(" WHERE ");
        sql.push_str(&conditions.join(" AND "));
    }
    c.finish(sql)
}

/// The entities of `entity` with the ids `ids` (those the reader may see), shaped by `query`'s
/// `$select`, in id order: how the latest Observations kept on (Multi)Datastreams are read.
pub fn select_by_ids(
    dialect: &dyn Dialect,
    visibility: &Visibility,
    entity: EntityType,
    query: &Query,
    ids: &[i64],
    now: Instant,
) -> (Statement, Selection) {
    let mut c = Compiler::new(dialect, visibility, now);
    let selection = selection(entity, query);
    let ids = c.param(Param::IdList(ids.to_vec()));
    let list = c.alias();
    let root = c.alias();
    let from_ids = c.dialect.id_list(&ids, &list);
    let mut sql = format!("SELECT {}", c.field_list(&root, &selection));
    sql.push_str(&format!(" FROM {from_ids} JOIN {} {root} ON {root}.id = {list}.value", entity.table()));
    if let Some(visible) = c.visible(&root) {
        sql.push_str(&format!(" WHERE {visible}"));
    }
    sql.push_str(&format!(" ORDER BY {root}.id"));
    (c.finish(sql), selection)
}

/// Rows `(id, phenomenonTime start, result_number, result_string, result_boolean,
/// result_json)` of the Observations of the (Multi)Datastream `parent` whose phenomenonTime
/// starts in `[from, to)` and that pass `filter`, in `(start, id)` order: the raw input of
/// aggregates.
#[allow(clippy::too_many_arguments, reason = "each is one independent input of the statement")]
pub fn select_points(
    dialect: &dyn Dialect,
    visibility: &Visibility,
    parent: EntityType,
    parent_id: i64,
    filter: Option<&Expr>,
    from: Instant,
    to: Instant,
    now: Instant,
) -> Statement {
    let mut c = Compiler::new(dialect, visibility, now);
    let root = c.alias();
    let scope = Scope::root(&root, EntityType::Observation);
    let mut conditions = c.conditions(filter, None, &scope);
    let column = crate::statistics::parent_column(parent);
    let (id, from, to) = (
        c.param(Param::Integer(parent_id)),
        c.param(Param::Integer(from.micros())),
        c.param(Param::Integer(to.micros())),
    );
    conditions.push(format!("{root}.{column} = {id}"));
    conditions.push(format!("{root}.phenomenon_time_start >= {from}"));
    conditions.push(format!("{root}.phenomenon_time_start < {to}"));
    let sql = format!(
        "SELECT {root}.id, {root}.phenomenon_time_start, {root}.result_number, {root}.result_string, \
         {root}.result_boolean, {root}.result_json FROM observations {root} WHERE {} \
         ORDER BY {root}.phenomenon_time_start, {root}.id",
        conditions.join(" AND ")
    );
    c.finish(sql)
}

/// `SELECT COUNT(*)` of the entities among `ids` that [`count`] would count: a sample's
/// matches, for estimates.
pub fn count_among(
    dialect: &dyn Dialect,
    visibility: &Visibility,
    entity: EntityType,
    filter: Option<&Expr>,
    constraint: Option<&Expr>,
    ids: &[i64],
    now: Instant,
) -> Statement {
    let mut c = Compiler::new(dialect, visibility, now);
    let ids = c.param(Param::IdList(ids.to_vec()));
    let list = c.alias();
    let root = c.alias();
    let scope = Scope::root(&root, entity);
    let from_ids = c.dialect.id_list(&ids, &list);
    let mut sql = format!("SELECT COUNT(*) FROM {from_ids} JOIN {} {root} ON {root}.id = {list}.value", entity.table());
    let conditions = c.conditions(filter, constraint, &scope);
    if !conditions.is_empty() {
        sql.push_str(" WHERE ");
        sql.push_str(&conditions.join(" AND "));
    }
    c.finish(sql)
}

/// `SELECT` the number of Observations the reader may see of the (Multi)Datastream `parent`
/// (all of them when `None`), from the counts kept on (Multi)Datastreams.
pub fn count_from_summaries(
    dialect: &dyn Dialect,
    visibility: &Visibility,
    parent: Option<(EntityType, i64)>,
    now: Instant,
) -> Statement {
    let mut c = Compiler::new(dialect, visibility, now);
    let sum_of = |c: &mut Compiler, entity: EntityType, id: Option<i64>| {
        let alias = c.alias();
        let mut conditions: Vec<String> = c.visible(&alias).into_iter().collect();
        if let Some(id) = id {
            let p = c.param(Param::Integer(id));
            conditions.push(format!("{alias}.id = {p}"));
        }
        let mut sql = format!(
            "SELECT CAST(COALESCE(SUM({alias}.observation_count), 0) AS BIGINT) FROM {} {alias}",
            entity.table()
        );
        if !conditions.is_empty() {
            sql.push_str(" WHERE ");
            sql.push_str(&conditions.join(" AND "));
        }
        sql
    };
    let sql = match parent {
        Some((entity, id)) => sum_of(&mut c, entity, Some(id)),
        None => {
            let ds = sum_of(&mut c, EntityType::Datastream, None);
            let mds = sum_of(&mut c, EntityType::MultiDatastream, None);
            format!("SELECT CAST(({ds}) + ({mds}) AS BIGINT)")
        }
    };
    c.finish(sql)
}

/// The entities reached from each of `parents` (entities of type `parent`) through `navigation`,
/// filtered, ordered and paged per parent by `query`. Rows are `(parent id, id, fields...)`,
/// ordered by parent, then as the query asks.
#[allow(clippy::too_many_arguments, reason = "each is one independent input of the statement")]
pub fn select_expanded(
    dialect: &dyn Dialect,
    visibility: &Visibility,
    parent: EntityType,
    navigation: &Navigation,
    query: &Query,
    parents: &[i64],
    page: Page,
    now: Instant,
) -> ExpandedPage {
    let mut c = Compiler::new(dialect, visibility, now);
    let target = navigation.target;
    let selection = selection(target, query);
    let ids = c.param(Param::IdList(parents.to_vec()));
    let list = c.alias();
    let outer = c.alias();
    let from_ids = c.dialect.id_list(&ids, &list);
    let mut sql = format!("SELECT {list}.value, {}", c.field_list(&outer, &selection));
    match navigation.link {
        Link::Column(column) => {
            // A to-one navigation: one join, no paging needed.
            let holder = c.alias();
            sql.push_str(&format!(
                " FROM {from_ids} JOIN {} {holder} ON {holder}.id = {list}.value JOIN {} {outer} ON {outer}.id = {holder}.{column}",
                parent.table(),
                target.table()
            ));
            let scope = Scope::root(&outer, target);
            let conditions = c.conditions(query.filter.as_ref(), None, &scope);
            if !conditions.is_empty() {
                sql.push_str(" WHERE ");
                sql.push_str(&conditions.join(" AND "));
            }
        }
        Link::Reverse(_) | Link::Table { .. } => {
            let inner = c.alias();
            let (from, correlation) = c.collection_from(parent, navigation, &inner, &format!("{list}.value"));
            let scope = Scope::root(&inner, target);
            let mut conditions = vec![correlation];
            conditions.extend(c.conditions(query.filter.as_ref(), None, &scope));
            // Links that keep their order are read in that order unless `$orderby` says otherwise.
            let position = match navigation.link {
                Link::Table { table: link, this, target: other, position: Some(column) }
                    if query.order_by.is_empty() =>
                {
                    let list = list.clone();
                    Some(move |alias: &str, l: &str| {
                        format!(
                            "(SELECT {l}.{column} FROM {link} {l} WHERE {l}.{this} = {list}.value AND {l}.{other} = {alias}.id), "
                        )
                    })
                }
                _ => None,
            };
            let position_alias = c.alias();
            let position_of = |alias: &str| position.as_ref().map_or(String::new(), |p| p(alias, &position_alias));
            let order = format!("{}{}", position_of(&inner), c.order_by(query, &scope));
            let mut subquery =
                format!("SELECT {inner}.id FROM {from} WHERE {} ORDER BY {order}", conditions.join(" AND "));
            c.page(&mut subquery, page);
            sql.push_str(&format!(" FROM {from_ids} JOIN {} {outer} ON {outer}.id IN ({subquery})", target.table()));
            let outer_scope = Scope::root(&outer, target);
            let outer_order = format!("{}{}", position_of(&outer), c.order_by(query, &outer_scope));
            sql.push_str(&format!(" ORDER BY {list}.value, {outer_order}"));
        }
    }
    ExpandedPage { statement: c.finish(sql), selection }
}

/// Rows of `(parent id, count)`: how many entities each parent reaches through `navigation`
/// that pass `filter`.
pub fn count_expanded(
    dialect: &dyn Dialect,
    visibility: &Visibility,
    parent: EntityType,
    navigation: &Navigation,
    filter: Option<&Expr>,
    parents: &[i64],
    now: Instant,
) -> Statement {
    let mut c = Compiler::new(dialect, visibility, now);
    let ids = c.param(Param::IdList(parents.to_vec()));
    let list = c.alias();
    let inner = c.alias();
    let from_ids = c.dialect.id_list(&ids, &list);
    let (from, correlation) = c.collection_from(parent, navigation, &inner, &format!("{list}.value"));
    let scope = Scope::root(&inner, navigation.target);
    let mut conditions = vec![correlation];
    conditions.extend(c.conditions(filter, None, &scope));
    let sql = format!(
        "SELECT {list}.value, (SELECT COUNT(*) FROM {from} WHERE {}) FROM {from_ids}",
        conditions.join(" AND ")
    );
    c.finish(sql)
}

/// The properties a query returns: all of them without `$select`, else the selected ones in
/// schema order.
fn selection(entity: EntityType, query: &Query) -> Selection {
    let fields = match &query.select {
        None => entity.properties().iter().collect(),
        Some(items) => entity
            .properties()
            .iter()
            .filter(|p| items.iter().any(|item| matches!(item, odata::SelectItem::Property(s) if s.name == p.name)))
            .collect(),
    };
    Selection { fields }
}

/// How a compiled value is typed in SQL.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Boolean,
    Number,
    Text,
    /// Microseconds since the epoch.
    Time,
    /// Microseconds.
    Duration,
    /// GeoJSON or WKT text.
    Geometry,
    Null,
}

/// A JSON value whose SQL type is chosen by the context it is used in.
#[derive(Clone, Debug)]
enum Json {
    /// `Observation/result`, stored in typed columns under `alias`.
    Result { alias: String, column: String },
    /// A path into a JSON text column.
    Path { column: String, path: String },
}

#[derive(Clone, Debug)]
enum Shape {
    Scalar(String, Kind),
    Interval(String, String),
    Json(Json),
}

/// A subquery a member's value must be wrapped in: `(SELECT value FROM from WHERE condition)`.
#[derive(Clone, Debug)]
struct Wrap {
    from: String,
    condition: String,
}

#[derive(Clone, Debug)]
struct Value {
    shape: Shape,
    wrap: Option<Wrap>,
}

impl Value {
    fn scalar(sql: String, kind: Kind) -> Value {
        Value { shape: Shape::Scalar(sql, kind), wrap: None }
    }

    fn kind(&self) -> Option<Kind> {
        match &self.shape {
            Shape::Scalar(_, kind) => Some(*kind),
            Shape::Interval(..) => Some(Kind::Time),
            Shape::Json(_) => None,
        }
    }
}

/// Where members are looked up: the alias of the entity being filtered, and aliases already
/// joined for navigation prefixes inside an `EXISTS`.
#[derive(Clone, Debug)]
struct Scope {
    root: String,
    entity: EntityType,
    bound: Vec<(Vec<&'static Navigation>, String, EntityType)>,
}

impl Scope {
    fn root(alias: &str, entity: EntityType) -> Scope {
        Scope { root: alias.to_owned(), entity, bound: Vec::new() }
    }

    /// The longest bound prefix of `hops`: its length, alias and entity type.
    fn resolve(&self, hops: &[&'static Navigation]) -> (usize, String, EntityType) {
        let mut best = (0, self.root.clone(), self.entity);
        for (prefix, alias, entity) in &self.bound {
            if prefix.len() > best.0 && prefix.len() <= hops.len() && same_hops(prefix, &hops[..prefix.len()]) {
                best = (prefix.len(), alias.clone(), *entity);
            }
        }
        best
    }
}

fn same_hops(a: &[&Navigation], b: &[&Navigation]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.name == y.name && x.target == y.target)
}

struct Compiler<'d> {
    dialect: &'d dyn Dialect,
    visibility: &'d Visibility,
    params: Vec<Param>,
    aliases: usize,
    now: Instant,
}

impl<'d> Compiler<'d> {
    fn new(dialect: &'d dyn Dialect, visibility: &'d Visibility, now: Instant) -> Compiler<'d> {
        Compiler { dialect, visibility, params: Vec::new(), aliases: 0, now }
    }

    /// The visibility condition on the entity aliased `alias`, if the reader is restricted.
    fn visible(&mut self, alias: &str) -> Option<String> {
        let projects = match self.visibility {
            Visibility::All => return None,
            Visibility::Projects(projects) => projects,
        };
        if projects.is_empty() {
            return Some("1 = 0".to_owned());
        }
        let mut condition = format!("{alias}.{} IN (", crate::PROJECT_COLUMN);
        for (i, project) in projects.iter().enumerate() {
            if i > 0 {
                condition.push_str(", ");
            }
            let placeholder = self.param(Param::Integer(*project));
            condition.push_str(&placeholder);
        }
        condition.push(')');
        Some(condition)
    }

    /// `condition`, and the visibility of `alias` when restricted.
    fn and_visible(&mut self, condition: String, alias: &str) -> String {
        match self.visible(alias) {
            Some(visible) => format!("{condition} AND {visible}"),
            None => condition,
        }
    }

    fn finish(self, sql: String) -> Statement {
        Statement { sql, params: self.params }
    }

    fn alias(&mut self) -> String {
        let alias = format!("t{}", self.aliases);
        self.aliases += 1;
        alias
    }

    fn param(&mut self, value: Param) -> String {
        self.params.push(value);
        self.dialect.placeholder(self.params.len())
    }

    fn field_list(&self, alias: &str, selection: &Selection) -> String {
        let mut list = format!("{alias}.id");
        for field in &selection.fields {
            for column in columns(field) {
                list.push_str(&format!(", {alias}.{}", column.0));
            }
        }
        list
    }

    fn page(&mut self, sql: &mut String, page: Page) {
        if let Some(limit) = page.limit {
            let limit = self.param(Param::Integer(i64::try_from(limit).unwrap_or(i64::MAX)));
            sql.push_str(&format!(" LIMIT {limit}"));
            if page.offset > 0 {
                let offset = self.param(Param::Integer(i64::try_from(page.offset).unwrap_or(i64::MAX)));
                sql.push_str(&format!(" OFFSET {offset}"));
            }
        } else if page.offset > 0 {
            // Both dialects accept a huge LIMIT where no limit is meant.
            let offset = self.param(Param::Integer(i64::try_from(page.offset).unwrap_or(i64::MAX)));
            sql.push_str(&format!(" LIMIT {} OFFSET {offset}", i64::MAX));
        }
    }

    fn conditions(&mut self, filter: Option<&Expr>, constraint: Option<&Expr>, scope: &Scope) -> Vec<String> {
        let mut conditions: Vec<String> = self.visible(&scope.root).into_iter().collect();
        for expr in [constraint, filter].into_iter().flatten() {
            let condition = self.predicate(expr, scope);
            conditions.push(condition);
        }
        conditions
    }

    fn order_by(&mut self, query: &Query, scope: &Scope) -> String {
        let mut keys = Vec::new();
        for order in &query.order_by {
            let value = self.value(&order.expr, scope);
            // Keys that can be NULL say where NULLs go, the same on every database; those that
            // cannot (an entity's own id, a required property, an Observation's phenomenonTime,
            // which the server sets when the client does not) say nothing, so that an index of
            // the column still gives the order.
            let nulls = match (&order.expr, &value.wrap) {
                (Expr::Member(MemberPath { member: Member::Id, .. }), None) => "",
                (Expr::Member(MemberPath { member: Member::Property(p), .. }), None)
                    if p.required || p.kind == PropertyKind::InstantOrInterval =>
                {
                    ""
                }
                _ => self.dialect.nulls_smallest(order.descending),
            };
            let dir = if order.descending { " DESC" } else { "" };
            let direction = format!("{dir}{nulls}");
            match &value.shape {
                Shape::Interval(..) => {
                    let (start, end) = self.interval(&value);
                    keys.push(format!("{start}{direction}"));
                    keys.push(format!("{end}{direction}"));
                }
                Shape::Json(Json::Result { alias, column }) => {
                    // Results of one type compare by value (numbers as numbers, on every
                    // database); numbers come first, then strings, booleans and JSON.
                    for suffix in ["number", "string", "boolean", "json"] {
                        let cell = self.wrap(&value, format!("{alias}.{column}_{suffix}"));
                        let cell = if suffix == "json" { format!("CAST({cell} AS TEXT)") } else { cell };
                        keys.push(format!("{cell}{dir} NULLS LAST"));
                    }
                }
                Shape::Scalar(_, Kind::Geometry) => {
                    // Geometries have no order of their own: their GeoJSON text's, on every
                    // database (PostgreSQL keeps them as `json`, which has none).
                    let sql = self.as_kind(&value, None);
                    keys.push(format!("CAST({sql} AS TEXT){direction}"));
                }
                _ => {
                    let sql = self.as_kind(&value, None);
                    keys.push(format!("{sql}{direction}"));
                }
            }
        }
        keys.push(format!("{}.id", scope.root));
        keys.join(", ")
    }

    /// The FROM items and the correlation condition for the entities reached through
    /// `navigation` from the entity of type `parent` whose id is the SQL expression `parent_id`;
    /// `alias` names the reached entity.
    fn collection_from(
        &mut self,
        parent: EntityType,
        navigation: &Navigation,
        alias: &str,
        parent_id: &str,
    ) -> (String, String) {
        let table = navigation.target.table();
        match navigation.link {
            Link::Reverse(column) => (format!("{table} {alias}"), format!("{alias}.{column} = {parent_id}")),
            Link::Table { table: link, this, target, .. } => {
                let link_alias = self.alias();
                (
                    format!("{link} {link_alias} JOIN {table} {alias} ON {alias}.id = {link_alias}.{target}"),
                    format!("{link_alias}.{this} = {parent_id}"),
                )
            }
            Link::Column(column) => {
                let holder = self.alias();
                (
                    format!("{table} {alias} JOIN {} {holder} ON {holder}.{column} = {alias}.id", parent.table()),
                    format!("{holder}.id = {parent_id}"),
                )
            }
        }
    }

    /// FROM items and join conditions for a chain of hops starting at `from` (an alias of
    /// `entity`). Returns the FROM text, the correlation with `from`, the last alias and type.
    fn chain(
        &mut self,
        from: &str,
        entity: EntityType,
        hops: &[&'static Navigation],
    ) -> (String, String, String, EntityType) {
        let mut current = from.to_owned();
        let mut current_entity = entity;
        let mut from_sql = String::new();
        let mut correlation = String::new();
        for (i, hop) in hops.iter().enumerate() {
            let next = self.alias();
            let table = hop.target.table();
            let (items, condition) = match hop.link {
                Link::Column(column) => (format!("{table} {next}"), format!("{next}.id = {current}.{column}")),
                Link::Reverse(column) => (format!("{table} {next}"), format!("{next}.{column} = {current}.id")),
                Link::Table { table: link, this, target, .. } => {
                    let link_alias = self.alias();
                    (
                        format!("{link} {link_alias} JOIN {table} {next} ON {next}.id = {link_alias}.{target}"),
                        format!("{link_alias}.{this} = {current}.id"),
                    )
                }
            };
            let condition = self.and_visible(condition, &next);
            if i == 0 {
                from_sql = items;
                correlation = condition;
            } else {
                from_sql.push_str(&format!(" JOIN {items} ON {condition}"));
            }
            current = next;
            current_entity = hop.target;
        }
        (from_sql, correlation, current, current_entity)
    }

    /// A boolean expression as a SQL condition.
    fn predicate(&mut self, expr: &Expr, scope: &Scope) -> String {
        match expr {
            Expr::Binary { op: BinaryOp::And, left, right } => {
                format!("({} AND {})", self.predicate(left, scope), self.predicate(right, scope))
            }
            Expr::Binary { op: BinaryOp::Or, left, right } => {
                format!("({} OR {})", self.predicate(left, scope), self.predicate(right, scope))
            }
            Expr::Not(inner) => format!("(NOT {})", self.predicate(inner, scope)),
            leaf => self.leaf(leaf, scope),
        }
    }

    /// A predicate without `and`/`or`/`not` at its top. If it reaches through a to-many
    /// navigation not yet joined, it is wrapped in `EXISTS` over that navigation.
    fn leaf(&mut self, expr: &Expr, scope: &Scope) -> String {
        if let Some(hops) = first_unbound_many(expr, scope) {
            let (prefix_len, alias, entity) = scope.resolve(&hops);
            let (from, correlation, last, last_entity) = self.chain(&alias, entity, &hops[prefix_len..]);
            let mut inner = scope.clone();
            inner.bound.push((hops, last, last_entity));
            let condition = self.leaf(expr, &inner);
            return format!("EXISTS (SELECT 1 FROM {from} WHERE {correlation} AND {condition})");
        }
        let value = self.value(expr, scope);
        if let (Shape::Scalar(sql, Kind::Boolean), None) = (&value.shape, &value.wrap) {
            // Comparisons and boolean functions are conditions already; keeping them bare
            // lets the database use its indexes.
            return sql.clone();
        }
        let sql = self.as_kind(&value, Some(Kind::Boolean));
        let truth = self.dialect.boolean_literal(true);
        format!("({sql} = {truth})")
    }

    fn value(&mut self, expr: &Expr, scope: &Scope) -> Value {
        match expr {
            Expr::Literal(literal) => self.literal(literal),
            Expr::Member(path) => self.member(path, scope),
            Expr::Not(_) | Expr::Binary { op: BinaryOp::And | BinaryOp::Or, .. } => {
                let sql = self.predicate(expr, scope);
                Value::scalar(sql, Kind::Boolean)
            }
            Expr::Negate(inner) => {
                let value = self.value(inner, scope);
                let kind = value.kind().unwrap_or(Kind::Number);
                let kind = if kind == Kind::Duration { Kind::Duration } else { Kind::Number };
                let sql = self.as_kind(&value, Some(kind));
                Value::scalar(format!("(-{sql})"), kind)
            }
            Expr::Binary { op, left, right } => self.binary(*op, left, right, scope),
            Expr::Call { function, args } => self.call(*function, args, scope),
        }
    }

    fn literal(&mut self, literal: &Literal) -> Value {
        match literal {
            Literal::Null => Value::scalar("NULL".into(), Kind::Null),
            Literal::Boolean(b) => Value::scalar(self.dialect.boolean_literal(*b).into(), Kind::Boolean),
            Literal::Integer(i) => Value::scalar(self.param(Param::Integer(*i)), Kind::Number),
            Literal::Number(n) => Value::scalar(self.param(Param::Real(*n)), Kind::Number),
            Literal::String(s) => Value::scalar(self.param(Param::Text(s.clone())), Kind::Text),
            Literal::DateTime(t) => Value::scalar(self.param(Param::Integer(t.micros())), Kind::Time),
            Literal::Interval(i) => {
                let start = self.param(Param::Integer(i.start().micros()));
                let end = self.param(Param::Integer(i.end().micros()));
                Value { shape: Shape::Interval(start, end), wrap: None }
            }
            Literal::Duration(micros) => Value::scalar(self.param(Param::Integer(*micros)), Kind::Duration),
            Literal::Geometry(g) => Value::scalar(self.param(Param::Text(g.to_geojson().to_string())), Kind::Geometry),
        }
    }

    fn member(&mut self, path: &MemberPath, scope: &Scope) -> Value {
        let (prefix_len, alias, entity) = scope.resolve(&path.hops);
        let mut hops: Vec<&'static Navigation> = path.hops[prefix_len..].to_vec();
        // `.../Datastream/id` needs no join: the foreign key column holds it. Not for a
        // restricted reader: the id of a hidden entity must read as absent.
        let mut shortcut = None;
        if matches!(path.member, Member::Id)
            && *self.visibility == Visibility::All
            && let Some(Link::Column(column)) = hops.last().map(|h| h.link)
        {
            hops.pop();
            shortcut = Some(column);
        }
        let (target_alias, wrap, _) = if hops.is_empty() {
            (alias, None, entity)
        } else {
            let (from, condition, last, last_entity) = self.chain(&alias, entity, &hops);
            (last, Some(Wrap { from, condition }), last_entity)
        };
        let shape = match (&path.member, shortcut) {
            (Member::Id, Some(column)) => Shape::Scalar(format!("{target_alias}.{column}"), Kind::Number),
            (Member::Id, None) => Shape::Scalar(format!("{target_alias}.id"), Kind::Number),
            (Member::Property(p), _) => property_shape(self.dialect, &target_alias, p),
            (Member::Json { property, path }, _) => {
                let column = match property.kind {
                    PropertyKind::Result => format!("{target_alias}.{}_json", property.column),
                    _ => format!("{target_alias}.{}", property.column),
                };
                let path = self.param(Param::Text(self.dialect.json_path(path)));
                Shape::Json(Json::Path { column, path })
            }
        };
        Value { shape, wrap }
    }

    fn wrap(&self, value: &Value, sql: String) -> String {
        match &value.wrap {
            None => sql,
            Some(w) => format!("(SELECT {sql} FROM {} WHERE {})", w.from, w.condition),
        }
    }

    /// The value as SQL of the given kind (or its natural kind for `None`).
    fn as_kind(&mut self, value: &Value, want: Option<Kind>) -> String {
        let sql = match &value.shape {
            Shape::Scalar(sql, _) => sql.clone(),
            Shape::Interval(start, _) => start.clone(),
            Shape::Json(json) => self.json_as(json, want),
        };
        self.wrap(value, sql)
    }

    fn json_as(&mut self, json: &Json, want: Option<Kind>) -> String {
        match json {
            Json::Result { alias, column } => match want {
                Some(Kind::Number) | Some(Kind::Duration) => format!("{alias}.{column}_number"),
                Some(Kind::Text) | Some(Kind::Geometry) => format!("{alias}.{column}_string"),
                Some(Kind::Boolean) => format!("{alias}.{column}_boolean"),
                Some(Kind::Time) => self.text_to_micros(&format!("{alias}.{column}_string")),
                Some(Kind::Null) | None => self.dialect.any_result(
                    &format!("{alias}.{column}_number"),
                    &format!("{alias}.{column}_string"),
                    &format!("{alias}.{column}_boolean"),
                    &format!("{alias}.{column}_json"),
                ),
            },
            Json::Path { column, path } => {
                let ty = match want {
                    Some(Kind::Number) | Some(Kind::Duration) => JsonAs::Number,
                    Some(Kind::Text) | Some(Kind::Geometry) => JsonAs::Text,
                    Some(Kind::Boolean) => JsonAs::Boolean,
                    Some(Kind::Time) => {
                        let text = self.dialect.json_value(column, path, JsonAs::Text);
                        return self.text_to_micros(&text);
                    }
                    Some(Kind::Null) | None => JsonAs::Any,
                };
                self.dialect.json_value(column, path, ty)
            }
        }
    }

    fn text_to_micros(&self, text: &str) -> String {
        self.dialect.text_to_micros(text)
    }

    /// Start and end of a time value; an instant is its own start and end.
    fn interval(&mut self, value: &Value) -> (String, String) {
        match &value.shape {
            Shape::Interval(start, end) => (self.wrap(value, start.clone()), self.wrap(value, end.clone())),
            _ => {
                let sql = self.as_kind(value, Some(Kind::Time));
                (sql.clone(), sql)
            }
        }
    }

    fn binary(&mut self, op: BinaryOp, left: &Expr, right: &Expr, scope: &Scope) -> Value {
        let l = self.value(left, scope);
        let r = self.value(right, scope);
        match op {
            BinaryOp::And | BinaryOp::Or => {
                // Only reached for boolean values used as operands of a comparison.
                let word = if op == BinaryOp::And { "AND" } else { "OR" };
                let truth = self.dialect.boolean_literal(true);
                let a = self.as_kind(&l, Some(Kind::Boolean));
                let b = self.as_kind(&r, Some(Kind::Boolean));
                Value::scalar(format!("(({a} = {truth}) {word} ({b} = {truth}))"), Kind::Boolean)
            }
            BinaryOp::Eq | BinaryOp::Ne | BinaryOp::Gt | BinaryOp::Ge | BinaryOp::Lt | BinaryOp::Le => {
                Value::scalar(self.comparison(op, &l, &r), Kind::Boolean)
            }
            BinaryOp::Add | BinaryOp::Sub | BinaryOp::Mul | BinaryOp::Div | BinaryOp::Mod => {
                self.arithmetic(op, &l, &r)
            }
        }
    }

    fn comparison(&mut self, op: BinaryOp, l: &Value, r: &Value) -> String {
        let symbol = match op {
            BinaryOp::Eq => "=",
            BinaryOp::Ne => "<>",
            BinaryOp::Gt => ">",
            BinaryOp::Ge => ">=",
            BinaryOp::Lt => "<",
            _ => "<=",
        };
        // Comparisons with null.
        for (value, other) in [(l, r), (r, l)] {
            if value.kind() == Some(Kind::Null) {
                let sql = self.as_kind(other, None);
                return match op {
                    BinaryOp::Eq => format!("({sql} IS NULL)"),
                    BinaryOp::Ne => format!("({sql} IS NOT NULL)"),
                    _ => "(1 = 0)".into(),
                };
            }
        }
        let is_interval = |v: &Value| matches!(v.shape, Shape::Interval(..));
        if is_interval(l) || is_interval(r) {
            return self.time_comparison(op, l, r);
        }
        // A JSON value takes the type of the other side.
        let want = match (l.kind(), r.kind()) {
            (Some(k), _) | (None, Some(k)) => Some(k),
            (None, None) => None,
        };
        let a = self.as_kind(l, want);
        let b = self.as_kind(r, want);
        match op {
            BinaryOp::Ne => self.dialect.distinct(&a, &b),
            _ => format!("({a} {symbol} {b})"),
        }
    }

    /// Comparisons where a side is a time interval. For an interval `[s, e]` and an instant `t`:
    /// `eq` means `t` lies in the interval, `lt` that the interval ends before (or at) `t` and
    /// starts before it, `gt` that it starts after (or at) `t` and ends after it, `le`/`ge`
    /// drop the strictness. Two intervals are equal when both ends are; one is before the other
    /// when it ends before (or where) the other starts.
    fn time_comparison(&mut self, op: BinaryOp, l: &Value, r: &Value) -> String {
        let (ls, le) = self.interval(l);
        let (rs, re) = self.interval(r);
        let l_instant = !matches!(l.shape, Shape::Interval(..));
        let r_instant = !matches!(r.shape, Shape::Interval(..));
        let equal = if l_instant {
            format!("({rs} <= {ls} AND {ls} <= {re})")
        } else if r_instant {
            format!("({ls} <= {rs} AND {rs} <= {le})")
        } else {
            format!("({ls} = {rs} AND {le} = {re})")
        };
        let before = format!("({le} <= {rs} AND {ls} < {rs} AND {le} < {re})");
        let after = format!("({ls} >= {re} AND {le} > {re} AND {ls} > {rs})");
        match op {
            BinaryOp::Eq => equal,
            BinaryOp::Ne => format!("(NOT {equal})"),
            BinaryOp::Lt => before,
            BinaryOp::Gt => after,
            BinaryOp::Le => format!("({le} <= {re} AND {ls} <= {rs})"),
            _ => format!("({ls} >= {rs} AND {le} >= {re})"),
        }
    }

    fn arithmetic(&mut self, op: BinaryOp, l: &Value, r: &Value) -> Value {
        let lk = l.kind().unwrap_or(Kind::Number);
        let rk = r.kind().unwrap_or(Kind::Number);
        let result = match (op, lk, rk) {
            (BinaryOp::Sub, Kind::Time, Kind::Time) => Kind::Duration,
            (BinaryOp::Add | BinaryOp::Sub, Kind::Time, _) | (BinaryOp::Add, _, Kind::Time) => Kind::Time,
            (_, Kind::Duration, Kind::Duration) if matches!(op, BinaryOp::Add | BinaryOp::Sub) => Kind::Duration,
            _ => Kind::Number,
        };
        let a = self.as_kind(l, Some(if lk == Kind::Time || lk == Kind::Duration { lk } else { Kind::Number }));
        let b = self.as_kind(r, Some(if rk == Kind::Time || rk == Kind::Duration { rk } else { Kind::Number }));
        let sql = match op {
            BinaryOp::Add => format!("({a} + {b})"),
            BinaryOp::Sub => format!("({a} - {b})"),
            BinaryOp::Mul => format!("({a} * {b})"),
            // A zero divisor gives NULL on every database (SQLite's own answer), not an error.
            BinaryOp::Div => format!("(({a}) * 1.0 / NULLIF({b}, 0))"),
            _ => self.dialect.modulo(&a, &b),
        };
        Value::scalar(sql, result)
    }

    fn call(&mut self, function: Function, args: &[Expr], scope: &Scope) -> Value {
        use Function::*;
        let values: Vec<Value> = args.iter().map(|a| self.value(a, scope)).collect();
        let text = |c: &mut Self, i: usize| c.as_kind(&values[i], Some(Kind::Text));
        let number = |c: &mut Self, i: usize| c.as_kind(&values[i], Some(Kind::Number));
        let time = |c: &mut Self, i: usize| c.interval(&values[i]).0;
        let geometry = |c: &mut Self, i: usize| c.as_kind(&values[i], Some(Kind::Geometry));
        let d = self.dialect;
        let (sql, kind) = match function {
            SubstringOf => {
                let (needle, haystack) = (text(self, 0), text(self, 1));
                (format!("({} > 0)", d.position(&haystack, &needle)), Kind::Boolean)
            }
            Contains => {
                let (haystack, needle) = (text(self, 0), text(self, 1));
                (format!("({} > 0)", d.position(&haystack, &needle)), Kind::Boolean)
            }
            StartsWith => {
                let (s, prefix) = (text(self, 0), text(self, 1));
                (format!("(substr({s}, 1, length({prefix})) = {prefix})"), Kind::Boolean)
            }
            EndsWith => {
                let (s, suffix) = (text(self, 0), text(self, 1));
                (
                    format!("(length({suffix}) = 0 OR substr({s}, length({s}) - length({suffix}) + 1) = {suffix})"),
                    Kind::Boolean,
                )
            }
            Length => (format!("length({})", text(self, 0)), Kind::Number),
            IndexOf => {
                let (s, needle) = (text(self, 0), text(self, 1));
                (format!("({} - 1)", d.position(&s, &needle)), Kind::Number)
            }
            Substring => {
                let s = text(self, 0);
                let from = number(self, 1);
                if values.len() > 2 {
                    let length = number(self, 2);
                    (format!("substr({s}, CAST(({from}) + 1 AS INTEGER), CAST({length} AS INTEGER))"), Kind::Text)
                } else {
                    (format!("substr({s}, CAST(({from}) + 1 AS INTEGER))"), Kind::Text)
                }
            }
            ToLower => (format!("lower({})", text(self, 0)), Kind::Text),
            ToUpper => (format!("upper({})", text(self, 0)), Kind::Text),
            Trim => (format!("trim({})", text(self, 0)), Kind::Text),
            Concat => {
                let (a, b) = (text(self, 0), text(self, 1));
                (format!("({a} || {b})"), Kind::Text)
            }
            Year | Month | Day | Hour | Minute | Second => {
                let part = match function {
                    Year => DatePart::Year,
                    Month => DatePart::Month,
                    Day => DatePart::Day,
                    Hour => DatePart::Hour,
                    Minute => DatePart::Minute,
                    _ => DatePart::Second,
                };
                let t = time(self, 0);
                (d.date_part(part, &t), Kind::Number)
            }
            FractionalSeconds => {
                let t = time(self, 0);
                (format!("(((({t}) % 1000000) + 1000000) % 1000000 / 1000000.0)"), Kind::Number)
            }
            Date => {
                let t = time(self, 0);
                (d.date_text(&t), Kind::Text)
            }
            Time => {
                let t = time(self, 0);
                (d.time_text(&t), Kind::Text)
            }
            // Every time is stored in UTC.
            TotalOffsetMinutes => ("0".into(), Kind::Number),
            Now => (self.param(Param::Integer(self.now.micros())), Kind::Time),
            MinDateTime => (self.param(Param::Integer(Instant::MIN.micros())), Kind::Time),
            MaxDateTime => (self.param(Param::Integer(Instant::MAX.micros())), Kind::Time),
            Round => (format!("round({})", number(self, 0)), Kind::Number),
            Floor => {
                let x = number(self, 0);
                (d.floor(&x), Kind::Number)
            }
            Ceiling => {
                let x = number(self, 0);
                (d.ceiling(&x), Kind::Number)
            }
            GeoDistance => {
                let (a, b) = (geometry(self, 0), geometry(self, 1));
                (d.geo_function("geo_distance", &[a, b]), Kind::Number)
            }
            GeoLength => {
                let a = geometry(self, 0);
                (d.geo_function("geo_length", &[a]), Kind::Number)
            }
            GeoIntersects | StEquals | StDisjoint | StTouches | StWithin | StOverlaps | StCrosses | StIntersects
            | StContains => {
                let name = match function {
                    GeoIntersects | StIntersects => "st_intersects",
                    StEquals => "st_equals",
                    StDisjoint => "st_disjoint",
                    StTouches => "st_touches",
                    StWithin => "st_within",
                    StOverlaps => "st_overlaps",
                    StCrosses => "st_crosses",
                    _ => "st_contains",
                };
                let (a, b) = (geometry(self, 0), geometry(self, 1));
                (d.geo_function(name, &[a, b]), Kind::Boolean)
            }
            StRelate => {
                let (a, b, pattern) = (geometry(self, 0), geometry(self, 1), text(self, 2));
                (d.geo_function("st_relate", &[a, b, pattern]), Kind::Boolean)
            }
        };
        Value::scalar(sql, kind)
    }
}

/// The SQL shape of a stored property under `alias`.
fn property_shape(dialect: &dyn Dialect, alias: &str, property: &Property) -> Shape {
    let column = property.column;
    match property.kind {
        PropertyKind::Text => Shape::Scalar(format!("{alias}.{column}"), Kind::Text),
        PropertyKind::Instant => Shape::Scalar(format!("{alias}.{column}"), Kind::Time),
        PropertyKind::Geometry => Shape::Scalar(format!("{alias}.{column}"), Kind::Geometry),
        PropertyKind::Interval => Shape::Interval(format!("{alias}.{column}_start"), format!("{alias}.{column}_end")),
        PropertyKind::InstantOrInterval => Shape::Interval(
            format!("{alias}.{column}_start"),
            format!("COALESCE({alias}.{column}_end, {alias}.{column}_start)"),
        ),
        PropertyKind::Result => Shape::Json(Json::Result { alias: alias.to_owned(), column: column.to_owned() }),
        PropertyKind::Object | PropertyKind::Json => {
            // The whole object: the dialect's path of no keys, as a literal.
            let root = dialect.json_path(&[]).replace('\'', "''");
            Shape::Json(Json::Path { column: format!("{alias}.{column}"), path: format!("'{root}'") })
        }
    }
}

/// The hops of the first member in `expr` that passes through a to-many navigation not yet
/// bound in `scope`, up to and including that navigation.
fn first_unbound_many(expr: &Expr, scope: &Scope) -> Option<Vec<&'static Navigation>> {
    match expr {
        Expr::Literal(_) => None,
        Expr::Member(path) => {
            let (prefix_len, _, _) = scope.resolve(&path.hops);
            let index = path.hops[prefix_len..].iter().position(|h| h.many)?;
            Some(path.hops[..prefix_len + index + 1].to_vec())
        }
        Expr::Not(inner) | Expr::Negate(inner) => first_unbound_many(inner, scope),
        Expr::Binary { left, right, .. } => {
            first_unbound_many(left, scope).or_else(|| first_unbound_many(right, scope))
        }
        Expr::Call { args, .. } => args.iter().find_map(|a| first_unbound_many(a, scope)),
    }
}
