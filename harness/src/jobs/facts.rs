//! What a finished scenario reports: its stages, and the facts it read from the guest as
//! typed fields. [`InstallFacts::rows`] is the one place they become text, for the stage
//! table's lines, the run's `report.json` and `report.html`.

use crate::lab::Stages;

/// What an install read from the system it installed.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct InstallFacts {
    /// Where the firmware started: power-on, or a snapshot (saved or restored).
    pub firmware_start: String,
    /// Where the installed system came from: this run's install, or a cached one's disk
    /// ([`super::InstallOptions::cached_install`]).
    pub installed_by: String,
    /// The installed system's version (its `version_command`).
    pub image_version: String,
    /// The installed system's host name (from DHCP).
    pub hostname: String,
    /// `stat -c %a / /tmp`: `755 1777` on a whole system.
    pub modes: String,
    /// The ready command's output (`running` for systemd).
    pub system_state: String,
    /// Where the commands ran: the backdoor shell's port or the console login's.
    pub commands_on: String,
    /// The device `/` is mounted from.
    pub root_fs: String,
    /// The device `findfs LABEL=nixos` names.
    pub label_nixos: String,
    /// The boot entry the firmware started from the disk: `Boot#### description`.
    pub firmware_booted: String,
    /// The first entry of the NVRAM's BootOrder: `Boot#### description path`.
    pub first_boot_entry: String,
    /// The firmware's Secure Boot state, read from the NVRAM after the install
    /// ([`pxelab_ovmf::SecureBoot`]): `enforcing; KEK: …; db: …; dbx: …` on a Secure Boot
    /// client.
    pub secure_boot: String,
    /// Firmware DHCP and TFTP requests of the client after the installer's reboot.
    pub network_boot_after_reboot: usize,
    /// DHCP requests of the client after the installer's reboot.
    pub dhcp_after_reboot: usize,
    /// What the switch dropped during the install, per port and reason: its latest totals.
    pub switch_drops: Vec<(crate::net::switch::PortId, crate::net::segment::DropReason, u64)>,
}

impl InstallFacts {
    /// The facts as labelled lines, in the stage table's order.
    pub fn rows(&self) -> Vec<(&'static str, String)> {
        vec![
            ("firmware started from", self.firmware_start.clone()),
            ("installed by", self.installed_by.clone()),
            ("image version", self.image_version.clone()),
            ("hostname", self.hostname.clone()),
            ("modes of / and /tmp", self.modes.clone()),
            ("system state", self.system_state.clone()),
            ("commands on", self.commands_on.clone()),
            ("root file system", self.root_fs.clone()),
            ("LABEL=nixos", self.label_nixos.clone()),
            ("firmware booted", self.firmware_booted.clone()),
            ("first boot entry", self.first_boot_entry.clone()),
            ("Secure Boot", self.secure_boot.clone()),
            ("network boot requests after the reboot", self.network_boot_after_reboot.to_string()),
            ("DHCP requests after the reboot", self.dhcp_after_reboot.to_string()),
            ("frames the switch dropped", drops(&self.switch_drops)),
        ]
    }
}

/// `none`, or `port 3: rogue_dhcp 120, arp_spoofed 80; port 1: queue_full 2`.
fn drops(drops: &[(crate::net::switch::PortId, crate::net::segment::DropReason, u64)]) -> String {
    if drops.is_empty() {
        return "none".into();
    }
    let mut ports: Vec<crate::net::switch::PortId> = drops.iter().map(|(port, _, _)| *port).collect();
    ports.dedup();
    let reason = |r: &crate::net::segment::DropReason| serde_json::to_value(r).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default();
    let port = |p: crate::net::switch::PortId| {
        let each: Vec<String> = drops.iter().filter(|(q, _, _)| *q == p).map(|(_, r, n)| format!("{} {n}", reason(r))).collect();
        format!("port {p}: {}", each.join(", "))
    };
    ports.into_iter().map(port).collect::<Vec<_>>().join("; ")
}

/// What the UEFI disk fixture's boot read.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct UefiBootFacts {
    /// The guest's `uname -r`.
    pub uname: String,
    /// How QEMU exited after the guest's power-off (`None`: the VM was kept).
    pub qemu_exit: Option<String>,
}

/// The facts of one of the scenarios.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub enum Facts {
    /// An install's.
    Install(InstallFacts),
    /// The UEFI disk fixture's boot's.
    UefiBoot(UefiBootFacts),
}

impl Facts {
    /// The facts as labelled lines.
    pub fn rows(&self) -> Vec<(&'static str, String)> {
        match self {
            Facts::Install(facts) => facts.rows(),
            Facts::UefiBoot(UefiBootFacts { uname, qemu_exit }) => {
                let mut rows = vec![("uname -r", uname.clone())];
                rows.extend(qemu_exit.clone().map(|exit| ("QEMU exit", exit)));
                rows
            }
        }
    }
}

/// What a finished scenario reports.
#[derive(Debug)]
pub struct Report {
    /// Each stage's time.
    pub stages: Stages,
    /// What the scenario read from the guest.
    pub facts: Facts,
}

/// What a finished install reports.
#[derive(Debug)]
pub struct InstallReport {
    /// Each stage's time.
    pub stages: Stages,
    /// What the install read from the installed system.
    pub facts: InstallFacts,
}

impl Report {
    /// The report of a scenario's `stages`; `facts` go into the run's report too.
    pub fn new(stages: Stages, facts: Facts) -> Self {
        for (what, value) in facts.rows() {
            stages.fact(what, &value);
        }
        Report { stages, facts }
    }
}

impl InstallReport {
    /// The report of an install's `stages`; `facts` go into the run's report too.
    pub fn new(stages: Stages, facts: InstallFacts) -> Self {
        for (what, value) in facts.rows() {
            stages.fact(what, &value);
        }
        InstallReport { stages, facts }
    }
}

impl From<InstallReport> for Report {
    fn from(InstallReport { stages, facts }: InstallReport) -> Self {
        Report { stages, facts: Facts::Install(facts) }
    }
}
