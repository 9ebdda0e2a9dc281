//! Compiles the bound query IR of `odata` into SQL text with parameters.
//!
//! There is one compiler ([`compile`]) for every database; a [`Dialect`] overrides only what
//! differs between them (placeholders, JSON access, date parts, geometry functions, id lists).
//! User input never becomes SQL text: values become [`Param`]s and identifiers come from
//! `model`'s schema. Compilation cannot fail: everything a client can get wrong was rejected
//! when `odata` bound the query.

mod columns;
mod compile;
pub mod devices;
mod dialect;
pub mod fixed;
pub mod principals;
pub mod statistics;
mod write;

#[cfg(test)]
mod tests;

pub use columns::{Column, columns};
pub use compile::{
    ExpandedPage, Page, Selection, count, count_among, count_expanded, count_from_summaries, select, select_by_ids,
    select_expanded, select_points,
};
pub use dialect::{ANNOUNCE_CHANNEL, Dialect, PostgresDialect, SqliteDialect};
pub use write::{delete, delete_link, delete_links_of, insert, insert_link, insert_rows, update};

/// The column of every entity table that holds the entity's project, which the visibility
/// rule reads.
pub const PROJECT_COLUMN: &str = "project_id";

/// A parameter value bound to a placeholder: what the compiler produces, and what a backend
/// binds for a stored value.
#[derive(Clone, Debug, PartialEq)]
pub enum Param {
    Null,
    Integer(i64),
    Real(f64),
    Text(String),
    /// A stored boolean (SQLite keeps 0 and 1).
    Boolean(bool),
    /// JSON text for a JSON column (SQLite keeps text).
    Json(String),
    /// A list of ids, rendered by the dialect's [`Dialect::id_list`].
    IdList(Vec<i64>),
}

/// SQL text with its parameters, numbered in order from 1.
#[derive(Clone, Debug, PartialEq)]
pub struct Statement {
    pub sql: String,
    pub params: Vec<Param>,
}
