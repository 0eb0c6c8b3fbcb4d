//! tug's view of the Kubernetes API, without I/O: which resources exist
//! ([`registry`]), label selectors ([`selector`]), and the small formats the
//! API speaks (timestamps, ages: [`format`]).
//!
//! Start at [`registry::RESOURCES`], the one table every other part of tug
//! reads to learn a resource's group, version, kind, scope, verbs, short
//! names and categories.

pub mod convert;
pub mod defaults;
pub mod format;
pub mod join;
pub mod jsonpath;
pub mod limits;
pub mod quantity;
pub mod quota;
pub mod registry;
pub mod selector;
