//! The job queues every backend puts in front of its connections: read jobs shared by the
//! reader threads, write jobs taken in groups by the writer threads, and the threads to join on
//! shutdown. Bounded: a full queue makes the caller wait (back-pressure, not unbounded memory).
//!
//! Write jobs wait in lanes, one a writer. A job goes to the lane of the first (Multi)Datastream
//! it says it touches (`store::Store::write_touching`), a job that names none to the first
//! lane: the writes of one Datastream are committed by one writer, in the order they came,
//! so several writers never queue for a busy Datastream's row, and the Observations of
//! many Datastreams are committed side by side.

use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use model::EntityType;
use odata::Visibility;
use store::{ReadJob, StoreError, Touches, WriteDone, WriteJob};

use crate::commit::Queued;
use crate::{Access, Connection, Dialect};

/// Where read jobs wait for a reader.
pub type ReadQueue = Arc<Mutex<Receiver<(Visibility, ReadJob)>>>;

/// Where write jobs wait for a writer.
pub type WriteQueue = Arc<Mutex<Receiver<Queued>>>;

/// The sending ends and the threads of a backend.
pub struct Queues {
    /// A lane a writer; empty once shut down.
    lanes: Mutex<Vec<SyncSender<Queued>>>,
    /// Where large write jobs go when the backend has writers of their own for them.
    large: Mutex<Option<SyncSender<Queued>>>,
    reads: Mutex<Option<SyncSender<(Visibility, ReadJob)>>>,
    threads: Mutex<Vec<JoinHandle<()>>>,
}

impl std::fmt::Debug for Queues {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Queues").finish_non_exhaustive()
    }
}

impl Queues {
    /// The queues (`lanes` lanes of write jobs, each bounded at `max_group * 4`), and their
    /// receiving ends for the threads to start: a writer a lane.
    pub fn new(max_group: usize, lanes: usize) -> (Queues, Vec<WriteQueue>, ReadQueue) {
        let (senders, receivers): (Vec<_>, Vec<_>) = (0..lanes.max(1))
            .map(|_| {
                let (tx, rx) = mpsc::sync_channel::<Queued>(max_group.max(1) * 4);
                (tx, Arc::new(Mutex::new(rx)))
            })
            .unzip();
        let (read_tx, read_rx) = mpsc::sync_channel::<(Visibility, ReadJob)>(1024);
        let queues = Queues {
            lanes: Mutex::new(senders),
            large: Mutex::default(),
            reads: Mutex::new(Some(read_tx)),
            threads: Mutex::default(),
        };
        (queues, receivers, Arc::new(Mutex::new(read_rx)))
    }

    /// A queue of its own for large write jobs ([`Queues::write_large`]), bounded at `bound`,
    /// for writers of their own to take.
    pub fn large_lane(&self, bound: usize) -> WriteQueue {
        let (tx, rx) = mpsc::sync_channel::<Queued>(bound.max(1));
        if let Ok(mut large) = self.large.lock() {
            *large = Some(tx);
        }
        Arc::new(Mutex::new(rx))
    }

    /// Starts a thread of the backend, joined by [`Queues::shutdown`].
    pub fn spawn(&self, name: String, run: impl FnOnce() + Send + 'static) -> Result<(), StoreError> {
        let thread =
            std::thread::Builder::new().name(name).spawn(run).map_err(|e| StoreError::Database(Box::new(e)))?;
        if let Ok(mut threads) = self.threads.lock() {
            threads.push(thread);
        }
        Ok(())
    }

    pub fn read(&self, visibility: Visibility, job: ReadJob) {
        let sender = self.reads.lock().ok().and_then(|s| s.clone());
        if let Some(sender) = sender {
            let _ = sender.send((visibility, job));
        }
    }

    pub fn write(&self, visibility: Visibility, job: WriteJob, done: WriteDone) {
        self.write_touching(visibility, Vec::new(), job, done);
    }

    /// [`Queues::write`] of a job that said what it will look up (`store::Store::write_touching`):
    /// to the lane of the first (Multi)Datastream among them.
    pub fn write_touching(&self, visibility: Visibility, touches: Touches, job: WriteJob, done: WriteDone) {
        let sender = self.lanes.lock().ok().and_then(|lanes| {
            let lane = lane_of(&touches, lanes.len());
            lanes.get(lane).cloned()
        });
        Queues::send(sender, Queued { visibility, touches, job, done });
    }

    /// A job writing many rows: to the large lane if there is one.
    pub fn write_large(&self, visibility: Visibility, job: WriteJob, done: WriteDone) {
        let lane = self.large.lock().ok().and_then(|s| s.clone());
        match lane {
            Some(sender) => Queues::send(Some(sender), Queued { visibility, touches: Vec::new(), job, done }),
            None => self.write(visibility, job, done),
        }
    }

