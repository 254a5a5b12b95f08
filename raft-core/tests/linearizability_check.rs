//! The linearizability checker's own tests. The checker lives in `sim/` so that the
//! whole-cluster simulation test includes the same module; its unit tests run here too.

#[path = "sim/linearizability.rs"]
mod linearizability;
