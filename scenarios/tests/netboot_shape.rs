//! The path most NixOS users PXE-boot with (netboot.nix): the firmware's PXE chains iPXE,
//! iPXE runs `netboot.ipxe` by HTTP, the kernel and an initrd that holds the whole system come
//! by HTTP, and that system installs itself onto the disk; then the install job drives it as
//! it drives the NFS flavour: the disk boots, login, the ready command, the facts.

use std::time::Duration;

use pxelab::artifacts::Provider;
use pxelab::jobs::{self, InstallOptions, INSTALL_CLIENT};
use pxelab::lab::Lab;
use pxelab::net::pcap;
use pxelab::services::ServiceEvent;
use pxelab_fixtures::netboot::STAGE_2_MARKER;
use pxelab_scenarios::error_chain;

#[tokio::test]
async fn netboot_shape_installs_over_ipxe_and_http_without_nfs() {
    let mut lab = Lab::new("netboot_shape_installs_over_ipxe_and_http_without_nfs").unwrap();
    let install = jobs::INSTALL_NETBOOT_SHAPE.install(&mut lab, InstallOptions::default(), None).await;
    let (report, vm) = install.unwrap_or_else(|e| panic!("{}", error_chain(&e)));
    let facts = &report.facts;
    let (_, ip, hostname) = INSTALL_CLIENT;

    // The whole system came by HTTP: the script, the kernel, the initrd, whole.
    let served: Vec<(String, u16, u64)> = lab
        .network()
        .events()
        .all()
        .into_iter()
        .filter_map(|(_, e)| match e {
            ServiceEvent::Http(h) if h.client.to_string() == ip && h.served.method == "GET" => Some((h.served.path.clone(), h.served.status, h.served.bytes)),
            _ => None,
        })
        .collect();
    let paths: Vec<&str> = served.iter().map(|(p, _, _)| p.as_str()).collect();
    assert_eq!(paths, ["/netboot.ipxe", "/bzImage", "/initrd"], "{served:?}");
    let initrd = served[2].2;
    assert!(initrd > 100 << 20, "the initrd holds the whole system: {initrd} bytes");
    let console = vm.console().text();
    assert!(console.contains(STAGE_2_MARKER), "the initrd's stage 1 ran netboot.ipxe's init=; see {}", vm.console().log_path().display());
    // No NFS: nothing was mounted from the lab.
    let summary = pcap::summarize(&lab.dir().join("segment.pcap")).unwrap();
    assert!(!summary.protocols.iter().any(|(p, _)| p == "nfs" || p == "portmap"), "{:?}", summary.protocols);

    assert_eq!(facts.hostname, hostname, "{facts:?}");
    assert_eq!(facts.network_boot_after_reboot, 0, "the disk booted: {facts:?}");
    assert!(!vm.succeed("cat /proc/cmdline").await.unwrap().contains("init=/nix/store/"), "the installed system, not the netboot one");
    // systemd-boot, as netboot.nix's systems install it: its NVRAM entry started it from the
    // ESP, and it booted its Boot Loader Specification entry.
    assert_eq!(facts.first_boot_entry.split_whitespace().skip(1).collect::<Vec<_>>().join(" "), "Linux Boot Manager HD(1,GPT)/\\EFI\\systemd\\systemd-bootx64.efi", "{facts:?}");
    assert!(facts.firmware_booted.ends_with("Linux Boot Manager"), "{facts:?}");
    vm.succeed("mount /dev/vda1 /mnt").await.unwrap();
    assert_eq!(vm.succeed("cat /mnt/loader/entries/pxelab.conf | grep ^linux").await.unwrap(), "linux /EFI/pxelab/vmlinuz");
    assert!(vm.succeed("cat /proc/cmdline").await.unwrap().contains("root=LABEL=nixos"), "the entry's options");
}

/// A user's directory in netboot.nix's layout, linked to the flavour's files; then `edit`.
fn netboot_dir(lab: &Lab, edit: impl FnOnce(&std::path::Path)) -> std::path::PathBuf {
    let set = Provider::NetbootShape.provide(lab.cache()).unwrap();
    let dir = lab.dir().join("artifacts");
    std::fs::create_dir_all(&dir).unwrap();
    for name in ["bzImage", "initrd", "netboot.ipxe"] {
        std::os::unix::fs::symlink(set.tftp_root.join(name), dir.join(name)).unwrap();
    }
    std::os::unix::fs::symlink(set.tftp_root.parent().unwrap().join("pxelab.toml"), dir.join("pxelab.toml")).unwrap();
    edit(&dir);
    dir
}

/// The install of a netboot directory `edit` broke fails at "check inputs" within seconds,
/// before any VM starts, saying `cause`.
async fn refused_before_boot(name: &str, edit: impl FnOnce(&std::path::Path), cause: &str) {
    let mut lab = Lab::new(name).unwrap();
    let options = InstallOptions { provider: Provider::Dir(netboot_dir(&lab, edit)), ..InstallOptions::default() };
    let err = match jobs::install(&mut lab, &options).await {
        Ok(_) => panic!("{name}: installed"),
        Err(e) => e,
    };
    let text = error_chain(&err);
    assert_eq!(err.stage, "check inputs", "{text}");
    assert!(err.elapsed < Duration::from_secs(5), "{:?}: {text}", err.elapsed);
    assert!(text.contains(cause), "{text}");
    assert!(!lab.dir().join("client").exists(), "no VM was started");
}

#[tokio::test]
async fn a_netboot_script_naming_a_missing_file_is_refused_before_boot() {
    let renamed = |dir: &std::path::Path| {
        let script = std::fs::read_to_string(dir.join("netboot.ipxe")).unwrap().replace("initrd initrd", "initrd initrd.zst");
        std::fs::remove_file(dir.join("netboot.ipxe")).unwrap();
        std::fs::write(dir.join("netboot.ipxe"), script).unwrap();
    };
    let cause = "netboot.ipxe: names initrd.zst, which is not in";
    refused_before_boot("a_netboot_script_naming_a_missing_file_is_refused_before_boot", renamed, cause).await;
}

#[tokio::test]
async fn a_truncated_netboot_initrd_is_refused_before_boot() {
    let truncated = |dir: &std::path::Path| {
        let whole = std::fs::read(dir.join("initrd")).unwrap();
        std::fs::remove_file(dir.join("initrd")).unwrap();
        std::fs::write(dir.join("initrd"), &whole[..whole.len() / 3]).unwrap();
    };
    refused_before_boot("a_truncated_netboot_initrd_is_refused_before_boot", truncated, "the initrd is damaged or truncated: it ends at byte").await;
}
