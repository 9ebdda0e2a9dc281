//! Retention (docs/timeseries.md): per-project and per-(Multi)Datastream policies of how long
//! Observations and rollups are kept, applied in the background in small steps so ingest never
//! waits long behind them; and the building of rollups for data stored before rollups existed.

use std::time::Duration;

use access::{Action, Decision, ProjectId};
use model::{EntityType, Id, Instant};
use odata::Visibility;
use store::statistics::{RetentionPolicy, RetentionScope};
use store::{StoreError, Writer};

use crate::{App, AppError, Caller};

/// Observations deleted by the first write job of a retention pass; later ones are sized so
/// each takes about [`STEP_TIME`], between [`MIN_STEP`] and [`MAX_STEP`] rows.
pub const STEP: usize = 1_000;
pub const MIN_STEP: usize = 100;
pub const MAX_STEP: usize = 10_000;

/// What one step may take of the writer's time: ingest in the same write group waits that
/// much longer.
pub const STEP_TIME: Duration = Duration::from_millis(4);

/// The least pause between two steps; it is at least four times the last step, so retention
/// takes at most a fifth of the writer.
pub const PAUSE: Duration = Duration::from_millis(20);

const DAY_MICROS: i64 = 86_400_000_000;

/// What a retention pass did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Report {
    /// (Multi)Datastreams with a policy.
    pub series: usize,
    pub observations_deleted: u64,
    pub rollups_deleted: u64,
}

/// The policy that applies to each (Multi)Datastream: its own, else its project's.
pub fn effective(
    policies: &[RetentionPolicy],
    series: EntityType,
    id: Id,
    project: Option<ProjectId>,
) -> Option<RetentionPolicy> {
    let own = match series {
        EntityType::MultiDatastream => RetentionScope::MultiDatastream(id.0),
        _ => RetentionScope::Datastream(id.0),
    };
    policies
        .iter()
        .find(|p| p.scope == own)
        .or_else(|| project.and_then(|project| policies.iter().find(|p| p.scope == RetentionScope::Project(project))))
        .copied()
}

/// The instant before which data older than `days` days goes: `now - days`, rounded down to a
/// UTC midnight, so that whole rollup buckets of every level lie on one side.
pub fn horizon(now: Instant, days: u32) -> Instant {
    let at = now.micros() - i64::from(days) * DAY_MICROS;
    Instant::from_micros(at.div_euclid(DAY_MICROS) * DAY_MICROS)
}

