//! Statements that change data: inserts, updates and deletes of entities and of links.
//! Parameters are bound positionally in the order the caller passes the columns.

use model::{EntityType, Link, Navigation, Property};

use crate::columns::columns;
use crate::dialect::Dialect;

/// `INSERT INTO table (columns of fields, foreign keys) VALUES (...) RETURNING id`, for `rows`
/// rows at once.
pub fn insert(
    dialect: &dyn Dialect,
    entity: EntityType,
    fields: &[&Property],
    foreign_keys: &[&str],
    rows: usize,
) -> String {
    let names = column_names(fields, foreign_keys);
    if names.is_empty() {
        return format!("INSERT INTO {} DEFAULT VALUES RETURNING id", entity.table());
    }
    let mut sql = insert_rows(dialect, entity.table(), &names, rows.max(1));
    sql.push_str(" RETURNING id");
    sql
}

/// `INSERT INTO table (columns...) VALUES (?1, ...), ...` for `rows` rows, the placeholders
/// numbered row by row (nothing returned).
pub fn insert_rows(dialect: &dyn Dialect, table: &str, columns: &[impl AsRef<str>], rows: usize) -> String {
    let names: Vec<&str> = columns.iter().map(AsRef::as_ref).collect();
    let mut sql = format!("INSERT INTO {table} ({}) VALUES ", names.join(", "));
    let mut n = 0;
    for row in 0..rows {
        if row > 0 {
            sql.push_str(", ");
        }
        sql.push('(');
        for i in 0..names.len() {
            if i > 0 {
                sql.push_str(", ");
            }
            n += 1;
            dialect.push_placeholder(&mut sql, n);
        }
        sql.push(')');
    }
    sql
}

/// `UPDATE table SET ... WHERE id = ?last`.
pub fn update(dialect: &dyn Dialect, entity: EntityType, fields: &[&Property], foreign_keys: &[&str]) -> String {
    let names = column_names(fields, foreign_keys);
    let sets: Vec<String> =
        names.iter().enumerate().map(|(i, name)| format!("{name} = {}", dialect.placeholder(i + 1))).collect();
    format!("UPDATE {} SET {} WHERE id = {}", entity.table(), sets.join(", "), dialect.placeholder(names.len() + 1))
}

/// `DELETE FROM table WHERE id = ?1`.
pub fn delete(dialect: &dyn Dialect, entity: EntityType) -> String {
    format!("DELETE FROM {} WHERE id = {}", entity.table(), dialect.placeholder(1))
}

/// Links `?1` (an entity on the `this` side of `navigation`) to `?2`; linking twice is a no-op.
/// Returns `None` for navigations that are not stored in a link table.
pub fn insert_link(dialect: &dyn Dialect, navigation: &Navigation) -> Option<String> {
    let Link::Table { table, this, target, .. } = navigation.link else { return None };
    Some(format!(
        "INSERT INTO {table} ({this}, {target}) VALUES ({}, {}) ON CONFLICT DO NOTHING",
        dialect.placeholder(1),
        dialect.placeholder(2)
    ))
}

/// Removes the link from `?1` to `?2`.
pub fn delete_link(dialect: &dyn Dialect, navigation: &Navigation) -> Option<String> {
    let Link::Table { table, this, target, .. } = navigation.link else { return None };
    Some(format!(
        "DELETE FROM {table} WHERE {this} = {} AND {target} = {}",
        dialect.placeholder(1),
        dialect.placeholder(2)
    ))
}

/// Removes every link from `?1`.
pub fn delete_links_of(dialect: &dyn Dialect, navigation: &Navigation) -> Option<String> {
    let Link::Table { table, this, .. } = navigation.link else { return None };
    Some(format!("DELETE FROM {table} WHERE {this} = {}", dialect.placeholder(1)))
}

fn column_names(fields: &[&Property], foreign_keys: &[&str]) -> Vec<String> {
    let mut names: Vec<String> = fields.iter().flat_map(|f| columns(f)).map(|c| c.0).collect();
    names.extend(foreign_keys.iter().map(|k| (*k).to_owned()));
    names
}
