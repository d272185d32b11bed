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
    Network(#[from] NetworkError),
    #[error(transparent)]
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
    /// The system is not as the protocol and the artifact set say (the message says how).
    #[error("{0}")]
    Check(String),
}

/// Why a benchmark could not be measured.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error(transparent)]
    Lab(#[from] LabError),
    #[error(transparent)]
    Stage(#[from] StageError),
    #[error(transparent)]
    Network(#[from] NetworkError),
    #[error(transparent)]
    Vm(#[from] VmError),
    #[error(transparent)]
    Console(#[from] ConsoleError),
    #[error(transparent)]
    Wait(#[from] EventWaitError),
    #[error("the benchmark's artifacts")]
    Provider(#[from] ProviderError),
    #[error("the benchmark's fixture")]
    Cache(#[from] CacheError),
    #[error("the host's files")]
    Host(#[from] pxelab_fixtures::FixtureError),
    #[error("the benchmark's files")]
    Io(#[from] std::io::Error),
    #[error("{0}")]
    Measure(String),
}
