//! A conformance suite that any [`super::LogStore`] implementation can run.
