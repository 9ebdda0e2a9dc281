//! Use cases: everything a client can ask of Thingbase, independent of HTTP or MQTT.
//!
//! [`App`] turns bound requests (`odata` resource paths and queries, entity JSON) into read and
//! write jobs on a [`store::Store`]. Writes run inside the store's group-commit writer, so a
//! method returns only after its transaction is durable. Requests that must succeed or fail
//! together (a `$batch` change set) run as one job.
//!
//! Must not depend on a concrete backend, on axum or on the MQTT broker.

pub mod aggregate;
mod announce;
pub mod audit;
pub mod auth;
mod authorize;
mod changes;
mod convert;
pub mod devices;
mod error;
pub mod gate;
pub mod limits;
mod patch;
mod read;
pub mod retention;
mod write;

#[cfg(test)]
mod tests;

use std::sync::{Arc, RwLock};

use access::{Hub, Principal, ProjectId, Role};
use model::{EntityType, Id};
use odata::{Query, ResourcePath};
use store::{Paging, Reader, Store, StoreError, Writer};

pub use changes::{Change, ChangeBus};
pub use error::AppError;
pub use read::{ReadResult, addresses_collection};
pub use write::{DataArrayItem, UpdateMode, WriteOp, WriteOutcome};

/// Who is asking: the principal an edge authenticated, and the project it named for the new
/// entities of its request (HTTP's `Thingbase-Project` header), if any.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Caller {
    pub principal: Principal,
    pub project: Option<ProjectId>,
}

impl Caller {
    pub fn new(principal: Principal) -> Caller {
        Caller { principal, project: None }
    }

    /// The server's own work (notifications, maintenance): sees and may do everything.
    pub fn server() -> Caller {
        Caller::new(Principal::server())
    }
}

/// Where a new entity goes when nothing in the request decides: the `named` project, else the
/// only project `principal` may create in, else the default project if it may create there (or
/// is a hub administrator). Worked out only when a request creates such an entity.
pub(crate) fn default_project(principal: &Principal, named: Option<ProjectId>) -> Result<ProjectId, String> {
    if let Some(project) = named {
        return Ok(project);
    }
    if principal.hub_admin {
        return Ok(access::DEFAULT_PROJECT);
    }
    let mut writable: Vec<ProjectId> =
        principal.grants.iter().filter(|g| g.role >= Role::Contributor).map(|g| g.project).collect();
    writable.sort_unstable();
    writable.dedup();
    match writable.as_slice() {
        [only] => Ok(*only),
        many if many.contains(&access::DEFAULT_PROJECT) => Ok(access::DEFAULT_PROJECT),
        [] => Ok(access::DEFAULT_PROJECT),
        _ => Err("you may write to several projects: name one with the Thingbase-Project header".to_owned()),
    }
}

/// What one read request may cost: time until its answer is complete (checked by the
/// database while it reads, see `Reader::set_deadline`), and the most entities its answer may
/// hold (checked before it runs, from `$top` and the `$expand` tree). `None`: no limit.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Budget {
    pub time: Option<std::time::Duration>,
    pub rows: Option<u64>,
    /// Within `time`, how long an exact `$count` may take before an estimate answers instead;
    /// `None`: a second.
    pub count: Option<std::time::Duration>,
}

/// The most entities a read of `query` can answer with: its page (one entity when
/// `many` is false) times, per entity, itself and what each `$expand` item adds.
pub fn worst_case_rows(query: &Query, paging: Paging, many: bool) -> u64 {
    let top = if many { query.top.unwrap_or(paging.default_top).min(paging.max_top) } else { 1 };
    let per_entity = query
        .expand
        .iter()
        .map(|item| worst_case_rows(&item.query, paging, item.navigation.many))
        .fold(1u64, u64::saturating_add);
    top.saturating_mul(per_entity)
}

/// The application: a store plus the settings that shape answers.
#[derive(Clone)]
pub struct App {
    store: Arc<dyn Store>,
    paging: Paging,
    changes: Option<Arc<dyn ChangeBus>>,
    /// What the access rule needs to know about the hub (its open-data projects).
    hub: Arc<RwLock<Hub>>,
    /// This node among those sharing the database (random), and whether it tells them of its
    /// changes (see [`App::share_changes`]).
    node: u64,
    announcing: Arc<std::sync::atomic::AtomicBool>,
    /// Bumped when a device's state changes (see `devices`).
    devices: devices::DevicesGeneration,
    /// Bumped when another node says it changed who may do what (`announce::encode_access`):
    /// principals held since are stale.
    access: Arc<std::sync::atomic::AtomicU64>,
    budget: Budget,
}

