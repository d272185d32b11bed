//! Network boot over HTTP on the lab's own network: the kernel and initrd of the boot tree
//! reach the client by HTTP from pxelab's server, through each path firmware takes to it:
//! - the iPXE ROM (QEMU's default `efi-virtio.rom`), which asks DHCP as iPXE and gets a script;
//! - OVMF's PXE, which fetches iPXE's EFI program by TFTP and chains it;
//! - OVMF's UEFI HTTP boot (its `UEFI HTTPv4` entry, turned to by BootNext from the host),
//!   which downloads iPXE's EFI program by HTTP: no TFTP at all.
//!
//! The iPXE scripts are the boot tree's `load-kernel.cfg` in iPXE's words
//! ([`pxelab::artifacts::ipxe`]).

use std::time::Duration;

use pxelab::artifacts::host_files;
use pxelab::lab::{Lab, PxeConfig};
use pxelab::net::pcap;
use pxelab::services::dhcp::DhcpEventKind;
use pxelab::services::ServiceEvent;
use pxelab::vm::{NicModel, Rom, Vm};
use pxelab_fixtures::{initramfs, HostFiles, PxeTree};

const MAC: [u8; 6] = [0x52, 0x54, 0x00, 0x12, 0x34, 0x58];
const MINUTE: Duration = Duration::from_secs(60);

/// A lab serving the PXE tree, with iPXE scripts and (for UEFI HTTP boot) iPXE's program
/// over HTTP; `tftp_ipxe` gives PXE firmware iPXE's program as its TFTP boot file.
fn lab(test: &str, uefi_http: bool, tftp_ipxe: bool) -> (Lab, HostFiles) {
    let mut lab = Lab::new(test).unwrap();
    let host = host_files(lab.cache()).unwrap();
    let tree = lab.cache().get_or_build(&PxeTree { host: host.clone() }).unwrap();
    let http_dir = lab.dir().join("http");
    let mut config = PxeConfig::new(vec![tree.join(PxeTree::ROOT)]).ipxe_over_http(&http_dir).unwrap();
    let ipxe = HostFiles::ipxe_efi().unwrap();
    if uefi_http || tftp_ipxe {
        config = config.uefi_http_boot(&ipxe, &http_dir).unwrap();
    }
    if uefi_http {
        // PXE firmware gets no boot file: only the HTTP boot entry can boot.
        config.dhcp.boot_files.clear();
    }
    if tftp_ipxe {
        for (_, file) in &mut config.dhcp.boot_files {
            *file = "ipxe.efi".into();
        }
    }
    lab.start_network(config).unwrap();
    (lab, host)
}

/// iPXE runs the entry script, then the kernel and initrd come by HTTP and the initramfs's
/// shell answers.
async fn boots_over_http(lab: &Lab, vm: &Vm, host: &HostFiles) {
    let net = lab.network();
    let script = net.wait_for_http_request(MAC, "/pxelab.ipxe", 3 * MINUTE).await.unwrap();
    assert_eq!(script.served.status, 200);
    let kernel = net.wait_for_http_request(MAC, "/nixos/bzImage", 3 * MINUTE).await.unwrap();
    assert_eq!(kernel.served.bytes, std::fs::metadata(&host.kernel).unwrap().len(), "the whole kernel");
    net.wait_for_http_request(MAC, "/nixos/initrd", 3 * MINUTE).await.unwrap();
    vm.wait_for_console_text("pxelab-fixture: booted by load-kernel.cfg", 3 * MINUTE).await.unwrap();
    vm.wait_for_console_text(initramfs::SHELL_MARKER, MINUTE).await.unwrap();
    assert_eq!(vm.succeed("uname -r").await.unwrap(), host.kernel_version);
}

fn tftp_frames(lab: &Lab) -> u64 {
    let summary = pcap::summarize(&lab.dir().join("segment.pcap")).unwrap();
    summary.protocols.iter().find(|(p, _)| p == "tftp").map_or(0, |(_, n)| *n)
}

#[tokio::test]
async fn the_ipxe_rom_boots_the_kernel_over_http() {
    let (lab, host) = lab("the_ipxe_rom_boots_the_kernel_over_http", false, false);
    let vm = lab.pxe_client("client", MAC, NicModel::VirtioNet, Rom::Ipxe).unwrap().start().await.unwrap();
    let lease = lab.network().wait_for_dhcp_lease(MAC, 2 * MINUTE).await.unwrap();
    assert_eq!(lease.boot_file, "http://192.0.2.1/pxelab.ipxe", "iPXE is given its script");
    boots_over_http(&lab, &vm, &host).await;
    assert_eq!(tftp_frames(&lab), 0, "nothing by TFTP");
}

