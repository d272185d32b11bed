//! The scenario layer's errors, one enum per operation. Each becomes the cause of the
//! [`crate::lab::StageError`] of the stage it ended, or, for the benchmarks, the command's
//! error.

use crate::artifacts::{ArtifactError, CacheError, ProviderError};
use crate::console::ConsoleError;
use crate::lab::{EventWaitError, LabError, NetworkError, StageError};
use crate::vm::VmError;

/// `check inputs`: what cannot work, refused before anything boots.
#[derive(Debug, thiserror::Error)]
pub enum InputError {
    /// The client's disk, or the lab's DHCP configuration, cannot carry the install.
    #[error("{0}")]
    Setup(String),
    /// The artifacts cannot work (a boot script, the image, the console).
    #[error(transparent)]
    Artifacts(#[from] ArtifactError),
}

/// `start network and QEMU`.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    /// The lab's network could not start.
    Network(#[from] NetworkError),
    #[error(transparent)]
    /// The client could not be started.
    Vm(#[from] VmError),
}

/// A stage that drives the installed system (`BootNext → PXE`, `system ready`, `check the
/// system`).
#[derive(Debug, thiserror::Error)]
pub enum SystemError {
    /// Its NVRAM could not be read.
    #[error("cannot read the VM's NVRAM")]
    Nvram(#[from] pxelab_ovmf::VarsError),
    /// A command or a console wait failed.
    #[error(transparent)]
    Console(#[from] ConsoleError),
    /// The host could not power-cycle it (a `BootNext` set from the host).
    #[error(transparent)]
    Vm(#[from] VmError),
    /// The system is not as the protocol and the artifact set say (the message says how).
    #[error("{0}")]
    Check(String),
}

/// Why a benchmark could not be measured.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error(transparent)]
    /// The bench's lab could not be made.
    Lab(#[from] LabError),
    #[error(transparent)]
    /// A stage of the install it measures failed.
    Stage(#[from] StageError),
    #[error(transparent)]
    /// The lab's network could not start.
    Network(#[from] NetworkError),
    #[error(transparent)]
    /// A VM could not be started or driven.
    Vm(#[from] VmError),
    #[error(transparent)]
    /// A console wait or command failed.
    Console(#[from] ConsoleError),
    #[error(transparent)]
    /// A wait on the lab's events failed.
    Wait(#[from] EventWaitError),
    #[error("the benchmark's artifacts")]
    /// Its artifacts could not be had.
    Provider(#[from] ProviderError),
    #[error("the benchmark's fixture")]
    /// Its fixture could not be built.
    Cache(#[from] CacheError),
    #[error("the host's files")]
    /// The host's files (kernel, busybox, GRUB modules) are missing.
    Host(#[from] pxelab_fixtures::FixtureError),
    #[error("the benchmark's files")]
    /// Its files could not be written.
    Io(#[from] std::io::Error),
    #[error("{0}")]
    /// What it measured makes no figure (the message says why).
    Measure(String),
    #[error(transparent)]
    /// The real NFS server it compares with could not start.
    NfsPeer(#[from] crate::jobs::nfs_peer::NfsPeerError),
}
