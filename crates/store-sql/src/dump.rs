//! Whole tables read and written as they are stored (`store::dump`), for `thingbase export`
//! and `import`: keyset pages in key order out, multi-row inserts with the keys in.

use sql::Param;
use store::dump::{ColumnKind, Table};
use store::{StoreError, Value};

use crate::{Access, Number, SqlRow, query_all};

fn cell(row: &dyn SqlRow, i: usize, kind: ColumnKind) -> Result<Value, StoreError> {
    Ok(match kind {
        ColumnKind::Integer => row.integer(i)?.map_or(Value::Null, Value::Integer),
        ColumnKind::Number => match row.number(i)? {
            Some(Number::Integer(n)) => Value::Integer(n),
            Some(Number::Real(r)) => Value::Real(r),
            None => Value::Null,
        },
        ColumnKind::Text => row.text(i)?.map_or(Value::Null, Value::Text),
        ColumnKind::Boolean => row.boolean(i)?.map_or(Value::Null, Value::Boolean),
        ColumnKind::Json => row.json(i)?.map_or(Value::Null, Value::Json),
    })
}

fn param(value: &Value, kind: ColumnKind) -> Result<Param, StoreError> {
    Ok(match (value, kind) {
        (Value::Null, _) => Param::Null,
        (Value::Integer(n), ColumnKind::Integer | ColumnKind::Number) => Param::Integer(*n),
        (Value::Real(r), ColumnKind::Number) => Param::Real(*r),
        (Value::Text(s), ColumnKind::Text) => Param::Text(s.clone()),
        (Value::Boolean(b), ColumnKind::Boolean) => Param::Boolean(*b),
        (Value::Json(s) | Value::Text(s), ColumnKind::Json) => Param::Json(s.clone()),
        (other, kind) => return Err(StoreError::Rejected(format!("{other:?} is no value for a {kind:?} column"))),
    })
}

impl Access<'_> {
    pub(crate) fn dump_table(
        &self,
        table: &'static Table,
        after: Option<&[i64]>,
        limit: usize,
    ) -> Result<Vec<Vec<Value>>, StoreError> {
        let p = |n: usize| self.dialect.placeholder(n);
        let columns: Vec<&str> = table.column_names().collect();
        let key = table.key.join(", ");
        let mut params = Vec::new();
        let condition = match after {
            Some(after) if after.len() == table.key.len() => {
                let placeholders: Vec<String> = (1..=after.len()).map(p).collect();
                params.extend(after.iter().map(|k| Param::Integer(*k)));
                format!(" WHERE ({key}) > ({})", placeholders.join(", "))
            }
            Some(_) => {
                return Err(StoreError::Rejected(format!("{} has a key of {} columns", table.name, table.key.len())));
            }
            None => String::new(),
        };
        params.push(Param::Integer(i64::try_from(limit).unwrap_or(i64::MAX)));
        let sql_text = format!(
            "SELECT {} FROM {}{condition} ORDER BY {key} LIMIT {}",
            columns.join(", "),
            table.name,
            p(params.len())
        );
        query_all(self.conn, &sql_text, &params, |row| {
            table.columns.iter().enumerate().map(|(i, (_, kind))| cell(row, i, *kind)).collect()
        })
    }

    pub(crate) fn load_table(&self, table: &'static Table, rows: &[Vec<Value>]) -> Result<(), StoreError> {
        let width = table.columns.len();
        // Far below the parameter limits of SQLite (32,766) and PostgreSQL (65,535).
        let per_statement = (16_000 / width).max(1);
        let names: Vec<&str> = table.column_names().collect();
        for chunk in rows.chunks(per_statement) {
            let mut params = Vec::with_capacity(chunk.len() * width);
            let mut tuples = Vec::with_capacity(chunk.len());
            for row in chunk {
                if row.len() != width {
                    return Err(StoreError::Rejected(format!(
                        "a row of {} has {} values, not {width}",
                        table.name,
                        row.len()
                    )));
                }
                let mut placeholders = Vec::with_capacity(width);
                for (value, (_, kind)) in row.iter().zip(table.columns) {
                    params.push(param(value, *kind)?);
                    placeholders.push(self.dialect.placeholder(params.len()));
                }
                tuples.push(format!("({})", placeholders.join(", ")));
            }
            let sql_text = format!("INSERT INTO {} ({}) VALUES {}", table.name, names.join(", "), tuples.join(", "));
            self.conn.execute(&sql_text, &params)?;
        }
        Ok(())
    }

    pub(crate) fn finish_table(&self, table: &'static Table) -> Result<(), StoreError> {
        if let (true, [key]) = (table.generated, table.key)
            && let Some(sql_text) = self.dialect.after_load(table.name, key)
        {
            self.conn.batch(&sql_text)?;
        }
        Ok(())
    }

    pub(crate) fn empty(&self, table: &'static Table) -> Result<(), StoreError> {
        self.conn.execute(&format!("DELETE FROM {}", table.name), &[])?;
        Ok(())
    }
}
