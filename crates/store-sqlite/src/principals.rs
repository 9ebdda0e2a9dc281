//! The principal tables on SQLite, through the statements of `sql::principals`.

use ::access::{Grant, ProjectId, Role};
use model::Instant;
use rusqlite::{OptionalExtension, Row, params};
use store::{AuditEntry, NewToken, Principals, ProjectRecord, StoreError, TokenRecord, TokenScope, UserRecord};

use crate::access::{Access, db_error};

const DIALECT: sql::SqliteDialect = sql::SqliteDialect;

fn user_of(row: &Row<'_>) -> rusqlite::Result<UserRecord> {
    Ok(UserRecord {
        id: row.get(0)?,
        name: row.get(1)?,
        password_hash: row.get(2)?,
        hub_admin: row.get(3)?,
        disabled: row.get(4)?,
    })
}

/// A stored role name; the table's CHECK keeps anything else out.
fn role_of(text: &str) -> Result<Role, StoreError> {
    Role::parse(text).ok_or_else(|| StoreError::Database(format!("unknown role `{text}` in the database").into()))
}

impl Access<'_> {
    fn grants(&self, sql_text: &str, owner: i64) -> Result<Vec<Grant>, StoreError> {
        let mut stmt = self.conn.prepare_cached(sql_text).map_err(db_error)?;
        let rows = stmt
            .query_map([owner], |row| Ok((row.get::<_, i64>(0)?, row.get::<_, String>(1)?)))
            .map_err(db_error)?
            .collect::<Result<Vec<_>, _>>()
            .map_err(db_error)?;
        rows.into_iter().map(|(project, role)| Ok(Grant { project, role: role_of(&role)? })).collect()
    }
}

