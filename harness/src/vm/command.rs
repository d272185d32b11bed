//! The QEMU command line for one client, as plain data → argv (no I/O).

use crate::net::Mac;
use std::os::fd::RawFd;
use std::path::PathBuf;

use super::Accel;

/// Everything the command line depends on. File descriptors are the numbers the child
/// process will see; the process layer keeps them open across `exec`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmSpec {
    pub name: String,
    pub accel: Accel,
    pub memory_mib: u32,
    pub cpus: u32,
    /// OVMF CODE (read-only) and this VM's VARS copy.
    pub firmware: Option<(PathBuf, PathBuf)>,
    /// The firmware is a Secure Boot build: the machine gets SMM and secure flash.
    pub secure_boot: bool,
    pub disks: Vec<DiskSpec>,
    pub nics: Vec<NicSpec>,
    /// The serial ports COM1, COM2, … (`ttyS0`, `ttyS1`, … in the guest), in order.
    pub serial: Vec<Serial>,
    /// Connected socket for QMP, if the harness drives the VM.
    pub qmp_fd: Option<RawFd>,
    /// A saved machine state to start from instead of power-on ([`super::Snapshot`]).
    pub incoming: Option<PathBuf>,
}

/// What a serial port is connected to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Serial {
    /// A connected socket the harness reads, with QEMU's raw log of the port.
    Socket { fd: RawFd, log: PathBuf },
    /// The terminal QEMU runs in, with QEMU's monitor on Ctrl-A C (a client started by hand).
    Stdio,
    /// A file QEMU writes the port's output to.
    File(PathBuf),
}

/// A disk on its own controller (virtio-blk, NVMe) or a port of the AHCI controller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskSpec {
    pub path: PathBuf,
    pub format: DiskFormat,
    pub bus: DiskBus,
    pub bootindex: Option<u32>,
    pub serial: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DiskFormat {
    Raw,
    Qcow2,
}

impl DiskFormat {
    pub fn as_str(self) -> &'static str {
        match self {
            DiskFormat::Raw => "raw",
            DiskFormat::Qcow2 => "qcow2",
        }
    }
}

/// A network card and what it is plugged into.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NicSpec {
    pub model: NicModel,
    pub mac: Mac,
    pub rom: Rom,
    pub bootindex: Option<u32>,
    pub backend: NetBackend,
}

/// What a NIC is plugged into.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NetBackend {
    /// A connected stream socket to the lab's switch (4-byte length + frame).
    Switch { fd: RawFd },
    /// The lab's switch socket that `pxelab serve` listens on, for a QEMU started by hand.
    Unix { path: PathBuf },
    /// QEMU's own user-mode network with its built-in DHCP and TFTP server, restricted so
    /// nothing leaves the guest (a benchmark's reference peer).
    Slirp(SlirpNet),
}

/// A restricted QEMU user-mode network (`-netdev user,restrict=on`): its DHCP and TFTP
/// server, and nothing else the guest can reach but its [`GuestForward`]s.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlirpNet {
    /// The root slirp's TFTP server serves.
    pub tftp_root: PathBuf,
    /// The boot file its DHCP offers; empty: none.
    pub bootfile: String,
    /// TCP services on the host the guest may reach, each at an address of its own.
    pub forwards: Vec<GuestForward>,
}

impl SlirpNet {
    /// A network serving `tftp_root`, offering `bootfile`.
    pub fn tftp(tftp_root: impl Into<PathBuf>, bootfile: impl Into<String>) -> Self {
        SlirpNet { tftp_root: tftp_root.into(), bootfile: bootfile.into(), forwards: vec![] }
    }

    /// Let the guest's TCP connections to `guest` reach `host` on the host's loopback
    /// (QEMU's `guestfwd`: QEMU connects to `host` once, when it starts, and carries one
    /// guest connection at a time over that connection).
    pub fn forward(mut self, guest: std::net::SocketAddrV4, host: std::net::SocketAddrV4) -> Self {
        self.forwards.push(GuestForward { guest, host });
        self
    }
}