#[tokio::test]
async fn ovmf_pxe_chains_ipxe_which_boots_the_kernel_over_http() {
    let (lab, host) = lab("ovmf_pxe_chains_ipxe_which_boots_the_kernel_over_http", false, true);
    let vm = lab.pxe_client("client", MAC, NicModel::VirtioNet, Rom::OvmfNative).unwrap().start().await.unwrap();
    lab.network().wait_for_tftp_transfer(MAC, "ipxe.efi", 2 * MINUTE).await.unwrap();
    boots_over_http(&lab, &vm, &host).await;
}

/// A client whose NVRAM boots its `UEFI HTTPv4` entry next. OVMF writes its network boot
/// entries before it tries the first (PXEv4, which gets no boot file here); the host then
/// turns the next boot to the HTTPv4 entry, as a BMC would.
async fn boot_next_http(lab: &Lab) -> Vm {
    let net = lab.network();
    let vm = lab.pxe_client("client", MAC, NicModel::VirtioNet, Rom::OvmfNative).unwrap().start().await.unwrap();
    let offered = |e: &pxelab::lab::Logged| match &e.event {
        ServiceEvent::Dhcp(d) if d.mac == MAC.into() && d.kind == DhcpEventKind::Offer => Some(d.clone()),
        _ => None,
    };
    let offer = net.events().wait_for("the PXEv4 entry's DHCP offer", 2 * MINUTE, offered).await.unwrap();
    assert_eq!(offer.boot_file, "", "no boot file for PXE");
    let entries = vm.var_store().boot_entries().unwrap();
    let http = entries.options.iter().find(|o| o.description.starts_with("UEFI HTTPv4")).unwrap_or_else(|| panic!("no HTTPv4 entry: {entries:?}"));
    lab.restart_with_boot_next(vm, http.number).await.unwrap()
}

#[tokio::test]
async fn uefi_http_boot_runs_ipxe_and_boots_the_kernel_by_http_alone() {
    let (lab, host) = lab("uefi_http_boot_runs_ipxe_and_boots_the_kernel_by_http_alone", true, false);
    let vm = boot_next_http(&lab).await;
    let program = lab.wait_for_http_boot(&vm, MAC, 3 * MINUTE).await.unwrap();
    assert_eq!(program.served.path, "/ipxe.efi");
    assert_eq!(program.served.bytes, std::fs::metadata(HostFiles::ipxe_efi().unwrap()).unwrap().len());
    boots_over_http(&lab, &vm, &host).await;
    assert_eq!(tftp_frames(&lab), 0, "nothing by TFTP");
}

/// A DHCP server that gives HTTP boot clients their URL but not option 60 `HTTPClient`: OVMF
/// ignores its offers, and the wait fails at the firmware's own error, naming the cause.
#[tokio::test]
async fn an_http_boot_offer_without_option_60_is_diagnosed_from_the_firmwares_line() {
    let name = "an_http_boot_offer_without_option_60_is_diagnosed_from_the_firmwares_line";
    let mut lab = Lab::new(name).unwrap();
    let host = host_files(lab.cache()).unwrap();
    let tree = lab.cache().get_or_build(&PxeTree { host }).unwrap();
    let http_dir = lab.dir().join("http");
    let mut config = PxeConfig::new(vec![tree.join(PxeTree::ROOT)]).uefi_http_boot(&HostFiles::ipxe_efi().unwrap(), &http_dir).unwrap();
    config.dhcp.boot_files.clear();
    config.dhcp.quirks.http_client_without_60 = true;
    lab.start_network(config).unwrap();
    let vm = boot_next_http(&lab).await;
    let started = std::time::Instant::now();
    let err = lab.wait_for_http_boot(&vm, MAC, 5 * MINUTE).await.unwrap_err().to_string();
    assert!(err.contains("the firmware's HTTP boot gave up: \"Error: ") && err.contains("Quirks::http_client_without_60"), "{err}");
    assert!(started.elapsed() < 2 * MINUTE, "at the firmware's error, not the wait's timeout: {:?}", started.elapsed());
    assert_eq!(lab.network().events().all().iter().filter(|(_, e)| matches!(e, ServiceEvent::Http(_))).count(), 0, "nothing was fetched");
}
