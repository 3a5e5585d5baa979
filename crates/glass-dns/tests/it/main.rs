//! Integration tests of glass-dns: a server on 127.0.0.1:0 asked by real DNS clients.

mod answers;
mod garbage;
mod rcodes;
mod reference;
mod support;
