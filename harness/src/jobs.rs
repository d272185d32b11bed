//! Runnable scenarios: what `pxelab run <name>` does, stage by stage.

use std::process::ExitStatus;
use std::time::Duration;

use pxelab_fixtures::{HostFiles, UefiDisk, UefiDiskInit};

use crate::lab::{Lab, StageError, Stages};
use crate::vm::{Disk, DiskFormat};

/// A scenario `pxelab run` can run.
#[derive(Debug, Clone, Copy)]
pub struct Job {
    pub name: &'static str,
    pub about: &'static str,
}

/// Every runnable scenario.
pub const JOBS: &[Job] = &[Job {
    name: "uefi-boot",
    about: "Boot the UEFI disk fixture (OVMF → GRUB → Debian kernel → busybox shell), run `uname -r`, power off",
}];

/// What a finished job reports.
#[derive(Debug)]
pub struct Report {
    pub stages: Stages,
    /// Facts the job read from the guest, as `(what, value)`.
    pub facts: Vec<(&'static str, String)>,
}

/// Run the job called `name` in `lab`.
pub async fn run(name: &str, lab: &Lab) -> Result<Report, StageError> {
    match name {
        "uefi-boot" => uefi_boot(lab).await,
        other => Err(StageError {
            stage: "select job".into(),
            elapsed: Duration::ZERO,
            source: format!("no job named {other:?}; `pxelab list` shows them").into(),
        }),
    }
}

/// Boot the UEFI disk fixture to a shell, check the kernel version, power off.
pub async fn uefi_boot(lab: &Lab) -> Result<Report, StageError> {
    let mut stages = Stages::new();
    let host = stages.run("find host files", async { HostFiles::find() }).await?;
    let recipe = UefiDisk { host: host.clone(), init: UefiDiskInit::Shell };
    let fixture = stages.run("build fixture", async { lab.cache().get_or_build(&recipe) }).await?;
    let disk = Disk::Overlay { base: fixture.join(UefiDisk::IMAGE), format: DiskFormat::Raw };
    let mut vm = stages.run("start QEMU", lab.vm("client").disk(disk, Some(1)).start()).await?;
    stages
        .run("firmware → GRUB", vm.wait_for_console_text("pxelab-fixture: GRUB loading", Duration::from_secs(120)))
        .await?;
    stages.run("kernel → shell", vm.wait_for_console_text(UefiDisk::SHELL_MARKER, Duration::from_secs(240))).await?;
    let uname = stages.run("uname -r", vm.succeed("uname -r")).await?;
    let exit: ExitStatus = stages
        .run("power off", async {
            vm.send_line("poweroff -f").await?;
            vm.wait_for_shutdown(Duration::from_secs(60)).await.map_err(Box::<dyn std::error::Error + Send + Sync>::from)
        })
        .await?;
    Ok(Report { stages, facts: vec![("uname -r", uname), ("QEMU exit", exit.to_string())] })
}
