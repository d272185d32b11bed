//! What the DHCP server hands out.

use crate::net::Mac;
use std::net::Ipv4Addr;

/// A per-host declaration: this MAC always gets this address and host name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostDecl {
    pub mac: Mac,
    pub ip: Ipv4Addr,
    pub hostname: Option<String>,
}

/// The DHCP server's configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DhcpConfig {
    /// The server's own address: server identifier (54), next-server (`siaddr`) and TFTP
    /// server (66).
    pub server: Ipv4Addr,
    pub netmask: Ipv4Addr,
    /// Default route (3); the installer finds its interface through it.
    pub router: Option<Ipv4Addr>,
    pub dns: Vec<Ipv4Addr>,
    pub domain: Option<String>,
    /// First and last address of the dynamic pool.
    pub pool: (Ipv4Addr, Ipv4Addr),
    pub hosts: Vec<HostDecl>,
    /// Boot file (67 and `file`) by client architecture (option 93); a client whose
    /// architecture is not listed, or that sends none, gets an empty file name.
    pub boot_files: Vec<(u16, String)>,
    /// Network boot over HTTP (none by default).
    pub http_boot: HttpBoot,
    /// NFS root path (17).
    pub root_path: Option<String>,
    pub lease_secs: u32,
    /// Other servers' behaviours, to reproduce what they break (none by default).
    pub quirks: Quirks,
}

/// What clients that boot over HTTP are given, as paths on the lab's HTTP server (each is
/// offered as a URL, `http://<server>/<path>`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HttpBoot {
    /// For UEFI HTTP boot (option 60 `HTTPClient…`): the program the firmware downloads
    /// and runs. The answer carries option 60 `HTTPClient`, as the UEFI specification's
    /// HTTP boot asks; without it the firmware ignores the offer. None: such a client gets
    /// no boot file.
    pub uefi: Option<String>,
    /// For iPXE (user class `iPXE`, option 77): a script, given instead of the TFTP boot
    /// file of its architecture. None: iPXE gets the TFTP boot file, as other PXE clients.
    pub ipxe_script: Option<String>,
}

/// Which kind of network boot client sent a request, by its options.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum BootClient {
    /// A PXE client (firmware, GRUB) or any other: TFTP boot file by architecture.
    Pxe,
    /// UEFI HTTP boot: option 60 starts with `HTTPClient`.
    UefiHttp,
    /// iPXE: option 77 holds `iPXE` (raw, as iPXE sends it, or as an RFC 3004 list).
    Ipxe,
}

impl BootClient {
    /// The kind of client whose option 60 is `vendor_class` and option 77 `user_class`.
    pub fn of(vendor_class: Option<&[u8]>, user_class: Option<&[u8]>) -> Self {
        if vendor_class.is_some_and(|v| v.starts_with(b"HTTPClient")) {
            return BootClient::UefiHttp;
        }
        let ipxe = |classes: &[u8]| {
            if classes == b"iPXE" {
                return true;
            }
            // RFC 3004: each class is a length byte and its bytes.
            let mut rest = classes;
            while let Some((&len, tail)) = rest.split_first() {
                let Some((class, next)) = tail.split_at_checked(usize::from(len)) else { return false };
                if class == b"iPXE" {
                    return true;
                }
                rest = next;
            }
            false
        };
        if user_class.is_some_and(ipxe) {
            return BootClient::Ipxe;
        }
        BootClient::Pxe
    }
}

/// Behaviours of other DHCP servers that break PXE clients, for scenarios that reproduce the
/// breakage.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Quirks {
    /// Offer option 60 `PXEClient` without option 43, as a proxy-less server configured for
    /// PXE often does: OVMF's PXE rejects such offers (PXE-E16).
    pub pxe_client_without_43: bool,
    /// Give a UEFI HTTP boot client its URL without option 60 `HTTPClient`, as a server
    /// configured for HTTP boot by a recipe for PXE does: OVMF's HTTP boot ignores the offer.
    pub http_client_without_60: bool,
    /// Answer a BOOTP request without the RFC 1048 cookie (as GRUBs before 2.04 sent) with no
    /// options, as ISC dhcpd does unless `always-reply-rfc1048 on`.
    pub bootp_without_options: bool,
}

