//! Cross-crate integration tests live in `tests/`; this library holds what
//! they share: the deterministic scenario simulator.
#![allow(missing_docs)]

pub mod fuzz;
pub mod scenario;