/// A guest's TCP connections to `guest` (on slirp's 10.0.2.0/24) go to `host`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GuestForward {
    pub guest: std::net::SocketAddrV4,
    pub host: std::net::SocketAddrV4,
}

/// A NIC model QEMU emulates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum NicModel {
    #[serde(rename = "virtio-net")]
    #[value(name = "virtio-net")]
    VirtioNet,
    E1000,
    E1000e,
}

impl NicModel {
    /// The ROM a UEFI client of this model PXE-boots with. OVMF has a UEFI driver for
    /// virtio-net only, so its own PXE serves that model; an e1000 or e1000e without a ROM
    /// offers no network boot at all, so those boot through QEMU's iPXE ROM.
    pub fn pxe_rom(self) -> Rom {
        match self {
            NicModel::VirtioNet => Rom::OvmfNative,
            NicModel::E1000 | NicModel::E1000e => Rom::Ipxe,
        }
    }

    /// Properties the lab sets on the device, each after a comma.
    ///
    /// A virtio-net NIC offers no link status (`status=off`): a lab's links go down in its
    /// switch, never in QEMU, so the device would only ever say "up", and OVMF's network driver
    /// reads that from the device's configuration at each status poll, which GRUB makes while
    /// waiting on every packet it sends. Each such read takes QEMU's global lock, which the
    /// thread serving the lab's socket holds as DATA arrives: with it on, the vCPU slept on that
    /// lock about once per TFTP block of GRUB's (8344 times for 8054 blocks, against 795
    /// without), and the transfer took 0.82 s against 0.57 s (one run each).
    pub fn properties(self) -> &'static str {
        match self {
            NicModel::VirtioNet => ",status=off",
            NicModel::E1000 | NicModel::E1000e => "",
        }
    }

    /// QEMU's device name.
    pub fn device(self) -> &'static str {
        match self {
            NicModel::VirtioNet => "virtio-net-pci",
            NicModel::E1000 => "e1000",
            NicModel::E1000e => "e1000e",
        }
    }
}

/// The controller a disk hangs off, which decides its name in the guest.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize, serde::Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum DiskBus {
    /// virtio-blk: `/dev/vda`.
    #[default]
    Virtio,
    /// NVMe: `/dev/nvme0n1`, partitions `nvme0n1p1` (the protocol's `partitionSeparator=p`).
    Nvme,
    /// SATA on the q35 machine's AHCI controller: `/dev/sda`.
    Sata,
}

impl DiskBus {
    /// The guest's name for the first disk on this bus, and the separator before partition
    /// numbers.
    pub fn first_disk(self) -> (&'static str, &'static str) {
        match self {
            DiskBus::Virtio => ("/dev/vda", ""),
            DiskBus::Nvme => ("/dev/nvme0n1", "p"),
            DiskBus::Sata => ("/dev/sda", ""),
        }
    }
}

/// The option ROM a NIC carries, which decides who does the PXE boot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rom {
    /// QEMU's default ROM for the model: iPXE.
    Ipxe,
    /// No ROM (`romfile=`): OVMF's own network stack does PXE.
    OvmfNative,
    /// A ROM file of the user's.
    File(PathBuf),
}

