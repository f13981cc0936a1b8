//! Group commit: one thread applies every mutation and makes each batch durable with a
//! single flush.
//!
//! Why a thread and not a lock around flush: with many writers, a flush lock forms a
//! convoy (each waiter is woken in turn, and most find they need yet another flush), and
//! concurrent sled transactions conflict on the event-sequence key and retry. Here writers
//! only enqueue a job and wait; the commit thread drains whatever has queued up, applies it
//! in order (so transactions never conflict), flushes once and answers everyone. A batch is
//! as large as the number of writes that arrived during the previous batch, so throughput
//! grows with the number of writers instead of being capped by the flush rate.
//!
//! Adoption reports (most of a hub's writes) and publishes are applied in runs: writes of
//! one kind that arrive one after another go to the store together
//! ([`Store::queue_adoptions`], [`Store::insert_releases`]) just before a write of another
//! kind, or the flush, so every write still sees the ones queued before it.

use crate::error::{Error, Result};
use crate::store::{NewRelease, Queued, Store};
use efa_domain::model::adoption::{AdoptionEntry, AdoptionRecord};
use efa_domain::model::event::Event;
use std::panic::AssertUnwindSafe;
use std::sync::mpsc;
use std::sync::Arc;
use std::thread::JoinHandle;

/// Upper bound on writes sharing one flush, so a flood of writers still gets answers in
/// bounded time.
const MAX_BATCH: usize = 1024;

enum Job {
    /// Runs a mutation on the commit thread and returns what will answer its caller once the
    /// batch's flush is known.
    Write(Mutation),
    /// An adoption report, applied with the reports next to it.
    Report(AdoptionEntry, Answer<Adopted>),
    /// A release, inserted with the releases next to it.
    Release(Box<NewRelease>, Answer<Vec<Event>>),
}
type Mutation = Box<dyn FnOnce(&dyn Store) -> Reply + Send>;
type Reply = Box<dyn FnOnce(&Result<()>) + Send>;
type Adopted = (AdoptionRecord, Event);
type Answer<T> = Box<dyn FnOnce(Result<T>) + Send>;

pub(crate) struct Committer {
    jobs: Option<mpsc::Sender<Job>>,
    thread: Option<JoinHandle<()>>,
}

impl Committer {
    pub(crate) fn start(store: Arc<dyn Store>) -> Self {
        let (tx, rx) = mpsc::channel::<Job>();
        let thread = std::thread::Builder::new()
            .name("efa-commit".into())
            .spawn(move || commit_loop(store.as_ref(), rx))
            .expect("spawning the commit thread");
        Committer { jobs: Some(tx), thread: Some(thread) }
    }

    /// Applies `f` on the commit thread and returns its result once it is durable. A
    /// failed flush fails every write of its batch, since none of them is known to be on disk.
    pub(crate) fn write<T: Send + 'static>(
        &self,
        f: impl FnOnce(&dyn Store) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let (tx, rx) = mpsc::sync_channel::<Result<T>>(1);
        self.send(mutation(
            f,
            Box::new(move |answer| {
                let _ = tx.send(answer);
            }),
        ))?;
        rx.recv().map_err(|_| lost())?
    }

    /// Like [`write`](Self::write), but the caller awaits durability instead of parking its
    /// thread, so an async server needs no blocking-pool thread per write.
    pub(crate) fn write_async<T: Send + 'static>(
        &self,
        f: impl FnOnce(&dyn Store) -> Result<T> + Send + 'static,
    ) -> impl std::future::Future<Output = Result<T>> + Send + 'static {
        self.run_async(|answer| mutation(f, answer))
    }

    /// Appends an adoption report to the ledger; resolves once it is durable.
    pub(crate) fn report_async(
        &self,
        entry: AdoptionEntry,
    ) -> impl std::future::Future<Output = Result<Adopted>> + Send + 'static {
        self.run_async(|answer| Job::Report(entry, answer))
    }

    /// Inserts a release (and its rollout); resolves to its events once they are durable.
    pub(crate) fn release_async(
        &self,
        new: NewRelease,
    ) -> impl std::future::Future<Output = Result<Vec<Event>>> + Send + 'static {
        self.run_async(|answer| Job::Release(Box::new(new), answer))
    }

    fn run_async<T: Send + 'static>(
        &self,
        job: impl FnOnce(Answer<T>) -> Job,
    ) -> impl std::future::Future<Output = Result<T>> + Send + 'static {
        let (tx, rx) = futures_channel::oneshot::channel::<Result<T>>();
        let queued = self.send(job(Box::new(move |answer| {
            let _ = tx.send(answer);
        })));
        async move {
            queued?;
            rx.await.map_err(|_| lost())?
        }
    }

    fn send(&self, job: Job) -> Result<()> {
        let stopped = || Error::Storage("the commit thread has stopped".into());
        self.jobs.as_ref().ok_or_else(stopped)?.send(job).map_err(|_| stopped())
    }
}

