//! A fresh client's firmware starts from its snapshot: the first client of a machine saves it
//! where OVMF turns from its blank disk to the network, the next starts from there and goes on
//! to PXE-boot as a powered-on one does. An install's clients start this way unless
//! `InstallOptions::cold_firmware`.

use std::time::Duration;

use pxelab::artifacts::host_files;
use pxelab::lab::{Lab, PxeConfig};
use pxelab::vm::{Disk, FirmwareStart, NicModel, Rom, Snapshot};
use pxelab_fixtures::{initramfs, PxeTree};

const MINUTE: Duration = Duration::from_secs(60);

#[tokio::test]
async fn a_fresh_client_starts_from_the_snapshot_the_first_one_saved() {
    let mut lab = Lab::new("a_fresh_client_starts_from_the_snapshot_the_first_one_saved").unwrap();
    let host = host_files(lab.cache()).unwrap();
    let tree = lab.cache().get_or_build(&PxeTree { host: host.clone() }).unwrap();
    lab.start_network(PxeConfig::new(vec![tree.join(PxeTree::ROOT)])).unwrap();
    // A MAC of this run's own, so that no earlier run's snapshot of the machine exists.
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos().to_be_bytes();
    let mac = [0x52, 0x54, 0x00, 0x5a, nanos[2], nanos[3]];
    let client = |name: &str| {
        let builder = lab.pxe_client(name, mac, NicModel::VirtioNet, Rom::OvmfNative).unwrap();
        builder.disk(Disk::Blank { bytes: 1 << 30 }, Some(1)).from_firmware_snapshot()
    };

    let first = client("first").start().await.unwrap();
    let FirmwareStart::Saved(snapshot) = first.firmware_start().clone() else {
        panic!("the first fresh client did not save a snapshot: {:?}", first.firmware_start());
    };
    struct Remove(Snapshot);
    impl Drop for Remove {
        fn drop(&mut self) {
            let _ = self.0.remove();
        }
    }
    let _cleanup = Remove(snapshot.clone());
    assert!(snapshot.exists());
    // It boots on from where it paused.
    first.wait_for_console_text(r">>Start PXE over IPv4", MINUTE).await.unwrap();
    lab.network().wait_for_dhcp_lease(mac, 2 * MINUTE).await.unwrap();
    drop(first);

    let leases_before = lab.network().events().count();
    let second = client("second").start().await.unwrap();
    assert!(matches!(second.firmware_start(), FirmwareStart::Restored(s) if s.state() == snapshot.state()), "{:?}", second.firmware_start());
    let cmdline = std::fs::read_to_string(second.dir().join("qemu.cmdline")).unwrap();
    assert!(cmdline.contains(&format!("-incoming exec:cat '{}'", snapshot.state().display())), "{cmdline}");
    // The network boot goes on to the kernel's shell as after a power-on.
    second.wait_for_console_text(r">>Start PXE over IPv4", MINUTE).await.unwrap();
    lab.network().wait_for_dhcp_lease_after(mac, leases_before, 2 * MINUTE).await.unwrap();
    lab.network().enter_at_grub_menu(&second, mac, 2 * MINUTE).await;
    second.wait_for_console_text("pxelab-fixture: booted by load-kernel.cfg", 3 * MINUTE).await.unwrap();
    second.wait_for_console_text(initramfs::SHELL_MARKER, MINUTE).await.unwrap();
    assert_eq!(second.succeed("uname -r").await.unwrap(), host.kernel_version);
}
