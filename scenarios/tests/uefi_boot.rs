//! A UEFI disk boots under OVMF to a shell, runs a command, and powers off.

use pxelab_scenarios::error_chain;
use pxelab::jobs::{self, Facts, InstallOptions};
use pxelab::lab::Lab;
use pxelab_fixtures::{HostFiles, UefiDisk, UefiDiskInit};

#[tokio::test]
async fn uefi_disk_boots_to_a_shell_and_powers_off() {
    let mut lab = Lab::new("uefi_disk_boots_to_a_shell_and_powers_off").unwrap();
    let report = jobs::UEFI_BOOT.run(&mut lab, InstallOptions::default(), None).await.unwrap_or_else(|e| panic!("{}", error_chain(&e)));
    println!("{}", report.stages.table());

    let host = HostFiles::find().unwrap();
    let Facts::UefiBoot(facts) = report.facts else { panic!("{:?}", report.facts) };
    assert_eq!(facts.uname, host.kernel_version, "the guest runs the host's kernel");
    assert_eq!(facts.qemu_exit.as_deref(), Some("exit status: 0"), "QEMU exits cleanly after the guest powers off");

    let console = std::fs::read_to_string(lab.dir().join("client/console.log")).unwrap();
    assert!(console.contains("pxelab-fixture: GRUB loading /vmlinuz"), "GRUB ran from the ESP");

    // The fixture is cached: asking again yields the same entry without rebuilding it.
    let recipe = UefiDisk { host, init: UefiDiskInit::Shell };
    let first = lab.cache().get_or_build(&recipe).unwrap();
    let built_at = std::fs::metadata(first.join(UefiDisk::IMAGE)).unwrap().modified().unwrap();
    let again = lab.cache().get_or_build(&recipe).unwrap();
    assert_eq!(first, again);
    assert_eq!(std::fs::metadata(again.join(UefiDisk::IMAGE)).unwrap().modified().unwrap(), built_at);
}