impl std::fmt::Debug for App {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("App").field("paging", &self.paging).finish_non_exhaustive()
    }
}

impl App {
    pub fn new(store: Arc<dyn Store>, paging: Paging) -> App {
        let mut node = [0u8; 8];
        if getrandom::fill(&mut node).is_err() {
            // Without randomness, the time tells nodes apart well enough: a clash only means a
            // node skips another's notifications as its own.
            node = u64::try_from(model::Instant::now().micros()).unwrap_or_default().to_le_bytes();
        }
        let node = u64::from_le_bytes(node);
        App {
            store,
            paging,
            changes: None,
            hub: Arc::default(),
            node,
            announcing: Arc::default(),
            devices: Arc::default(),
            access: Arc::default(),
            budget: Budget::default(),
        }
    }

    /// Limits every read request to `budget`.
    pub fn with_budget(mut self, budget: Budget) -> App {
        self.budget = budget;
        self
    }

    /// Refuses, before it runs, a read whose answer could hold more entities than the budget.
    fn check_rows(&self, path: &ResourcePath, query: &Query) -> Result<(), AppError> {
        let Some(limit) = self.budget.rows else { return Ok(()) };
        let worst = worst_case_rows(query, self.paging, addresses_collection(path));
        if worst > limit {
            return Err(AppError::bad(
                "too_many_rows",
                format!(
                    "this request could return up to {worst} entities (with $top and the $top of each $expand); \
                     the server answers at most {limit}: ask for smaller pages or expand less"
                ),
            ));
        }
        Ok(())
    }

    /// The deadline of a read request that starts now.
    fn deadline(&self) -> Option<std::time::Instant> {
        self.budget.time.map(|t| std::time::Instant::now() + t)
    }

    /// Tells the other nodes sharing the database of this node's committed changes, and hands
    /// theirs to the change bus (without records: the notifier reads them). Returns whether the
    /// store is one several nodes can share (PostgreSQL); on SQLite it does nothing.
    pub fn share_changes(&self) -> bool {
        let Some(bus) = self.changes.clone() else { return false };
        let node = self.node;
        let (access, devices) = (Arc::clone(&self.access), Arc::clone(&self.devices));
        // The hub (its open-data projects) is read again after another node's access change.
        let refresh = tokio::runtime::Handle::try_current().ok().map(|handle| (handle, self.clone()));
        let listener: store::Listener = Box::new(move |message| {
            if let Some(from) = announce::access_of(message) {
                if from != node {
                    access.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
                    devices.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
                    if let Some((handle, app)) = &refresh {
                        let app = app.clone();
                        handle.spawn(async move {
                            if let Err(error) = app.refresh_hub().await {
                                tracing::warn!(%error, "cannot read the hub again after another node's change");
                            }
                        });
                    }
                }
                return;
            }
            if announce::sender(message) == Some(node) {
                return;
            }
            match announce::decode(message) {
                Some((_, changes)) if !changes.is_empty() => bus.publish(&changes),
                Some(_) => {}
                None => tracing::debug!(message, "an announcement of another version"),
            }
        });
        let shared = self.store.listen(listener);
        self.announcing.store(shared, std::sync::atomic::Ordering::Relaxed);
        shared
    }