/// Option 93 value of UEFI x86-64 firmware (RFC 4578 "EFI BC", as OVMF and iPXE send it).
pub const ARCH_EFI_X64: u16 = 7;
/// Option 93 value some firmware sends for UEFI x86-64 (RFC 4578 "EFI x86-64").
pub const ARCH_EFI_X64_ALT: u16 = 9;

impl DhcpConfig {
    /// The protocol's defaults on `subnet.0/24`: server `.1` (also router and DNS), pool
    /// `.100`–`.199`, `nixos/bootx64.efi` for UEFI x86-64 clients.
    pub fn for_subnet(subnet: [u8; 3]) -> Self {
        let [a, b, c] = subnet;
        let server = Ipv4Addr::new(a, b, c, 1);
        DhcpConfig {
            server,
            netmask: Ipv4Addr::new(255, 255, 255, 0),
            router: Some(server),
            dns: vec![server],
            domain: Some("pxelab.test".into()),
            pool: (Ipv4Addr::new(a, b, c, 100), Ipv4Addr::new(a, b, c, 199)),
            hosts: Vec::new(),
            boot_files: vec![
                (ARCH_EFI_X64, "nixos/bootx64.efi".into()),
                (ARCH_EFI_X64_ALT, "nixos/bootx64.efi".into()),
            ],
            http_boot: HttpBoot::default(),
            root_path: None,
            lease_secs: 3600,
            quirks: Quirks::default(),
        }
    }

    /// Check what the wire format cannot carry, so that no reply can fail later: a boot file
    /// name must fit BOOTP's 128-byte `file` field, a string option its 255 bytes.
    pub fn check(&self) -> Result<(), ConfigError> {
        for (arch, file) in &self.boot_files {
            if file.len() > 127 {
                return Err(ConfigError::BootFileTooLong { arch: *arch, len: file.len() });
            }
        }
        for path in [&self.http_boot.uefi, &self.http_boot.ipxe_script].into_iter().flatten() {
            let url = self.url(path);
            if url.len() > 127 {
                return Err(ConfigError::UrlTooLong { url });
            }
        }
        let strings = [("root path (17)", self.root_path.as_deref()), ("domain name (15)", self.domain.as_deref())];
        let hostnames = self.hosts.iter().map(|h| ("host name (12)", h.hostname.as_deref()));
        for (what, value) in strings.into_iter().chain(hostnames) {
            if let Some(value) = value.filter(|v| v.len() > 255) {
                return Err(ConfigError::OptionTooLong { what, len: value.len() });
            }
        }
        let (first, last) = (u32::from(self.pool.0), u32::from(self.pool.1));
        if first > last {
            return Err(ConfigError::EmptyPool(self.pool.0, self.pool.1));
        }
        Ok(())
    }

    /// The boot file for a client architecture; empty when none fits.
    pub fn boot_file(&self, arch: Option<u16>) -> &str {
        arch.and_then(|a| self.boot_files.iter().find(|(x, _)| *x == a)).map_or("", |(_, f)| f.as_str())
    }

    /// The boot file for a client of this kind and architecture: a URL for what boots over
    /// HTTP ([`HttpBoot`]), else the TFTP boot file; empty when none fits.
    pub fn boot_file_for(&self, client: BootClient, arch: Option<u16>) -> String {
        match (client, &self.http_boot) {
            (BootClient::UefiHttp, HttpBoot { uefi, .. }) => uefi.as_deref().map_or_else(String::new, |p| self.url(p)),
            (BootClient::Ipxe, HttpBoot { ipxe_script: Some(script), .. }) => self.url(script),
            _ => self.boot_file(arch).to_owned(),
        }
    }

