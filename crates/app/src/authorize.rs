//! The writer that enforces the access rule on every change a write job makes: each insert,
//! update, delete and link is checked with `access::Principal::decide` for the project it
//! touches, and each new entity is put in its project. Reads inside the job are already
//! restricted by the job's visibility (the store applies it), so an entity the principal cannot
//! see is "missing" before it could be changed.
//!
//! The project of a new entity: that of the entity it belongs to when its record links one
//! (an Observation's Datastream or MultiDatastream, a Datastream's or a HistoricalLocation's
//! Thing), else the request's project (the parent in the resource path, or the one the caller
//! named). Derived fields the server maintains (`update_derived`) and its bookkeeping pass
//! unchecked: they are consequences of a change that was checked.

use access::{Action, Decision, Feed, Hub, Principal, ProjectId};
use model::{EntityType, Id, Interval, Navigation};
use odata::{Expr, Query, ResourcePath};
use store::{Paging, Principals, Reader, Record, Rows, StoreError, ThingLocation, Writer};

/// The navigations whose target owns the entity: its project is the owner's.
const OWNERS: &[(EntityType, &[&str])] = &[
    (EntityType::Observation, &["Datastream", "MultiDatastream"]),
    (EntityType::Datastream, &["Thing"]),
    (EntityType::MultiDatastream, &["Thing"]),
    (EntityType::HistoricalLocation, &["Thing"]),
];

/// The entity a new record belongs to, by the first owning navigation it links.
fn owner(entity: EntityType, record: &Record) -> Option<(EntityType, Id)> {
    let owners = OWNERS.iter().find(|(e, _)| *e == entity).map_or(&[][..], |(_, names)| *names);
    record
        .links
        .iter()
        .find_map(|(navigation, target)| owners.contains(&navigation.name).then_some((navigation.target, (*target)?)))
}

/// Where the new entities of a request go when they have no owner; worked out when first
/// needed, so that a request creating nothing never needs a project.
pub enum Placement {
    /// The project of the entity at this segment of the resource path (the parent of the
    /// collection posted to, or the entity updated).
    Segment(ResourcePath, usize),
    /// The caller's default project (see `crate::default_project`), with the one it named.
    Default(Option<ProjectId>),
    Known(ProjectId),
}

pub struct Authorizing<'w> {
    inner: &'w mut dyn Writer,
    principal: &'w Principal,
    hub: &'w Hub,
    placement: Placement,
    /// Set when a device wrote what its class does not declare: the app quarantines it.
    pub undeclared: Option<String>,
}

impl<'w> Authorizing<'w> {
    pub fn new(inner: &'w mut dyn Writer, principal: &'w Principal, hub: &'w Hub, placement: Placement) -> Self {
        Authorizing { inner, principal, hub, placement, undeclared: None }
    }

    /// The request's project, resolved once.
    fn request_project(&mut self) -> Result<ProjectId, StoreError> {
        let project = match &self.placement {
            Placement::Known(project) => return Ok(*project),
            Placement::Default(named) => {
                let project = crate::default_project(self.principal, *named).map_err(StoreError::Rejected)?;
                // Named by the caller (or its default): it must exist, or the entity would
                // belong to no project anyone can be given.
                if !self.inner.principals().projects()?.iter().any(|p| p.id == project) {
                    return Err(StoreError::Rejected(format!("project {project} does not exist")));
                }
                project
            }
            Placement::Segment(path, j) => {
                let (path, j) = (path.clone(), *j);
                let (entity, id) = crate::write::entity_of_segment(self.inner, &path, j).map_err(|e| match e {
                    crate::AppError::NotFound(message) => StoreError::Rejected(message),
                    other => StoreError::Rejected(other.to_string()),
                })?;
                self.project_of_existing(entity, id)?
            }
        };
        self.placement = Placement::Known(project);
        Ok(project)
    }

    fn check(&self, action: Action, entity: EntityType, project: ProjectId) -> Result<(), StoreError> {
        match self.principal.decide(self.hub, action, entity, project) {
            Decision::Allow => Ok(()),
            Decision::Forbidden if self.principal.refusal().is_some() => {
                let reason = self.principal.refusal().unwrap_or_default();
                Err(StoreError::Denied(
                    Decision::Forbidden,
                    format!("{} may not send data: {reason}", self.principal.label()),
                ))
            }
            denied => {
                let verb = match action {
                    Action::Read => "read",
                    Action::Create => "create",
                    Action::Update => "change",
                    Action::Delete => "delete",
                    Action::ManageMembers => "manage the members of",
                };
                let message = match denied {
                    Decision::Unauthenticated => format!("sign in to {verb} {} here", entity.set_name()),
                    _ => format!("you may not {verb} {} in project {project}", entity.set_name()),
                };
                Err(StoreError::Denied(denied, message))
            }
        }
    }

