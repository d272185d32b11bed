//! Artifacts a test boots from, and the cache that builds each only once.

mod cache;

pub use cache::{Cache, CacheError};
