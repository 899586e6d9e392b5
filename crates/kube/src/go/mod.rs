//! Small, exact re-implementations of Go standard-library behaviour that the
//! kubelet and kubectl expose to users: JSON string escaping, URL parsing,
//! `filepath.Match`, `time.Duration` text and go-yaml scalar quoting.
//!
//! Each is written from the documented Go semantics and tested against the
//! same tables Go uses, because "close enough" here means a credential that
//! berth says matches while the kubelet says it does not.

pub(crate) mod duration;
pub(crate) mod glob;
pub(crate) mod json;
pub(crate) mod url;
pub(crate) mod yaml;
