//! Domain types. Plain data plus the rules that belong to one type; the rules that need
//! storage live in `efa-registry`.

pub mod adoption;
pub mod catalog;
pub mod event;
pub mod grant;
pub mod ids;
pub mod keyset;
pub mod offer;
pub mod preflight;
pub mod rating;
pub mod release;
pub mod report;
pub mod rollout;
pub mod routing;
pub mod subscription;
