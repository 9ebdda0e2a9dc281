//! Group commit, the same on every backend: a writer thread takes every queued write job (up
//! to a bound), runs each in its own savepoint inside one transaction, commits, and only then
//! reports each job's outcome. A job that fails is rolled back to its savepoint alone.

use odata::Visibility;
use store::{StoreError, WriteDone, WriteJob};

use crate::{Access, Connection, Dialect, ProjectCache};

/// A write job waiting for the writer, with the visibility of whoever asked for it.
pub struct Queued {
    pub visibility: Visibility,
    pub job: WriteJob,
    pub done: WriteDone,
}

/// Runs `group` in one transaction (opened with `begin`) and reports every outcome after the
/// commit; empties `group`.
pub fn commit_group(
    conn: &dyn Connection,
    dialect: &dyn Dialect,
    begin: &str,
    group: &mut Vec<Queued>,
    projects: &mut ProjectCache,
) {
    let started = std::time::Instant::now();
    let size = group.len();
    if let Err(e) = conn.batch(begin) {
        tracing::error!(error = %e, "cannot begin a write transaction");
        for Queued { done, .. } in group.drain(..) {
            done(Err(StoreError::Database(format!("cannot begin a write transaction: {e}").into())));
        }
        return;
    }
    let mut outcomes: Vec<(WriteDone, Result<(), StoreError>)> = Vec::with_capacity(size);
    for Queued { visibility, job, done } in group.drain(..) {
        let outcome = run_in_savepoint(conn, dialect, &visibility, projects, job);
        outcomes.push((done, outcome));
    }
    match conn.batch("COMMIT") {
        Ok(()) => {
            let elapsed = started.elapsed();
            tracing::trace!(jobs = size, elapsed_us = elapsed.as_micros() as u64, "committed");
            metrics::counter!("thingbase_commits_total").increment(1);
            metrics::histogram!("thingbase_commit_jobs").record(size as f64);
            metrics::histogram!("thingbase_commit_duration_seconds").record(elapsed.as_secs_f64());
            for (done, outcome) in outcomes {
                done(outcome);
            }
        }
        Err(e) => {
            tracing::error!(error = %e, "commit failed");
            metrics::counter!("thingbase_commit_failures_total").increment(1);
            let _ = conn.batch("ROLLBACK");
            projects.clear();
            for (done, _) in outcomes {
                done(Err(StoreError::Database(format!("commit failed: {e}").into())));
            }
        }
    }
}

fn run_in_savepoint(
    conn: &dyn Connection,
    dialect: &dyn Dialect,
    visibility: &Visibility,
    projects: &mut ProjectCache,
    job: WriteJob,
) -> Result<(), StoreError> {
    conn.batch("SAVEPOINT job")?;
    let mut access = Access { conn, dialect, visibility, projects: Some(projects) };
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| job(&mut access)))
        .unwrap_or_else(|_| Err(StoreError::Database("a write job panicked".into())));
    if result.is_err() {
        // What the job read may describe entities that no longer exist.
        if let Some(projects) = access.projects.as_mut() {
            projects.clear();
        }
        conn.batch("ROLLBACK TO SAVEPOINT job")?;
    }
    conn.batch("RELEASE SAVEPOINT job")?;
    result
}
