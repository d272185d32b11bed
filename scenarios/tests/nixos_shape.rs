//! The path real upstream artifacts take (install protocol §2 steps 5-6, §6): GRUB boots a
//! kernel with no initrd (`ip=::::::dhcp:: root=/dev/nfs`), the kernel does its own DHCP
//! (IP autoconfiguration) and mounts option 17's root path itself, through the lab's
//! portmapper and MOUNT, with option 17's options. The kernel is built from Debian's
//! linux-source-6.1 as upstream's is configured ([`NixosShapeKernel`]; cached, built once).
//!
//! Then the whole install with the `nixos-shape` flavour, taken as a user's artifact
//! directory (upstream's names, no `pxelab.toml`): unionfs-fuse over the NFS root, the
//! installer's own dhcpcd round, systemd-boot's NVRAM entry, systemd up to a login.

use std::time::Duration;

use pxelab::artifacts::Provider;
use pxelab::jobs::{self, InstallOptions, INSTALL_CLIENT};
use pxelab::lab::{Lab, PxeConfig};
use pxelab_scenarios::error_chain;
use pxelab::services::dhcp::DhcpEventKind;
use pxelab::services::ServiceEvent;
use pxelab::vm::NicModel;
use pxelab_fixtures::nfs_root::NFS_ROOT_MARKER;
use pxelab_fixtures::nixos_shape::VERSION;
use pxelab_fixtures::{HostFiles, NfsRoot, NixosShapeKernel, PxeTree, SerialConsole};

const MINUTE: Duration = Duration::from_secs(60);
const MAC: [u8; 6] = [0x52, 0x54, 0x00, 0x6e, 0x78, 0x01];

/// Upstream's `load-kernel.cfg`: no `initrd` line.
const UPSTREAM_LOAD_KERNEL: &str = "echo \"load-kernel.cfg: loading kernel $prefix/bzImage ...\"\n\
    linux $prefix/bzImage console=ttyS0,115200n8 ip=::::::dhcp:: root=/dev/nfs init=/init\n";

#[tokio::test]
async fn upstream_shaped_kernel_configures_its_ip_and_mounts_its_nfs_root_itself() {
    let host = HostFiles::find().unwrap();
    let mut lab = Lab::new("upstream_shaped_kernel_configures_its_ip_and_mounts_its_nfs_root_itself").unwrap();
    let kernel = lab.cache().get_or_build(&NixosShapeKernel::find().unwrap()).unwrap();
    let tree = lab.cache().get_or_build(&PxeTree { host: host.clone() }).unwrap().join(PxeTree::ROOT);
    let root = lab.cache().get_or_build(&NfsRoot { host }).unwrap().join(NfsRoot::ROOT);
    // The kernel and upstream's load-kernel.cfg over the fixture's GRUB tree.
    let top = lab.dir().join("tftp-top");
    std::fs::create_dir_all(top.join("nixos")).unwrap();
    std::fs::copy(kernel.join(NixosShapeKernel::IMAGE), top.join("nixos/bzImage")).unwrap();
    std::fs::write(top.join("nixos/load-kernel.cfg"), UPSTREAM_LOAD_KERNEL).unwrap();
    lab.start_network(PxeConfig::new(vec![top, tree]).nfs_root("/srv/nixos/nfsroot", vec![root])).unwrap();
    let nic = NicModel::E1000;
    let vm = lab.pxe_client("client", MAC, nic, nic.pxe_rom()).unwrap().start().await.unwrap();

    lab.network().enter_at_grub_menu(&vm, MAC, 4 * MINUTE).await;
    vm.wait_for_console_text(r"IP-Config: Complete:", 4 * MINUTE).await.unwrap();
    let rootserver = vm.wait_for_console_text(r"rootserver=(\S+), rootpath=(\S*)\n", MINUTE).await.unwrap();
    assert_eq!(rootserver.groups[0].as_deref(), Some("192.0.2.1"));
    assert_eq!(rootserver.groups[1].as_deref(), Some("/srv/nixos/nfsroot,vers=3,tcp,rsize=32768,wsize=32768,actimeo=600"), "option 17's options, exactly");
    vm.wait_for_console_text(r"VFS: Mounted root \(nfs filesystem\)", 2 * MINUTE).await.unwrap();
    vm.wait_for_console_text(NFS_ROOT_MARKER, MINUTE).await.unwrap();
    // The firmware's ACK carries option 93 and `PXEClient`; the kernel's IP autoconfiguration
    // sends neither (and there is no initrd whose client could have asked).
    let acks: Vec<(Option<u16>, Option<String>)> = lab
        .network()
        .events()
        .all()
        .into_iter()
        .filter_map(|(_, e)| match e {
            ServiceEvent::Dhcp(d) if d.kind == DhcpEventKind::Ack => Some((d.arch, d.vendor_class)),
            _ => None,
        })
        .collect();
    assert!(matches!(&acks[..], [(Some(7), Some(pxe)), (None, None)] if pxe.starts_with("PXEClient")), "the firmware's, then the kernel's own: {acks:?}");
}