    /// The project of an existing entity; it was visible to the job, so it exists.
    fn project_of_existing(&mut self, entity: EntityType, id: Id) -> Result<ProjectId, StoreError> {
        self.inner
            .project_of(entity, id)?
            .ok_or_else(|| StoreError::Conflict(format!("{}({id}) does not exist", entity.set_name())))
    }

    /// The project a new entity goes to, from its owner (see [`owner`]) or the request.
    fn project_of_new(&mut self, entity: EntityType, record: &Record) -> Result<ProjectId, StoreError> {
        match owner(entity, record) {
            Some((owner, id)) => self.project_of_existing(owner, id),
            None => self.request_project(),
        }
    }

    /// A device feeds only its own Thing's Datastreams, with what its class declares; see
    /// `access::Principal::may_feed`. Checked once per owner of new Observations.
    fn check_feed(&mut self, entity: EntityType, owner: Option<(EntityType, Id)>) -> Result<(), StoreError> {
        if entity != EntityType::Observation || !matches!(self.principal.identity, access::Identity::Device(_)) {
            return Ok(());
        }
        let Some((owner, id)) = owner else { return Ok(()) };
        let multi = owner == EntityType::MultiDatastream;
        let Some((thing, observed)) = self.inner.principals().feed(id.0, multi)? else { return Ok(()) };
        match self.principal.may_feed(thing, &observed) {
            Feed::Allowed => Ok(()),
            Feed::NotItsThing => Err(StoreError::Denied(
                Decision::Forbidden,
                format!("{} may send data only to its own Thing's Datastreams", self.principal.label()),
            )),
            Feed::Undeclared(definition) => {
                let reason = format!(
                    "EN 303 645 5.8-3: it sent Observations of {definition}, which its device class does not declare"
                );
                self.undeclared = Some(reason.clone());
                Err(StoreError::Denied(
                    Decision::Forbidden,
                    format!("{} is quarantined: {reason}", self.principal.label()),
                ))
            }
        }
    }

    /// The entity type whose navigation `navigation` is.
    fn source_of(navigation: &Navigation) -> Option<EntityType> {
        // By value, not by address: the schema's tables may be copied where they are used.
        EntityType::ALL.into_iter().find(|e| e.navigations().contains(navigation))
    }

    fn check_link_change(&mut self, navigation: &'static Navigation, from: Id) -> Result<(), StoreError> {
        let source =
            Self::source_of(navigation).ok_or_else(|| StoreError::Database("a navigation of no entity type".into()))?;
        let project = self.project_of_existing(source, from)?;
        self.check(Action::Update, source, project)
    }
}

impl Reader for Authorizing<'_> {
    fn query_chunks(
        &mut self,
        entity: EntityType,
        constraint: Option<&Expr>,
        query: &Query,
        paging: Paging,
        chunk: usize,
        sink: &mut dyn FnMut(Rows) -> bool,
    ) -> Result<(), StoreError> {
        self.inner.query_chunks(entity, constraint, query, paging, chunk, sink)
    }

    fn exists(&mut self, entity: EntityType, constraint: &Expr) -> Result<bool, StoreError> {
        self.inner.exists(entity, constraint)
    }

    fn related(
        &mut self,
        entity: EntityType,
        from: Id,
        navigation: &'static Navigation,
    ) -> Result<Vec<Id>, StoreError> {
        self.inner.related(entity, from, navigation)
    }

    fn summary(&mut self, entity: EntityType, id: Id) -> Result<Option<store::statistics::Summary>, StoreError> {
        self.inner.summary(entity, id)
    }

    fn rollups(
        &mut self,
        entity: EntityType,
        id: Id,
        level: i64,
        from: model::Instant,
        to: model::Instant,
        sink: &mut dyn FnMut(store::statistics::Rollup),
    ) -> Result<(), StoreError> {
        self.inner.rollups(entity, id, level, from, to, sink)
    }

    fn observation_points(
        &mut self,
        entity: EntityType,
        id: Id,
        filter: Option<&Expr>,
        from: model::Instant,
        to: model::Instant,
        sink: &mut dyn FnMut(store::statistics::RawPoint) -> bool,
    ) -> Result<(), StoreError> {
        self.inner.observation_points(entity, id, filter, from, to, sink)
    }

    fn principals(&mut self) -> &mut dyn Principals {
        self.inner.principals()
    }

    fn project_of(&mut self, entity: EntityType, id: Id) -> Result<Option<ProjectId>, StoreError> {
        self.inner.project_of(entity, id)
    }
}

