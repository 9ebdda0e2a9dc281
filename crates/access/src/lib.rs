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
    /// A device, identified by its RFC 9039 URN (by its certificate or its own secret).
    Device(DeviceIdentity),
    /// The server itself (maintenance, the bridge's own work).
    Server,
}

/// What the rule needs to know of a device: who it is, the Thing it feeds, whether the
/// admission gate lets its data in, and what its class declares it senses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceIdentity {
    pub id: i64,
    /// The normal form of its RFC 9039 URN.
    pub urn: String,
    pub project: ProjectId,
    /// The Thing whose Datastreams it may feed (none: it may feed nothing).
    pub thing: Option<i64>,
    pub admission: Admission,
    /// The ObservedProperty definitions its class declares.
    pub sensing: Vec<String>,
}

/// Whether a device's data is let in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Admission {
    Admitted,
    /// Not (or no longer) admitted, and why, in words its operator reads.
    Refused(String),
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

/// The answer of [`Principal::may_feed`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Feed {
    Allowed,
    /// A device writing to another Thing's Datastream.
    NotItsThing,
    /// A device writing what its class does not declare it senses (EN 303 645 5.8-3): this
    /// ObservedProperty definition.
    Undeclared(String),
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
            Identity::Device(device) => format!("device:{}", device.urn),
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
        if let Identity::Device(device) = &self.identity {
            // A device reads as a viewer of its project and creates only Observations (and
            // the features they come with) there, once admitted; which Datastreams it may
            // feed is `Principal::may_feed`'s question.
            let allowed = match action {
                Action::Read => device.project == project || hub.open_data.contains(&project),
                Action::Create => {
                    device.project == project
                        && device.admission == Admission::Admitted
                        && matches!(entity, EntityType::Observation | EntityType::FeatureOfInterest)
                }
                Action::Update | Action::Delete | Action::ManageMembers => false,
            };
            return if allowed { Decision::Allow } else { Decision::Forbidden };
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

    /// Why this principal's data is refused when it is a device the admission gate keeps out.
    pub fn refusal(&self) -> Option<&str> {
        match &self.identity {
            Identity::Device(DeviceIdentity { admission: Admission::Refused(reason), .. }) => Some(reason),
            _ => None,
        }
    }

    /// Whether the principal may add Observations to a Datastream (or MultiDatastream) of
    /// Thing `thing` observing `observed`: everyone the project rule lets create them may,
    /// except devices, which feed only their own Thing and only what their class declares.
    pub fn may_feed(&self, thing: Option<i64>, observed: &[String]) -> Feed {
        let Identity::Device(device) = &self.identity else { return Feed::Allowed };
        if device.thing.is_none() || thing != device.thing {
            return Feed::NotItsThing;
        }
        match observed.iter().find(|definition| !device.sensing.contains(definition)) {
            Some(undeclared) => Feed::Undeclared(undeclared.clone()),
            None => Feed::Allowed,
        }
    }

    /// What every read of this principal may see: all projects for a hub administrator, else
    /// the projects it holds a role in and the open-data ones.
    pub fn visibility(&self, hub: &Hub) -> Visibility {
        if self.hub_admin {
            return Visibility::All;
        }
        if let Identity::Device(device) = &self.identity {
            let mut projects: Vec<ProjectId> =
                std::iter::once(device.project).chain(hub.open_data.iter().copied()).collect();
            projects.sort_unstable();
            projects.dedup();
            return Visibility::Projects(projects);
        }
        let mut projects: Vec<ProjectId> =
            self.grants.iter().map(|g| g.project).chain(hub.open_data.iter().copied()).collect();
        projects.sort_unstable();
        projects.dedup();
        Visibility::Projects(projects)
    }
}