impl VmSpec {
    /// The argument vector, program name first.
    pub fn argv(&self) -> Vec<String> {
        let mut a: Vec<String> = vec!["qemu-system-x86_64".into()];
        let mut arg = |flag: &str, value: String| {
            a.push(flag.to_owned());
            a.push(value);
        };
        arg("-name", format!("{},debug-threads=on", self.name));
        arg("-machine", if self.secure_boot { "q35,smm=on".into() } else { "q35".into() });
        if self.secure_boot {
            // Only SMM code may write the variable flash, so the OS cannot rewrite db or PK.
            arg("-global", "driver=cfi.pflash01,property=secure,value=on".into());
        }
        arg("-accel", self.accel.qemu_arg());
        if self.accel == Accel::Kvm {
            arg("-cpu", "host".into());
        }
        arg("-m", self.memory_mib.to_string());
        arg("-smp", self.cpus.to_string());
        if let Some((code, vars)) = &self.firmware {
            arg("-drive", format!("if=pflash,format=raw,unit=0,readonly=on,file={}", code.display()));
            arg("-drive", format!("if=pflash,format=raw,unit=1,file={}", vars.display()));
        }
        for (i, port) in self.serial.iter().enumerate() {
            match port {
                Serial::Socket { fd, log } => {
                    arg("-chardev", format!("socket,id=serial{i},fd={fd},logfile={},logappend=on", log.display()));
                    arg("-serial", format!("chardev:serial{i}"));
                }
                Serial::Stdio => arg("-serial", "mon:stdio".into()),
                Serial::File(path) => arg("-serial", format!("file:{}", path.display())),
            }
        }
        if let Some(fd) = self.qmp_fd {
            arg("-chardev", format!("socket,id=qmp,fd={fd}"));
            arg("-mon", "chardev=qmp,mode=control".into());
        }
        for (i, disk) in self.disks.iter().enumerate() {
            arg("-drive", format!("if=none,id=disk{i},format={},file={}", disk.format.as_str(), disk.path.display()));
            let mut device = match disk.bus {
                DiskBus::Virtio => format!("virtio-blk-pci,drive=disk{i}"),
                DiskBus::Nvme => format!("nvme,drive=disk{i}"),
                // q35's built-in ICH9 AHCI controller has six ports, ide.0 to ide.5.
                DiskBus::Sata => format!("ide-hd,drive=disk{i},bus=ide.{i}"),
            };
            if let Some(serial) = &disk.serial {
                device += &format!(",serial={serial}");
            }
            if let Some(index) = disk.bootindex {
                device += &format!(",bootindex={index}");
            }
            arg("-device", device);
        }
        for (i, nic) in self.nics.iter().enumerate() {
            match &nic.backend {
                NetBackend::Switch { fd } => {
                    arg("-netdev", format!("stream,id=net{i},server=off,addr.type=fd,addr.str={fd}"))
                }
                NetBackend::Unix { path } => {
                    arg("-netdev", format!("stream,id=net{i},server=off,addr.type=unix,addr.path={}", path.display()))
                }
                NetBackend::Slirp(SlirpNet { tftp_root, bootfile, forwards }) => {
                    let mut netdev = format!("user,id=net{i},restrict=on,tftp={},bootfile={bootfile}", tftp_root.display());
                    for GuestForward { guest, host } in forwards {
                        netdev += &format!(",guestfwd=tcp:{guest}-tcp:{host}");
                    }
                    arg("-netdev", netdev)
                }
            }
            let mut device = format!("{}{},netdev=net{i},mac={}", nic.model.device(), nic.model.properties(), nic.mac);
            match &nic.rom {
                Rom::Ipxe => {}
                Rom::OvmfNative => device += ",romfile=",
                Rom::File(path) => device += &format!(",romfile={}", path.display()),
            }
            if let Some(index) = nic.bootindex {
                device += &format!(",bootindex={index}");
            }
            arg("-device", device);
        }
        if let Some(state) = &self.incoming {
            arg("-incoming", format!("exec:cat {}", super::shell_quote(&state.display().to_string())));
        }
        a.extend(["-nodefaults", "-no-user-config", "-display", "none"].map(String::from));
        a
    }
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn argv_of_a_pxe_client_with_a_disk() {
        let spec = VmSpec {
            name: "client1".into(),
            accel: Accel::Tcg,
            memory_mib: 1024,
            cpus: 1,
            firmware: Some(("/usr/share/OVMF/OVMF_CODE_4M.fd".into(), "/run/t/client1/OVMF_VARS.fd".into())),
            secure_boot: false,
            disks: vec![DiskSpec {
                path: "/run/t/client1/disk0.qcow2".into(),
                format: DiskFormat::Qcow2,
                bus: DiskBus::Virtio,
                bootindex: Some(1),
                serial: Some("pxelab0".into()),
            }],
            nics: vec![
                NicSpec {
                    model: NicModel::E1000,
                    mac: Mac([0x52, 0x54, 0x00, 0x12, 0x34, 0x56]),
                    rom: Rom::OvmfNative,
                    bootindex: Some(2),
                    backend: NetBackend::Switch { fd: 7 },
                },
                NicSpec {
                    model: NicModel::VirtioNet,
                    mac: Mac([0x52, 0x54, 0x00, 0, 0, 1]),
                    rom: Rom::Ipxe,
                    bootindex: None,
                    backend: NetBackend::Slirp(
                        SlirpNet::tftp("/run/t/tftp", "nixos/bootx64.efi")
                            .forward("10.0.2.100:2049".parse().unwrap(), "127.0.0.1:40001".parse().unwrap()),
                    ),
                },
            ],
            serial: vec![
                Serial::Socket { fd: 5, log: "/run/t/client1/serial.raw.log".into() },
                Serial::Socket { fd: 8, log: "/run/t/client1/commands.raw.log".into() },
            ],
            qmp_fd: Some(6),
            incoming: None,
        };
        insta::assert_snapshot!(spec.argv().join("\n"));
    }

