//! Statements on the principal tables (users, memberships, tokens, projects): fixed shapes,
//! placeholders from the dialect, values always bound.

use crate::dialect::Dialect;

fn p(dialect: &dyn Dialect, n: usize) -> String {
    dialect.placeholder(n)
}

/// `(id, name, password_hash, hub_admin, disabled)` of the user named `?1`.
pub fn user_by_name(d: &dyn Dialect) -> String {
    format!("SELECT id, name, password_hash, hub_admin, disabled FROM users WHERE name = {}", p(d, 1))
}

/// `(id, name, password_hash, hub_admin, disabled)` of the user `?1`.
pub fn user_by_id(d: &dyn Dialect) -> String {
    format!("SELECT id, name, password_hash, hub_admin, disabled FROM users WHERE id = {}", p(d, 1))
}

/// Inserts a user `(name ?1, password_hash ?2, hub_admin ?3, created_at ?4)`, returning its id.
pub fn insert_user(d: &dyn Dialect) -> String {
    format!(
        "INSERT INTO users (name, password_hash, hub_admin, created_at) VALUES ({}, {}, {}, {}) RETURNING id",
        p(d, 1),
        p(d, 2),
        p(d, 3),
        p(d, 4)
    )
}

/// `(project_id, role)` of the user `?1`.
pub fn memberships(d: &dyn Dialect) -> String {
    format!("SELECT project_id, role FROM memberships WHERE user_id = {} ORDER BY project_id", p(d, 1))
}

/// Gives the user `?1` the role `?3` in project `?2`, replacing any role it had there.
pub fn set_membership(d: &dyn Dialect) -> String {
    format!(
        "INSERT INTO memberships (user_id, project_id, role) VALUES ({}, {}, {}) \
         ON CONFLICT (user_id, project_id) DO UPDATE SET role = excluded.role",
        p(d, 1),
        p(d, 2),
        p(d, 3)
    )
}

/// Removes the role of user `?1` in project `?2`.
pub fn remove_membership(d: &dyn Dialect) -> String {
    format!("DELETE FROM memberships WHERE user_id = {} AND project_id = {}", p(d, 1), p(d, 2))
}

/// Inserts a token `(user ?1, hash ?2, label ?3, scope ?4, created_at ?5, expires_at ?6)`,
/// returning its id.
pub fn insert_token(d: &dyn Dialect) -> String {
    format!(
        "INSERT INTO tokens (user_id, hash, label, scope, created_at, expires_at) \
         VALUES ({}, {}, {}, {}, {}, {}) RETURNING id",
        p(d, 1),
        p(d, 2),
        p(d, 3),
        p(d, 4),
        p(d, 5),
        p(d, 6)
    )
}

/// Grants the token `?1` the role `?3` in project `?2`.
pub fn insert_token_grant(d: &dyn Dialect) -> String {
    format!("INSERT INTO token_grants (token_id, project_id, role) VALUES ({}, {}, {})", p(d, 1), p(d, 2), p(d, 3))
}

/// `(id, user_id, label, scope, expires_at, revoked_at)` of the token with hash `?1`.
pub fn token_by_hash(d: &dyn Dialect) -> String {
    format!("SELECT id, user_id, label, scope, expires_at, revoked_at FROM tokens WHERE hash = {}", p(d, 1))
}

/// `(project_id, role)` of the token `?1`.
pub fn token_grants(d: &dyn Dialect) -> String {
    format!("SELECT project_id, role FROM token_grants WHERE token_id = {} ORDER BY project_id", p(d, 1))
}

/// Revokes the token `?1` at `?2` unless it was revoked already, if it belongs to user `?3`
/// (any user when `?3` is NULL).
pub fn revoke_token(d: &dyn Dialect) -> String {
    format!(
        "UPDATE tokens SET revoked_at = {} WHERE id = {} AND revoked_at IS NULL AND (CAST({o} AS BIGINT) IS NULL OR user_id = {o})",
        p(d, 2),
        p(d, 1),
        o = p(d, 3)
    )
}

/// `(id, name, open_data)` of every project.
pub fn projects() -> &'static str {
    "SELECT id, name, open_data FROM projects ORDER BY id"
}

/// Inserts a project `(name ?1, open_data ?2)`, returning its id.
pub fn insert_project(d: &dyn Dialect) -> String {
    format!("INSERT INTO projects (name, open_data) VALUES ({}, {}) RETURNING id", p(d, 1), p(d, 2))
}

/// Sets whether project `?1` is open data (`?2`).
pub fn set_open_data(d: &dyn Dialect) -> String {
    format!("UPDATE projects SET open_data = {} WHERE id = {}", p(d, 2), p(d, 1))
}

/// The hash of the newest audit entry (none for an empty log).
pub fn last_audit_hash() -> &'static str {
    "SELECT hash FROM audit_log ORDER BY id DESC LIMIT 1"
}

/// Appends an audit entry `(at ?1, actor ?2, event ?3, detail ?4, previous_hash ?5, hash ?6)`.
pub fn insert_audit(d: &dyn Dialect) -> String {
    format!(
        "INSERT INTO audit_log (at, actor, event, detail, previous_hash, hash) VALUES ({}, {}, {}, {}, {}, {})",
        p(d, 1),
        p(d, 2),
        p(d, 3),
        p(d, 4),
        p(d, 5),
        p(d, 6)
    )
}

/// Audit entries with an id above `?1`, oldest first, at most `?2`:
/// `(id, at, actor, event, detail, previous_hash, hash)`.
pub fn audit_entries(d: &dyn Dialect) -> String {
    format!(
        "SELECT id, at, actor, event, detail, previous_hash, hash FROM audit_log WHERE id > {} ORDER BY id LIMIT {}",
        p(d, 1),
        p(d, 2)
    )
}
