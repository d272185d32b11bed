//! An MTU mismatch (MAAS's known bads): `--mtu N` makes the client's link drop frames whose
//! IP packet is over N bytes, as a switch port set to a smaller MTU does. OVMF negotiates
//! TFTP blocks of 1468 bytes (a 1500-byte IP packet) for its boot program: over an MTU of
//! 1400 they never arrive, and `TFTP: GRUB` fails at the first dropped block, naming the MTU
//! and the block size. With an MTU its blocks fit (1500), the same install passes.

use std::time::{Duration, Instant};

use pxelab::jobs::{self, InstallFaults, InstallOptions};
use pxelab::lab::Lab;
use pxelab_scenarios::error_chain;

#[tokio::test]
async fn tftp_blocks_over_the_links_mtu_are_named() {
    let mut lab = Lab::new("tftp_blocks_over_the_links_mtu_are_named").unwrap();
    let options = InstallOptions { faults: InstallFaults { mtu: Some(1400), ..Default::default() }, ..InstallOptions::default() };
    let started = Instant::now();
    let err = match jobs::install(&mut lab, &options).await {
        Ok(_) => panic!("installed over a link whose MTU drops OVMF's TFTP blocks"),
        Err(e) => e,
    };
    let text = error_chain(&err);
    println!("{text}\nfailed after {:.1?}", started.elapsed());
    assert_eq!(err.stage, "TFTP: GRUB", "{text}");
    assert!(err.elapsed < Duration::from_secs(30), "at the first dropped block, not the stage's timeout: {:?}", err.elapsed);
    assert!(text.contains("over its MTU of 1400 bytes") && text.contains("TFTP blocks of 1468 bytes"), "{text}");
}

#[tokio::test]
async fn an_install_whose_blocks_fit_the_links_mtu_passes() {
    let mut lab = Lab::new("an_install_whose_blocks_fit_the_links_mtu_passes").unwrap();
    let options = InstallOptions { faults: InstallFaults { mtu: Some(1500), ..Default::default() }, ..InstallOptions::default() };
    let (report, _vm) = jobs::install(&mut lab, &options).await.unwrap_or_else(|e| panic!("{}", error_chain(&e)));
    assert_eq!(report.facts.network_boot_after_reboot, 0, "the disk booted");
    let too_big = std::fs::read_to_string(lab.dir().join("events.jsonl")).unwrap().lines().filter(|l| l.contains("\"fault\":\"toobig\"")).count();
    assert_eq!(too_big, 0, "no frame was over the MTU");
}
