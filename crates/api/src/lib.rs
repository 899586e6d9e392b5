//! berth-api: berth's own HTTP API (under `/berth/v1/`), beside the OCI
//! Distribution API.
//!
//! Each endpoint's path and JSON bodies are defined here once, and both the
//! server that answers and the clients that ask (the credential provider,
//! the CLI) use these types, so the two sides cannot drift apart.

pub mod admin;
pub mod pull_credentials;
