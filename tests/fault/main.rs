//! Fault suite: the real `efa-hub` and `efa-node` binaries as separate processes on
//! loopback with mTLS, killed with SIGKILL at random moments and restarted on the same
//! data. Each test proves one guarantee and fails if it breaks:
//!
//! - `durability`: the hub acknowledges a publish, adoption report or rating only once it
//!   is durable; the event log stays gapless and agrees with the data.
//! - `deploy_crash`: a node killed anywhere in download, unpack, switch or health check
//!   leaves `current` at a complete version, and finishes the work after a restart.
//! - `migration`: a store migration killed at any point resumes on the next start and
//!   loses or mixes up no record.
//! - `resume`: nodes resume the event stream across hub crashes and act on each release
//!   exactly once, in order.
//! - `pg_restart`: PostgreSQL restarted under write load loses and duplicates no
//!   acknowledged report; a refusal meanwhile is UNAVAILABLE, and writes resume.
//! - `replicas`: with two hub replicas on one PostgreSQL database, SIGKILL of one under
//!   write load loses and duplicates no acknowledged report, and a node that knows both
//!   carries on with the survivor.
//! - `rollout`: with the hub SIGKILLed while its controller opens rollout rings, every ring
//!   of a release opens exactly once, in order, and only once its predecessor passed.
//! - `translog`: with the hub SIGKILLed while reports stream in and its integrator signs
//!   checkpoints, every checkpoint ever served is consistent with every later one, the
//!   store's leaves are its events, and every acknowledged report ends up in the log.
//!
//! `cargo test -p efa-tests --test fault -- --nocapture` prints one summary line per test.
//! `EFA_SOAK=1` runs the long variant; `EFA_TEST_SEED` replays a run's random choices and
//! `EFA_FAULT_CYCLES` sets the number of crash cycles. See `tests/fault/README.md`.

mod deploy_crash;
mod durability;
mod harness;
mod migration;
mod pg_restart;
mod replicas;
mod resume;
mod rollout;
mod translog;
