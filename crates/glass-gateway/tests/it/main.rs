//! Gateway integration tests: a gateway on port 0 driven by hand-built
//! snapshots, against real backends and real clients.

mod balance;
mod faults;
mod grpc;
mod h1_server;
mod h2_server;
mod hostile;
mod http;
mod long;
mod streams;
mod support;
mod tls;
mod websocket;
