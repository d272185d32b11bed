//! Secure Boot on the lab's network: a client running OVMF's Secure Boot build with
//! Microsoft's keys enrolled, and what it refuses.

use std::time::Duration;

use pxelab::jobs::{self, Hardware, InstallOptions};
use pxelab::lab::{Lab, PxeConfig};
use pxelab_scenarios::error_chain;
use pxelab::vm::{NicModel, Rom};
use pxelab_fixtures::pxe_tree::load_kernel_cfg;
use pxelab::console::ConsoleError;
use pxelab_fixtures::secure_boot::strip_signatures;
use pxelab_fixtures::{initramfs, HostFiles, NixosShapeKernel, PxeTree, SignedBinaries, SignedNetboot};

const MAC: [u8; 6] = [0x52, 0x54, 0x00, 0x5b, 0x00, 0x01];
const MINUTE: Duration = Duration::from_secs(60);

/// The client's host name, declared to the lab's DHCP.
const HOST: &str = "secure-client";

/// The protocol's per-host-name `load-kernel` file of [`HOST`].
const HOST_FILE: &str = "load-kernel-secure-client.cfg";

/// `lab` serving the signed chain ([`SignedNetboot`]) over the protocol's tree, under a layer
/// with the per-host-name `load-kernel` file of `mac`, declared as [`HOST`] (the signed GRUB
/// has no `eval`: the file is found through [`pxelab_fixtures::secure_boot::GRUB_CFG`]'s
/// stand-in for it) and, when given, `kernel` as `nixos/bzImage`; returns the client's
/// builder, Secure Boot on.
fn signed_chain(lab: &mut Lab, mac: [u8; 6], kernel: Option<Vec<u8>>) -> pxelab::vm::VmBuilder {
    let host = HostFiles::find().unwrap();
    let tree = lab.cache().get_or_build(&PxeTree { host }).unwrap();
    let signed = lab.cache().get_or_build(&SignedNetboot { binaries: SignedBinaries::find().unwrap() }).unwrap();
    let top = lab.dir().join("top");
    std::fs::create_dir_all(top.join("nixos")).unwrap();
    std::fs::write(top.join("nixos").join(HOST_FILE), load_kernel_cfg(HOST_FILE, true)).unwrap();
    if let Some(kernel) = kernel {
        std::fs::write(top.join("nixos/bzImage"), kernel).unwrap();
    }
    let config = PxeConfig::new(vec![top, signed.join(SignedNetboot::ROOT), tree.join(PxeTree::ROOT)]).host(mac, "192.0.2.10".parse().unwrap(), HOST);
    lab.start_network(config).unwrap();
    lab.pxe_client("client", mac, NicModel::VirtioNet, Rom::OvmfNative).unwrap().secure_boot()
}

