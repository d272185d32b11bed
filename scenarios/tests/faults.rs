//! The install survives the faults a real network and server have: loss with delay, a link
//! that goes down mid-transfer, an NFS server restart mid-install. Each injected fault is in
//! the lab's `events.jsonl`.

use std::time::Duration;

use pxelab::jobs::{self, InstallFaults, InstallOptions};
use pxelab::lab::Lab;
use pxelab::net::fault::{Impairment, Ways};
use pxelab::net::segment::SegmentEvent;
use pxelab::services::ServiceEvent;
use pxelab_scenarios::error_chain;

async fn install_with(test: &str, faults: InstallFaults) -> Lab {
    let mut lab = Lab::new(test).unwrap();
    let options = InstallOptions { faults, ..InstallOptions::default() };
    let (report, _vm) = jobs::install(&mut lab, &options).await.unwrap_or_else(|e| panic!("{}", error_chain(&e)));
    println!("{}", report.stages.table());
    assert_eq!(report.facts.network_boot_after_reboot, 0, "the installed disk booted");
    lab
}

fn segment_events(lab: &Lab) -> Vec<SegmentEvent> {
    let events = lab.network().events().all();
    events.into_iter().filter_map(|(_, e)| if let ServiceEvent::Segment(s) = e { Some(s) } else { None }).collect()
}

/// (a) 5 % loss and 1 ms ± 0.5 ms of delay both ways on the client's port. GRUB fetches the
/// kernel and initrd (12 MB) in some 12,000 lockstep round trips, so every millisecond of
/// delay costs 24 s: at 5 ms ± 2 ms the kernel alone took 165 s, at 50 ms ± 20 ms the install
/// takes over half an hour (`pxelab run install-default --loss 5 --delay 50ms --jitter 20ms`).
/// Its name sorts it after the other two of this file: nextest's `slice` partitions deal
/// tests out by their place in the list, and so it falls in another of four shards than the
/// reinstall with backup and restore, the suite's other three-minute test.
#[tokio::test]
async fn lossy_delayed_link_install_completes() {
    let impairment = Impairment { loss: 0.05, ..Impairment::delay(Duration::from_micros(1000), Duration::from_micros(500)) };
    let faults = InstallFaults { seed: 42, impairment, direction: Ways::Both, ..Default::default() };
    let lab = install_with("lossy_delayed_link_install_completes", faults).await;
    let dropped = segment_events(&lab).iter().filter(|e| matches!(e, SegmentEvent::Fault { .. })).count();
    assert!(dropped > 10, "frames were lost on the way: {dropped}");
}

/// (b) The client's link is down for 10 s in the middle of the kernel's TFTP transfer.
#[tokio::test]
async fn kernel_transfer_outlasts_a_ten_second_link_down() {
    let faults = InstallFaults { link_down_during_kernel: Some(Duration::from_secs(10)), ..Default::default() };
    let lab = install_with("kernel_transfer_outlasts_a_ten_second_link_down", faults).await;
    let links: Vec<bool> = segment_events(&lab).iter().filter_map(|e| if let SegmentEvent::Link { up, .. } = e { Some(*up) } else { None }).collect();
    assert_eq!(links, [false, true]);
}

/// (c) The NFS server stops for 5 s as the installer starts on the image, and starts again:
/// the hard-mounted NFS root carries on with the same file handles.
#[tokio::test]
async fn install_survives_an_nfs_server_restart() {
    let faults = InstallFaults { nfs_restart_during_unpack: Some(Duration::from_secs(5)), ..Default::default() };
    let lab = install_with("install_survives_an_nfs_server_restart", faults).await;
    let server: Vec<bool> = lab
        .network()
        .events()
        .all()
        .into_iter()
        .filter_map(|(_, e)| if let ServiceEvent::Server { running, .. } = e { Some(running) } else { None })
        .collect();
    assert_eq!(server, [false, true]);
}
