//! The scenario layer: what a user's test or `pxelab run` runs on a lab.
//!
//! - [`registry`]: every runnable scenario ([`SCENARIOS`]), by name, for `pxelab list`,
//!   `pxelab run`, `pxelab matrix` and the tests. A new scenario goes there.
//! - [`options`]: what an install varies ([`InstallOptions`], [`Hardware`],
//!   [`InstallFaults`]), defined once for the library and the command line.
//! - [`stage`]: every stage as a [`Stage`], and the install's budgets.
//! - [`mod@install`] and [`install_stages`]: the install, one function per stage;
//!   [`installed`]: installed disks kept in the cache for checks of the installed system.
//! - [`facts`]: what a scenario reports ([`Report`], [`InstallFacts`]).
//! - [`mod@serve`]: the lab alone, for QEMUs the user starts by hand.
//! - [`mod@matrix`] and [`mod@bench`]: artifact sets × scenarios, and the benchmarks.
//! - [`storm`]: many clients booting at once.
//!
//! The layers below ([`crate::lab`], [`crate::vm`], [`crate::services`], [`crate::net`])
//! know no scenario.
//!
//! ```no_run
//! # async fn f() -> Result<(), Box<dyn std::error::Error>> {
//! use pxelab::jobs::{self, InstallOptions};
//!
//! let mut lab = pxelab::lab::Lab::new("my-install")?;      // target/pxelab-runs/my-install
//! let (report, vm) = jobs::install(&mut lab, &InstallOptions::default()).await?;
//! println!("{}", report.stages.table());
//! assert_eq!(report.facts.root_fs, "/dev/vda2");
//! vm.succeed("test -d /etc").await?;
//! # Ok(()) }
//! ```

#![warn(missing_docs)]

pub mod bench;
pub mod error;
pub mod facts;
pub mod install;
pub mod install_stages;
pub mod installed;
pub mod matrix;
pub mod nfs_peer;
pub mod options;
pub mod registry;
pub mod serve;
pub mod stage;
pub mod storm;
mod uefi_boot;

pub use error::{BenchError, InputError, SystemError};
pub use facts::{Facts, InstallFacts, InstallReport, Report, UefiBootFacts};
pub use install::{install, install_default, install_together, reinstall, reinstall_by, NetworkTurn, NFS_EXPORT};
pub use options::{ArtifactArgs, Client, Hardware, InstallFaults, InstallOptions, INSTALL_CLIENT};
pub use registry::{scenario, Scenario, ScenarioError, INSTALL_DEFAULT, INSTALL_NETBOOT_SHAPE, INSTALL_NIXOS_SHAPE, INSTALL_NVME, INSTALL_SECURE_BOOT, SCENARIOS, UEFI_BOOT};
pub use serve::{serve, HandClient};
pub use stage::{Budgets, Stage};
pub use uefi_boot::uefi_boot;