/// The protocol's GRUB is built with `grub-mkimage` and signed by no one: a Secure Boot
/// client fetches it as its NBP and its firmware refuses to start it.
#[tokio::test]
async fn secure_boot_refuses_an_unsigned_grub_as_the_nbp() {
    let host = HostFiles::find().unwrap();
    let mut lab = Lab::new("secure_boot_refuses_an_unsigned_grub_as_the_nbp").unwrap();
    let tree = lab.cache().get_or_build(&PxeTree { host }).unwrap();
    lab.start_network(PxeConfig::new(vec![tree.join(PxeTree::ROOT)])).unwrap();
    let vm = lab.pxe_client("client", MAC, NicModel::VirtioNet, Rom::OvmfNative).unwrap().secure_boot().start().await.unwrap();
    let state = vm.secure_boot_state().unwrap();
    assert!(state.enforcing(), "the client's NVRAM enforces Secure Boot: {state}");
    assert!(state.db.certificates >= 2, "Microsoft's two db certificates: {state}");

    let net = lab.network();
    net.wait_for_tftp_transfer(MAC, "nixos/bootx64.efi", 2 * MINUTE).await.unwrap();
    let refused = vm
        .wait_for_console_text(r#"BdsDxe: failed to load Boot[0-9A-F]{4} "UEFI PXEv4[^"]*"[^\r\n]*: Access Denied"#, MINUTE)
        .await
        .unwrap();
    assert!(refused.matched.contains("5254005B0001"), "the refused boot option is this NIC's: {}", refused.matched);
    assert!(!vm.console().text().contains("load-kernel.cfg"), "GRUB never ran");
}

/// The signed chain over the lab's network with Secure Boot enforcing: the firmware starts
/// Microsoft-signed shim as the NBP, shim starts Debian's signed GRUB from beside it, GRUB
/// runs the protocol's `grub.cfg` and this client's per-host-name `load-kernel` file (without
/// an error: `eval`'s stand-in), and the Debian-signed kernel boots with Secure Boot on and
/// says so.
#[tokio::test]
async fn a_secure_boot_client_boots_shim_signed_grub_and_a_signed_kernel() {
    let mac = [0x52, 0x54, 0x00, 0x5b, 0x00, 0x03];
    let host = HostFiles::find().unwrap();
    let mut lab = Lab::new("a_secure_boot_client_boots_shim_signed_grub_and_a_signed_kernel").unwrap();
    let client = signed_chain(&mut lab, mac, None);
    let file = HOST_FILE;
    let vm = client.start().await.unwrap();
    assert!(vm.secure_boot_state().unwrap().enforcing());

    let net = lab.network();
    let shim = net.wait_for_tftp_transfer(mac, "nixos/bootx64.efi", 2 * MINUTE).await.unwrap();
    assert_eq!(shim.bytes, std::fs::metadata(SignedBinaries::SHIM).unwrap().len(), "shim is the NBP");
    net.wait_for_tftp_transfer(mac, "nixos/grubx64.efi", MINUTE).await.unwrap();
    net.wait_for_tftp_transfer(mac, "/grub/grub.cfg", MINUTE).await.unwrap();
    vm.wait_for_console_text("pxelab: signed GRUB, handing over", MINUTE).await.unwrap();
    net.wait_for_tftp_transfer(mac, &format!("/nixos/{file}"), MINUTE).await.unwrap();
    vm.wait_for_console_text("EFI stub: UEFI Secure Boot is enabled", 2 * MINUTE).await.unwrap();
    vm.wait_for_console_text(&format!("pxelab-fixture: booted by {}", regex::escape(file)), 2 * MINUTE).await.unwrap();
    vm.wait_for_console_text(initramfs::SHELL_MARKER, MINUTE).await.unwrap();
    assert_eq!(vm.succeed("uname -r").await.unwrap(), host.kernel_version);
    let said = vm.succeed("dmesg | grep -E 'secureboot: Secure boot enabled|locked down from EFI Secure Boot' | wc -l").await.unwrap();
    assert_eq!(said.trim(), "2", "the kernel found Secure Boot on and locked itself down");
    assert!(!vm.console().text().contains("error:"), "GRUB ran the protocol's chain without an error");
}

/// The protocol's install on a machine with Secure Boot on stops where the firmware refuses
/// the unsigned GRUB, within seconds (not at the stage's 3-minute budget), naming the file
/// and the reason.
#[tokio::test]
async fn an_install_under_secure_boot_stops_at_the_unsigned_grub_naming_it() {
    let mut lab = Lab::new("an_install_under_secure_boot_stops_at_the_unsigned_grub_naming_it").unwrap();
    let options = InstallOptions { hardware: Hardware { secure_boot: true, ..Hardware::default() }, ..InstallOptions::default() };
    let err = match jobs::install(&mut lab, &options).await {
        Ok(_) => panic!("installed with an unsigned GRUB under Secure Boot"),
        Err(e) => e,
    };
    let text = error_chain(&err);
    assert_eq!(err.stage, "TFTP: kernel", "the stage after GRUB's download: {text}");
    assert!(err.elapsed < Duration::from_secs(10), "at once, not at a timeout: {:?}: {text}", err.elapsed);
    assert!(text.contains("Secure Boot refused the image") && text.contains("(nixos/bootx64.efi): Access Denied"), "{text}");
}

/// Behind signed shim and GRUB, an unsigned kernel (Debian's with its signature stripped,
/// as upstream's and the nixos-shape kernel are built) is refused by shim's lock: the wait for
/// the kernel ends at once, and the known cause names the kernel.
#[tokio::test]
async fn shims_lock_refuses_an_unsigned_kernel_naming_it() {
    let mac = [0x52, 0x54, 0x00, 0x5b, 0x00, 0x04];
    let host = HostFiles::find().unwrap();
    let unsigned = strip_signatures(&std::fs::read(&host.kernel).unwrap()).unwrap();
    let mut lab = Lab::new("shims_lock_refuses_an_unsigned_kernel_naming_it").unwrap();
    let client = signed_chain(&mut lab, mac, Some(unsigned));
    let vm = client.start().await.unwrap();

    let net = lab.network();
    net.wait_for_tftp_transfer(mac, "nixos/grubx64.efi", 2 * MINUTE).await.unwrap();
    net.wait_for_tftp_transfer(mac, "/nixos/bzImage", 2 * MINUTE).await.unwrap();
    let fetched = std::time::Instant::now();
    match vm.wait_for_console_text("Linux version", 2 * MINUTE).await {
        Err(ConsoleError::FailFast { line, .. }) => assert!(line.contains("bad shim signature"), "{line}"),
        other => panic!("the unsigned kernel was not refused: {other:?}"),
    }
    assert!(fetched.elapsed() < Duration::from_secs(20), "at once: {:?}", fetched.elapsed());
    let why = pxelab::diagnose::secure_boot_refusal(&vm.console().text()).unwrap();
    assert!(why.starts_with("Secure Boot refused the kernel (tftp,192.0.2.1)/nixos/bzImage: shim's lock"), "{why}");
}

/// A test key of our own (openssl) and `kernel`, stripped of any signature and signed with
/// it (sbsign), in `dir`: the signed kernel's path and the certificate (DER).
fn kernel_signed_with_our_key(dir: &std::path::Path, kernel: &std::path::Path) -> (std::path::PathBuf, Vec<u8>) {
    use std::process::Command;
    std::fs::create_dir_all(dir).unwrap();
    let (key, cert, der) = (dir.join("db.key"), dir.join("db.crt"), dir.join("db.der"));
    let run = |command: &mut Command| {
        let out = command.output().unwrap_or_else(|e| panic!("{command:?}: {e} (apt-get install openssl sbsigntool)"));
        assert!(out.status.success(), "{command:?}: {}", String::from_utf8_lossy(&out.stderr));
    };
    run(Command::new("openssl").args(["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "30", "-subj", "/CN=pxelab test db key/", "-keyout"]).arg(&key).arg("-out").arg(&cert));
    run(Command::new("openssl").args(["x509", "-outform", "DER", "-in"]).arg(&cert).arg("-out").arg(&der));
    let unsigned = dir.join("bzImage.unsigned");
    std::fs::write(&unsigned, strip_signatures(&std::fs::read(kernel).unwrap()).unwrap()).unwrap();
    let signed = dir.join("bzImage");
    run(Command::new("sbsign").arg("--key").arg(&key).arg("--cert").arg(&cert).arg("--output").arg(&signed).arg(&unsigned));
    (signed, std::fs::read(&der).unwrap())
}

/// A Secure Boot client whose kernel (`kernel`, or the host's) is signed with our own key,
/// that key enrolled in its db (`enrol`) or not; returns the VM once GRUB has fetched the
/// kernel.
async fn boot_our_signed_kernel(name: &str, mac: [u8; 6], enrol: bool, kernel: Option<fn(&Lab) -> std::path::PathBuf>) -> (Lab, pxelab::vm::Vm) {
    let host = HostFiles::find().unwrap();
    let mut lab = Lab::new(name).unwrap();
    let kernel = kernel.map_or(host.kernel.clone(), |k| k(&lab));
    let (kernel, der) = kernel_signed_with_our_key(&lab.dir().join("keys"), &kernel);
    let mut client = signed_chain(&mut lab, mac, Some(std::fs::read(kernel).unwrap()));
    if enrol {
        client = client.enrol_db_certificate(der);
    }
    let vm = client.start().await.unwrap();
    let state = vm.secure_boot_state().unwrap();
    assert!(state.enforcing(), "{state}");
    assert_eq!(state.db.certificates, if enrol { 3 } else { 2 }, "Microsoft's two, and ours when enrolled: {state}");
    lab.network().wait_for_tftp_transfer(mac, "/nixos/bzImage", 2 * MINUTE).await.unwrap();
    (lab, vm)
}

/// A kernel signed with a key the machine does not trust is refused like an unsigned one.
#[tokio::test]
async fn a_kernel_signed_with_a_key_not_enrolled_is_refused() {
    let (_lab, vm) = boot_our_signed_kernel("a_kernel_signed_with_a_key_not_enrolled_is_refused", [0x52, 0x54, 0x00, 0x5b, 0x00, 0x05], false, None).await;
    match vm.wait_for_console_text("Linux version", MINUTE).await {
        Err(ConsoleError::FailFast { line, .. }) => assert!(line.contains("bad shim signature"), "{line}"),
        other => panic!("a kernel signed with a key not enrolled was not refused: {other:?}"),
    }
}

/// The same kernel boots once its key is enrolled in the client's db from the host.
#[tokio::test]
async fn a_kernel_signed_with_a_key_enrolled_from_the_host_boots() {
    let (_lab, vm) = boot_our_signed_kernel("a_kernel_signed_with_a_key_enrolled_from_the_host_boots", [0x52, 0x54, 0x00, 0x5b, 0x00, 0x06], true, None).await;
    vm.wait_for_console_text("EFI stub: UEFI Secure Boot is enabled", MINUTE).await.unwrap();
    vm.wait_for_console_text(initramfs::SHELL_MARKER, 2 * MINUTE).await.unwrap();
    let said = vm.succeed("dmesg | grep -c 'secureboot: Secure boot enabled'").await.unwrap();
    assert_eq!(said.trim(), "1");
}

/// The nixos-shape kernel (upstream's configuration, unsigned as upstream's is), signed with
/// a test key enrolled in the client's db, starts with Secure Boot on.
#[tokio::test]
async fn the_nixos_shape_kernel_signed_with_an_enrolled_test_key_boots() {
    let nixos_shape = |lab: &Lab| lab.cache().get_or_build(&NixosShapeKernel::find().unwrap()).unwrap().join(NixosShapeKernel::IMAGE);
    let (_lab, vm) = boot_our_signed_kernel("the_nixos_shape_kernel_signed_with_an_enrolled_test_key_boots", [0x52, 0x54, 0x00, 0x5b, 0x00, 0x07], true, Some(nixos_shape)).await;
    vm.wait_for_console_text("EFI stub: UEFI Secure Boot is enabled", MINUTE).await.unwrap();
    vm.wait_for_console_text("Linux version", MINUTE).await.unwrap();
    vm.wait_for_console_text("secureboot: Secure boot enabled", MINUTE).await.unwrap();
}

/// The whole install on a Secure Boot client, over the signed chain: shim, Debian's signed
/// network GRUB and kernel from the lab's network, the installer's run, then the installed
/// system from its disk, started by an NVRAM entry that names shim, through Debian's signed
/// GRUB on the ESP and the signed kernel, with Secure Boot enforcing throughout.
#[tokio::test]
async fn an_install_under_secure_boot_boots_shim_and_signed_grub_from_its_disk() {
    let mut lab = Lab::new("an_install_under_secure_boot_boots_shim_and_signed_grub_from_its_disk").unwrap();
    let install = jobs::INSTALL_SECURE_BOOT.install(&mut lab, InstallOptions::default(), None).await;
    let (report, vm) = install.unwrap_or_else(|e| panic!("{}", error_chain(&e)));
    println!("{}", report.stages.table());
    let mac = jobs::INSTALL_CLIENT.0;

    assert!(report.facts.secure_boot.starts_with("enforcing;"), "{}", report.facts.secure_boot);
    let shim = lab.network().wait_for_tftp_transfer(mac, "nixos/bootx64.efi", Duration::ZERO).await.unwrap();
    assert_eq!(shim.bytes, std::fs::metadata(SignedBinaries::SHIM).unwrap().len(), "shim was the NBP");
    assert_eq!(report.facts.network_boot_after_reboot, 0, "the disk booted, not the network");
    let entries = vm.var_store().boot_entries().unwrap();
    let first = entries.first().expect("a BootOrder");
    assert_eq!(first.path, "HD(1,GPT)/\\EFI\\pxelab\\shimx64.efi", "the installed entry starts shim: {}", report.facts.first_boot_entry);
    assert!(report.facts.firmware_booted.contains(&first.description), "{} booted", report.facts.firmware_booted);

    vm.succeed("mount /dev/vda1 /mnt").await.unwrap();
    let esp = |file: &str| format!("md5sum /mnt/EFI/pxelab/{file} | cut -d' ' -f1");
    let host_md5 = |path: &str| {
        let out = std::process::Command::new("md5sum").arg(path).output().unwrap();
        String::from_utf8_lossy(&out.stdout).split_whitespace().next().unwrap_or_default().to_owned()
    };
    assert_eq!(vm.succeed(&esp("shimx64.efi")).await.unwrap(), host_md5(SignedBinaries::SHIM), "the ESP's shim is Debian's signed one");
    assert_eq!(vm.succeed(&esp("grubx64.efi")).await.unwrap(), host_md5(SignedBinaries::DISK_GRUB), "the ESP's GRUB is Debian's signed one");
    // The installed system's own boot: the kernel was verified through shim and found Secure
    // Boot on (the fixture's kernel logs it; what a system logs is its own).
    let said = vm.succeed("dmesg | grep -E 'secureboot: Secure boot enabled|locked down from EFI Secure Boot' | wc -l").await.unwrap();
    assert_eq!(said.trim(), "2", "the installed kernel found Secure Boot on and locked itself down");
    let booted = vm.console().text();
    let from_disk = &booted[booted.rfind("pxelab-fixture: booting the installed system").expect("the ESP's grub.cfg ran")..];
    assert!(from_disk.contains("EFI stub: UEFI Secure Boot is enabled"), "the installed kernel's EFI stub saw Secure Boot");
}
