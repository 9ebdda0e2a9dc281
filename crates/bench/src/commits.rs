//! The write groups the server's writers commit, counted through the `metrics` facade (the
//! server counts each as `thingbase_commits_total`): requests over commits is the mean group a
//! commit carried, whose fixed costs (the transaction, the derived fields' writes) its jobs
//! share.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use metrics::{Counter, Gauge, Histogram, Key, KeyName, Metadata, Recorder, SharedString, Unit};

static COMMITS: std::sync::OnceLock<Arc<AtomicU64>> = std::sync::OnceLock::new();

struct Commits(Arc<AtomicU64>);

impl Recorder for Commits {
    fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}

    fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
        if key.name() == "thingbase_commits_total" { Counter::from_arc(self.0.clone()) } else { Counter::noop() }
    }

    fn register_gauge(&self, _: &Key, _: &Metadata<'_>) -> Gauge {
        Gauge::noop()
    }

    fn register_histogram(&self, _: &Key, _: &Metadata<'_>) -> Histogram {
        Histogram::noop()
    }
}

/// The groups committed so far in this process; the first call starts counting them.
pub fn so_far() -> u64 {
    COMMITS
        .get_or_init(|| {
            let count = Arc::new(AtomicU64::new(0));
            // Refused only if a recorder is installed already; the count then stays 0.
            let _ = metrics::set_global_recorder(Commits(count.clone()));
            count
        })
        .load(Ordering::Acquire)
}
