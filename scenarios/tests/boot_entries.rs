//! Boot entries piling up across reinstalls (reported against Ironic). Each reinstall here is
//! turned to the network as a BMC turns one (`ipmitool chassis bootdev pxe`): the host sets
//! `BootNext` in the powered-off machine's NVRAM. The NVRAM is then read from the host: the
//! fixture's installer replaces its entry, so three reinstalls leave one; with its
//! `pxelab-pile-boot-entries` switch it adds one at each activation, and the check of the
//! installed system names the duplicates. The first install is a cached one
//! ([`InstallOptions::cached_install`]): what is tested is the reinstalls.

use pxelab::jobs::{self, InstallOptions, NetworkTurn};
use pxelab::lab::Lab;
use pxelab_scenarios::error_chain;

/// The installed systems' entries in NVRAM (a disk partition's loader), read from the host.
fn os_entries(vm: &pxelab::vm::Vm) -> Vec<String> {
    let entries = vm.var_store().boot_entries().unwrap();
    entries.options.iter().filter(|o| o.path.starts_with("HD(")).map(|o| format!("Boot{:04X} {} {}", o.number, o.description, o.path)).collect()
}

#[tokio::test]
async fn three_reinstalls_leave_one_boot_entry() {
    let mut lab = Lab::new("three_reinstalls_leave_one_boot_entry").unwrap();
    let options = InstallOptions { cached_install: true, ..InstallOptions::default() };
    let (_, mut vm) = jobs::install(&mut lab, &options).await.unwrap_or_else(|e| panic!("{}", error_chain(&e)));
    assert_eq!(os_entries(&vm).len(), 1, "{:?}", os_entries(&vm));
    for round in 1..=3 {
        let before = lab.network().events().mark();
        let (report, again) = jobs::reinstall_by(&lab, vm, &options, NetworkTurn::HostBootNext).await.unwrap_or_else(|e| panic!("reinstall {round}: {}", error_chain(&e)));
        vm = again;
        // The reinstall went through the network (the host's BootNext), then booted the disk.
        assert!(lab.network().network_boot_requests_after(options.client.mac, before) > 0, "reinstall {round} booted the network");
        assert_eq!(report.facts.network_boot_after_reboot, 0, "reinstall {round}: the disk booted after it");
        let entries = os_entries(&vm);
        assert_eq!(entries.len(), 1, "reinstall {round} left {entries:?}");
        assert!(entries[0].ends_with("NixOS (pxelab fixture) HD(1,GPT)/\\EFI\\pxelab\\grubx64.efi"), "{entries:?}");
    }
}

#[tokio::test]
async fn an_installer_that_piles_up_boot_entries_is_named() {
    let mut lab = Lab::new("an_installer_that_piles_up_boot_entries_is_named").unwrap();
    let options = InstallOptions { installer_files: vec![("pxelab-pile-boot-entries".into(), String::new())], cached_install: true, ..InstallOptions::default() };
    let (_, vm) = jobs::install(&mut lab, &options).await.unwrap_or_else(|e| panic!("{}", error_chain(&e)));
    let first = os_entries(&vm);
    assert_eq!(first.len(), 1, "{first:?}");
    let err = match jobs::reinstall_by(&lab, vm, &options, NetworkTurn::HostBootNext).await {
        Ok(_) => panic!("a reinstall that added a second entry for the same loader passed"),
        Err(e) => e,
    };
    let text = error_chain(&err);
    println!("{text}");
    assert_eq!(err.stage, "check the system", "{text}");
    let number = first[0].split_whitespace().next().unwrap();
    assert!(text.contains("NVRAM holds 2 boot entries for one loader, HD(1,GPT)/\\EFI\\pxelab\\grubx64.efi: "), "{text}");
    assert!(text.contains(&format!("{number} \"NixOS (pxelab fixture)\"")), "the first install's entry, {number}, named: {text}");
    assert!(text.contains("efibootmgr -b #### -B"), "{text}");
}