#[tokio::test]
async fn nixos_shape_installs_through_upstreams_path_to_a_systemd_login() {
    let mut lab = Lab::new("nixos_shape_installs_through_upstreams_path_to_a_systemd_login").unwrap();
    let install = jobs::INSTALL_NIXOS_SHAPE.install(&mut lab, InstallOptions::default(), None).await;
    let (report, vm) = install.unwrap_or_else(|e| panic!("{}", error_chain(&e)));
    let facts = &report.facts;
    let (mac, ip, hostname) = INSTALL_CLIENT;

    // Upstream's path, in the console: the kernel's own DHCP and NFS root, the copy-on-write
    // union, and the kernel's e1000 (no virtio-net, no initrd).
    let console = vm.console().text();
    for evidence in [
        "IP-Config: Complete:".into(),
        format!("device=eth0, hwaddr={}, ipaddr={ip}", mac),
        "VFS: Mounted root (nfs filesystem) readonly".into(),
        "union root: unionfs /union fuse.unionfs rw".into(),
        "e1000 0000:".into(),
    ] {
        assert!(console.contains(&evidence), "console lacks {evidence:?}; see {}", vm.console().log_path().display());
    }
    assert!(!console.contains("Unpacking initramfs") && !console.contains("virtio_net"), "no initrd, no virtio-net");
    // Nothing the guest printed is pxelab's but what the lab served it (its DHCP domain): the
    // harness went by upstream's markers alone.
    let ours: Vec<&str> =
        console.lines().filter(|l| l.to_lowercase().replace("pxelab.test", "").contains("pxelab")).collect();
    assert!(ours.is_empty(), "{ours:#?}");

    // The installed system: systemd with no failed unit, the root on LABEL=nixos, systemd-boot
    // first in BootOrder (read from the host), the lab's host name, the image's version.
    assert_eq!(facts.system_state, "running", "{facts:?}");
    assert_eq!(facts.commands_on, "ttyS0 (console login)", "upstream's image has no backdoor");
    assert_eq!((facts.root_fs.as_str(), facts.label_nixos.as_str()), ("/dev/vda2", "/dev/vda2"));
    let entries = vm.var_store().boot_entries().unwrap();
    let first = entries.first().unwrap_or_else(|| panic!("no BootOrder: {entries:?}"));
    assert_eq!(first.description, "Linux Boot Manager", "{entries:?}");
    assert!(first.path.to_lowercase().ends_with(r"\efi\systemd\systemd-bootx64.efi"), "{entries:?}");
    assert!(facts.firmware_booted.contains("Linux Boot Manager"), "{facts:?}");
    assert_eq!((facts.hostname.as_str(), facts.image_version.as_str()), (hostname, VERSION));
    assert_eq!(facts.network_boot_after_reboot, 0, "the disk booted (its own DHCP may follow: upstream's has networking.useDHCP)");
    assert!(vm.succeed("cat /proc/cmdline").await.unwrap().contains("root=PARTUUID="));
    assert_eq!(vm.succeed("bootctl is-installed").await.unwrap(), "yes");
}

