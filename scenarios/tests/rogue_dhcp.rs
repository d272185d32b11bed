//! A rogue DHCP server on the segment (MAAS's first "known bad"): `--rogue-dhcp` puts a
//! second server on the lab network that answers before the lab's, with another address,
//! boot file and root path, and the switch's DHCP snooping lets it through. A DHCP client of
//! the install takes its offer (here the initramfs's udhcpc, which takes the first; OVMF
//! chose the lab's): the install fails at that stage within seconds, and the diagnosis names
//! the rogue's address, its switch port and what the client took. Without the rogue the same
//! install passes (`install.rs`), and a rogue the switch does not trust is dropped
//! (`hostile.rs`).

use std::time::{Duration, Instant};

use pxelab::jobs::{self, InstallFaults, InstallOptions};
use pxelab::lab::{Lab, RogueDhcp};
use pxelab_scenarios::error_chain;

#[tokio::test]
async fn a_rogue_dhcp_server_that_answers_first_is_named() {
    let mut lab = Lab::new("a_rogue_dhcp_server_that_answers_first_is_named").unwrap();
    let options = InstallOptions { faults: InstallFaults { rogue_dhcp: true, ..Default::default() }, ..InstallOptions::default() };
    let started = Instant::now();
    let err = match jobs::install(&mut lab, &options).await {
        Ok(_) => panic!("installed beside a rogue DHCP server whose offer the client took"),
        Err(e) => e,
    };
    let text = error_chain(&err);
    println!("{text}\nfailed after {:.1?}", started.elapsed());
    let rogue = RogueDhcp::default();
    assert!(["firmware → DHCP", "kernel → NFS root"].contains(&err.stage.as_str()), "{text}");
    assert!(err.elapsed < Duration::from_secs(60), "diagnosed within its stage, not at its timeout: {:?}", err.elapsed);
    assert!(text.contains(&format!("a second DHCP server, {} on switch port", rogue.server)), "{text}");
    assert!(text.contains(&format!("took its offer: address {}", rogue.pool.0)), "{text}");
    assert!(text.contains(&rogue.boot_file) || text.contains(&rogue.root_path), "what the client took from it: {text}");
}
