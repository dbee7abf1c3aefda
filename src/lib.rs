//! Berth: a control plane for shared compute, built as a Cloudflare Worker.
//!
//! `domain`, `auth`, `db` and `http` are plain Rust and compile and test natively;
//! `edge` is the thin wasm32-only adapter to the Workers runtime.

pub mod auth;
pub mod collections;
pub mod db;
pub mod domain;
pub mod engine;
pub mod http;

#[cfg(target_arch = "wasm32")]
mod edge;