    /// The URL of `path` on the lab's HTTP server.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}/{}", self.server, path.trim_start_matches('/'))
    }
}

/// A DHCP configuration that the wire format cannot carry.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("boot file name for architecture {arch} is {len} bytes; BOOTP's file field holds 127 and a NUL")]
    BootFileTooLong { arch: u16, len: usize },
    #[error("boot URL {url} is {} bytes; BOOTP's file field holds 127 and a NUL", url.len())]
    UrlTooLong { url: String },
    #[error("{what} is {len} bytes; a DHCP option holds 255")]
    OptionTooLong { what: &'static str, len: usize },
    #[error("address pool {0}-{1} is empty")]
    EmptyPool(Ipv4Addr, Ipv4Addr),
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn clients_are_told_apart_by_vendor_and_user_class() {
        assert_eq!(BootClient::of(Some(b"HTTPClient:Arch:00016:UNDI:003001"), None), BootClient::UefiHttp);
        assert_eq!(BootClient::of(Some(b"PXEClient:Arch:00007:UNDI:003010"), Some(b"iPXE")), BootClient::Ipxe);
        assert_eq!(BootClient::of(None, Some(b"\x04iPXE")), BootClient::Ipxe, "RFC 3004 form");
        assert_eq!(BootClient::of(None, Some(b"\x03abc\x04iPXE")), BootClient::Ipxe, "second of two classes");
        assert_eq!(BootClient::of(Some(b"PXEClient:Arch:00007:UNDI:003000"), None), BootClient::Pxe);
        assert_eq!(BootClient::of(None, Some(b"\x09iPXE")), BootClient::Pxe, "a length past the end");
        assert_eq!(BootClient::of(None, Some(b"iPXE-like")), BootClient::Pxe);
    }

    #[test]
    fn http_boot_clients_get_urls_and_others_their_tftp_file() {
        let mut c = DhcpConfig::for_subnet([192, 0, 2]);
        assert_eq!(c.boot_file_for(BootClient::UefiHttp, Some(16)), "", "no HTTP boot configured");
        assert_eq!(c.boot_file_for(BootClient::Ipxe, Some(7)), "nixos/bootx64.efi");
        c.http_boot = HttpBoot { uefi: Some("/ipxe/ipxe.efi".into()), ipxe_script: Some("pxelab.ipxe".into()) };
        assert_eq!(c.boot_file_for(BootClient::UefiHttp, Some(16)), "http://192.0.2.1/ipxe/ipxe.efi");
        assert_eq!(c.boot_file_for(BootClient::Ipxe, Some(7)), "http://192.0.2.1/pxelab.ipxe");
        assert_eq!(c.boot_file_for(BootClient::Pxe, Some(7)), "nixos/bootx64.efi");
    }

    #[test]
    fn what_the_wire_cannot_carry_is_a_config_error() {
        assert_eq!(DhcpConfig::for_subnet([192, 0, 2]).check(), Ok(()));
        let mut c = DhcpConfig::for_subnet([192, 0, 2]);
        c.boot_files[0].1 = "x".repeat(200);
        assert_eq!(c.check(), Err(ConfigError::BootFileTooLong { arch: ARCH_EFI_X64, len: 200 }));
        let mut c = DhcpConfig::for_subnet([192, 0, 2]);
        c.http_boot.ipxe_script = Some("s".repeat(111));
        assert!(matches!(c.check(), Err(ConfigError::UrlTooLong { url }) if url.starts_with("http://192.0.2.1/sss")));
        let mut c = DhcpConfig::for_subnet([192, 0, 2]);
        c.root_path = Some("r".repeat(300));
        assert!(matches!(c.check(), Err(ConfigError::OptionTooLong { len: 300, .. })));
        let mut c = DhcpConfig::for_subnet([192, 0, 2]);
        c.pool = (c.pool.1, c.pool.0);
        assert!(matches!(c.check(), Err(ConfigError::EmptyPool(..))));
    }
}
