//! berth's integration tests, in one binary so the suite links once.
//!
//! Each module drives the real `berth` binary (and real clients: skopeo,
//! podman, containerd, docker, kubectl) over loopback; `common` is the harness
//! they share.

mod common;

mod api;
mod auth;
mod cache;
mod conformance;
mod crash;
mod deploy;
mod doctor;
mod hostile;
mod image;
mod interop;
mod interop_auth;
mod interop_containerd;
mod interop_docker;
mod lifecycle;
mod login;
mod pull_credential;
mod scale_out;
mod secret;
mod tls;
