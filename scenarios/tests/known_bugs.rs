//! Known bugs of installers, each reproduced through a fixture switch and caught with its
//! diagnosis; the same setup without the bug passes in `install.rs` (named with each).

use pxelab::artifacts::Provider;
use pxelab::jobs::{self, Hardware, InstallOptions, INSTALL_CLIENT};
use pxelab::lab::{Lab, StageError};
use pxelab::vm::DiskBus;
use pxelab_scenarios::error_chain;
use pxelab_fixtures::SerialConsole;

async fn fails(name: &str, options: InstallOptions) -> (StageError, String) {
    let mut lab = Lab::new(name).unwrap();
    match jobs::install(&mut lab, &options).await {
        Ok(_) => panic!("{name}: installed"),
        Err(e) => {
            let text = error_chain(&e);
            (e, text)
        }
    }
}

/// NVMe partitions are `nvme0n1p1`…; a config without `partitionSeparator=p` makes the
/// installer wait for `nvme0n12`. (Fixed: `nvme_install_with_partition_separator_p`.)
#[tokio::test]
async fn nvme_without_the_partition_separator_is_diagnosed() {
    let options = InstallOptions {
        installer_files: vec![("config".into(), "rootDevice=/dev/nvme0n1\npartitionSeparator=\n".into())],
        hardware: Hardware { disk_bus: DiskBus::Nvme, ..Hardware::default() },
        ..InstallOptions::default()
    };
    let (err, text) = fails("nvme_without_the_partition_separator_is_diagnosed", options).await;
    assert_eq!(err.stage, "installer: disk label and partitions", "{text}");
    assert!(text.contains("the partitions of /dev/nvme0n1 are named /dev/nvme0n1p2: set partitionSeparator=p"), "{text}");
}

/// Upstream's installer reads the generic `config` after the per-host files, so the generic
/// rootDevice wins over `config-<mac>`'s (the fixture's `pxelab-upstream-order` switch).
/// (Fixed: `per_host_config_wins_over_generic_and_zstd_image_unpacks`.)
#[tokio::test]
async fn a_generic_config_read_last_overriding_a_per_host_one_is_diagnosed() {
    let mac = INSTALL_CLIENT.0;
    let options = InstallOptions {
        installer_files: vec![
            ("pxelab-upstream-order".into(), String::new()),
            ("config".into(), "rootDevice=/dev/does-not-exist\npartitionSeparator=\n".into()),
            (format!("config-{mac}"), "rootDevice=/dev/vda\n".into()),
        ],
        ..InstallOptions::default()
    };
    let (err, text) = fails("a_generic_config_read_last_overriding_a_per_host_one_is_diagnosed", options).await;
    assert_eq!(err.stage, "installer: disk label and partitions", "{text}");
    let cause = format!("used rootDevice=/dev/does-not-exist from the generic config, although config-{mac} sets rootDevice=/dev/vda");
    assert!(text.contains(&cause), "{text}");
}

/// An installer that leaves the image's modes (`/` 700, `/tmp` 755: the fixture's
/// `pxelab-keep-image-modes` switch) installs a system that boots, and is caught by the
/// check of the installed system. (Fixed: every other install, which checks the same.)
#[tokio::test]
async fn root_and_tmp_modes_left_from_the_image_are_caught() {
    // What is checked is the disk the installer left: a cached install's will do.
    let options = InstallOptions { installer_files: vec![("pxelab-keep-image-modes".into(), String::new())], cached_install: true, ..InstallOptions::default() };
    let (err, text) = fails("root_and_tmp_modes_left_from_the_image_are_caught", options).await;
    assert_eq!(err.stage, "check the system", "{text}");
    assert!(text.contains("/ and /tmp have modes 700 755, where the protocol has 755 and 1777"), "{text}");
}

