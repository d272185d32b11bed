//! `pxelab serve`: the lab's network alone, for QEMU clients the user starts by hand.

use crate::lab::{Lab, StageError};
use crate::vm::{shell_quote, Disk};

use super::{Client, InstallOptions, Stage};

/// A client for the user to start by hand against a served lab ([`serve`]).
#[derive(Debug, Clone)]
pub struct HandClient {
    pub name: String,
    pub mac: [u8; 6],
    pub ip: std::net::Ipv4Addr,
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
            let firmware = pxelab_ovmf::discover()?;
            let accel = crate::vm::select_accel(&firmware, lab.cache().root()).await?;
            let hw = &options.hardware;
            let nic = hw.nic.unwrap_or(artifacts.system.nic);
            let mut out = Vec::new();
            for Client { vm: name, mac, ip, hostname } in installs.iter().map(|o| o.client.clone()) {
                let dir = lab.dir().join(&name);
                std::fs::create_dir_all(&dir)?;
                let vars = firmware.new_var_store(&dir.join("OVMF_VARS.fd"))?;
                let (path, format) = crate::vm::make_disk(&dir, 0, Disk::Blank { bytes: hw.disk_bytes }).await?;
                let spec = crate::vm::VmSpec {
                    name: name.clone(),
                    accel,
                    memory_mib: hw.memory_mib,
                    cpus: hw.cpus,
                    firmware: Some((firmware.code.clone(), vars.path.clone())),
                    disks: vec![crate::vm::DiskSpec { path, format, bus: hw.disk_bus, bootindex: Some(1), serial: Some("pxelab0".into()) }],
                    nics: vec![crate::vm::NicSpec { model: nic, mac, rom: nic.pxe_rom(), bootindex: Some(2), backend: crate::vm::NetBackend::Unix { path: socket.to_owned() } }],
                    serial: hand_serial(artifacts.system.console.unit, &dir),
                    qmp_fd: None,
                    incoming: None,
                };
                let plain = |w: &str| w.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_./,=:@+".contains(&b));
                let command = spec.argv().iter().map(|w| if plain(w) { w.clone() } else { shell_quote(w) }).collect::<Vec<_>>().join(" ");
                std::fs::write(dir.join("qemu.cmdline"), format!("{command}\n"))?;
                out.push(HandClient { name, mac, ip, hostname, command });
            }
            Ok::<_, Box<dyn std::error::Error + Send + Sync>>(out)
        })
        .await
}

/// A hand-started client's serial ports: the system's console in the user's terminal, each
/// port before it (COM1 holds the firmware's output) in a file in the client's directory.
fn hand_serial(console_unit: u8, dir: &std::path::Path) -> Vec<crate::vm::Serial> {
    let before = (0..console_unit).map(|unit| crate::vm::Serial::File(dir.join(format!("ttyS{unit}.log"))));
    before.chain([crate::vm::Serial::Stdio]).collect()
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn a_hand_client_has_its_systems_console_in_the_terminal() {
        use crate::vm::Serial;
        assert_eq!(hand_serial(0, "/c".as_ref()), [Serial::Stdio]);
        assert_eq!(hand_serial(2, "/c".as_ref()), [Serial::File("/c/ttyS0.log".into()), Serial::File("/c/ttyS1.log".into()), Serial::Stdio]);
    }
}
