//! Two full installs at once on one segment: different MACs, addresses, host names and disks,
//! each choosing its configuration by another key (one by IP, one by host name, while the
//! generic config names a disk neither has), and each ending on its own disk.

use pxelab::jobs::{self, Client, Hardware, InstallOptions};
use pxelab::lab::Lab;
use pxelab::vm::DiskBus;
use pxelab_scenarios::error_chain;

#[tokio::test]
async fn two_clients_install_at_once_each_by_its_own_config() {
    let installs = [
        InstallOptions {
            client: Client::nth(1),
            installer_files: vec![
                ("config".into(), "rootDevice=/dev/does-not-exist\npartitionSeparator=\n".into()),
                ("config-192.0.2.10".into(), "rootDevice=/dev/vda\n".into()),
            ],
            ..InstallOptions::default()
        },
        InstallOptions {
            client: Client::nth(2),
            installer_files: vec![("config-nixos-pxe-2".into(), "rootDevice=/dev/nvme0n1\npartitionSeparator=p\n".into())],
            hardware: Hardware { disk_bus: DiskBus::Nvme, ..Hardware::default() },
            ..InstallOptions::default()
        },
    ];
    let mut lab = Lab::new("two_clients_install_at_once_each_by_its_own_config").unwrap();
    let results = jobs::install_together(&mut lab, &installs).await.unwrap_or_else(|e| panic!("{}", error_chain(&e)));
    let mut reports = Vec::new();
    for (result, options) in results.into_iter().zip(&installs) {
        let (report, vm) = result.unwrap_or_else(|e| panic!("{}: {}", options.client.vm, error_chain(&e)));
        reports.push((report, vm));
    }
    let expected = [("client-1", "nixos-pxe-1", "/dev/vda2", "config-192.0.2.10"), ("client-2", "nixos-pxe-2", "/dev/nvme0n1p2", "config-nixos-pxe-2")];
    for ((report, vm), (name, hostname, root, config)) in reports.iter().zip(expected) {
        assert_eq!(report.facts.hostname, hostname, "{name}");
        assert_eq!(report.facts.root_fs, root, "{name}");
        assert_eq!(report.facts.network_boot_after_reboot, 0, "{name}");
        let console = std::fs::read_to_string(lab.dir().join(name).join("console.log")).unwrap();
        assert!(console.contains(&format!("Trying /installer/{config}...loading")), "{name} read {config}");
        assert_eq!(vm.succeed("findfs LABEL=nixos").await.unwrap(), root, "{name}");
    }
    // Both ran at once: the two clients' installs overlap on the lab's clock.
    lab.write_report().unwrap();
    let report: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(lab.dir().join("report.json")).unwrap()).unwrap();
    let span = |client: &str| {
        let mine: Vec<_> = report["stages"].as_array().unwrap().iter().filter(|s| s["name"].as_str().unwrap().starts_with(&format!("{client}: "))).collect();
        assert!(mine.len() > 15, "{client}: {mine:?}");
        (mine[0]["start"].as_f64().unwrap(), mine[mine.len() - 1]["end"].as_f64().unwrap())
    };
    let (one, two) = (span("client-1"), span("client-2"));
    assert!(one.0 < two.1 && two.0 < one.1, "the installs did not overlap: {one:?} {two:?}");
}