    /// How many access changes other nodes announced (see `auth::Generation`).
    pub(crate) fn access_generation(&self) -> u64 {
        self.access.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Tells the other nodes that this one changed who may do what, in a write of its own
    /// after the change committed; nothing when no other node shares the database.
    pub(crate) fn announce_access(&self) {
        if !self.announcing.load(std::sync::atomic::Ordering::Relaxed) {
            return;
        }
        let (app, message) = (self.clone(), announce::encode_access(self.node));
        let told = async move {
            let sent = app.write_job(&Caller::server(), None, move |writer| Ok(writer.announce(&message)?)).await;
            if let Err(error) = sent {
                tracing::warn!(%error, "cannot tell the other nodes of an access change; they notice within 10 s");
            }
        };
        match tokio::runtime::Handle::try_current() {
            Ok(handle) => drop(handle.spawn(told)),
            Err(_) => tracing::warn!("no runtime to tell the other nodes of an access change"),
        }
    }

    /// Sends every committed change to `bus` from now on.
    pub fn with_change_bus(mut self, bus: Arc<dyn ChangeBus>) -> App {
        self.changes = Some(bus);
        self
    }

    pub fn paging(&self) -> Paging {
        self.paging
    }

    /// Whether `principal` may read entities of `project` (for filtering notifications).
    pub fn readable(&self, principal: &Principal, project: ProjectId) -> bool {
        principal.decide(&self.hub(), access::Action::Read, EntityType::Thing, project) == access::Decision::Allow
    }

    /// The project of an entity, whoever asks; `None` if it does not exist.
    pub async fn project_of(&self, entity: EntityType, id: Id) -> Result<Option<ProjectId>, AppError> {
        self.read_job(&Caller::server(), move |reader| Ok(reader.project_of(entity, id)?)).await
    }

    /// Whether anything at all is readable without signing in.
    pub fn has_open_data(&self) -> bool {
        !self.hub().open_data.is_empty()
    }

    fn hub(&self) -> Hub {
        self.hub.read().map(|hub| hub.clone()).unwrap_or_default()
    }

    /// Reads the hub's projects again (after a project changed).
    pub async fn refresh_hub(&self) -> Result<(), AppError> {
        let projects = self.read_job(&Caller::server(), |reader| Ok(reader.principals().projects()?)).await?;
        let open_data = projects.iter().filter(|p| p.open_data).map(|p| p.id).collect();
        if let Ok(mut hub) = self.hub.write() {
            *hub = Hub { open_data };
        }
        Ok(())
    }

    /// Runs `f` on a reader connection, seeing what `caller` may see.
    async fn read_job<T: Send + 'static>(
        &self,
        caller: &Caller,
        f: impl FnOnce(&mut dyn Reader) -> Result<T, AppError> + Send + 'static,
    ) -> Result<T, AppError> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.store.read(
            caller.principal.visibility(&self.hub()),
            Box::new(move |reader| {
                let _ = tx.send(f(reader));
            }),
        );
        rx.await.unwrap_or_else(|_| Err(AppError::Internal("a read job was dropped".into())))
    }

    /// Runs `f` inside a write transaction, seeing what `caller` may see and changing only
    /// what it may change, and returns once it is committed. `path` is the resource path whose
    /// parent, if it has one, decides the project of new entities.
    async fn write_job<T: Send + 'static>(
        &self,
        caller: &Caller,
        path: Option<&ResourcePath>,
        f: impl FnOnce(&mut dyn Writer) -> Result<T, AppError> + Send + 'static,
    ) -> Result<T, AppError> {
        self.write_sized(caller, path, false, Vec::new(), f).await
    }

    /// [`App::write_job`], for a job that writes many rows when `large`
    /// (`store::Store::write_large`), or else that will look up `touches`
    /// (`store::Store::write_touching`).
    async fn write_sized<T: Send + 'static>(
        &self,
        caller: &Caller,
        path: Option<&ResourcePath>,
        large: bool,
        touches: store::Touches,
        f: impl FnOnce(&mut dyn Writer) -> Result<T, AppError> + Send + 'static,
    ) -> Result<T, AppError> {
        if caller.principal.identity == access::Identity::Anonymous {
            // Nobody writes without a role, and anonymous callers hold none: say so before
            // looking at the request.
            return Err(AppError::Unauthenticated("sign in to change anything".into()));
        }
        let hub = self.hub();
        let visibility = caller.principal.visibility(&hub);
        let principal = caller.principal.clone();
        let placement = match path.and_then(|p| write::placing_segment(p).map(|j| (p.clone(), j))) {
            Some((path, j)) => authorize::Placement::Segment(path, j),
            None => authorize::Placement::Default(caller.project),
        };
        let (tx, rx) = tokio::sync::oneshot::channel::<Result<T, AppError>>();
        let slot: Arc<std::sync::Mutex<Option<Result<T, AppError>>>> = Arc::new(std::sync::Mutex::new(None));
        let job_slot = Arc::clone(&slot);
        // The job's changes wait here until its commit is known.
        let recorded: Arc<std::sync::Mutex<Vec<Change>>> = Arc::default();
        let job_recorded = Arc::clone(&recorded);
        // A device that sent what its class does not declare: quarantined after the job.
        let undeclared: Arc<std::sync::Mutex<Option<String>>> = Arc::default();
        let job_undeclared = Arc::clone(&undeclared);
        let bus = self.changes.clone();
        let keep_records = bus.as_ref().is_some_and(|bus| bus.wants_records());
        let (node, announcing) = (self.node, self.announcing.load(std::sync::atomic::Ordering::Relaxed));
        let job: store::WriteJob = Box::new(move |writer| {
            // The recording sees what the authorizing writer let through, with each new
            // entity already placed in its project.
            let mut recording = changes::Recording::new(writer, keep_records);
            let mut authorizing = authorize::Authorizing::new(&mut recording, &principal, &hub, placement);
            let result = f(&mut authorizing);
            if let (Some(reason), Ok(mut slot)) = (authorizing.undeclared.take(), job_undeclared.lock()) {
                *slot = Some(reason);
            }
            let changes = std::mem::take(&mut recording.changes);
            let failed = result.is_err();
            if announcing && !failed && !changes.is_empty() {
                // In the job's transaction: the other nodes hear of it only if it commits.
                for message in announce::encode(node, &changes) {
                    writer.announce(&message)?;
                }
            }
            if let Ok(mut r) = job_recorded.lock() {
                *r = changes;
            }
            if let Ok(mut s) = job_slot.lock() {
                *s = Some(result);
            }
            // Rolling back this job's savepoint on an application error keeps a
            // half-done deep insert out of the database.
            if failed { Err(StoreError::Rejected("rolled back".into())) } else { Ok(()) }
        });
        let done: store::WriteDone = Box::new(move |outcome| {
            let result = slot.lock().ok().and_then(|mut s| s.take());
            let reply = match (outcome, result) {
                (_, Some(Err(app_error))) => Err(app_error),
                (Ok(()), Some(Ok(value))) => Ok(value),
                (Err(store_error), _) => Err(AppError::from(store_error)),
                (Ok(()), None) => Err(AppError::Internal("a write job left no result".into())),
            };
            if let (Ok(_), Some(bus)) = (&reply, &bus) {
                let changes = recorded.lock().map(|mut r| std::mem::take(&mut *r)).unwrap_or_default();
                if !changes.is_empty() {
                    bus.publish(&changes);
                }
            }
            let _ = tx.send(reply);
        });
        if large {
            self.store.write_large(visibility, job, done);
        } else {
            self.store.write_touching(visibility, touches, job, done);
        }
        let reply = rx.await.unwrap_or_else(|_| Err(AppError::Internal("a write job was dropped".into())));
        let undeclared = undeclared.lock().ok().and_then(|mut slot| slot.take());
        if let (Some(reason), access::Identity::Device(device)) = (undeclared, &caller.principal.identity) {
            devices::quarantine_later(self, device.id, reason);
        }
        reply
    }

    /// Aggregates the Observations at `path` (`Datastreams(1)/Observations` or a
    /// MultiDatastream's) as `request` asks.
    pub async fn aggregate(
        &self,
        caller: &Caller,
        path: ResourcePath,
        request: aggregate::Request,
    ) -> Result<aggregate::Aggregates, AppError> {
        let n = path.segments.len();
        let parent = match (path.segments.last(), n.checked_sub(2).map(|j| &path.segments[j])) {
            (Some(last), Some(parent))
                if last.entity == EntityType::Observation
                    && last.key.is_none()
                    && path.tail == odata::Tail::None
                    && matches!(parent.entity, EntityType::Datastream | EntityType::MultiDatastream) =>
            {
                parent.key.map(|id| (parent.entity, id))
            }
            _ => None,
        };
        let Some((entity, id)) = parent else {
            return Err(AppError::bad(
                "invalid_aggregate",
                "aggregates are of the Observations of one Datastream or MultiDatastream, e.g. Datastreams(1)/Observations",
            ));
        };
        let (deadline, count_time) = (self.deadline(), self.budget.count);
        self.read_job(caller, move |reader| {
            reader.set_deadline(deadline)?;
            if let Some(limit) = count_time {
                reader.set_count_time(limit);
            }
            read::ensure_exists(reader, &path, n - 2)?;
            aggregate::compute(reader, entity, id, &request)
        })
        .await
    }

    /// [`App::read`] for the server's own needs, not held to the budget: reading back what a
    /// committed write created or changed for its answer (a 503 would say the write failed),
    /// and reading changed entities for notifications.
    pub async fn read_unbudgeted(
        &self,
        caller: &Caller,
        path: ResourcePath,
        query: Query,
    ) -> Result<ReadResult, AppError> {
        let paging = self.paging;
        self.read_job(caller, move |reader| read::read(reader, &path, &query, paging)).await
    }

    /// Answers a GET of `path` with `query`.
    pub async fn read(&self, caller: &Caller, path: ResourcePath, query: Query) -> Result<ReadResult, AppError> {
        self.check_rows(&path, &query)?;
        let paging = self.paging;
        let (deadline, count_time) = (self.deadline(), self.budget.count);
        self.read_job(caller, move |reader| {
            reader.set_deadline(deadline)?;
            if let Some(limit) = count_time {
                reader.set_count_time(limit);
            }
            read::read(reader, &path, &query, paging)
        })
        .await
    }

    /// Reads a collection in chunks of `chunk` entities, handing each to `sink` on the reader
    /// thread as soon as it is read (for streamed responses). Fails before the first chunk when
    /// the path does not exist. Once `started` is true (the sink sets it when the answer starts
    /// going out), the time budget no longer applies: the answer is never cut short.
    pub async fn read_chunks(
        &self,
        caller: &Caller,
        path: ResourcePath,
        query: Query,
        chunk: usize,
        mut sink: Box<dyn FnMut(store::Rows) -> bool + Send>,
        started: Option<Arc<std::sync::atomic::AtomicBool>>,
    ) -> Result<(), AppError> {
        self.check_rows(&path, &query)?;
        let paging = self.paging;
        let (deadline, count_time) = (self.deadline(), self.budget.count);
        self.read_job(caller, move |reader| {
            reader.set_deadline(deadline)?;
            if let Some(started) = started {
                reader.lift_deadline_when(started);
            }
            if let Some(limit) = count_time {
                reader.set_count_time(limit);
            }
            read::read_chunks(reader, &path, &query, paging, chunk, &mut *sink)
        })
        .await
    }

    /// Runs one change and returns what it did, once committed.
    pub async fn write(&self, caller: &Caller, op: WriteOp) -> Result<WriteOutcome, AppError> {
        let path = op.path().clone();
        let touches = write::touches(&op);
        let result =
            self.write_sized(caller, Some(&path), false, touches, move |writer| write::apply(writer, op)).await;
        if let Err(AppError::Forbidden(message)) = &result {
            self.audit_later(audit::actor_of(caller), "write_denied", serde_json::json!({"reason": message}));
        }
        result
    }

    /// Runs several changes as one transaction: all are committed, or none is and the error of
    /// the first failing one (with its index) is returned. Each change is built just before it
    /// runs, from the outcomes of the ones before it, so a change can address an entity an
    /// earlier one created (`$1/Locations` in a `$batch` change set).
    ///
    /// New entities without a parent in their path go to the caller's default project.
    pub async fn write_atomic(
        &self,
        caller: &Caller,
        ops: Vec<PendingOp>,
    ) -> Result<Vec<WriteOutcome>, (usize, AppError)> {
        let result = self
            .write_job(caller, None, move |writer| {
                let mut outcomes = Vec::with_capacity(ops.len());
                for (i, build) in ops.into_iter().enumerate() {
                    let op = build(&outcomes).map_err(|e| AppError::InBatch(i, Box::new(e)))?;
                    match write::apply(writer, op) {
                        Ok(outcome) => outcomes.push(outcome),
                        Err(e) => return Err(AppError::InBatch(i, Box::new(e))),
                    }
                }
                Ok(outcomes)
            })
            .await;
        result.map_err(|e| match e {
            AppError::InBatch(i, inner) => (i, *inner),
            other => (0, other),
        })
    }

    /// Creates Observations from the Data Array format; one outcome per row, in order.
    pub async fn create_observations(
        &self,
        caller: &Caller,
        items: Vec<DataArrayItem>,
    ) -> Result<Vec<Result<Id, AppError>>, AppError> {
        let rows: usize = items.iter().map(|item| item.rows.len()).sum();
        let touches = write::data_array_touches(&items);
        self.write_sized(caller, None, rows >= LARGE_WRITE, touches, move |writer| {
            write::create_data_arrays(writer, items)
        })
        .await
    }

    /// Finishes queued writes and stops the store.
    pub fn shutdown(&self) {
        self.store.shutdown();
    }
}

/// Data Array requests of this many rows or more are large writes (`store::Store::write_large`).
const LARGE_WRITE: usize = 1_000;

/// A change of an atomic group, built from the outcomes of the changes before it.
pub type PendingOp = Box<dyn FnOnce(&[WriteOutcome]) -> Result<WriteOp, AppError> + Send>;

/// The entity type a resource path addresses.
pub fn target_entity(path: &ResourcePath) -> EntityType {
    path.segments.last().map(|s| s.entity).unwrap_or(EntityType::Thing)
}
