//! iPXE's `exit` and the firmware's boot order (reported against provisioning stacks that
//! end a "nothing to install, boot the local disk" script with `exit`): a plain `exit` returns
//! status 0, which UEFI firmware takes as a boot option that succeeded, so OVMF opens its boot
//! manager (`UiApp`) and waits there, where the machine should have gone on to its disk.
//! `exit 1` makes the firmware try the next entry of BootOrder.
//!
//! The client's NVRAM orders its network entry first and its disk second, set from the host
//! as a BMC does ([`Lab::restart_booting`]). Its firmware's PXE fetches iPXE (Debian 13's, [`DebianFile::IPXE_EFI_TRIXIE`]:
//! Debian 12's cannot return to OVMF 2022.11) by TFTP; iPXE asks DHCP again and gets the
//! script by HTTP. The waits add up to 7 minutes and the download of iPXE (three tries of
//! 40 s at most) to 2, within nextest's 10 for a scenario.

use std::time::Duration;

use pxelab::artifacts::host_files;
use pxelab::lab::{Lab, PxeConfig};
use pxelab::vm::{Cable, Disk, DiskFormat, Nic, NicModel, Rom, Vm};
use pxelab_fixtures::{DebianFile, UefiDisk, UefiDiskInit};
use pxelab_ovmf::BootTarget;
use pxelab_scenarios::error_chain;

const MAC: [u8; 6] = [0x52, 0x54, 0x00, 0x12, 0x34, 0x5c];
const MINUTE: Duration = Duration::from_secs(60);
/// The script iPXE is given.
const SCRIPT: &str = "local.ipxe";

/// A client booting its network entry first, then its disk (the UEFI disk fixture, which
/// boots to a shell), with iPXE's script ending in `exit_line`; and its disk's boot entry.
async fn client(test: &str, exit_line: &str) -> (Lab, Vm, u16) {
    let mut lab = Lab::new(test).unwrap();
    let host = host_files(lab.cache()).unwrap();
    let ipxe = lab.cache().get_or_build(&DebianFile::IPXE_EFI_TRIXIE).unwrap();
    let disk = lab.cache().get_or_build(&UefiDisk { host, init: UefiDiskInit::Shell }).unwrap();
    let boot = lab.dir().join("boot");
    std::fs::create_dir_all(&boot).unwrap();
    std::fs::copy(ipxe.join(DebianFile::IPXE_EFI_TRIXIE.file_name()), boot.join("ipxe.efi")).unwrap();
    let script = format!("#!ipxe\necho pxelab: no install is due for this machine: on to its disk\n{exit_line}\n");
    std::fs::write(boot.join(SCRIPT), script).unwrap();
    let mut config = PxeConfig::new(vec![boot]).http();
    for (_, file) in &mut config.dhcp.boot_files {
        *file = "ipxe.efi".into();
    }
    config.dhcp.http_boot.ipxe_script = Some(SCRIPT.into());
    lab.start_network(config).unwrap();
    // No bootindex on either device: OVMF then keeps the BootOrder the host writes.
    let cable = Cable::Switch(lab.network().plug(MAC).unwrap());
    let vm = lab
        .vm("client")
        .nic(Nic { model: NicModel::VirtioNet, mac: MAC.into(), rom: Rom::OvmfNative, bootindex: None, cable })
        .disk(Disk::Overlay { base: disk.join(UefiDisk::IMAGE), format: DiskFormat::Raw }, None)
        .fail_on(lab.network().failure_watch())
        .start()
        .await
        .unwrap();
    // The firmware writes its boot entries before it tries the first.
    vm.firmware_console().wait_for_console_text(r"BdsDxe: (loading|starting) Boot", MINUTE).await.unwrap();
    let disk = BootTarget::Disk.find(&vm.var_store().boot_entries().unwrap()).expect("the disk's entry").number;
    let vm = lab.restart_booting(vm, &[BootTarget::PxeV4, BootTarget::Disk]).await.unwrap();
    (lab, vm, disk)
}

/// The fix: `exit 1` makes the firmware go on to the disk, which boots to its shell.
#[tokio::test]
async fn an_ipxe_script_ending_in_exit_1_falls_through_to_the_disk() {
    let (lab, vm, disk) = client("an_ipxe_script_ending_in_exit_1_falls_through_to_the_disk", "exit 1").await;
    let script = lab.network().wait_for_http_request(MAC, &format!("/{SCRIPT}"), 2 * MINUTE).await.unwrap();
    assert_eq!(script.served.status, 200);
    lab.wait_for_boot_entry(&vm, disk, 2 * MINUTE).await.unwrap_or_else(|e| panic!("{}", error_chain(&*e)));
    vm.wait_for_console_text(UefiDisk::SHELL_MARKER, 2 * MINUTE).await.unwrap();
    assert!(vm.firmware_console().text().contains("Could not boot image: Error 0x00000001"), "iPXE returned the script's status");
}

/// The bug: a plain `exit` returns 0, and the firmware opens its boot manager instead of
/// booting the disk. The wait for the disk's entry fails at the firmware's `UiApp` line,
/// naming the script, its `exit` and the fix, not at the wait's timeout.
#[tokio::test]
async fn an_ipxe_script_ending_in_exit_opens_the_firmwares_boot_manager_and_is_named() {
    let (lab, vm, disk) = client("an_ipxe_script_ending_in_exit_opens_the_firmwares_boot_manager_and_is_named", "exit").await;
    lab.network().wait_for_http_request(MAC, &format!("/{SCRIPT}"), 2 * MINUTE).await.unwrap();
    let started = std::time::Instant::now();
    let err = match lab.wait_for_boot_entry(&vm, disk, 2 * MINUTE).await {
        Ok(()) => panic!("the firmware went on to the disk after iPXE's `exit`"),
        Err(e) => error_chain(&*e),
    };
    println!("{err}");
    assert!(started.elapsed() < MINUTE, "at the firmware's line, not the wait's timeout: {:?}", started.elapsed());
    assert!(err.contains(r#"the firmware opened its boot manager (Boot0000 "UiApp", a menu that waits for a key) when Boot"#), "{err}");
    let script = format!("iPXE's script http://192.0.2.1/{SCRIPT} ended with `exit` on line 3, which returns status 0");
    assert!(err.contains(&script), "{err}");
    assert!(err.contains("end the script with `exit 1`"), "{err}");
}
