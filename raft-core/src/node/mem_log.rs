//! An in-memory [`super::LogStore`] for tests and examples.
