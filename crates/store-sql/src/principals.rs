//! The principal tables through the statements of `sql::principals`.

use ::access::{Grant, ProjectId, Role};
use model::Instant;
use sql::Param;
use store::{AuditEntry, NewToken, Principals, ProjectRecord, StoreError, TokenRecord, TokenScope, UserRecord};

use crate::{Access, SqlRow, query_all, query_one};

fn user_of(row: &dyn SqlRow) -> Result<UserRecord, StoreError> {
    Ok(UserRecord {
        id: row.required_integer(0)?,
        name: row.required_text(1)?,
        password_hash: row.text(2)?,
        hub_admin: row.required_integer(3)? != 0,
        disabled: row.required_integer(4)? != 0,
    })
}

/// A stored role name; the table's CHECK keeps anything else out.
fn role_of(text: &str) -> Result<Role, StoreError> {
    Role::parse(text).ok_or_else(|| StoreError::Database(format!("unknown role `{text}` in the database").into()))
}

fn text(value: &str) -> Param {
    Param::Text(value.to_owned())
}

fn flag(value: bool) -> Param {
    Param::Integer(i64::from(value))
}

fn optional_text(value: Option<&str>) -> Param {
    value.map_or(Param::Null, text)
}

fn optional_integer(value: Option<i64>) -> Param {
    value.map_or(Param::Null, Param::Integer)
}

impl Access<'_> {
    fn grants(&self, sql_text: &str, owner: i64) -> Result<Vec<Grant>, StoreError> {
        let rows = query_all(self.conn, sql_text, &[Param::Integer(owner)], |row| {
            Ok((row.required_integer(0)?, row.required_text(1)?))
        })?;
        rows.into_iter().map(|(project, role)| Ok(Grant { project, role: role_of(&role)? })).collect()
    }

    fn returned_id(&self, sql_text: &str, params: &[Param]) -> Result<i64, StoreError> {
        query_one(self.conn, sql_text, params, |row| row.required_integer(0))?
            .ok_or_else(|| StoreError::Database("an insert returned no id".into()))
    }
}

impl Principals for Access<'_> {
    fn user_by_name(&mut self, name: &str) -> Result<Option<UserRecord>, StoreError> {
        query_one(self.conn, &sql::principals::user_by_name(self.dialect), &[text(name)], user_of)
    }

    fn user(&mut self, id: i64) -> Result<Option<UserRecord>, StoreError> {
        query_one(self.conn, &sql::principals::user_by_id(self.dialect), &[Param::Integer(id)], user_of)
    }

    fn insert_user(&mut self, name: &str, password_hash: Option<&str>, hub_admin: bool) -> Result<i64, StoreError> {
        let params =
            [text(name), optional_text(password_hash), flag(hub_admin), Param::Integer(Instant::now().micros())];
        self.returned_id(&sql::principals::insert_user(self.dialect), &params)
    }

    fn memberships(&mut self, user: i64) -> Result<Vec<Grant>, StoreError> {
        self.grants(&sql::principals::memberships(self.dialect), user)
    }

    fn set_membership(&mut self, user: i64, project: ProjectId, role: Option<Role>) -> Result<(), StoreError> {
        match role {
            Some(role) => {
                let params = [Param::Integer(user), Param::Integer(project), text(role.name())];
                self.conn.execute(&sql::principals::set_membership(self.dialect), &params)?;
            }
            None => {
                let params = [Param::Integer(user), Param::Integer(project)];
                self.conn.execute(&sql::principals::remove_membership(self.dialect), &params)?;
            }
        }
        Ok(())
    }

    fn insert_token(&mut self, token: &NewToken<'_>) -> Result<i64, StoreError> {
        let scope = match token.scope {
            TokenScope::User => "user",
            TokenScope::Grants(_) => "grants",
        };
        let params = [
            Param::Integer(token.user),
            text(token.hash),
            text(token.label),
            text(scope),
            Param::Integer(Instant::now().micros()),
            optional_integer(token.expires_at.map(Instant::micros)),
        ];
        let id = self.returned_id(&sql::principals::insert_token(self.dialect), &params)?;
        if let TokenScope::Grants(grants) = &token.scope {
            let sql_text = sql::principals::insert_token_grant(self.dialect);
            for grant in grants {
                let params = [Param::Integer(id), Param::Integer(grant.project), text(grant.role.name())];
                self.conn.execute(&sql_text, &params)?;
            }
        }
        Ok(id)
    }

    fn token_by_hash(&mut self, hash: &str) -> Result<Option<TokenRecord>, StoreError> {
        let found = query_one(self.conn, &sql::principals::token_by_hash(self.dialect), &[text(hash)], |row| {
            Ok((
                row.required_integer(0)?,
                row.required_integer(1)?,
                row.required_text(2)?,
                row.required_text(3)?,
                row.integer(4)?,
                row.integer(5)?,
            ))
        })?;
        let Some((id, user, label, scope, expires_at, revoked_at)) = found else { return Ok(None) };
        let scope = match scope.as_str() {
            "user" => TokenScope::User,
            _ => TokenScope::Grants(self.grants(&sql::principals::token_grants(self.dialect), id)?),
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
        let params = [Param::Integer(id), Param::Integer(Instant::now().micros()), optional_integer(owner)];
        Ok(self.conn.execute(&sql::principals::revoke_token(self.dialect), &params)? > 0)
    }

    fn projects(&mut self) -> Result<Vec<ProjectRecord>, StoreError> {
        query_all(self.conn, sql::principals::projects(), &[], |row| {
            Ok(ProjectRecord {
                id: row.required_integer(0)?,
                name: row.required_text(1)?,
                open_data: row.required_integer(2)? != 0,
            })
        })
    }

    fn insert_project(&mut self, name: &str, open_data: bool) -> Result<ProjectId, StoreError> {
        self.returned_id(&sql::principals::insert_project(self.dialect), &[text(name), flag(open_data)])
    }

    fn set_open_data(&mut self, project: ProjectId, open_data: bool) -> Result<bool, StoreError> {
        let params = [Param::Integer(project), flag(open_data)];
        Ok(self.conn.execute(&sql::principals::set_open_data(self.dialect), &params)? > 0)
    }

    fn last_audit_hash(&mut self) -> Result<Option<String>, StoreError> {
        Ok(query_one(self.conn, sql::principals::last_audit_hash(), &[], |row| row.text(0))?.flatten())
    }

    fn append_audit(&mut self, entry: &AuditEntry) -> Result<(), StoreError> {
        let params = [
            Param::Integer(entry.at.micros()),
            text(&entry.actor),
            text(&entry.event),
            Param::Json(entry.detail.clone()),
            text(&entry.previous_hash),
            text(&entry.hash),
        ];
        self.conn.execute(&sql::principals::insert_audit(self.dialect), &params)?;
        Ok(())
    }

    fn audit_entries(&mut self, after: i64, limit: i64) -> Result<Vec<AuditEntry>, StoreError> {
        let params = [Param::Integer(after), Param::Integer(limit)];
        query_all(self.conn, &sql::principals::audit_entries(self.dialect), &params, |row| {
            Ok(AuditEntry {
                id: row.required_integer(0)?,
                at: Instant::from_micros(row.required_integer(1)?),
                actor: row.required_text(2)?,
                event: row.required_text(3)?,
                detail: row.json(4)?.unwrap_or_default(),
                previous_hash: row.required_text(5)?,
                hash: row.required_text(6)?,
            })
        })
    }
}