/// Upstream's NIC mistake (protocol §6): a virtio client with upstream's kernel never gets the
/// kernel's DHCP. pxelab says so a minute after the kernel's download, naming the NIC, rather
/// than at the stage's timeout.
#[tokio::test]
async fn a_virtio_client_with_upstreams_kernel_fails_fast_naming_its_nic() {
    let mut lab = Lab::new("a_virtio_client_with_upstreams_kernel_fails_fast_naming_its_nic").unwrap();
    let hardware = jobs::Hardware { nic: Some(NicModel::VirtioNet), ..jobs::Hardware::default() };
    let options = InstallOptions { provider: Provider::NixosShape { services: None, console: SerialConsole::UPSTREAM }, hardware, ..InstallOptions::default() };
    let err = match jobs::install(&mut lab, &options).await {
        Ok(_) => panic!("a kernel without virtio-net installed over a virtio NIC"),
        Err(e) => e,
    };
    assert_eq!(err.stage, "kernel → NFS root", "{}", error_chain(&err));
    assert!(err.elapsed < Duration::from_secs(90), "{:?}", err.elapsed);
    let text = error_chain(&err);
    assert!(text.contains("virtio-net-pci NIC") && text.contains("e1000"), "{text}");
}

/// The serial console on another port and speed: grub.cfg's `serial --unit=1 --speed=57600`,
/// the kernel's `console=ttyS1,57600n8` for the installer and the installed system, and a
/// `pxelab.toml` that says so. The harness reads the console on ttyS1 and the firmware apart
/// on ttyS0.
///
/// Its install config is per address: `config-<address>` names the disk, the generic
/// `config` a missing device. The installer's dhcpcd round hands it the address through the
/// hook's own file, so the per-address file wins (upstream's `eval "$(dhcpcd …)"` loses the
/// address with dhcpcd 9: `a_per_address_config_lost_to_dhcpcds_stderr_is_diagnosed`).
#[tokio::test]
async fn nixos_shape_installs_with_its_console_on_ttys1_at_57600() {
    let mut lab = Lab::new("nixos_shape_installs_with_its_console_on_ttys1_at_57600").unwrap();
    let console = SerialConsole { unit: 1, speed: 57_600 };
    let ip = INSTALL_CLIENT.1;
    let installer_files = vec![("config".into(), "rootDevice=/dev/does-not-exist\n".into()), (format!("config-{ip}"), "rootDevice=/dev/vda\n".into())];
    let options = InstallOptions { provider: Provider::NixosShape { services: None, console }, installer_files, ..InstallOptions::default() };
    let (report, vm) = jobs::install(&mut lab, &options).await.unwrap_or_else(|e| panic!("{}", error_chain(&e)));
    assert!(vm.console().text().contains(&format!("Trying /installer/config-{ip}...loading")), "the per-address config read");
    assert_eq!(report.facts.system_state, "running", "{:?}", report.facts);
    assert_eq!(report.facts.commands_on, "ttyS1 (console login)");

    // GRUB, the installer's kernel, the installer and the installed system's login all on
    // ttyS1; the firmware alone on ttyS0.
    let (text, firmware) = (vm.console().text(), vm.firmware_console().text());
    for evidence in ["The highlighted entry will be executed automatically", "IP-Config: Complete:", "<<< NixOS fully automated install >>>", "login: "] {
        assert!(text.contains(evidence), "ttyS1 lacks {evidence:?}; see {}", vm.console().log_path().display());
    }
    assert_eq!(text.matches("Linux version ").count(), 2, "the installer's kernel and the installed one, both on ttyS1");
    assert!(firmware.contains("BdsDxe: starting"), "the firmware writes to ttyS0: {}", vm.firmware_console().log_path().display());
    assert!(!firmware.contains("Linux version") && !firmware.contains("login: "), "no kernel or getty on ttyS0: {firmware}");

    // The installed system's kernel console and its line speed.
    assert!(vm.succeed("cat /proc/cmdline").await.unwrap().contains("console=ttyS1,57600n8"));
    assert_eq!(vm.succeed("cat /sys/class/tty/console/active").await.unwrap(), "ttyS1");
    assert_eq!(vm.succeed("stty -F /dev/ttyS1 speed").await.unwrap(), "57600");
}
