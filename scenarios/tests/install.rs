//! The main job end to end: a blank disk is PXE-installed over the protocol, the client
//! reboots into it through its new NVRAM boot entry (not the network), and the installed
//! system is checked from the inside and from the host.

use std::time::Duration;

use pxelab::artifacts::{Provider, SYSTEM_FILE};
use pxelab::console::ConsoleError;
use pxelab_scenarios::error_chain;
use pxelab::jobs::{self, Hardware, InstallOptions, INSTALL_CLIENT};
use pxelab::lab::Lab;
use pxelab::services::dhcp::DhcpEventKind;
use pxelab::services::ServiceEvent;
use pxelab::vm::{NicModel, Vm};
use pxelab_fixtures::install::IMAGE_VERSION;
use pxelab_fixtures::Compression;

const SECTOR: u64 = 512;
const MIB: u64 = 1024 * 1024;

async fn sectors(vm: &Vm, file: &str) -> u64 {
    vm.succeed(&format!("cat /sys/block/vda/{file}")).await.unwrap().trim().parse().unwrap()
}

#[tokio::test]
async fn pxe_install_then_boot_from_disk() {
    let mut lab = Lab::new("pxe_install_then_boot_from_disk").unwrap();
    let install = jobs::INSTALL_DEFAULT.install(&mut lab, InstallOptions::default(), None).await;
    let (report, vm) = install.unwrap_or_else(|e| panic!("{}", error_chain(&e)));
    println!("{}", report.stages.table());
    let (mac, _, hostname) = INSTALL_CLIENT;

    assert_eq!(report.facts.network_boot_after_reboot, 0, "the disk booted, not the network");
    let entries = vm.var_store().boot_entries().unwrap();
    let first = entries.first().expect("a BootOrder");
    assert_eq!(first.description, "NixOS (pxelab fixture)");
    assert_eq!(first.path, "HD(1,GPT)/\\EFI\\pxelab\\grubx64.efi", "BootOrder starts with the installed loader");

    assert_eq!(vm.succeed("hostname").await.unwrap(), hostname, "host name from DHCP");
    assert_eq!(vm.succeed("cat /etc/pxelab-version").await.unwrap(), IMAGE_VERSION);
    let mounts = vm.succeed("cat /proc/mounts").await.unwrap();
    assert!(mounts.lines().any(|l| l.starts_with("/dev/vda2 / ext4 rw")), "{mounts}");
    assert_eq!(vm.succeed("findfs LABEL=nixos").await.unwrap(), "/dev/vda2");
    assert_eq!(vm.succeed("dd if=/dev/vda bs=512 skip=1 count=1 2>/dev/null | head -c 8").await.unwrap(), "EFI PART");

    // GPT: a 512 MiB ESP from 1 MiB, then ext4 up to 4 GiB before the end of the 8 GiB disk.
    let disk = sectors(&vm, "size").await * SECTOR;
    let (esp_start, esp_size) = (sectors(&vm, "vda1/start").await * SECTOR, sectors(&vm, "vda1/size").await * SECTOR);
    let (root_start, root_size) = (sectors(&vm, "vda2/start").await * SECTOR, sectors(&vm, "vda2/size").await * SECTOR);
    assert_eq!(disk, 8 << 30);
    assert_eq!((esp_start, esp_start + esp_size), (MIB, 512 * MIB));
    assert_eq!(root_start, 512 * MIB);
    let unused = disk - (root_start + root_size);
    assert!((4 << 30..(4 << 30) + MIB).contains(&unused), "{unused} bytes left after the root partition");
    vm.succeed("mount /dev/vda1 /mnt").await.unwrap();
    assert_eq!(vm.succeed("grep '^/dev/vda1 /mnt ' /proc/mounts | cut -d' ' -f3").await.unwrap(), "vfat");
    assert_eq!(vm.succeed("ls -1 /mnt/EFI/pxelab").await.unwrap(), "grub.cfg\ngrubx64.efi\ninitrd\nvmlinuz");

    // A power cycle keeps the disk and the NVRAM: the firmware boots the installed entry again
    // (a fresh NVRAM would find no loader on the disk's fallback path and PXE-boot).
    vm.succeed("umount /mnt; echo kept > /root/written-before; sync").await.unwrap();
    let before = lab.network().events().mark();
    let vm = lab.restart(vm).await.unwrap();
    let booted = vm.wait_for_console_text(r#"BdsDxe: starting Boot[0-9A-F]{4} "([^"]*)""#, Duration::from_secs(120)).await.unwrap();
    assert_eq!(booted.groups[0].as_deref(), Some("NixOS (pxelab fixture)"));
    let login = Provider::Fixture { compression: Compression::Gzip }.provide(lab.cache()).unwrap().system.login;
    vm.wait_for_console_text(&login.prompt, Duration::from_secs(180)).await.unwrap();
    vm.send_line(&login.user).await.unwrap();
    vm.wait_for_console_text(&login.password_prompt, Duration::from_secs(60)).await.unwrap();
    vm.send_line(&login.password).await.unwrap();
    vm.wait_for_console_text(&login.shell_prompt, Duration::from_secs(60)).await.unwrap();
    assert_eq!(vm.succeed("cat /root/written-before").await.unwrap(), "kept");
    assert_eq!(lab.network().network_boot_requests_after(mac, before), 0, "no network boot: the disk booted");
}

/// Per-host files override the generic config (most specific wins), whatever the image's
/// compression; upstream's installer reads the generic file last, so there it would win.
#[tokio::test]
async fn per_host_config_wins_over_generic_and_zstd_image_unpacks() {
    let (mac, _, hostname) = INSTALL_CLIENT;
    let mac = mac.to_string();
    let options = InstallOptions {
        provider: Provider::Fixture { compression: Compression::Zstd },
        installer_files: vec![
            ("config".into(), "rootDevice=/dev/does-not-exist\npartitionSeparator=\n".into()),
            (format!("config-{hostname}"), "rootDevice=/dev/also-wrong\n".into()),
            (format!("config-{mac}"), "rootDevice=/dev/vda\n".into()),
        ],
        ..InstallOptions::default()
    };
    let mut lab = Lab::new("per_host_config_wins_over_generic_and_zstd_image_unpacks").unwrap();
    let (_, vm) = jobs::install(&mut lab, &options).await.unwrap_or_else(|e| panic!("{}", error_chain(&e)));
    assert_eq!(vm.succeed("findfs LABEL=nixos").await.unwrap(), "/dev/vda2");
    let console = std::fs::read_to_string(lab.dir().join("client/console.log")).unwrap();
    for line in [
        format!("Trying /installer/config-{mac}...loading"),
        format!("Trying /installer/config-{hostname}...loading"),
        "Trying /installer/config...loading".to_owned(),
        "Installing NixOS on device /dev/vda".to_owned(),
    ] {
        assert!(console.contains(&line), "console lacks {line:?}");
    }
}

/// A bad configuration fails fast at the stage it breaks, quoting the installer's failure.
#[tokio::test]
async fn bad_root_device_fails_fast_naming_the_stage() {
    let options = InstallOptions {
        installer_files: vec![("config".into(), "rootDevice=/dev/nonexistent\n".into())],
        ..InstallOptions::default()
    };
    let mut lab = Lab::new("bad_root_device_fails_fast_naming_the_stage").unwrap();
    let err = match jobs::install(&mut lab, &options).await {
        Ok(_) => panic!("an install onto /dev/nonexistent succeeded"),
        Err(e) => e,
    };
    assert_eq!(err.stage, "installer: disk label and partitions");
    let console = err.source.downcast_ref::<ConsoleError>().expect("a console error");
    match console {
        ConsoleError::FailFast { line, tail, waited, .. } => {
            assert!(line.contains("Something went wrong, starting interactive shell"), "{line}");
            assert!(tail.contains("/dev/nonexistent is not a block device"), "{tail}");
            assert!(waited.as_secs() < 60, "failed fast, not by timeout");
        }
        other => panic!("expected fail-fast, got {other}"),
    }
}

/// A user's prebuilt artifacts in upstream's layout (`boot-loader/`, `nfsroot/` unpacked,
/// `nixos.tar.gz`, `config`) install like the fixture's own.
#[tokio::test]
async fn prebuilt_artifacts_from_a_directory_install() {
    let mut lab = Lab::new("prebuilt_artifacts_from_a_directory_install").unwrap();
    let fixture = Provider::Fixture { compression: Compression::Gzip }.provide(lab.cache()).unwrap();
    let user = lab.dir().join("user-artifacts");
    std::fs::create_dir_all(user.join("boot-loader")).unwrap();
    for entry in std::fs::read_dir(fixture.tftp_root.join("nixos")).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), user.join("boot-loader").join(entry.file_name())).unwrap();
    }
    std::os::unix::fs::symlink(&fixture.nfs_layers[1], user.join("nfsroot")).unwrap();
    let installer = fixture.nfs_layers[0].join("installer");
    std::fs::copy(installer.join("nixos.tar.gz"), user.join("nixos.tar.gz")).unwrap();
    std::fs::write(user.join("config"), "rootDevice=/dev/vda\npartitionSeparator=\nuseBinaryCache=0\n").unwrap();
    // The busybox system is not upstream's: its pxelab.toml says how it differs.
    std::fs::copy(fixture.nfs_layers[0].parent().unwrap().join(SYSTEM_FILE), user.join(SYSTEM_FILE)).unwrap();

    let options = InstallOptions { provider: Provider::Dir(user), ..InstallOptions::default() };
    let (report, vm) = jobs::install(&mut lab, &options).await.unwrap_or_else(|e| panic!("{}", error_chain(&e)));
    assert_eq!(report.facts.network_boot_after_reboot, 0, "the disk booted");
    assert_eq!(vm.succeed("cat /etc/pxelab-version").await.unwrap(), IMAGE_VERSION);
}

