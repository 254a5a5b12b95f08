//! The crate's tests that steer its I/O seam (`crate::io`): they fail, panic or crash at
//! every step of the log's operations. Tests of the public API alone are in `tests/`.

mod conformance;
mod every_step;
mod new_directory;
mod panic_poisons;
