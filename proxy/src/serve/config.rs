//! The `kvmux serve` configuration file.
