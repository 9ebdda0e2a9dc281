//! Who may do what. A [`Principal`] (anonymous, a user, an API token, later a device) holds
//! roles per project; [`Principal::decide`] turns an action on an entity set of a project into a
//! [`Decision`], and [`Principal::visibility`] turns the principal into the
//! [`odata::Visibility`] every read of theirs runs with, which the SQL compiler applies to every
//! entity a statement touches. This is the only place the rule is written down: handlers and
//! SQL ask it, they do not restate it.
//!
//! The rule:
//! - a hub administrator may do everything;
//! - within a project, `viewer` reads, `contributor` also creates Observations (and the
//!   FeaturesOfInterest they come with), `editor` also creates, updates and deletes any entity,
//!   and `admin` also manages the project's members;
//! - anyone, signed in or not, reads the projects marked open data; writing always needs a role;
//! - everything else is denied: unauthenticated callers are told to authenticate, others that
//!   they may not.
//!
//! Must not depend on `store`, `sql`, a database driver or HTTP.

pub mod credentials;

#[cfg(test)]
mod tests;

use model::EntityType;
use odata::Visibility;

/// A project (tenant) id; every entity belongs to one.
pub type ProjectId = i64;

/// The project every entity belongs to unless put elsewhere.
pub const DEFAULT_PROJECT: ProjectId = 1;

/// A role within one project, from least to most.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Role {
    Viewer,
    Contributor,
    Editor,
    Admin,
}

impl Role {
    pub const ALL: [Role; 4] = [Role::Viewer, Role::Contributor, Role::Editor, Role::Admin];

    pub fn name(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Contributor => "contributor",
            Role::Editor => "editor",
            Role::Admin => "admin",
        }
    }

    pub fn parse(text: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|role| role.name() == text)
    }
}

/// A role in a project.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Grant {
    pub project: ProjectId,
    pub role: Role,
}

/// Who is asking, as authenticated by an edge (HTTP, MQTT).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Identity {
    /// No credentials were given.
    Anonymous,
    User {
        id: i64,
        name: String,
    },
    /// An API token, acting for its user with the token's own grants. A one-time token (the
    /// setup token printed on first start) is revoked by the first change it makes to
    /// principals.
    Token {
        id: i64,
        user: i64,
        one_time: bool,
    },
    /// A device, identified by its RFC 9039 URN once onboarding exists.
    Device {
        urn: String,
    },
    /// The server itself (maintenance, the bridge's own work).
    Server,
}

/// An authenticated caller and its rights.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Principal {
    pub identity: Identity,
    /// May do everything in every project, and manage users and projects.
    pub hub_admin: bool,
    pub grants: Vec<Grant>,
}

/// What a caller wants to do to an entity set.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    Read,
    Create,
    Update,
    Delete,
    /// Change who has which role in the project.
    ManageMembers,
}

/// The answer to "may this principal do that here?".
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    Allow,
    /// No credentials: the edge asks for them (HTTP 401, MQTT "not authorized").
    Unauthenticated,
    /// Credentials, but not the rights (HTTP 403).
    Forbidden,
}

/// What the rule needs to know about the hub besides the principal.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Hub {
    /// Projects whose reads are public.
    pub open_data: Vec<ProjectId>,
}

impl Principal {
    pub fn anonymous() -> Principal {
        Principal { identity: Identity::Anonymous, hub_admin: false, grants: Vec::new() }
    }

    /// The server's own work: sees and may do everything.
    pub fn server() -> Principal {
        Principal { identity: Identity::Server, hub_admin: true, grants: Vec::new() }
    }

    /// Who this is, as the audit log and the rate limits name it: `user:<id>`, `token:<id>`,
    /// `device:<urn>`, `server` or `anonymous`.
    pub fn label(&self) -> String {
        match &self.identity {
            Identity::Anonymous => "anonymous".to_owned(),
            Identity::User { id, .. } => format!("user:{id}"),
            Identity::Token { id, .. } => format!("token:{id}"),
            Identity::Device { urn } => format!("device:{urn}"),
            Identity::Server => "server".to_owned(),
        }
    }

    /// The highest role the principal holds in `project`.
    pub fn role_in(&self, project: ProjectId) -> Option<Role> {
        self.grants.iter().filter(|g| g.project == project).map(|g| g.role).max()
    }

    /// Whether the principal may do `action` to entities of type `entity` in `project`.
    pub fn decide(&self, hub: &Hub, action: Action, entity: EntityType, project: ProjectId) -> Decision {
        if self.hub_admin {
            return Decision::Allow;
        }
        let role = self.role_in(project);
        let allowed = match action {
            Action::Read => role.is_some() || hub.open_data.contains(&project),
            Action::Create => match role {
                Some(Role::Editor | Role::Admin) => true,
                Some(Role::Contributor) => {
                    matches!(entity, EntityType::Observation | EntityType::FeatureOfInterest)
                }
                Some(Role::Viewer) | None => false,
            },
            Action::Update | Action::Delete => matches!(role, Some(Role::Editor | Role::Admin)),
            Action::ManageMembers => role == Some(Role::Admin),
        };
        match (allowed, &self.identity) {
            (true, _) => Decision::Allow,
            (false, Identity::Anonymous) => Decision::Unauthenticated,
            (false, _) => Decision::Forbidden,
        }
    }

    /// What every read of this principal may see: all projects for a hub administrator, else
    /// the projects it holds a role in and the open-data ones.
    pub fn visibility(&self, hub: &Hub) -> Visibility {
        if self.hub_admin {
            return Visibility::All;
        }
        let mut projects: Vec<ProjectId> =
            self.grants.iter().map(|g| g.project).chain(hub.open_data.iter().copied()).collect();
        projects.sort_unstable();
        projects.dedup();
        Visibility::Projects(projects)
    }
}
