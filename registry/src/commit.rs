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

use crate::error::{Error, Result};
use crate::store::Store;
use std::panic::AssertUnwindSafe;
use std::sync::mpsc;
use std::sync::Arc;
use std::thread::JoinHandle;

/// Upper bound on writes sharing one flush, so a flood of writers still gets answers in
/// bounded time.
const MAX_BATCH: usize = 1024;

/// Runs a mutation on the commit thread and returns what will answer its caller once the
/// batch's flush is known.
type Job = Box<dyn FnOnce(&dyn Store) -> Reply + Send>;
type Reply = Box<dyn FnOnce(&Result<()>) + Send>;

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

    fn enqueue<T: Send + 'static>(
        &self,
        f: impl FnOnce(&dyn Store) -> Result<T> + Send + 'static,
        // Called on the commit thread once the batch's flush is known. The caller may have
        // gone away by then; there is nothing to tell it in that case.
        answer: impl FnOnce(Result<T>) + Send + 'static,
    ) -> Result<()> {
        let job: Job = Box::new(move |store| {
            let out = f(store);
            Box::new(move |flushed: &Result<()>| {
                answer(match flushed {
                    Ok(()) => out,
                    // A database that is away (restarting) is worth retrying; say so.
                    Err(Error::Unavailable(why)) => {
                        out.and(Err(Error::Unavailable(format!("the write was not made durable: {why}"))))
                    }
                    Err(e) => out.and(Err(Error::Storage(format!("the write was not made durable: {e}")))),
                })
            })
        });
        let stopped = || Error::Storage("the commit thread has stopped".into());
        self.jobs.as_ref().ok_or_else(stopped)?.send(job).map_err(|_| stopped())
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
    let run = |job: Job| match std::panic::catch_unwind(AssertUnwindSafe(|| job(store))) {
        Ok(reply) => Some(reply),
        Err(_) => {
            // The job's reply channel is dropped with it, so its caller gets an error.
            tracing::error!("a registry write panicked; it was not applied");
            None
        }
    };
    let mut replies: Vec<Reply> = Vec::new();
    while let Ok(first) = jobs.recv() {
        store.begin_batch();
        replies.extend(run(first));
        while replies.len() < MAX_BATCH {
            match jobs.try_recv() {
                Ok(job) => replies.extend(run(job)),
                Err(_) => break,
            }
        }
        let flushed = store.flush();
        if let Err(e) = &flushed {
            tracing::error!(error = %e, writes = replies.len(), "flush failed");
        }
        for reply in replies.drain(..) {
            reply(&flushed);
        }
    }
}
