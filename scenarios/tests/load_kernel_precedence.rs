//! The grub.cfg chain tries `load-kernel-<mac>.cfg`, then `-<ip>.cfg`, then `-<hostname>.cfg`,
//! then `load-kernel.cfg`; the first per-host file that exists boots (it ends with `boot`).

use std::time::Duration;

use pxelab::artifacts::host_files;
use pxelab::lab::{Lab, PxeConfig};
use pxelab::vm::{NicModel, Rom};
use pxelab_fixtures::pxe_tree::load_kernel_cfg;
use pxelab_fixtures::{initramfs, PxeTree};

const MAC: [u8; 6] = [0x52, 0x54, 0x00, 0xab, 0xcd, 0x01];
const MINUTE: Duration = Duration::from_secs(60);

#[tokio::test]
async fn most_specific_load_kernel_file_boots() {
    let mut lab = Lab::new("most_specific_load_kernel_file_boots").unwrap();
    let tree = lab.cache().get_or_build(&PxeTree { host: host_files(lab.cache()).unwrap() }).unwrap();
    let overlay = lab.dir().join("tftp");
    std::fs::create_dir_all(overlay.join("nixos")).unwrap();
    let config = PxeConfig::new(vec![overlay.clone(), tree.join(PxeTree::ROOT)]).host(
        MAC,
        "192.0.2.10".parse().unwrap(),
        "client1",
    );
    lab.start_network(config).unwrap();

    let files = ["load-kernel-52:54:00:ab:cd:01.cfg", "load-kernel-192.0.2.10.cfg", "load-kernel-client1.cfg"];
    for name in files {
        std::fs::write(overlay.join("nixos").join(name), load_kernel_cfg(name, true)).unwrap();
    }
    let vm = lab.pxe_client("client", MAC, NicModel::VirtioNet, Rom::OvmfNative).unwrap().start().await.unwrap();
    // Each round boots the most specific file left, then removes it and resets the machine.
    for (round, name) in files.iter().enumerate() {
        lab.network().enter_at_grub_menu(&vm, MAC, 4 * MINUTE).await;
        let booted = vm.wait_for_console_text(initramfs::BOOTED_BY, 4 * MINUTE).await.unwrap();
        assert_eq!(booted.groups[0].as_deref(), Some(*name), "round {round}");
        vm.wait_for_console_text(initramfs::SHELL_MARKER, MINUTE).await.unwrap();
        std::fs::remove_file(overlay.join("nixos").join(name)).unwrap();
        vm.reset().await.unwrap();
    }
    lab.network().enter_at_grub_menu(&vm, MAC, 4 * MINUTE).await;
    let booted = vm.wait_for_console_text(initramfs::BOOTED_BY, 4 * MINUTE).await.unwrap();
    assert_eq!(booted.groups[0].as_deref(), Some("load-kernel.cfg"), "the generic file comes last");
}
