//! Two clients on one segment get their declared addresses and host names, and each boots
//! the `load-kernel-<hostname>.cfg` that names it.

use std::time::Duration;

use pxelab::artifacts::host_files;
use pxelab::lab::{Lab, PxeConfig};
use pxelab::vm::{NicModel, Rom};
use pxelab_fixtures::pxe_tree::load_kernel_cfg;
use pxelab_fixtures::{initramfs, PxeTree};

const MINUTE: Duration = Duration::from_secs(60);

#[tokio::test]
async fn two_clients_get_their_declared_addresses_and_names() {
    let clients = [
        ("alpha", [0x52, 0x54, 0x00, 0x00, 0x0a, 0x01], "192.0.2.21"),
        ("beta", [0x52, 0x54, 0x00, 0x00, 0x0b, 0x02], "192.0.2.22"),
    ];
    let mut lab = Lab::new("two_clients_get_their_declared_addresses_and_names").unwrap();
    let tree = lab.cache().get_or_build(&PxeTree { host: host_files(lab.cache()).unwrap() }).unwrap();
    let overlay = lab.dir().join("tftp");
    std::fs::create_dir_all(overlay.join("nixos")).unwrap();
    let mut config = PxeConfig::new(vec![overlay.clone(), tree.join(PxeTree::ROOT)]);
    for (name, mac, ip) in clients {
        config = config.host(mac, ip.parse().unwrap(), name);
        let file = format!("load-kernel-{name}.cfg");
        std::fs::write(overlay.join("nixos").join(&file), load_kernel_cfg(&file, true)).unwrap();
    }
    lab.start_network(config).unwrap();

    let mut vms = Vec::new();
    for (name, mac, _) in clients {
        vms.push(lab.pxe_client(name, mac, NicModel::VirtioNet, Rom::OvmfNative).unwrap().start().await.unwrap());
    }
    // Both at once: GRUB's countdown runs on each.
    tokio::join!(lab.network().enter_at_grub_menu(&vms[0], clients[0].1, 2 * MINUTE), lab.network().enter_at_grub_menu(&vms[1], clients[1].1, 2 * MINUTE));
    for ((name, mac, ip), vm) in clients.iter().zip(&vms) {
        let lease = lab.network().wait_for_dhcp_lease(*mac, 2 * MINUTE).await.unwrap();
        assert_eq!(lease.ip.to_string(), *ip);
        assert_eq!(lease.hostname.as_deref(), Some(*name));
        let shown = vm.wait_for_console_text(r"efinet\d+ ([0-9a-f:]{17}) (\d+\.\d+\.\d+\.\d+)\n", 2 * MINUTE).await.unwrap();
        assert_eq!(shown.groups[1].as_deref(), Some(*ip), "GRUB on {name} got its address");
        let booted = vm.wait_for_console_text(initramfs::BOOTED_BY, 4 * MINUTE).await.unwrap();
        assert_eq!(booted.groups[0].as_deref(), Some(format!("load-kernel-{name}.cfg").as_str()));
        assert_eq!(lab.network().lease_of(*mac).map(|ip| ip.to_string()).as_deref(), Some(*ip));
    }
}
