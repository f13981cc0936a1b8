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
//! Adoption reports, most of a hub's writes, are applied together: reports that arrive one
//! after another go to the store as one run ([`Store::queue_adoptions`]) just before the
//! next other write, or the flush, so every write still sees the ones queued before it.

use crate::error::{Error, Result};
use crate::store::{Queued, Store};
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
    Report(AdoptionEntry, Answer),
}
type Mutation = Box<dyn FnOnce(&dyn Store) -> Reply + Send>;
type Reply = Box<dyn FnOnce(&Result<()>) + Send>;
type Adopted = (AdoptionRecord, Event);
type Answer = Box<dyn FnOnce(Result<Adopted>) + Send>;

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
        self.enqueue(f, move |answer| {
            let _ = tx.send(answer);
        })?;
        rx.recv().map_err(|_| lost())?
    }

    /// Like [`write`](Self::write), but the caller awaits durability instead of parking its
    /// thread, so an async server needs no blocking-pool thread per write.
    pub(crate) fn write_async<T: Send + 'static>(
        &self,
        f: impl FnOnce(&dyn Store) -> Result<T> + Send + 'static,
    ) -> impl std::future::Future<Output = Result<T>> + Send + 'static {
        let (tx, rx) = futures_channel::oneshot::channel::<Result<T>>();
        let queued = self.enqueue(f, move |answer| {
            let _ = tx.send(answer);
        });
        async move {
            queued?;
            rx.await.map_err(|_| lost())?
        }
    }

    /// Appends an adoption report to the ledger; resolves once it is durable.
    pub(crate) fn report_async(
        &self,
        entry: AdoptionEntry,
    ) -> impl std::future::Future<Output = Result<Adopted>> + Send + 'static {
        let (tx, rx) = futures_channel::oneshot::channel::<Result<Adopted>>();
        let queued = self.send(Job::Report(
            entry,
            Box::new(move |answer| {
                let _ = tx.send(answer);
            }),
        ));
        async move {
            queued?;
            rx.await.map_err(|_| lost())?
        }
    }

    fn enqueue<T: Send + 'static>(
        &self,
        f: impl FnOnce(&dyn Store) -> Result<T> + Send + 'static,
        // Called on the commit thread once the batch's flush is known. The caller may have
        // gone away by then; there is nothing to tell it in that case.
        answer: impl FnOnce(Result<T>) + Send + 'static,
    ) -> Result<()> {
        self.send(Job::Write(Box::new(move |store| {
            let out = f(store);
            Box::new(move |flushed: &Result<()>| answer(durable(out, flushed)))
        })))
    }

    fn send(&self, job: Job) -> Result<()> {
        let stopped = || Error::Storage("the commit thread has stopped".into());
        self.jobs.as_ref().ok_or_else(stopped)?.send(job).map_err(|_| stopped())
    }
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

fn commit_loop(store: &dyn Store, jobs: mpsc::Receiver<Job>) {
    let mut replies: Vec<Reply> = Vec::new();
    let mut reports: Vec<(AdoptionEntry, Answer)> = Vec::new();
    while let Ok(first) = jobs.recv() {
        store.begin_batch();
        let mut next = Some(first);
        let mut taken = 0;
        while let Some(job) = next {
            taken += 1;
            match job {
                Job::Report(entry, answer) => reports.push((entry, answer)),
                Job::Write(f) => {
                    apply_reports(store, &mut reports, &mut replies);
                    match std::panic::catch_unwind(AssertUnwindSafe(|| f(store))) {
                        Ok(reply) => replies.push(reply),
                        // The job's reply channel is dropped with it, so its caller gets an error.
                        Err(_) => tracing::error!("a registry write panicked; it was not applied"),
                    }
                }
            }
            next = if taken < MAX_BATCH { jobs.try_recv().ok() } else { None };
        }
        apply_reports(store, &mut reports, &mut replies);
        let flushed = store.flush();
        if let Err(e) = &flushed {
            tracing::error!(error = %e, writes = replies.len(), "flush failed");
        }
        for reply in replies.drain(..) {
            reply(&flushed);
        }
    }
}

/// Hands the queued run of reports to the store; their answers wait for the flush.
fn apply_reports(store: &dyn Store, reports: &mut Vec<(AdoptionEntry, Answer)>, replies: &mut Vec<Reply>) {
    if reports.is_empty() {
        return;
    }
    let (entries, answers): (Vec<_>, Vec<_>) = reports.drain(..).unzip();
    match std::panic::catch_unwind(AssertUnwindSafe(|| store.queue_adoptions(&entries))) {
        // A store that gave fewer outcomes drops the rest of the answers: those callers get
        // an error rather than a guess.
        Ok(outcomes) => replies.extend(outcomes.into_iter().zip(answers).map(|(out, answer)| -> Reply {
            // A queued outcome is known only after the flush (PostgreSQL applies it then), and
            // a failed flush says why first: a restarting database is worth retrying.
            Box::new(move |flushed: &Result<()>| answer(durable(out, flushed).and_then(Queued::take)))
        })),
        Err(_) => tracing::error!(reports = entries.len(), "applying adoption reports panicked; none was applied"),
    }
}
