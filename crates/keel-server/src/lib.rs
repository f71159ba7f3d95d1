//! The Keel broker: connections, request handlers, controller decisions, configs and the
//! HTTP port. The only crate that opens sockets.

pub mod actors;
pub mod broker;
pub mod cleaner;
pub mod config;
pub mod console;
pub mod controller;
pub mod error;
pub mod groups;
pub mod handlers;
pub mod http;
pub mod lifecycle;
pub mod metrics;
pub mod network;
pub mod partition;
pub mod placement;
pub mod producer_ids;
pub mod server;
pub mod transactions;

pub use config::StaticConfig;
pub use server::{run, ServerOptions};
