#![forbid(unsafe_code)]
//! rpiimg library.
