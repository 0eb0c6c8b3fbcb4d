//! tug-store's integration tests, one binary: the conformance suite on both
//! backends, the crash test, and what is particular to SQLite.

mod conformance;
mod crash;
mod harness;
mod sqlite;
mod tls;
