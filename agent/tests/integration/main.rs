//! Integration tests of the agent library: real processes, and real sessions with an in-process TLS hub.

mod binary;
mod hub;
mod link;
mod pty;
mod setup;
mod support;
mod tasks;
