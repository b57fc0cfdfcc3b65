//! Test harness for real peers.
