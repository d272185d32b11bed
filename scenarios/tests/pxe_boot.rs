//! PXE boot end to end on the lab's own network: firmware DHCP → TFTP of GRUB → the
//! protocol's grub.cfg chain → load-kernel.cfg → Debian kernel + initramfs over TFTP.

use std::time::Duration;

use pxelab::artifacts::host_files;
use pxelab::lab::{Lab, PxeConfig};
use pxelab::vm::{NicModel, Rom};
use pxelab_fixtures::{initramfs, PxeTree};

const MAC: [u8; 6] = [0x52, 0x54, 0x00, 0x12, 0x34, 0x56];
const MINUTE: Duration = Duration::from_secs(60);

async fn boots_the_protocol_chain(test: &str, model: NicModel, rom: Rom) {
    let mut lab = Lab::new(test).unwrap();
    let host = host_files(lab.cache()).unwrap();
    let tree = lab.cache().get_or_build(&PxeTree { host: host.clone() }).unwrap();
    lab.start_network(PxeConfig::new(vec![tree.join(PxeTree::ROOT)])).unwrap();
    let vm = lab.pxe_client("client", MAC, model, rom).unwrap().start().await.unwrap();
    let net = lab.network();

    let lease = net.wait_for_dhcp_lease(MAC, 2 * MINUTE).await.unwrap();
    assert_eq!(lease.arch, Some(7), "UEFI x86-64 firmware");
    assert_eq!(lease.boot_file, "nixos/bootx64.efi");
    net.wait_for_tftp_transfer(MAC, "nixos/bootx64.efi", 2 * MINUTE).await.unwrap();
    net.enter_at_grub_menu(&vm, MAC, 2 * MINUTE).await;
    vm.wait_for_console_text(r"load-kernel\.cfg: loading kernel \(tftp[^)]*\)/?nixos/bzImage", 2 * MINUTE).await.unwrap();
    let kernel = net.wait_for_tftp_transfer(MAC, "nixos/bzImage", 3 * MINUTE).await.unwrap();
    assert_eq!(kernel.bytes, std::fs::metadata(&host.kernel).unwrap().len());
    vm.wait_for_console_text("pxelab-fixture: booted by load-kernel.cfg", 3 * MINUTE).await.unwrap();
    vm.wait_for_console_text(initramfs::SHELL_MARKER, MINUTE).await.unwrap();
    assert_eq!(vm.succeed("uname -r").await.unwrap(), host.kernel_version);
}

#[tokio::test]
async fn ovmf_native_pxe_boots_the_protocol_chain() {
    boots_the_protocol_chain("ovmf_native_pxe_boots_the_protocol_chain", NicModel::VirtioNet, Rom::OvmfNative).await;
}

#[tokio::test]
async fn ipxe_rom_boots_the_protocol_chain() {
    boots_the_protocol_chain("ipxe_rom_boots_the_protocol_chain", NicModel::VirtioNet, Rom::Ipxe).await;
}
