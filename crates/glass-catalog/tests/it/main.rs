//! Catalog integration tests.