/// An e1000 client (the NIC upstream's kernel has) installs and boots from its disk.
#[tokio::test]
async fn e1000_client_installs() {
    let options = InstallOptions { hardware: Hardware { nic: Some(NicModel::E1000), ..Hardware::default() }, ..InstallOptions::default() };
    let mut lab = Lab::new("e1000_client_installs").unwrap();
    let (report, _vm) = jobs::install(&mut lab, &options).await.unwrap_or_else(|e| panic!("{}", error_chain(&e)));
    assert_eq!(report.facts.network_boot_after_reboot, 0, "the disk booted");
    let cmdline = std::fs::read_to_string(lab.dir().join("client/qemu.cmdline")).unwrap();
    assert!(cmdline.contains("-device e1000,netdev=net0"), "{cmdline}");
    // The firmware's DHCP came through iPXE (OVMF has no e1000 driver), Linux's through the
    // kernel's e1000 driver.
    let classes: Vec<String> = lab.network().events().all().into_iter().filter_map(|(_, e)| match e {
        ServiceEvent::Dhcp(d) if d.kind == DhcpEventKind::Ack => d.vendor_class,
        _ => None,
    }).collect();
    assert!(classes.iter().any(|c| c.starts_with("PXEClient")) && classes.iter().any(|c| c.starts_with("udhcp")), "{classes:?}");
}

/// An NVMe disk (the `install-nvme` scenario): partitions are `nvme0n1p1`, `nvme0n1p2`
/// (`partitionSeparator=p` in the client's per-MAC config).
#[tokio::test]
async fn nvme_install_with_partition_separator_p() {
    let mut lab = Lab::new("nvme_install_with_partition_separator_p").unwrap();
    let install = jobs::INSTALL_NVME.install(&mut lab, InstallOptions::default(), None).await;
    let (report, vm) = install.unwrap_or_else(|e| panic!("{}", error_chain(&e)));
    assert_eq!((report.facts.root_fs.as_str(), report.facts.label_nixos.as_str()), ("/dev/nvme0n1p2", "/dev/nvme0n1p2"));
    assert!(report.facts.firmware_booted.contains("NixOS (pxelab fixture)"), "{:?}", report.facts);
    assert_eq!(vm.succeed("findfs LABEL=nixos; ls /sys/block").await.unwrap(), "/dev/nvme0n1p2\nnvme0n1");
}
