//! End-to-end tests: the real hub and CLI binaries against real containers on the local Docker engine.

mod support;

mod agent_socket;
mod attach;
mod auth;
mod copy;
mod dashboard;
mod errors;
mod exec;
mod faults;
mod hardening;
mod hostile;
mod http_api;
mod isolation;
mod lifecycle;
mod local_socket;
mod profiles;
mod remote_engine;
mod restart;
mod schemathesis;
mod security;
mod snapshots;
mod stdin;
mod swarm;
mod tasks;
mod tty;