/// The job that applies `f` on the commit thread and tells `answer` its outcome once the
/// batch's flush is known. The caller may have gone away by then; there is nothing to tell it
/// in that case.
fn mutation<T: Send + 'static>(f: impl FnOnce(&dyn Store) -> Result<T> + Send + 'static, answer: Answer<T>) -> Job {
    Job::Write(Box::new(move |store| {
        let out = f(store);
        Box::new(move |flushed: &Result<()>| answer(durable(out, flushed)))
    }))
}

/// A write's outcome once its batch's flush is known: a failed flush fails every write of
/// the batch, since none of them is known to be on disk.
fn durable<T>(out: Result<T>, flushed: &Result<()>) -> Result<T> {
    match flushed {
        Ok(()) => out,
        // A database that is away (restarting) is worth retrying; say so.
        Err(Error::Unavailable(why)) => {
            out.and(Err(Error::Unavailable(format!("the write was not made durable: {why}"))))
        }
        Err(e) => out.and(Err(Error::Storage(format!("the write was not made durable: {e}")))),
    }
}

fn lost() -> Error {
    Error::Storage("the write failed inside the commit thread (see the log)".into())
}

impl Drop for Committer {
    /// Waits for queued writes, so the store is closed (and its file lock released) when the
    /// registry is gone; a restarted hub can then open it again at once.
    fn drop(&mut self) {
        self.jobs.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The writes of one kind waiting to go to the store together.
#[derive(Default)]
struct Runs {
    reports: Vec<(AdoptionEntry, Answer<Adopted>)>,
    releases: Vec<(NewRelease, Answer<Vec<Event>>)>,
}

impl Runs {
    /// Hands the waiting run (at most one kind waits at a time) to the store; the answers
    /// wait for the flush.
    fn apply(&mut self, store: &dyn Store, replies: &mut Vec<Reply>) {
        if !self.reports.is_empty() {
            let (entries, answers): (Vec<_>, Vec<_>) = self.reports.drain(..).unzip();
            // A queued outcome is known only after the flush (PostgreSQL applies it then).
            apply_run(replies, answers, || store.queue_adoptions(&entries), |q: Queued<Adopted>| q.take());
        }
        if !self.releases.is_empty() {
            let (new, answers): (Vec<_>, Vec<_>) = self.releases.drain(..).unzip();
            apply_run(replies, answers, || store.insert_releases(&new), Ok);
        }
    }
}

fn commit_loop(store: &dyn Store, jobs: mpsc::Receiver<Job>) {
    let mut replies: Vec<Reply> = Vec::new();
    let mut runs = Runs::default();
    while let Ok(first) = jobs.recv() {
        store.begin_batch();
        let mut next = Some(first);
        let mut taken = 0;
        while let Some(job) = next {
            taken += 1;
            match job {
                Job::Report(entry, answer) => {
                    if !runs.releases.is_empty() {
                        runs.apply(store, &mut replies);
                    }
                    runs.reports.push((entry, answer));
                }
                Job::Release(new, answer) => {
                    if !runs.reports.is_empty() {
                        runs.apply(store, &mut replies);
                    }
                    runs.releases.push((*new, answer));
                }
                Job::Write(f) => {
                    runs.apply(store, &mut replies);
                    match std::panic::catch_unwind(AssertUnwindSafe(|| f(store))) {
                        Ok(reply) => replies.push(reply),
                        // The job's reply channel is dropped with it, so its caller gets an error.
                        Err(_) => tracing::error!("a registry write panicked; it was not applied"),
                    }
                }
            }
            next = if taken < MAX_BATCH { jobs.try_recv().ok() } else { None };
        }
        runs.apply(store, &mut replies);
        let flushed = store.flush();
        if let Err(e) = &flushed {
            tracing::error!(error = %e, writes = replies.len(), "flush failed");
        }
        for reply in replies.drain(..) {
            reply(&flushed);
        }
    }
}

/// Applies a run with `apply` (one outcome per write, in order) and queues each answer for
/// the flush; `settle` turns an outcome into the answer once the flush is known.
fn apply_run<O: Send + 'static, T: 'static>(
    replies: &mut Vec<Reply>,
    answers: Vec<Answer<T>>,
    apply: impl FnOnce() -> Vec<Result<O>>,
    settle: impl Fn(O) -> Result<T> + Copy + Send + 'static,
) {
    let writes = answers.len();
    match std::panic::catch_unwind(AssertUnwindSafe(apply)) {
        // A store that gave fewer outcomes drops the rest of the answers: those callers get
        // an error rather than a guess.
        Ok(outcomes) => replies.extend(outcomes.into_iter().zip(answers).map(|(out, answer)| -> Reply {
            // A failed flush says why first: a restarting database is worth retrying.
            Box::new(move |flushed: &Result<()>| answer(durable(out, flushed).and_then(settle)))
        })),
        Err(_) => tracing::error!(writes, "applying a run of writes panicked; none was applied"),
    }
}
