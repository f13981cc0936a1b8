//! Whole-system scenarios. One test binary (fast to link); one module per concern.

mod authorization;
mod downloads;
mod events;
mod flow;
mod publish;
mod verification;
