//! `uefi-boot`: the UEFI disk fixture boots to a shell, without the network.

use std::process::ExitStatus;
use std::time::Duration;

use pxelab_fixtures::{UefiDisk, UefiDiskInit};

use super::{Facts, Report, Stage, UefiBootFacts};
use crate::lab::{Lab, StageError};
use crate::vm::{Disk, DiskFormat};

/// Boot the UEFI disk fixture to a shell, check the kernel version, power off (or leave the
/// shell to the user of a kept lab).
pub async fn uefi_boot(lab: &Lab) -> Result<Report, StageError> {
    let mut stages = lab.stages();
    let host = stages.run(Stage::FindHostFiles, crate::artifacts::host_files_async(lab.cache())).await?;
    let recipe = UefiDisk { host: host.clone(), init: UefiDiskInit::Shell };
    let fixture = stages.run(Stage::BuildFixture, lab.cache().build(recipe)).await?;
    let disk = Disk::Overlay { base: fixture.join(UefiDisk::IMAGE), format: DiskFormat::Raw };
    let mut vm = stages.run(Stage::StartQemu, lab.vm("client").disk(disk, Some(1)).start()).await?;
    stages.run(Stage::FirmwareGrub, vm.wait_for_console_text("pxelab-fixture: GRUB loading", Duration::from_secs(120))).await?;
    stages.run(Stage::KernelShell, vm.wait_for_console_text(UefiDisk::SHELL_MARKER, Duration::from_secs(240))).await?;
    let uname = stages.run(Stage::Uname, vm.succeed("uname -r")).await?;
    if lab.keeps() {
        // The user gets the shell instead of its power-off.
        return Ok(Report::new(stages, Facts::UefiBoot(UefiBootFacts { uname, qemu_exit: None })));
    }
    let exit: ExitStatus = stages
        .run(Stage::PowerOff, async {
            vm.send_line("poweroff -f").await?;
            vm.wait_for_shutdown(Duration::from_secs(60)).await.map_err(Box::<dyn std::error::Error + Send + Sync>::from)
        })
        .await?;
    Ok(Report::new(stages, Facts::UefiBoot(UefiBootFacts { uname, qemu_exit: Some(exit.to_string()) })))
}
