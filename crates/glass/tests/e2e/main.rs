//! End-to-end tests of the glass binary.
