//! `kvmux serve`: the switch itself.

// Nothing calls these yet: the proxy that uses them lands separately.
#![allow(dead_code)]

pub mod config;
pub mod hotkeys;
