//! Whole-system scenarios. One test binary (fast to link); one module per concern.

mod authorization;
mod events;
mod flow;
mod publish;
mod verification;