    #[test]
    fn disk_buses_and_nic_models_name_their_devices() {
        let disk = |bus| DiskSpec { path: "/d.qcow2".into(), format: DiskFormat::Qcow2, bus, bootindex: Some(1), serial: Some("s".into()) };
        let nic = |model| NicSpec { model, mac: Mac([2, 0, 0, 0, 0, 1]), rom: Rom::OvmfNative, bootindex: None, backend: NetBackend::Switch { fd: 9 } };
        let spec = VmSpec {
            name: "c".into(),
            accel: Accel::Tcg,
            memory_mib: 512,
            cpus: 2,
            firmware: None,
            secure_boot: false,
            disks: vec![disk(DiskBus::Nvme), disk(DiskBus::Sata), disk(DiskBus::Virtio)],
            nics: vec![nic(NicModel::E1000e), nic(NicModel::E1000)],
            serial: vec![Serial::Socket { fd: 3, log: "/s.log".into() }],
            qmp_fd: Some(4),
            incoming: None,
        };
        let devices: Vec<String> = spec.argv().windows(2).filter(|w| w[0] == "-device").map(|w| w[1].clone()).collect();
        assert_eq!(
            devices,
            [
                "nvme,drive=disk0,serial=s,bootindex=1",
                "ide-hd,drive=disk1,bus=ide.1,serial=s,bootindex=1",
                "virtio-blk-pci,drive=disk2,serial=s,bootindex=1",
                "e1000e,netdev=net0,mac=02:00:00:00:00:01,romfile=",
                "e1000,netdev=net1,mac=02:00:00:00:00:01,romfile=",
            ]
        );
    }

    #[test]
    fn kvm_uses_the_host_cpu() {
        let spec = VmSpec {
            name: "k".into(),
            accel: Accel::Kvm,
            memory_mib: 512,
            cpus: 2,
            firmware: None,
            secure_boot: false,
            disks: vec![],
            nics: vec![],
            serial: vec![Serial::Socket { fd: 3, log: "s.log".into() }],
            qmp_fd: Some(4),
            incoming: None,
        };
        let argv = spec.argv().join(" ");
        assert!(argv.contains("-accel kvm -cpu host -m 512 -smp 2"), "{argv}");
        assert!(!argv.contains("pflash"));
    }

    /// A Secure Boot build does not start without SMM, and its variables are safe from the OS
    /// only in secure flash.
    #[test]
    fn a_secure_boot_firmware_gets_smm_and_secure_flash() {
        let spec = |secure_boot| VmSpec {
            name: "s".into(),
            accel: Accel::Tcg,
            memory_mib: 512,
            cpus: 1,
            firmware: Some(("/usr/share/OVMF/OVMF_CODE_4M.ms.fd".into(), "/run/s/OVMF_VARS.fd".into())),
            secure_boot,
            disks: vec![],
            nics: vec![],
            serial: vec![],
            qmp_fd: None,
            incoming: None,
        };
        let argv = spec(true).argv().join(" ");
        assert!(argv.contains("-machine q35,smm=on -global driver=cfi.pflash01,property=secure,value=on "), "{argv}");
        let plain = spec(false).argv().join(" ");
        assert!(plain.contains("-machine q35 ") && !plain.contains("smm") && !plain.contains("secure"), "{plain}");
    }
}
