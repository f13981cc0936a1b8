//! Whole-system scenarios. One test binary (fast to link); one module per concern.

mod authorization;
mod dashboard;
mod deprecation;
mod downloads;
mod events;
mod flow;
mod hostile;
mod log_audit;
mod log_node;
mod observability;
mod offers;
mod preflight;
mod provider;
mod publish;
mod python_client;
mod rollouts;
mod routing;
mod s3_blobs;
mod scaleout;
mod shutdown;
mod tls;
mod verification;
mod zustaendigkeit;