    fn send(sender: Option<SyncSender<Queued>>, queued: Queued) {
        match sender {
            Some(sender) => match sender.try_send(queued) {
                Ok(()) => {}
                Err(TrySendError::Full(item)) => {
                    if let Err(mpsc::SendError(item)) = sender.send(item) {
                        (item.done)(Err(StoreError::ShuttingDown));
                    }
                }
                Err(TrySendError::Disconnected(item)) => (item.done)(Err(StoreError::ShuttingDown)),
            },
            None => (queued.done)(Err(StoreError::ShuttingDown)),
        }
    }

    /// Stops taking jobs; the threads finish what is queued (writers commit it) and are joined.
    pub fn shutdown(&self) {
        if let Ok(mut lanes) = self.lanes.lock() {
            lanes.clear();
        }
        if let Ok(mut l) = self.large.lock() {
            l.take();
        }
        if let Ok(mut r) = self.reads.lock() {
            r.take();
        }
        let threads = self.threads.lock().map(|mut t| std::mem::take(&mut *t)).unwrap_or_default();
        for thread in threads {
            let _ = thread.join();
        }
    }
}

/// The lane of a job that touches `touches`, of `lanes`: by the first (Multi)Datastream's id
/// (a Datastream and a MultiDatastream of one id one lane apart), the first lane when none.
fn lane_of(touches: &Touches, lanes: usize) -> usize {
    if lanes < 2 {
        return 0;
    }
    let key = touches.iter().find_map(|(entity, id)| match entity {
        EntityType::Datastream => Some(id.0.unsigned_abs()),
        EntityType::MultiDatastream => Some(id.0.unsigned_abs().wrapping_add(1)),
        _ => None,
    });
    key.map_or(0, |key| (key % lanes as u64) as usize)
}

/// Runs read jobs from `jobs` until the queue closes, each in one read transaction (`begin`,
/// then `COMMIT`): a page and its count, or an export, see one snapshot.
pub fn read_loop(conn: &dyn Connection, dialect: &dyn Dialect, begin: &str, jobs: &ReadQueue) {
    loop {
        let job = {
            let Ok(rx) = jobs.lock() else { return };
            match rx.recv() {
                Ok(job) => job,
                Err(_) => return,
            }
        };
        let (visibility, job) = job;
        let _ = conn.batch(begin);
        let mut access = Access {
            conn,
            dialect,
            visibility: &visibility,
            projects: None,
            memo: None,
            pending: None,
            deadline: None,
            count_time: None,
        };
        // A panicking job must not take the reader down with it; its caller sees the dropped
        // reply channel as an internal error.
        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| job(&mut access)));
        let _ = conn.batch("COMMIT");
        let _ = conn.set_deadline(None);
    }
}

/// What a writer found waiting.
pub enum Next {
    /// `group` holds jobs to commit.
    Group,
    /// Nothing came for `wait`: time for the backend's housekeeping.
    Idle,
    /// The queue closed and is empty.
    Closed,
}

/// Waits up to `wait` for a job, then takes every job waiting (up to `max_group`) into
/// `group`. While one writer commits, the next takes what arrives.
pub fn take_group(jobs: &WriteQueue, group: &mut Vec<Queued>, max_group: usize, wait: Duration) -> Next {
    let Ok(queue) = jobs.lock() else { return Next::Closed };
    match queue.recv_timeout(wait) {
        Ok(first) => group.push(first),
        Err(RecvTimeoutError::Timeout) => return Next::Idle,
        Err(RecvTimeoutError::Disconnected) => return Next::Closed,
    }
    while group.len() < max_group.max(1) {
        match queue.try_recv() {
            Ok(job) => group.push(job),
            Err(_) => break,
        }
    }
    Next::Group
}

#[cfg(test)]
mod tests {
    use model::{EntityType, Id};

    use super::lane_of;

    #[test]
    fn a_job_goes_to_the_lane_of_its_first_datastream_or_to_the_first() {
        let touching = |touches: &[(EntityType, i64)]| -> Vec<(EntityType, Id)> {
            touches.iter().map(|(e, i)| (*e, Id(*i))).collect()
        };
        let ds = EntityType::Datastream;
        let md = EntityType::MultiDatastream;
        let lanes: Vec<usize> = (1..=6).map(|id| lane_of(&touching(&[(ds, id)]), 3)).collect();
        assert_eq!(lanes, [1, 2, 0, 1, 2, 0], "consecutive Datastreams spread over the lanes");
        assert_eq!(lane_of(&touching(&[(md, 1)]), 3), 2, "a MultiDatastream one lane from the Datastream of its id");
        assert_eq!(lane_of(&touching(&[(EntityType::Thing, 4), (ds, 5), (ds, 1)]), 3), 2, "the first Datastream");
        assert_eq!(lane_of(&touching(&[(EntityType::Thing, 4)]), 3), 0, "none: the first lane");
        assert_eq!(lane_of(&Vec::new(), 3), 0);
        assert_eq!(lane_of(&touching(&[(ds, 5)]), 1), 0, "one lane");
    }
}
