//! The principals' records (users, their roles per project, API tokens, projects) in storage
//! terms. Secrets are never here: only their hashes (see `access::credentials`).

use access::{Grant, ProjectId};
use model::Instant;

use crate::StoreError;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UserRecord {
    pub id: i64,
    pub name: String,
    /// The Argon2id PHC string; `None` when the user signs in with tokens only.
    pub password_hash: Option<String>,
    pub hub_admin: bool,
    pub disabled: bool,
}

/// What a token may do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TokenScope {
    /// Everything its user may do, now and later.
    User,
    /// Only these grants, and only as far as its user still holds them.
    Grants(Vec<Grant>),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenRecord {
    pub id: i64,
    pub user: i64,
    pub label: String,
    pub scope: TokenScope,
    pub expires_at: Option<Instant>,
    pub revoked_at: Option<Instant>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProjectRecord {
    pub id: ProjectId,
    pub name: String,
    pub open_data: bool,
}

/// A new token to store.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewToken<'a> {
    pub user: i64,
    /// `access::credentials::TokenHash` text.
    pub hash: &'a str,
    pub label: &'a str,
    pub scope: TokenScope,
    pub expires_at: Option<Instant>,
}

/// One entry of the audit log, as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuditEntry {
    pub id: i64,
    pub at: Instant,
    pub actor: String,
    pub event: String,
    /// JSON text.
    pub detail: String,
    pub previous_hash: String,
    pub hash: String,
}

/// Access to the principal tables. Reached from any job through `Reader::principals`; the
/// methods that change something work only inside a write job.
pub trait Principals {
    fn user_by_name(&mut self, name: &str) -> Result<Option<UserRecord>, StoreError>;

    fn user(&mut self, id: i64) -> Result<Option<UserRecord>, StoreError>;

    /// A new user; a taken name is a conflict.
    fn insert_user(&mut self, name: &str, password_hash: Option<&str>, hub_admin: bool) -> Result<i64, StoreError>;

    /// The user's roles, one per project.
    fn memberships(&mut self, user: i64) -> Result<Vec<Grant>, StoreError>;

    /// Sets (or, with `None`, removes) the user's role in a project.
    fn set_membership(&mut self, user: i64, project: ProjectId, role: Option<access::Role>) -> Result<(), StoreError>;

    fn insert_token(&mut self, token: &NewToken<'_>) -> Result<i64, StoreError>;

    fn token_by_hash(&mut self, hash: &str) -> Result<Option<TokenRecord>, StoreError>;

    /// True if the token was live (and, with `owner`, belongs to that user) and is now revoked.
    fn revoke_token(&mut self, id: i64, owner: Option<i64>) -> Result<bool, StoreError>;

    fn projects(&mut self) -> Result<Vec<ProjectRecord>, StoreError>;

    /// A new project; a taken name is a conflict.
    fn insert_project(&mut self, name: &str, open_data: bool) -> Result<ProjectId, StoreError>;

    /// True if the project exists.
    fn set_open_data(&mut self, project: ProjectId, open_data: bool) -> Result<bool, StoreError>;

    /// The hash of the newest audit entry, `None` for an empty log.
    fn last_audit_hash(&mut self) -> Result<Option<String>, StoreError>;

    /// Appends an audit entry (its `id` is ignored); `app` computes the chained hash.
    fn append_audit(&mut self, entry: &AuditEntry) -> Result<(), StoreError>;

    /// Up to `limit` audit entries after the id `after`, oldest first.
    fn audit_entries(&mut self, after: i64, limit: i64) -> Result<Vec<AuditEntry>, StoreError>;
}
