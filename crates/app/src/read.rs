//! Reads: resolving a resource path to a condition on its target entity set, checking that the
//! entities along the path exist (404 otherwise), and running the query.

use model::{EntityType, Id, Property};
use odata::{BinaryOp, Expr, Literal, Member, MemberPath, Query, ResourcePath, SelectItem, Tail};
use store::{Paging, Reader, Row, Rows, Value};

use crate::AppError;

/// The answer to a read.
#[derive(Debug)]
pub enum ReadResult {
    Collection {
        entity: EntityType,
        rows: Rows,
    },
    Entity {
        entity: EntityType,
        fields: Vec<&'static Property>,
        row: Row,
    },
    /// `/name`: `{"name": value}`.
    Property {
        property: &'static Property,
        value: Value,
    },
    /// `/name/$value`: the bare value.
    Value {
        property: &'static Property,
        value: Value,
    },
    /// `/$ref` on a collection.
    Refs {
        entity: EntityType,
        rows: Rows,
    },
    /// `/$ref` on an entity.
    Ref {
        entity: EntityType,
        id: Id,
    },
}

pub fn read(
    reader: &mut dyn Reader,
    path: &ResourcePath,
    query: &Query,
    paging: Paging,
) -> Result<ReadResult, AppError> {
    let last = path.segments.len().saturating_sub(1);
    if last > 0 {
        ensure_exists(reader, path, last - 1)?;
    }
    let segment = &path.segments[last];
    let entity = segment.entity;
    let constraint = constraint(path, last);
    if addresses_collection(path) {
        return Ok(match path.tail {
            Tail::Ref => {
                let refs = Query { select: Some(Vec::new()), expand: Vec::new(), ..query.clone() };
                ReadResult::Refs { entity, rows: reader.query(entity, constraint.as_ref(), &refs, paging)? }
            }
            _ => ReadResult::Collection { entity, rows: reader.query(entity, constraint.as_ref(), query, paging)? },
        });
    }
    let single = |q: Query| Query { top: Some(1), skip: 0, count: None, ..q };
    let one = match &path.tail {
        Tail::None => single(query.clone()),
        Tail::Property(p) | Tail::Value(p) => {
            single(Query { select: Some(vec![SelectItem::Property(p)]), ..Query::default() })
        }
        Tail::Ref => single(Query { select: Some(Vec::new()), ..Query::default() }),
    };
    let mut rows = reader.query(entity, constraint.as_ref(), &one, paging)?;
    let Some(row) = rows.rows.pop() else {
        return Err(AppError::NotFound(format!("nothing exists at {}", describe(path, last))));
    };
    Ok(match &path.tail {
        Tail::None => ReadResult::Entity { entity, fields: rows.fields, row },
        Tail::Property(p) => ReadResult::Property { property: p, value: first_value(row) },
        Tail::Value(p) => ReadResult::Value { property: p, value: first_value(row) },
        Tail::Ref => ReadResult::Ref { entity, id: row.id },
    })
}

/// Reads the collection `path` addresses (its parents must exist) and hands it to `sink` in
/// chunks, as [`store::Reader::query_chunks`] does.
pub fn read_chunks(
    reader: &mut dyn Reader,
    path: &ResourcePath,
    query: &Query,
    paging: Paging,
    chunk: usize,
    sink: &mut dyn FnMut(Rows) -> bool,
) -> Result<(), AppError> {
    if !addresses_collection(path) || path.tail != Tail::None {
        return Err(AppError::Internal("read_chunks needs a collection path".into()));
    }
    let last = path.segments.len() - 1;
    if last > 0 {
        ensure_exists(reader, path, last - 1)?;
    }
    let entity = path.segments[last].entity;
    reader.query_chunks(entity, constraint(path, last).as_ref(), query, paging, chunk, sink)?;
    Ok(())
}

fn first_value(row: Row) -> Value {
    row.values.into_iter().next().unwrap_or(Value::Null)
}

/// Whether the path (ignoring its tail) addresses a collection rather than one entity.
pub fn addresses_collection(path: &ResourcePath) -> bool {
    path.segments.last().is_some_and(|s| s.key.is_none() && s.via.is_none_or(|v| v.many))
}

/// Fails with 404 unless the entity addressed by segments `0..=j` exists.
pub fn ensure_exists(reader: &mut dyn Reader, path: &ResourcePath, j: usize) -> Result<(), AppError> {
    if j > 0 {
        ensure_exists(reader, path, j - 1)?;
    }
    let Some(constraint) = constraint(path, j) else { return Ok(()) };
    if reader.exists(path.segments[j].entity, &constraint)? {
        Ok(())
    } else {
        Err(AppError::NotFound(format!("nothing exists at {}", describe(path, j))))
    }
}

/// The condition segments `0..=j` put on the entity set of segment `j`: its own key, and the
/// key of the nearest keyed segment before it, reached back through inverse navigations.
/// Ancestors further back are checked by [`ensure_exists`], not repeated here.
pub fn constraint(path: &ResourcePath, j: usize) -> Option<Expr> {
    let segments = &path.segments;
    let mut conditions = Vec::new();
    if let Some(key) = segments[j].key {
        conditions.push(id_is(Vec::new(), key));
    }
    let mut hops = Vec::new();
    for i in (1..=j).rev() {
        let via = segments[i].via?;
        let back = segments[i - 1].entity.inverse(via)?;
        hops.push(back);
        if let Some(key) = segments[i - 1].key {
            conditions.push(id_is(hops, key));
            break;
        }
    }
    conditions.into_iter().reduce(|a, b| Expr::Binary { op: BinaryOp::And, left: Box::new(a), right: Box::new(b) })
}

fn id_is(hops: Vec<&'static model::Navigation>, id: Id) -> Expr {
    Expr::Binary {
        op: BinaryOp::Eq,
        left: Box::new(Expr::Member(MemberPath { hops, member: Member::Id })),
        right: Box::new(Expr::Literal(Literal::Integer(id.0))),
    }
}

/// `Things(1)/Datastreams` for segments `0..=j`.
pub fn describe(path: &ResourcePath, j: usize) -> String {
    let mut text = String::new();
    for (i, segment) in path.segments[..=j].iter().enumerate() {
        if i > 0 {
            text.push('/');
        }
        match segment.via {
            Some(nav) => text.push_str(nav.name),
            None => text.push_str(segment.entity.set_name()),
        }
        if let Some(key) = segment.key {
            text.push_str(&format!("({key})"));
        }
    }
    text
}
