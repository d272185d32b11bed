//! A misbehaving neighbour on the lab network: a port of its own sends a seeded, rate-limited
//! mix of what breaks PXE networks (DHCP floods and REQUEST/DECLINE/RELEASE forged for the client,
//! a rogue DHCP server, ARP replies claiming the lab's and the client's addresses, frames
//! with the client's MAC, unacknowledged TFTP requests with long timeouts, traversal names,
//! TCP SYNs to the portmapper and NFS, garbage and oversized frames) while a declared client
//! installs. The switch's protections and the servers' bounds keep the install whole, and
//! what the switch drops is counted under the neighbour's port. A well-behaved client's probe
//! is answered during a flood and after it.

use std::time::Instant;

use pxelab::jobs::{self, InstallFaults, InstallOptions, INSTALL_CLIENT};
use pxelab::lab::Lab;
use pxelab::net::segment::{DropReason, SegmentEvent};
use pxelab::services::dhcp::DhcpEventKind;
use pxelab::services::ServiceEvent;
use pxelab_scenarios::error_chain;

/// Frames a second from the neighbour.
const RATE: u32 = 500;

#[tokio::test]
async fn a_declared_client_installs_beside_a_flooding_neighbour() {
    let mut lab = Lab::new("a_declared_client_installs_beside_a_flooding_neighbour").unwrap();
    let options = InstallOptions { faults: InstallFaults { seed: 11, flood: Some(RATE), ..Default::default() }, ..InstallOptions::default() };
    let started = Instant::now();
    let (report, vm) = jobs::install(&mut lab, &options).await.unwrap_or_else(|e| panic!("{}", error_chain(&e)));
    println!("{}\ninstalled beside the flood in {:.1?}", report.stages.table(), started.elapsed());
    let (mac, ip, hostname) = INSTALL_CLIENT;
    assert_eq!(report.facts.network_boot_after_reboot, 0, "the disk booted, not the network");
    assert_eq!(vm.succeed("hostname").await.unwrap(), hostname);

    let events = lab.network().events().all();
    let flood_port = events
        .iter()
        .find_map(|(_, e)| match e {
            ServiceEvent::Segment(SegmentEvent::Flood { port, .. }) => Some(*port),
            _ => None,
        })
        .expect("the flood's port");
    // Every forged frame the switch dropped is counted under the neighbour's port.
    let mut dropped = std::collections::HashMap::new();
    for (_, e) in &events {
        if let ServiceEvent::Segment(SegmentEvent::Dropped { port, reason, total }) = e {
            if matches!(reason, DropReason::RogueDhcp | DropReason::ArpSpoofed | DropReason::IpSpoofed | DropReason::Spoofed) {
                assert_eq!(*port, flood_port, "{reason:?} counted under port {port}, not the neighbour's {flood_port}");
                dropped.insert(*reason, *total);
            }
        }
    }
    for reason in [DropReason::RogueDhcp, DropReason::ArpSpoofed, DropReason::IpSpoofed, DropReason::Spoofed] {
        assert!(dropped.get(&reason).is_some_and(|n| *n > 0), "no {reason:?} drops counted: {dropped:?}");
    }
    assert!(report.facts.switch_drops.iter().any(|(port, reason, n)| *port == flood_port && *reason == DropReason::RogueDhcp && *n > 0), "{:?}", report.facts.switch_drops);
    // The neighbour's DECLINEs and RELEASEs for the client were ignored, and the client kept
    // its declared address.
    let forged = events.iter().filter(|(_, e)| matches!(e, ServiceEvent::Dhcp(d) if d.mac == mac && matches!(d.kind, DhcpEventKind::Decline | DhcpEventKind::Release))).count();
    assert_eq!(forged, 0, "a forged DECLINE or RELEASE counted for the client");
    // Forged REQUESTs for the client's MAC got no answer, and no event in its name.
    let forged_for_client = events
        .iter()
        .filter(|(_, e)| matches!(e, ServiceEvent::Dhcp(d) if d.mac == mac && d.switch_port == Some(flood_port)))
        .count();
    assert_eq!(forged_for_client, 0, "a message forged for the client's MAC counted");
    assert_eq!(lab.network().lease_of(mac).map(|a| a.to_string()).as_deref(), Some(ip));

    // A well-behaved client on a port of its own is answered by DHCP, TFTP and the
    // portmapper while a neighbour floods, and after.
    let flood = lab.network().start_flood(12, RATE * 4, mac);
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    let during = lab.network().probe(std::time::Duration::from_secs(10)).await;
    assert!(during.complete(), "a probe during a flood of {} frames/s: {during}", RATE * 4);
    drop(flood);
    let after = lab.network().probe(std::time::Duration::from_secs(10)).await;
    assert!(after.complete(), "a probe after the flood: {after}");
}