impl Writer for Authorizing<'_> {
    fn insert(&mut self, entity: EntityType, record: &Record) -> Result<Id, StoreError> {
        let project = self.project_of_new(entity, record)?;
        self.check(Action::Create, entity, project)?;
        self.check_feed(entity, owner(entity, record))?;
        let placed = Record { project: Some(project), ..record.clone() };
        self.inner.insert(entity, &placed)
    }

    fn insert_many(&mut self, entity: EntityType, records: &[Record]) -> Result<Vec<Id>, StoreError> {
        let mut placed = Vec::with_capacity(records.len());
        // Records of one batch mostly share their owner: look each owner up once.
        let mut known: Vec<(Option<(EntityType, Id)>, ProjectId)> = Vec::new();
        for record in records {
            let owner = owner(entity, record);
            let project = match known.iter().find(|(o, _)| *o == owner) {
                Some((_, project)) => *project,
                None => {
                    let project = self.project_of_new(entity, record)?;
                    self.check(Action::Create, entity, project)?;
                    self.check_feed(entity, owner)?;
                    known.push((owner, project));
                    project
                }
            };
            placed.push(Record { project: Some(project), ..record.clone() });
        }
        self.inner.insert_many(entity, &placed)
    }

    fn update(&mut self, entity: EntityType, id: Id, record: &Record) -> Result<bool, StoreError> {
        let Some(project) = self.inner.project_of(entity, id)? else { return Ok(false) };
        self.check(Action::Update, entity, project)?;
        // Moving an entity to another project is not a SensorThings update.
        let kept = Record { project: None, ..record.clone() };
        self.inner.update(entity, id, &kept)
    }

    fn update_derived(&mut self, entity: EntityType, id: Id, record: &Record) -> Result<bool, StoreError> {
        self.inner.update_derived(entity, id, record)
    }

    fn delete(&mut self, entity: EntityType, id: Id) -> Result<bool, StoreError> {
        let Some(project) = self.inner.project_of(entity, id)? else { return Ok(false) };
        self.check(Action::Delete, entity, project)?;
        self.inner.delete(entity, id)
    }

    fn link(&mut self, navigation: &'static Navigation, from: Id, to: Id) -> Result<(), StoreError> {
        self.check_link_change(navigation, from)?;
        self.inner.link(navigation, from, to)
    }

    fn unlink(&mut self, navigation: &'static Navigation, from: Id, to: Id) -> Result<bool, StoreError> {
        self.check_link_change(navigation, from)?;
        self.inner.unlink(navigation, from, to)
    }

    fn unlink_all(&mut self, navigation: &'static Navigation, from: Id) -> Result<(), StoreError> {
        self.check_link_change(navigation, from)?;
        self.inner.unlink_all(navigation, from)
    }

    fn extend_times(
        &mut self,
        entity: EntityType,
        id: Id,
        phenomenon: Interval,
        result: Option<Interval>,
    ) -> Result<(), StoreError> {
        self.inner.extend_times(entity, id, phenomenon, result)
    }

    fn recompute_times(&mut self, entity: EntityType, id: Id) -> Result<(), StoreError> {
        self.inner.recompute_times(entity, id)
    }

    fn thing_locations(&mut self, entity: EntityType, id: Id) -> Result<Vec<ThingLocation>, StoreError> {
        self.inner.thing_locations(entity, id)
    }

    fn note_feature(&mut self, entity: EntityType, id: Id, feature: Id) -> Result<bool, StoreError> {
        self.inner.note_feature(entity, id, feature)
    }

    fn remember_generated_feature(&mut self, location: Id, feature: Id) -> Result<(), StoreError> {
        self.inner.remember_generated_feature(location, feature)
    }

    fn announce(&mut self, message: &str) -> Result<(), StoreError> {
        self.inner.announce(message)
    }
}
