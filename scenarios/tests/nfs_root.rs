//! PXE → GRUB → kernel + initramfs → DHCP option 17 → read-only NFSv3 root with a tmpfs
//! overlay → the NFS root's own init, served by the lab (portmapper, MOUNT, NFS).

use std::path::Path;
use std::time::Duration;

use pxelab::artifacts::host_files;
use pxelab::lab::{Lab, PxeConfig};
use pxelab::vm::{NicModel, Rom, Vm};
use pxelab_fixtures::nfs_root::NFS_ROOT_MARKER;
use pxelab_fixtures::{initramfs, install, NfsRoot, PxeTree};
use pxelab_scenarios::write_pseudo_random;
use sha2::{Digest, Sha256};

const MINUTE: Duration = Duration::from_secs(60);
const EXPORT: &str = "/srv/nixos/nfsroot";

/// A lab exporting the fixture NFS root under a per-test layer (`<lab>/nfs-top`).
fn nfs_lab(test: &str) -> (Lab, std::path::PathBuf, std::path::PathBuf) {
    let lab = Lab::new(test).unwrap();
    let host = host_files(lab.cache()).unwrap();
    let tree = lab.cache().get_or_build(&PxeTree { host: host.clone() }).unwrap();
    let base = lab.cache().get_or_build(&NfsRoot { host }).unwrap().join(NfsRoot::ROOT);
    let top = lab.dir().join("nfs-top");
    std::fs::create_dir_all(top.join("data")).unwrap();
    let mut lab = lab;
    let config = PxeConfig::new(vec![tree.join(PxeTree::ROOT)]).nfs_root(EXPORT, vec![top.clone(), base.clone()]);
    lab.start_network(config).unwrap();
    (lab, top, base)
}

async fn boot_into_nfs_root(lab: &Lab, vm: &Vm, mac: [u8; 6]) {
    lab.network().enter_at_grub_menu(vm, mac, 2 * MINUTE).await;
    vm.wait_for_console_text(r"pxelab-fixture: mounting 192\.0\.2\.1:/srv/nixos/nfsroot \(,vers=3,tcp,rsize=32768,wsize=32768,actimeo=600\) read-only", 4 * MINUTE)
        .await
        .unwrap();
    vm.wait_for_console_text(&regex::escape(install::NFS_SETUP_MARKER), MINUTE).await.unwrap();
    vm.wait_for_console_text(NFS_ROOT_MARKER, MINUTE).await.unwrap();
    vm.wait_for_console_text(initramfs::SHELL_MARKER, MINUTE).await.unwrap();
}

fn sha256_hex(path: &Path) -> String {
    hex::encode(Sha256::digest(std::fs::read(path).unwrap()))
}

#[tokio::test]
async fn nfs_root_boots_reads_and_stays_read_only() {
    let (lab, top, base) = nfs_lab("nfs_root_boots_reads_and_stays_read_only");
    let big = top.join("data/big.bin");
    write_pseudo_random(&big, 100 * 1024 * 1024).unwrap();
    let mac = [0x52, 0x54, 0x00, 0x4e, 0x46, 0x01];
    let vm = lab.pxe_client("client", mac, NicModel::VirtioNet, Rom::OvmfNative).unwrap().start().await.unwrap();
    boot_into_nfs_root(&lab, &vm, mac).await;

    // (a) the NFS root's init runs commands; the root is the overlay over NFS.
    assert!(vm.succeed("cat /etc/os-release").await.unwrap().contains("NAME=pxelab-fixture"));
    let mounts = vm.succeed("cat /proc/mounts").await.unwrap();
    assert!(mounts.contains("192.0.2.1:/srv/nixos/nfsroot /run/nfsroot nfs ro,"), "{mounts}");
    assert!(mounts.lines().any(|l| l.starts_with("overlay / overlay ")), "{mounts}");

    // The harness's host answers ICMP echo (and ARP, or no packet would have reached it).
    let ping = vm.succeed("ping -c 1 -W 5 192.0.2.1").await.unwrap();
    assert!(ping.contains("1 packets received"), "{ping}");

    // A client given fixed ports (no portmapper) mounts the export too; the root mount above
    // had no ports and so asked the portmapper for MOUNT's and NFS's.
    vm.succeed("mkdir -p /mnt/fixed && mount -t nfs -o ro,nolock,vers=3,tcp,port=2049,mountport=2049,mountproto=tcp,addr=192.0.2.1 192.0.2.1:/srv/nixos/nfsroot /mnt/fixed")
        .await
        .unwrap();
    assert!(vm.succeed("cat /mnt/fixed/etc/os-release").await.unwrap().starts_with("NAME=pxelab-fixture"));
    assert!(vm.execute("mount -t nfs -o ro,nolock,vers=3,tcp,addr=192.0.2.1 192.0.2.1:/srv/other /mnt/fixed").await.unwrap().0 != 0, "only the export is mountable");

    // (b) 100 MiB read over NFS arrive intact.
    let sum = vm.succeed("sha256sum /data/big.bin").await.unwrap();
    assert_eq!(sum.split_whitespace().next(), Some(sha256_hex(&big).as_str()));

    // (c) the NFS mount refuses writes; the overlay takes them; the host trees are untouched.
    let (status, output) = vm.execute("echo x > /run/nfsroot/etc/new-file").await.unwrap();
    assert_ne!(status, 0);
    assert!(output.contains("Read-only file system"), "{output}");
    assert_eq!(vm.succeed("echo hello > /etc/written && cat /etc/written").await.unwrap(), "hello");
    assert_eq!(vm.succeed("echo changed >> /etc/os-release && tail -n 1 /etc/os-release").await.unwrap(), "changed");
    for layer in [&top, &base] {
        assert!(!layer.join("etc/written").exists());
    }
    assert_eq!(std::fs::read_to_string(base.join("etc/os-release")).unwrap(), "NAME=pxelab-fixture\nID=pxelab\n");
}

#[tokio::test]
async fn two_clients_mount_the_same_export() {
    let (lab, top, _) = nfs_lab("two_clients_mount_the_same_export");
    std::fs::write(top.join("data/greeting"), "hello from the shared export\n").unwrap();
    let macs = [[0x52, 0x54, 0x00, 0x4e, 0x46, 0x10], [0x52, 0x54, 0x00, 0x4e, 0x46, 0x11]];
    let mut vms = Vec::new();
    for (name, mac) in ["one", "two"].iter().zip(macs) {
        vms.push(lab.pxe_client(name, mac, NicModel::VirtioNet, Rom::OvmfNative).unwrap().start().await.unwrap());
    }
    // Both at once: GRUB's countdown runs on each.
    tokio::join!(boot_into_nfs_root(&lab, &vms[0], macs[0]), boot_into_nfs_root(&lab, &vms[1], macs[1]));
    for vm in &vms {
        assert_eq!(vm.succeed("cat /data/greeting").await.unwrap(), "hello from the shared export");
        vm.succeed(&format!("echo {} > /tmp/me", vm.name())).await.unwrap();
    }
    for vm in &vms {
        assert_eq!(vm.succeed("cat /tmp/me").await.unwrap(), vm.name(), "each client has its own overlay");
    }
}
