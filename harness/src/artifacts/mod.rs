//! Artifacts a test boots from: where they come from, and the cache that builds or unpacks
//! each only once.

mod cache;
mod check;
pub mod ipxe;
mod provider;
mod prune;
mod system;

pub use cache::{content_key, lock_exclusive, Cache, CacheError};
pub use check::{check, check_netboot, ArtifactError};
pub use provider::{host_files, host_files_async, ArtifactSet, Provider, ProviderError, NETBOOT_SCRIPT};
pub use prune::{mark_used, CacheEntry, CacheListing};
pub use system::{InstalledSystem, Login, SystemFileError, DHCP_HOSTNAME, SYSTEM_FILE, UPSTREAM_HOSTNAME};

/// Run `work` on a blocking thread, off the async runtime that carries the VMs' network and
/// consoles (a build takes minutes, hashing an image seconds); its panic goes on in the caller.
pub(crate) async fn off_runtime<T: Send + 'static>(work: impl FnOnce() -> T + Send + 'static) -> T {
    match tokio::task::spawn_blocking(work).await {
        Ok(done) => done,
        Err(e) => std::panic::resume_unwind(e.into_panic()),
    }
}
