//! CPU time spent, read from Linux's `/proc` (`schedstat`: nanoseconds on a CPU per task), split
//! into this process's group-commit writer threads, the rest of this process (HTTP, the
//! application and the load generator, which share the runtime's threads) and a PostgreSQL
//! server's processes. On a shared machine whose speed drifts, the CPU a request costs moves
//! far less than the requests a second does.

use std::path::Path;

/// Nanoseconds on a CPU so far.
#[derive(Clone, Copy, Debug, Default)]
pub struct Spent {
    pub writers: u64,
    pub rest: u64,
    pub postgres: u64,
}

impl Spent {
    /// Now, for this process and the server whose postmaster is `postmaster`.
    pub fn now(postmaster: Option<u32>) -> Spent {
        let mut spent = Spent::default();
        for (name, nanos) in tasks(Path::new("/proc/self/task")) {
            if name.starts_with("postgres-writer") || name.starts_with("postgres-large") {
                spent.writers += nanos;
            } else {
                spent.rest += nanos;
            }
        }
        if let Some(postmaster) = postmaster {
            spent.postgres = server(postmaster);
        }
        spent
    }

    /// Microseconds a request from `earlier` to `self`, over `requests` requests, as
    /// "total (writers, rest, PostgreSQL)".
    pub fn per_request(&self, earlier: &Spent, requests: u64) -> PerRequest {
        let per = |now: u64, then: u64| now.saturating_sub(then) as f64 / 1000.0 / requests.max(1) as f64;
        PerRequest {
            writers: per(self.writers, earlier.writers),
            rest: per(self.rest, earlier.rest),
            postgres: per(self.postgres, earlier.postgres),
        }
    }
}

/// Microseconds of CPU a request.
#[derive(Clone, Copy, Debug, Default)]
pub struct PerRequest {
    pub writers: f64,
    pub rest: f64,
    pub postgres: f64,
}

impl PerRequest {
    pub fn total(&self) -> f64 {
        self.writers + self.rest + self.postgres
    }
}

impl std::fmt::Display for PerRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{:.0} us CPU/request (writers {:.0}, HTTP+app+load {:.0}, PostgreSQL {:.0})",
            self.total(),
            self.writers,
            self.rest,
            self.postgres
        )
    }
}

/// (name, nanoseconds on a CPU) of every task under `dir` (a `/proc/<pid>/task`).
fn tasks(dir: &Path) -> Vec<(String, u64)> {
    let Ok(entries) = std::fs::read_dir(dir) else { return Vec::new() };
    entries
        .flatten()
        .filter_map(|entry| {
            let name = std::fs::read_to_string(entry.path().join("comm")).ok()?;
            Some((name.trim().to_owned(), schedstat(&entry.path())?))
        })
        .collect()
}

fn schedstat(task: &Path) -> Option<u64> {
    std::fs::read_to_string(task.join("schedstat")).ok()?.split_whitespace().next()?.parse().ok()
}

/// The postmaster's time and that of every process whose parent it is (backends, WAL writer,
/// checkpointer, ...); a backend that exited since takes its time with it, which a benchmark's
/// long-lived connections do not.
fn server(postmaster: u32) -> u64 {
    let mut total = schedstat(&Path::new("/proc").join(postmaster.to_string())).unwrap_or(0);
    let Ok(entries) = std::fs::read_dir("/proc") else { return total };
    for entry in entries.flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else { continue };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else { continue };
        // The fields after the command (which may hold spaces) in parentheses: state, ppid, ...
        let Some((_, after)) = stat.rsplit_once(')') else { continue };
        let parent = after.split_whitespace().nth(1).and_then(|p| p.parse::<u32>().ok());
        if parent == Some(postmaster) && pid != postmaster {
            total += schedstat(&entry.path()).unwrap_or(0);
        }
    }
    total
}
