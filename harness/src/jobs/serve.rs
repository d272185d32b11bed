//! `pxelab serve`: the lab's network alone, for QEMU clients the user starts by hand.

use crate::lab::{Lab, StageError};
use crate::vm::{Cable, Disk, Nic};

use super::{Client, InstallOptions, Stage};

/// A client for the user to start by hand against a served lab ([`serve`]).
#[derive(Debug, Clone)]
pub struct HandClient {
    /// The client's name (its directory in the run's).
    pub name: String,
    /// Its NIC's MAC, declared to the lab's DHCP.
    pub mac: crate::net::Mac,
    /// The address DHCP gives it.
    pub ip: std::net::Ipv4Addr,
    /// The host name DHCP gives it.
    pub hostname: String,
    /// The QEMU command line, ready to paste into a shell.
    pub command: String,
}

/// `pxelab serve`: the lab's network alone, DHCP, TFTP and NFS for the artifacts of
/// `options`, with a host entry for each of `clients`; and for each, an NVRAM copy, a blank
/// disk and the QEMU command line that PXE-boots it on the lab through `socket` (which the
/// caller listens on and plugs in with [`crate::lab::Network::plug_stream`]).
pub async fn serve(lab: &mut Lab, options: &InstallOptions, clients: u8, socket: &std::path::Path) -> Result<Vec<HandClient>, StageError> {
    let mut stages = lab.stages();
    let installs: Vec<InstallOptions> = (1..=clients).map(|n| InstallOptions { client: Client::nth(n), ..options.clone() }).collect();
    let (artifacts, config) = super::install::configure(lab, &mut stages, &installs).await?;
    stages.run(Stage::StartNetwork, async { lab.start_network(config).map(drop) }).await?;
    stages
        .run(Stage::PrepareClients, async {
            let hw = &options.hardware;
            let nic = hw.nic.unwrap_or(artifacts.system.nic);
            let mut out = Vec::new();
            for Client { vm: name, mac, ip, hostname } in installs.iter().map(|o| o.client.clone()) {
                let cable = Cable::Unix(socket.to_owned());
                let command = lab
                    .vm(&name)
                    .memory_mib(hw.memory_mib)
                    .cpus(hw.cpus)
                    .console_unit(artifacts.system.console.unit)
                    .disk_on(hw.disk_bus, Disk::Blank { bytes: hw.disk_bytes }, Some(1))
                    .nic(Nic { model: nic, mac, rom: nic.pxe_rom(), bootindex: Some(2), cable })
                    .hand_started()
                    .await?;
                out.push(HandClient { name, mac, ip, hostname, command });
            }
            Ok::<_, crate::vm::VmError>(out)
        })
        .await
}
