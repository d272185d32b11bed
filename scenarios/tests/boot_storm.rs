//! A boot storm: eight clients power on at once and PXE-boot the busybox flavour to its NFS
//! root. Each gets its declared address and host name, its own GRUB, kernel and initramfs
//! over TFTP, and its own NFS mount and overlay; no client's boot waits on another's failure.

use std::time::Duration;

use pxelab::jobs::storm;
use pxelab::lab::Lab;
use pxelab::services::tftp::TftpOutcome;
use pxelab::services::ServiceEvent;

const MINUTE: Duration = Duration::from_secs(60);

#[tokio::test]
async fn eight_clients_boot_at_once_to_their_nfs_roots() {
    let clients = storm::clients(8);
    let mut lab = Lab::new("eight_clients_boot_at_once_to_their_nfs_roots").unwrap();
    storm::start_network(&mut lab, &clients).await.unwrap();
    let storm = storm::boot(&lab, &clients, 15 * MINUTE).await.unwrap();
    let events = lab.network().events().all();
    for booted in &storm.booted {
        let client = &booted.client;
        // Its lease: the declared address and host name, from its own switch port.
        let lease = lab.network().wait_for_dhcp_lease(client.mac, MINUTE).await.unwrap();
        assert_eq!((lease.ip, lease.hostname.as_deref()), (client.ip, Some(client.name.as_str())), "{}'s lease", client.name);
        assert_eq!(lease.switch_port, lab.network().port_of(client.mac), "{}'s lease came in on its port", client.name);
        assert_eq!(lab.network().lease_of(client.mac), Some(client.ip));

        // Its TFTP transfers: GRUB and the kernel, whole, to its address. The initramfs came
        // too (it ran); its transfer may not be logged yet: a GRUB starved of CPU can fail to
        // send its last ACK, and the server then resends the last block for about a minute
        // before it logs the transfer `unconfirmed`.
        for file in ["nixos/bootx64.efi", "nixos/bzImage"] {
            let done = events.iter().any(|(_, e)| matches!(e, ServiceEvent::Tftp(t) if t.client == client.ip && t.file == file && t.outcome == TftpOutcome::Done && t.bytes > 0));
            assert!(done, "{} fetched {file} over TFTP", client.name);
        }
        assert!(booted.vm.console().text().contains("pxelab-fixture: mounting 192.0.2.1:/srv/nixos/nfsroot"), "{}'s initramfs ran", client.name);

        // Its mount: an NFS connection from its address, and the export as its root.
        let connected = events.iter().any(|(_, e)| matches!(e, ServiceEvent::Nfs(n) if n.client == client.ip && n.connected));
        assert!(connected, "{} connected to NFS", client.name);
        let mounts = booted.vm.succeed("cat /proc/mounts").await.unwrap();
        assert!(mounts.contains("192.0.2.1:/srv/nixos/nfsroot /run/nfsroot nfs ro,"), "{}: {mounts}", client.name);
        assert!(booted.vm.succeed("ip -4 addr show").await.unwrap().contains(&format!("inet {}/24", client.ip)), "{} runs on its address", client.name);
        booted.vm.succeed(&format!("echo {} > /tmp/me", client.name)).await.unwrap();
    }
    for booted in &storm.booted {
        assert_eq!(booted.vm.succeed("cat /tmp/me").await.unwrap(), booted.client.name, "each client has its own overlay");
    }
    let declared: std::collections::HashSet<_> = clients.iter().map(|c| c.ip).collect();
    let leased: std::collections::HashSet<_> = clients.iter().filter_map(|c| lab.network().lease_of(c.mac)).collect();
    assert_eq!(leased, declared, "no two clients share an address");
}