/// OVMF's PXE rejects an offer with option 60 `PXEClient` and no option 43 (PXE-E16): the
/// lab's `pxe_client_without_43` quirk plays such a server. Caught at the firmware's
/// `PXE-E16` line, long before the stage's budget. (Fixed: every install, whose offers carry
/// no option 60.)
#[tokio::test]
async fn ovmf_ignoring_pxeclient_offers_without_option_43_is_diagnosed() {
    let options = InstallOptions { configure_lab: Some(|c| c.dhcp.quirks.pxe_client_without_43 = true), ..InstallOptions::default() };
    let (err, text) = fails("ovmf_ignoring_pxeclient_offers_without_option_43_is_diagnosed", options).await;
    assert_eq!(err.stage, "TFTP: GRUB", "{text}");
    assert!(text.contains(r#"the firmware's PXE gave up: "PXE-E16: No valid offer received.": OVMF's PXE takes an offer"#), "{text}");
    assert!(text.contains("this lab's DHCP sends option 60 `PXEClient` without option 43"), "{text}");
    assert!(err.elapsed < std::time::Duration::from_secs(90), "{:?}", err.elapsed);
}

/// An installer whose step message changed (`Extracting …` for `Unpacking image …`: the
/// fixture's `pxelab-reworded-unpack` switch, as a new release might word it) fails that
/// stage when the next step's marker appears, naming the marker it missed, instead of after
/// the stage's 300 s budget. (Fixed: every other install prints the protocol's marker.)
#[tokio::test]
async fn a_reworded_installer_marker_fails_its_stage_at_the_next_step() {
    let options = InstallOptions { installer_files: vec![("pxelab-reworded-unpack".into(), String::new())], ..InstallOptions::default() };
    let (err, text) = fails("a_reworded_installer_marker_fails_its_stage_at_the_next_step", options).await;
    assert_eq!(err.stage, "installer: unpack image", "{text}");
    let missed = "the installer went on to a later step without printing \"Unpacking image /installer/nixos-image...done\"";
    assert!(text.contains(missed) && text.contains("...system configuration done"), "{text}");
    assert!(err.elapsed < std::time::Duration::from_secs(120), "failed at the next step, not at the budget: {:?}", err.elapsed);
}

/// Upstream's installer reads its address with `eval "$(dhcpcd … -c hook …)"`; dhcpcd 9 (the
/// nixos-shape NFS root's, Debian 12's) sends the hook's output to stderr, so the address
/// is empty and `config-<address>` is never read (the fixture's `pxelab-upstream-dhcpcd`
/// switch runs upstream's line against the real dhcpcd). Here the per-address file names the
/// disk and the generic one a missing device: the install fails at the disk, and the
/// diagnosis says why. (Fixed: `nixos_shape_installs_with_its_console_on_ttys1_at_57600`,
/// the same files read through the hook's own file.)
#[tokio::test]
async fn a_per_address_config_lost_to_dhcpcds_stderr_is_diagnosed() {
    let ip = INSTALL_CLIENT.1;
    let options = InstallOptions {
        provider: Provider::NixosShape { services: None, console: SerialConsole::UPSTREAM },
        installer_files: vec![
            ("pxelab-upstream-dhcpcd".into(), String::new()),
            ("config".into(), "rootDevice=/dev/does-not-exist\n".into()),
            (format!("config-{ip}"), "rootDevice=/dev/vda\n".into()),
        ],
        ..InstallOptions::default()
    };
    let (err, text) = fails("a_per_address_config_lost_to_dhcpcds_stderr_is_diagnosed", options).await;
    assert_eq!(err.stage, "installer: disk label and partitions", "{text}");
    assert!(text.contains("the installer asked for /installer/config- with no address"), "{text}");
    assert!(text.contains("dhcpcd 9 and later send a hook's output to stderr"), "{text}");
}

/// A unit that fails before journald runs has an empty journal: `systemd-sysctl.service`
/// refusing a `kernel.pid_max` over the kernel's limit (the fixture's `pxelab-bad-sysctl`
/// switch, as Debian's 50-pid-max.conf on a kernel capped at 32768). The failed check of the
/// installed system quotes the console's lines about the unit, where its cause is. (Fixed:
/// every other nixos-shape install, which reaches `running` with no failed unit.)
#[tokio::test]
async fn a_unit_that_failed_before_journald_is_diagnosed_from_the_console() {
    let options = InstallOptions {
        provider: Provider::NixosShape { services: None, console: SerialConsole::UPSTREAM },
        installer_files: vec![("pxelab-bad-sysctl".into(), String::new())],
        // A check of the installed system's boot: the cached install's disk will do.
        cached_install: true,
        ..InstallOptions::default()
    };
    let (err, text) = fails("a_unit_that_failed_before_journald_is_diagnosed_from_the_console", options).await;
    println!("{text}");
    assert_eq!(err.stage, "system ready", "{text}");
    assert!(text.contains("systemd-sysctl.service"), "{text}");
    assert!(text.contains("console lines about systemd-sysctl.service"), "{text}");
    assert!(text.contains("Couldn't write '4194305' to 'kernel/pid_max'"), "the cause, from the console: {text}");
}
