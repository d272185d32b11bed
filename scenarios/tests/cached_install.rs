//! A cached install: the first install of a key keeps its disk and NVRAM at the installer's
//! reboot; a second, identical one starts on them and runs only the installed system's
//! stages, its boot the system's first (`InstallOptions::cached_install`).

use pxelab::jobs::{self, InstallOptions};
use pxelab::lab::Lab;
use pxelab_scenarios::error_chain;

#[tokio::test]
async fn a_second_identical_install_starts_on_the_disk_the_first_kept() {
    // A file of this run's own in the installer's directory: a key no other run has.
    let nonce = format!("{:x}", std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos());
    let options = InstallOptions { installer_files: vec![("pxelab-test-nonce".into(), nonce)], cached_install: true, ..InstallOptions::default() };

    let mut first = Lab::new("a_second_identical_install_starts_on_the_disk_the_first_kept-1").unwrap();
    let (report, vm) = jobs::install(&mut first, &options).await.unwrap_or_else(|e| panic!("{}", error_chain(&e)));
    println!("{}", report.stages.table());
    let stages: Vec<String> = report.stages.durations().iter().map(|(s, _)| s.clone()).collect();
    assert!(stages.iter().any(|s| s == "installer: unpack image") && stages.iter().any(|s| s == "save the installed disk"), "{stages:?}");
    let kept = report.facts.installed_by.strip_prefix("this run's install, its disk kept in ").unwrap_or_else(|| panic!("{report:?}")).to_owned();
    let entry = std::path::PathBuf::from(&kept);
    assert!(entry.join("disk.qcow2").is_file() && entry.join("OVMF_VARS.fd").is_file(), "{kept}");
    // The first system writes on its disk: none of it reaches the kept one.
    vm.succeed("echo first > /root/written-by-the-first && sync").await.unwrap();
    let first_entry = report.facts.first_boot_entry.clone();
    drop(vm);

    let mut second = Lab::new("a_second_identical_install_starts_on_the_disk_the_first_kept-2").unwrap();
    let (report, vm) = jobs::install(&mut second, &options).await.unwrap_or_else(|e| panic!("{}", error_chain(&e)));
    println!("{}", report.stages.table());
    let stages: Vec<String> = report.stages.durations().iter().map(|(s, _)| s.clone()).collect();
    assert!(stages.iter().any(|s| s == "start network and QEMU on the cached install"), "{stages:?}");
    assert!(!stages.iter().any(|s| s.starts_with("installer:") || s.starts_with("TFTP") || s == "firmware → DHCP"), "nothing of the install ran: {stages:?}");
    assert_eq!(report.facts.installed_by, format!("the cached install {kept}"));
    // The installer's NVRAM entry booted the kept disk, and nothing was asked of the network.
    assert_eq!(report.facts.first_boot_entry, first_entry);
    assert!(report.facts.firmware_booted.contains("NixOS (pxelab fixture)"), "{:?}", report.facts);
    assert_eq!(report.facts.network_boot_after_reboot, 0);
    assert_eq!(report.facts.hostname, "nixos-pxe-1");
    vm.fail("test -e /root/written-by-the-first").await.unwrap();
    drop(vm);
    std::fs::remove_dir_all(&entry).unwrap();
    let _ = std::fs::remove_file(entry.with_extension("lock"));
}