impl Principals for Access<'_> {
    fn user_by_name(&mut self, name: &str) -> Result<Option<UserRecord>, StoreError> {
        let mut stmt = self.conn.prepare_cached(&sql::principals::user_by_name(&DIALECT)).map_err(db_error)?;
        stmt.query_row([name], user_of).optional().map_err(db_error)
    }

    fn user(&mut self, id: i64) -> Result<Option<UserRecord>, StoreError> {
        let mut stmt = self.conn.prepare_cached(&sql::principals::user_by_id(&DIALECT)).map_err(db_error)?;
        stmt.query_row([id], user_of).optional().map_err(db_error)
    }

    fn insert_user(&mut self, name: &str, password_hash: Option<&str>, hub_admin: bool) -> Result<i64, StoreError> {
        let mut stmt = self.conn.prepare_cached(&sql::principals::insert_user(&DIALECT)).map_err(db_error)?;
        stmt.query_row(params![name, password_hash, hub_admin, Instant::now().micros()], |row| row.get(0))
            .map_err(db_error)
    }

    fn memberships(&mut self, user: i64) -> Result<Vec<Grant>, StoreError> {
        self.grants(&sql::principals::memberships(&DIALECT), user)
    }

    fn set_membership(&mut self, user: i64, project: ProjectId, role: Option<Role>) -> Result<(), StoreError> {
        match role {
            Some(role) => {
                let mut stmt =
                    self.conn.prepare_cached(&sql::principals::set_membership(&DIALECT)).map_err(db_error)?;
                stmt.execute(params![user, project, role.name()]).map_err(db_error)?;
            }
            None => {
                let mut stmt =
                    self.conn.prepare_cached(&sql::principals::remove_membership(&DIALECT)).map_err(db_error)?;
                stmt.execute(params![user, project]).map_err(db_error)?;
            }
        }
        Ok(())
    }

    fn insert_token(&mut self, token: &NewToken<'_>) -> Result<i64, StoreError> {
        let scope = match token.scope {
            TokenScope::User => "user",
            TokenScope::Grants(_) => "grants",
        };
        let expires = token.expires_at.map(Instant::micros);
        let id: i64 = {
            let mut stmt = self.conn.prepare_cached(&sql::principals::insert_token(&DIALECT)).map_err(db_error)?;
            stmt.query_row(
                params![token.user, token.hash, token.label, scope, Instant::now().micros(), expires],
                |row| row.get(0),
            )
            .map_err(db_error)?
        };
        if let TokenScope::Grants(grants) = &token.scope {
            let mut stmt =
                self.conn.prepare_cached(&sql::principals::insert_token_grant(&DIALECT)).map_err(db_error)?;
            for grant in grants {
                stmt.execute(params![id, grant.project, grant.role.name()]).map_err(db_error)?;
            }
        }
        Ok(id)
    }

    fn token_by_hash(&mut self, hash: &str) -> Result<Option<TokenRecord>, StoreError> {
        type Found = (i64, i64, String, String, Option<i64>, Option<i64>);
        let found: Option<Found> = {
            let mut stmt = self.conn.prepare_cached(&sql::principals::token_by_hash(&DIALECT)).map_err(db_error)?;
            stmt.query_row([hash], |row| {
                Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?, row.get(4)?, row.get(5)?))
            })
            .optional()
            .map_err(db_error)?
        };
        let Some((id, user, label, scope, expires_at, revoked_at)) = found else { return Ok(None) };
        let scope = match scope.as_str() {
            "user" => TokenScope::User,
            _ => TokenScope::Grants(self.grants(&sql::principals::token_grants(&DIALECT), id)?),
        };
        Ok(Some(TokenRecord {
            id,
            user,
            label,
            scope,
            expires_at: expires_at.map(Instant::from_micros),
            revoked_at: revoked_at.map(Instant::from_micros),
        }))
    }

    fn revoke_token(&mut self, id: i64, owner: Option<i64>) -> Result<bool, StoreError> {
        let mut stmt = self.conn.prepare_cached(&sql::principals::revoke_token(&DIALECT)).map_err(db_error)?;
        Ok(stmt.execute(params![id, Instant::now().micros(), owner]).map_err(db_error)? > 0)
    }

    fn projects(&mut self) -> Result<Vec<ProjectRecord>, StoreError> {
        let mut stmt = self.conn.prepare_cached(sql::principals::projects()).map_err(db_error)?;
        stmt.query_map([], |row| Ok(ProjectRecord { id: row.get(0)?, name: row.get(1)?, open_data: row.get(2)? }))
            .map_err(db_error)?
            .collect::<Result<Vec<_>, _>>()
            .map_err(db_error)
    }

    fn insert_project(&mut self, name: &str, open_data: bool) -> Result<ProjectId, StoreError> {
        let mut stmt = self.conn.prepare_cached(&sql::principals::insert_project(&DIALECT)).map_err(db_error)?;
        stmt.query_row(params![name, open_data], |row| row.get(0)).map_err(db_error)
    }

    fn set_open_data(&mut self, project: ProjectId, open_data: bool) -> Result<bool, StoreError> {
        let mut stmt = self.conn.prepare_cached(&sql::principals::set_open_data(&DIALECT)).map_err(db_error)?;
        Ok(stmt.execute(params![project, open_data]).map_err(db_error)? > 0)
    }

    fn last_audit_hash(&mut self) -> Result<Option<String>, StoreError> {
        let mut stmt = self.conn.prepare_cached(sql::principals::last_audit_hash()).map_err(db_error)?;
        stmt.query_row([], |row| row.get(0)).optional().map_err(db_error)
    }

    fn append_audit(&mut self, entry: &AuditEntry) -> Result<(), StoreError> {
        let mut stmt = self.conn.prepare_cached(&sql::principals::insert_audit(&DIALECT)).map_err(db_error)?;
        stmt.execute(params![
            entry.at.micros(),
            entry.actor,
            entry.event,
            entry.detail,
            entry.previous_hash,
            entry.hash
        ])
        .map_err(db_error)?;
        Ok(())
    }

    fn audit_entries(&mut self, after: i64, limit: i64) -> Result<Vec<AuditEntry>, StoreError> {
        let mut stmt = self.conn.prepare_cached(&sql::principals::audit_entries(&DIALECT)).map_err(db_error)?;
        stmt.query_map([after, limit], |row| {
            Ok(AuditEntry {
                id: row.get(0)?,
                at: Instant::from_micros(row.get(1)?),
                actor: row.get(2)?,
                event: row.get(3)?,
                detail: row.get(4)?,
                previous_hash: row.get(5)?,
                hash: row.get(6)?,
            })
        })
        .map_err(db_error)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(db_error)
    }
}