impl App {
    /// Runs `f` as a write job of the server's own maintenance (every entity visible, no
    /// authorization, no change notifications).
    pub(crate) async fn maintenance_job<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut dyn Writer) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, AppError> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let slot: std::sync::Arc<std::sync::Mutex<Option<T>>> = std::sync::Arc::default();
        let job_slot = std::sync::Arc::clone(&slot);
        self.store.write(
            Visibility::All,
            Box::new(move |w| {
                let value = f(w)?;
                if let Ok(mut s) = job_slot.lock() {
                    *s = Some(value);
                }
                Ok(())
            }),
            Box::new(move |outcome| {
                let _ = tx.send(outcome);
            }),
        );
        match rx.await {
            Ok(Ok(())) => slot
                .lock()
                .ok()
                .and_then(|mut s| s.take())
                .ok_or_else(|| AppError::Internal("a maintenance job left no result".into())),
            Ok(Err(e)) => Err(AppError::from(e)),
            Err(_) => Err(AppError::Internal("a maintenance job was dropped".into())),
        }
    }

    /// The project a policy's scope belongs to (for deciding who may set it); 404 when its
    /// (Multi)Datastream does not exist.
    async fn project_of_scope(&self, scope: RetentionScope) -> Result<ProjectId, AppError> {
        let (entity, id) = match scope {
            RetentionScope::Project(project) => return Ok(project),
            RetentionScope::Datastream(id) => (EntityType::Datastream, id),
            RetentionScope::MultiDatastream(id) => (EntityType::MultiDatastream, id),
        };
        self.project_of(entity, Id(id))
            .await?
            .ok_or_else(|| AppError::NotFound(format!("{}({id}) does not exist", entity.set_name())))
    }

    fn require_admin_of(&self, caller: &Caller, project: ProjectId) -> Result<(), AppError> {
        match caller.principal.decide(&self.hub(), Action::ManageMembers, EntityType::Thing, project) {
            Decision::Allow => Ok(()),
            Decision::Unauthenticated => Err(AppError::Unauthenticated("sign in as an admin of the project".into())),
            Decision::Forbidden => Err(AppError::Forbidden(format!("you are not an admin of project {project}"))),
        }
    }

    /// The policies the caller may see: every one for hub administrators, else those of the
    /// projects it administers.
    pub async fn retention_policies(&self, caller: &Caller) -> Result<Vec<RetentionPolicy>, AppError> {
        let policies = self.read_job(&Caller::server(), |r| Ok(r.retention_policies()?)).await?;
        let mut visible = Vec::with_capacity(policies.len());
        for policy in policies {
            let Ok(project) = self.project_of_scope(policy.scope).await else { continue };
            if self.require_admin_of(caller, project).is_ok() {
                visible.push(policy);
            }
        }
        Ok(visible)
    }

    /// Sets a policy; admins of the project only. Audited.
    pub async fn set_retention(
        &self,
        caller: &Caller,
        scope: RetentionScope,
        raw_days: Option<u32>,
        rollup_days: Option<u32>,
    ) -> Result<RetentionPolicy, AppError> {
        let project = self.project_of_scope(scope).await?;
        self.require_admin_of(caller, project)?;
        if raw_days == Some(0) || rollup_days == Some(0) {
            return Err(AppError::bad("invalid_retention", "keep data at least one day (or give null: for ever)"));
        }
        if let (Some(raw), Some(rollups)) = (raw_days, rollup_days)
            && rollups < raw
        {
            return Err(AppError::bad(
                "invalid_retention",
                "rollups cannot be kept for less time than the Observations they summarise",
            ));
        }
        let policy = RetentionPolicy { scope, raw_days, rollup_days, updated_at: Instant::now() };
        self.maintenance_job(move |w| w.set_retention_policy(&policy)).await?;
        let detail = serde_json::json!({"scope": scope_json(scope), "rawDays": raw_days, "rollupDays": rollup_days});
        self.audit(crate::audit::actor_of(caller), "retention_set", detail).await?;
        Ok(policy)
    }

    /// Removes a policy; admins of the project only. Audited.
    pub async fn clear_retention(&self, caller: &Caller, scope: RetentionScope) -> Result<(), AppError> {
        let project = self.project_of_scope(scope).await?;
        self.require_admin_of(caller, project)?;
        if !self.maintenance_job(move |w| w.clear_retention_policy(scope)).await? {
            return Err(AppError::NotFound("there is no retention policy there".into()));
        }
        self.audit(crate::audit::actor_of(caller), "retention_cleared", serde_json::json!({"scope": scope_json(scope)}))
            .await
    }

    /// Applies every policy once, `now`: Observations older than their horizon go in steps of
    /// [`STEP`] with a pause between, then rollups older than theirs.
    pub async fn apply_retention(&self, now: Instant) -> Result<Report, AppError> {
        let policies = self.read_job(&Caller::server(), |r| Ok(r.retention_policies()?)).await?;
        let mut report = Report::default();
        if policies.is_empty() {
            return Ok(report);
        }
        // Every series a policy reaches, with the policy that applies to it.
        let mut series: Vec<(EntityType, Id, RetentionPolicy)> = Vec::new();
        for policy in &policies {
            let found: Vec<(EntityType, Id)> = match policy.scope {
                RetentionScope::Project(project) => {
                    self.read_job(&Caller::server(), move |r| Ok(r.series_of_project(project)?)).await?
                }
                RetentionScope::Datastream(id) => vec![(EntityType::Datastream, Id(id))],
                RetentionScope::MultiDatastream(id) => vec![(EntityType::MultiDatastream, Id(id))],
            };
            for (entity, id) in found {
                if series.iter().any(|(e, i, _)| *e == entity && *i == id) {
                    continue;
                }
                let project = self.project_of(entity, id).await?;
                if project.is_none() {
                    continue;
                }
                if let Some(effective) = effective(&policies, entity, id, project) {
                    series.push((entity, id, effective));
                }
            }
        }
        report.series = series.len();
        for (entity, id, policy) in series {
            if let Some(days) = policy.raw_days {
                let before = horizon(now, days);
                let mut step = STEP;
                loop {
                    let started = std::time::Instant::now();
                    let gone = self.maintenance_job(move |w| w.expire_observations(entity, id, before, step)).await?;
                    let took = started.elapsed();
                    report.observations_deleted += gone;
                    if gone < step as u64 {
                        break;
                    }
                    if took < STEP_TIME / 2 {
                        step = (step * 2).min(MAX_STEP);
                    } else if took > STEP_TIME * 2 {
                        step = (step / 2).max(MIN_STEP);
                    }
                    tokio::time::sleep(PAUSE.max(took * 4)).await;
                }
            }
            if let Some(days) = policy.rollup_days {
                let before = horizon(now, days);
                report.rollups_deleted += self.maintenance_job(move |w| w.expire_rollups(entity, id, before)).await?;
            }
        }
        if report.observations_deleted > 0 || report.rollups_deleted > 0 {
            tracing::info!(
                series = report.series,
                observations = report.observations_deleted,
                rollups = report.rollups_deleted,
                "retention applied"
            );
        }
        Ok(report)
    }

    /// Builds the rollups of the (Multi)Datastreams stored before rollups existed, a few per
    /// write job; returns how many it built.
    pub async fn build_pending_rollups(&self) -> Result<usize, AppError> {
        let mut built = 0;
        loop {
            let n = self.maintenance_job(|w| w.build_pending_rollups(4)).await?;
            if n == 0 {
                return Ok(built);
            }
            built += n;
            tokio::time::sleep(PAUSE).await;
        }
    }
}

/// A scope as JSON: `{"project": 1}`, `{"datastream": 7}` or `{"multiDatastream": 3}`.
pub fn scope_json(scope: RetentionScope) -> serde_json::Value {
    match scope {
        RetentionScope::Project(id) => serde_json::json!({"project": id}),
        RetentionScope::Datastream(id) => serde_json::json!({"datastream": id}),
        RetentionScope::MultiDatastream(id) => serde_json::json!({"multiDatastream": id}),
    }
}
