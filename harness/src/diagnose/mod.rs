//! Known causes of install failures, recognised in what the installer printed and the
//! configuration files it read: each a sentence that says what went wrong and what fixes it,
//! added to the failing stage's error.

use regex::Regex;

pub mod units;

/// A failure with the known causes found for it.
#[derive(Debug, thiserror::Error)]
#[error("{source}\n{}", crate::console::banner("known causes", &causes.join("\n")))]
pub struct Diagnosed {
    pub causes: Vec<String>,
    #[source]
    pub source: Box<dyn std::error::Error + Send + Sync>,
}

/// `error` with the known causes `console` shows, if any (else `error` as it is). `config`
/// reads an installer file (`config`, `config-<mac>`, …) as the client sees it.
pub fn diagnose(error: Box<dyn std::error::Error + Send + Sync>, console: &str, config: impl Fn(&str) -> Option<String>) -> Box<dyn std::error::Error + Send + Sync> {
    let causes: Vec<String> =
        [partition_separator(console), config_precedence(console, &config), address_lost_to_stderr(console), secure_boot_refusal(console)]
            .into_iter()
            .flatten()
            .collect();
    match causes.is_empty() {
        true => error,
        false => Box::new(Diagnosed { causes, source: error }),
    }
}

/// Partitions of a disk whose name ends in a digit (NVMe, MMC) are `<disk>p<n>`; without
/// `partitionSeparator=p` the installer looks for `<disk><n>`, which never appears.
fn partition_separator(console: &str) -> Option<String> {
    let wrong = Regex::new(r"(/dev/(?:nvme\d+n\d+|mmcblk\d+|loop\d+))(\d)\b").expect("valid pattern");
    let failing = Regex::new(r"(?i)did not appear|not a block device|no such file|cannot open|unable to open|not found").expect("valid pattern");
    console.lines().filter(|line| failing.is_match(line)).find_map(|line| wrong.captures(line)).map(|c| {
        let (disk, n) = (&c[1], &c[2]);
        format!(
            "the installer looked for partition {disk}{n}, but the partitions of {disk} are named {disk}p{n}: set \
             partitionSeparator=p in the install config (the protocol's rule for NVMe and MMC disks)"
        )
    })
}

/// Another DHCP server on the lab network answered the client `mac` (the lab's DHCP service
/// logs each foreign OFFER and ACK it sees): its address and port, and what the client took
/// from it. An ACK means the client took the rogue's address and boot file.
pub fn rogue_dhcp_server(events: &[(std::time::Duration, crate::services::ServiceEvent)], mac: crate::net::Mac) -> Option<String> {
    use crate::services::dhcp::DhcpEventKind;
    use crate::services::ServiceEvent;
    let foreign = |kind: DhcpEventKind| {
        events.iter().rev().find_map(|(_, e)| match e {
            ServiceEvent::Dhcp(d) if d.mac == mac && d.kind == kind => Some(d.clone()),
            _ => None,
        })
    };
    let (event, took) = match (foreign(DhcpEventKind::ForeignAck), foreign(DhcpEventKind::ForeignOffer)) {
        (Some(ack), _) => (ack, true),
        (None, Some(offer)) => (offer, false),
        (None, None) => return None,
    };
    let server = event.server.map_or("an unknown address".to_owned(), |s| s.to_string());
    let port = event.switch_port.map_or(String::new(), |p| format!(" on switch port {p}"));
    let mut file = if event.boot_file.is_empty() { "no boot file".to_owned() } else { format!("boot file {}", event.boot_file) };
    if let Some(path) = &event.root_path {
        file += &format!(", root path {path}");
    }
    Some(match took {
        true => format!(
            "a second DHCP server, {server}{port}, answered {mac} and the client took its offer: address {}, {file}, \
             from that server and not the lab's; find that server and stop it (a rogue DHCP server on the segment)",
            event.ip
        ),
        false => format!(
            "a second DHCP server, {server}{port}, offered {mac} address {} and {file}; the client may have taken it \
             over the lab's offer (a rogue DHCP server on the segment)",
            event.ip
        ),
    })
}

/// Upstream's installer reads its address with `eval "$(dhcpcd … -c hook …)"`, from the hook's
/// stdout; dhcpcd 9 and later send a hook's output to stderr, so `$ipv4Address` is empty and
/// the installer asks for `/installer/config-` instead of `config-<address>`: a per-address
/// config is silently ignored. Seen as a `Trying /installer/config-...` with no address.
pub fn address_lost_to_stderr(console: &str) -> Option<String> {
    let empty = Regex::new(r"Trying /installer/config-\.\.\.").expect("valid pattern");
    empty.is_match(console).then(|| {
        "the installer asked for /installer/config- with no address: its `eval \"$(dhcpcd … -c hook …)\"` reads the \
         hook's stdout, but dhcpcd 9 and later send a hook's output to stderr, so $ipv4Address stayed empty and a \
         config-<address> file is never read (upstream's bug with current nixpkgs; redirect the hook's output, e.g. \
         `-c hook 2>&1`, or take the address from `ip -4 addr`)"
            .to_owned()
    })
}

/// What Secure Boot refused, from the console: the firmware refusing an image it loaded
/// (`BdsDxe: failed to load Boot#### "<option>" …: Access Denied`), naming the boot option
/// and the file the console last said it loaded (the PXE NBP's name, a `Fetching Netboot
/// Image` of shim's); or shim's lock refusing the kernel GRUB loaded (`bad shim signature`),
/// naming the kernel the console last said it loaded.
pub fn secure_boot_refusal(console: &str) -> Option<String> {
    let firmware = Regex::new(r#"BdsDxe: failed to load (Boot[0-9A-F]{4}) "([^"]*)".*: Access Denied"#).expect("valid pattern");
    let shim = Regex::new(r"error: bad shim signature").expect("valid pattern");
    let last = |re: &str, upto: usize| {
        let re = Regex::new(re).expect("valid pattern");
        re.captures_iter(&console[..upto]).last().map(|c| c[1].trim().to_owned())
    };
    if let Some(c) = firmware.captures(console) {
        let at = c.get(0).expect("group 0").start();
        let file = last(r"NBP filename is (\S+)", at).map_or(String::new(), |f| format!(" ({f})"));
        return Some(format!(
            "Secure Boot refused the image {} \"{}\" loaded{file}: Access Denied, the firmware's security violation. It is \
             not signed by a key in the firmware's db, or its hash is in dbx. A GRUB built with grub-mkimage, like the \
             protocol's bootx64.efi, is signed by no one: serve Microsoft-signed shim as the NBP with a signed GRUB \
             beside it (README, Secure Boot), or enrol your own key and sign GRUB with it (sbsign)",
            &c[1], &c[2]
        ));
    }
    let at = shim.find(console)?.start();
    let kernel = last(r"loading kernel\s+(\S+)", at)
        .or_else(|| last(r"(?m)^\S*\s*linux\s+(\S+)", at))
        .map_or(String::new(), |k| format!(" {k}"));
    Some(format!(
        "Secure Boot refused the kernel{kernel}: shim's lock found no trusted signature on it (\"bad shim signature\"). \
         It is unsigned, or signed by a key that is neither in the firmware's db nor enrolled in shim (MOK). \
         Upstream's kernel and the nixos-shape kernel are unsigned: an installer built from them cannot boot a \
         machine with Secure Boot on. Sign the kernel (sbsign) with a key the machine trusts"
    ))
}

/// Boot entries piling up across reinstalls (reported against Ironic): NVRAM holds more than
/// one entry for the installed system's loader (a disk partition's file), because the
/// installer adds one at each activation without removing the one it made before. The
/// rendered path leaves out the partition's GUID, which each reinstall makes anew: an entry
/// left with the old one points at nothing.
pub fn piled_boot_entries(entries: &pxelab_ovmf::BootEntries) -> Option<String> {
    let mut by_loader: std::collections::BTreeMap<&str, Vec<&pxelab_ovmf::LoadOption>> = Default::default();
    for option in entries.options.iter().filter(|o| o.path.starts_with("HD(")) {
        by_loader.entry(option.path.as_str()).or_default().push(option);
    }
    let (loader, options) = by_loader.into_iter().find(|(_, options)| options.len() > 1)?;
    let names: Vec<String> = options.iter().map(|o| format!("Boot{:04X} {:?}", o.number, o.description)).collect();
    Some(format!(
        "NVRAM holds {} boot entries for one loader, {loader}: {}. The installer adds an entry at each activation \
         without removing the one it made before, so every reinstall leaves one more until the NVRAM is full; remove \
         the entries of the same loader first (`efibootmgr -b #### -B`), or let the boot loader's installer update its own",
        options.len(),
        names.join(", ")
    ))
}

/// The installer ran on a different disk than the most specific config file it loaded
/// names, and the generic `config` names that disk: it read the generic file last, so the
/// generic file's values override the per-host ones (upstream's order).
fn config_precedence(console: &str, config: impl Fn(&str) -> Option<String>) -> Option<String> {
    let device = Regex::new(r"Installing NixOS on device (\S+)").expect("valid pattern").captures(console)?[1].to_owned();
    let loaded: Vec<String> = Regex::new(r"Trying /installer/(\S+?)\.\.\.loading")
        .expect("valid pattern")
        .captures_iter(console)
        .map(|c| c[1].to_owned())
        .collect();
    let root_device = |file: &str| {
        let text = config(file)?;
        text.lines().filter_map(|l| l.trim().strip_prefix("rootDevice=")).next_back().map(|v| v.trim_matches(['"', '\'']).to_owned())
    };
    let generic = root_device("config")?;
    let (file, wanted) = loaded.iter().filter(|f| f.as_str() != "config").find_map(|f| root_device(f).map(|d| (f.clone(), d)))?;
    (device == generic && wanted != generic).then(|| {
        format!(
            "the installer used rootDevice={device} from the generic config, although {file} sets rootDevice={wanted}: it read \
             the generic config last, so it overrides per-host values (upstream's order: config-<ip>, config-<mac>, config); \
             a per-host file must win, or the generic one must not set what hosts override"
        )
    })
}

/// OVMF's HTTP boot giving up, from its console (`>>Start HTTP Boot over IPv4`, then
/// `Error: …`), with what in the lab's DHCP configuration makes it: no boot file for HTTP boot
/// clients, or an offer without option 60 `HTTPClient`, which the firmware ignores.
pub fn http_boot_gave_up(firmware_console: &str, dhcp: &crate::services::dhcp::DhcpConfig) -> Option<String> {
    let after = &firmware_console[firmware_console.find(">>Start HTTP Boot over IPv4")?..];
    let errors: Vec<&str> = after.lines().map(str::trim).filter(|l| l.starts_with("Error: ")).take(2).collect();
    if errors.is_empty() {
        return None;
    }
    let why = match (&dhcp.http_boot.uefi, dhcp.quirks.http_client_without_60) {
        (None, _) => "the lab's DHCP gives UEFI HTTP boot clients no boot file URL (DhcpConfig::http_boot.uefi; PxeConfig::uefi_http_boot)".to_owned(),
        (Some(_), true) => "the lab's DHCP leaves option 60 `HTTPClient` out of its offer to HTTP boot clients (Quirks::http_client_without_60), and OVMF's HTTP boot ignores an offer without it (UEFI specification, HTTP boot: the offer must carry option 60 `HTTPClient` and the boot file as a URL)".to_owned(),
        (Some(program), false) => format!("the lab offered http://{}/{program}; see the HTTP events for what the firmware asked", dhcp.server),
    };
    Some(format!("the firmware's HTTP boot gave up: {:?}: {why}", errors.join(" ")))
}

/// What the firmware prints when it opens its boot manager, the menu that waits for a key
/// (group 1: its entry).
pub const BOOT_MANAGER_OPENED: &str = r#"BdsDxe: starting (Boot[0-9A-F]{4}) "UiApp" "#;

/// The firmware opening its boot manager (`BdsDxe: starting Boot#### "UiApp"`), from its
/// console, and why: the boot entry before it returned status 0, which UEFI firmware takes
/// as a boot that succeeded, so it does not go on down BootOrder; or every entry failed.
/// When that entry ran iPXE, names the script iPXE ran (its URL from the console) and the
/// `exit` it ended with, read by `script` (a URL to the script's text, if the lab served it):
/// the known iPXE bug of a "boot the local disk" script ending in a plain `exit`.
pub fn boot_manager_opened(firmware_console: &str, script: impl Fn(&str) -> Option<String>) -> Option<String> {
    let menu = Regex::new(BOOT_MANAGER_OPENED).expect("valid pattern");
    let opened = menu.captures_iter(firmware_console).last()?;
    let at = opened.get(0).expect("group 0").start();
    let before = &firmware_console[..at];
    let boot_line = Regex::new(r#"BdsDxe: (starting|failed to start|failed to load) (Boot[0-9A-F]{4}) "([^"]*)""#).expect("valid pattern");
    let menu_name = format!("{} \"UiApp\"", &opened[1]);
    let Some(last) = boot_line.captures_iter(before).last() else {
        return Some(format!("the firmware opened its boot manager ({menu_name}, a menu that waits for a key) before it tried any boot entry"));
    };
    let entry = format!("{} \"{}\"", &last[2], &last[3]);
    if &last[1] != "starting" {
        return Some(format!(
            "the firmware opened its boot manager ({menu_name}, a menu that waits for a key) once no boot entry had booted: \
             the last, {entry}, {} (see the console above for each entry it tried)",
            &last[1]
        ));
    }
    let ran = &before[last.get(0).expect("group 0").end()..];
    let generic = format!(
        "the firmware opened its boot manager ({menu_name}, a menu that waits for a key) when {entry} returned status 0: UEFI \
         firmware takes a boot program that returns success as a boot that succeeded, and does not go on to the next entry \
         of BootOrder"
    );
    if !Regex::new(r"iPXE \d+\.\d+").expect("valid pattern").is_match(ran) {
        return Some(format!("{generic}; a boot program that boots nothing must return an error status for the firmware to try the next entry"));
    }
    // iPXE prints `<url>... ok`, then `<name> : <n> bytes [script]`, for each script it runs.
    let fetched = Regex::new(r"(?m)(\S+)\.\.\. ok\s*\n\s*(\S+) : \d+ bytes \[script\]").expect("valid pattern");
    let Some(url) = fetched.captures_iter(ran).last().map(|c| c[1].to_owned()) else {
        return Some(format!("{generic}. That entry ran iPXE, which returned success to the firmware (an `exit` with no status, or 0); end iPXE's script with `exit 1` for the firmware to try the next entry"));
    };
    let exit_line = script(&url).and_then(|text| {
        let exit = Regex::new(r"^\s*exit(\s+0)?\s*$").expect("valid pattern");
        text.lines().enumerate().filter(|(_, l)| exit.is_match(l)).last().map(|(n, l)| format!(" `{}` on line {}", l.trim(), n + 1))
    });
    let ended = match exit_line {
        Some(line) => format!("ended with{line}, which returns status 0"),
        None => "returned success (an `exit` with no status, or `exit 0`)".to_owned(),
    };
    Some(format!(
        "{generic}. That entry ran iPXE, and iPXE's script {url} {ended} to the firmware; end the script with `exit 1` for the \
         firmware to try the next entry (iPXE's `exit` in a \"boot the local disk\" script, a known bug of provisioning setups)"
    ))
}

#[cfg(test)]
mod test {
    use super::*;

    /// The two refusals of issue 32, as the Secure Boot scenarios' consoles print them.
    #[test]
    fn secure_boot_refusals_name_the_image_and_the_reason() {
        let firmware = "  NBP filename is nixos/bootx64.efi\n  NBP filesize is 1048504 Bytes\n\
                        BdsDxe: loading Boot0001 \"UEFI PXEv4 (MAC:5254005B0001)\" from PciRoot(0x0)\n\
                        BdsDxe: failed to load Boot0001 \"UEFI PXEv4 (MAC:5254005B0001)\" from PciRoot(0x0)/MAC(5254005B0001,0x1): Access Denied\n";
        let why = secure_boot_refusal(firmware).unwrap();
        assert!(why.starts_with("Secure Boot refused the image Boot0001 \"UEFI PXEv4 (MAC:5254005B0001)\" loaded (nixos/bootx64.efi): Access Denied"), "{why}");
        assert!(why.contains("shim"), "says what fixes it: {why}");
        // GRUB's terminal wraps the line before the path.
        let kernel = "load-kernel.cfg: loading kernel\n(tftp,192.0.2.1)/nixos/bzImage ...\nerror: bad shim signature.\nerror: you need to load the kernel first.\n";
        let why = secure_boot_refusal(kernel).unwrap();
        assert!(why.starts_with("Secure Boot refused the kernel (tftp,192.0.2.1)/nixos/bzImage: shim's lock"), "{why}");
        assert_eq!(secure_boot_refusal("BdsDxe: failed to load Boot0002 \"UEFI HTTPv4\" from x: Not Found\n"), None, "not a refusal");
        let regexes: Vec<Regex> = crate::console::DEFAULT_FAIL_FAST.iter().map(|p| Regex::new(p).unwrap()).collect();
        for console in [firmware, kernel] {
            assert!(regexes.iter().any(|re| re.is_match(console)), "a wait fails fast on it: {console}");
        }
    }

    #[test]
    fn an_http_boot_that_gave_up_is_named_with_its_cause_in_the_labs_dhcp() {
        let console = ">>Start HTTP Boot over IPv4.....\n  Error: Could not retrieve NBP file size from HTTP server.\n\n  Error: Server response timeout.\nBdsDxe: failed to load Boot0005\n";
        let mut dhcp = crate::services::dhcp::DhcpConfig::for_subnet([192, 0, 2]);
        let none = http_boot_gave_up(console, &dhcp).unwrap();
        assert!(none.contains("\"Error: Could not retrieve NBP file size from HTTP server. Error: Server response timeout.\"") && none.contains("no boot file URL"), "{none}");
        dhcp.http_boot.uefi = Some("ipxe.efi".into());
        dhcp.quirks.http_client_without_60 = true;
        assert!(http_boot_gave_up(console, &dhcp).unwrap().contains("option 60 `HTTPClient`"));
        assert_eq!(http_boot_gave_up(">>Start HTTP Boot over IPv4.\n  URI: http://x/y\n", &dhcp), None, "still going");
        assert_eq!(http_boot_gave_up(">>Start PXE over IPv4.\n  Error: x\n", &dhcp), None, "not HTTP boot");
    }

    #[test]
    fn boot_entries_of_one_loader_are_named_and_others_are_not() {
        use pxelab_ovmf::{BootEntries, LoadOption};
        let option = |number, description: &str, path: &str| LoadOption { number, active: true, description: description.into(), path: path.into() };
        let loader = "HD(1,GPT)/\\EFI\\pxelab\\grubx64.efi";
        let mut entries = BootEntries {
            order: vec![5, 3, 1],
            options: vec![
                option(0, "UiApp", "Fv/FvFile"),
                option(1, "UEFI PXEv4 (MAC:525400AB0001)", "PciRoot/Pci(0x3,0x0)/MAC(525400ab0001)/IPv4"),
                option(2, "UEFI Misc Device", "PciRoot/Pci(0x4,0x0)"),
                option(3, "NixOS (pxelab fixture)", loader),
                option(4, "EFI Shell", "Fv/FvFile"),
            ],
        };
        assert_eq!(piled_boot_entries(&entries), None, "one entry a loader, and firmware entries alike");
        entries.options.push(option(5, "NixOS (pxelab fixture)", loader));
        entries.options.push(option(6, "NixOS", loader));
        let cause = piled_boot_entries(&entries).unwrap();
        assert!(cause.starts_with(&format!("NVRAM holds 3 boot entries for one loader, {loader}: Boot0003 \"NixOS (pxelab fixture)\", Boot0005 \"NixOS (pxelab fixture)\", Boot0006 \"NixOS\".")), "{cause}");
    }

    #[test]
    fn a_missing_separator_on_nvme_is_named() {
        let console = "Partitioning disk...\nfatal: /dev/nvme0n12 did not appear\nSomething went wrong, starting interactive shell...\n";
        let cause = partition_separator(console).unwrap();
        assert!(cause.contains("partitions of /dev/nvme0n1 are named /dev/nvme0n1p2"), "{cause}");
        assert_eq!(partition_separator("mkfs.ext4 /dev/vda2 done\n/dev/vda2 not found\n"), None, "vda's partitions take no separator");
    }

    /// Upstream's installer with dhcpcd 9: the address is lost to stderr, and the per-address
    /// config is asked for with no address.
    #[test]
    fn an_address_lost_to_dhcpcds_stderr_is_named() {
        let broken = "Trying /installer/config-52:54:00:1a:5e:01...not present\nTrying /installer/config-...not present\nTrying /installer/config...loading\n";
        let cause = address_lost_to_stderr(broken).unwrap();
        assert!(cause.contains("dhcpcd 9 and later send a hook's output to stderr"), "{cause}");
        let fixed = broken.replace("config-...", "config-192.0.2.10...");
        assert_eq!(address_lost_to_stderr(&fixed), None);
        assert_eq!(address_lost_to_stderr("Trying /installer/config...loading\n"), None, "the generic config is not the per-address one");
    }

    /// The rogue's ACK to the client names the server, its port and what the client took;
    /// another client's is not this one's cause.
    #[test]
    fn a_rogue_dhcp_server_the_client_took_is_named() {
        use crate::services::dhcp::{DhcpEvent, DhcpEventKind};
        use crate::services::ServiceEvent;
        let client = crate::net::Mac([0x52, 0x54, 0, 0x1a, 0x5e, 1]);
        let foreign = |kind, mac| {
            let event = DhcpEvent {
                kind,
                mac,
                ip: "192.0.2.200".parse().unwrap(),
                hostname: None,
                arch: None,
                vendor_class: None,
                boot_file: "rogue/bootx64.efi".into(),
                switch_port: Some(3),
                server: Some("192.0.2.66".parse().unwrap()),
                root_path: Some("192.0.2.66:/srv/rogue".into()),
            };
            (std::time::Duration::ZERO, ServiceEvent::Dhcp(event))
        };
        let events = [foreign(DhcpEventKind::ForeignOffer, client), foreign(DhcpEventKind::ForeignAck, client)];
        let cause = rogue_dhcp_server(&events, client).unwrap();
        assert!(cause.contains("192.0.2.66 on switch port 3") && cause.contains("took its offer: address 192.0.2.200, boot file rogue/bootx64.efi, root path 192.0.2.66:/srv/rogue"), "{cause}");
        let other = crate::net::Mac([2, 0, 0, 0, 0, 9]);
        assert_eq!(rogue_dhcp_server(&events, other), None);
        assert!(rogue_dhcp_server(&events[..1], client).unwrap().contains("may have taken it"));
    }

    #[test]
    fn a_generic_config_that_overrides_a_per_host_one_is_named() {
        let console = "Trying /installer/config-52:54:00:1a:5e:01...loading\nTrying /installer/config-192.0.2.10...not present\n\
                       Trying /installer/config...loading\nInstalling NixOS on device /dev/sdz\n";
        let files = |name: &str| match name {
            "config" => Some("rootDevice=/dev/sdz\n".to_owned()),
            "config-52:54:00:1a:5e:01" => Some("rootDevice=/dev/vda\n".to_owned()),
            _ => None,
        };
        let cause = config_precedence(console, files).unwrap();
        assert!(cause.contains("rootDevice=/dev/sdz from the generic config, although config-52:54:00:1a:5e:01 sets rootDevice=/dev/vda"), "{cause}");
        let honoured = console.replace("device /dev/sdz", "device /dev/vda");
        assert_eq!(config_precedence(&honoured, files), None);
    }

    /// OVMF 2022.11's console with Debian 13's iPXE: its PXEv4 entry runs iPXE, whose script
    /// ends in `exit`, and the firmware opens UiApp (the `ipxe_exit` scenario's).
    const IPXE_EXIT_0: &str = concat!(
        "BdsDxe: loading Boot0002 \"UEFI PXEv4 (MAC:52540012345C)\" from PciRoot(0x0)/Pci(0x2,0x0)/MAC(52540012345C,0x1)/IPv4(0.0.0.0)\n",
        "BdsDxe: starting Boot0002 \"UEFI PXEv4 (MAC:52540012345C)\" from PciRoot(0x0)/Pci(0x2,0x0)/MAC(52540012345C,0x1)/IPv4(0.0.0.0)\n",
        "iPXE initialising devices...\nautoexec.ipxe... Not found (https://ipxe.org/2d12618e)\n",
        "iPXE 1.21.1+git20250501.dad20602+dfsg-1 -- Open Source Network Boot Firmware -- https://ipxe.org\n",
        "Filename: http://192.0.2.1/local.ipxe\nhttp://192.0.2.1/local.ipxe... ok\nlocal.ipxe : 76 bytes [script]\n",
        "pxelab: no install is due for this machine: on to its disk\n\nNo more network devices\n\n",
        "Press Ctrl-B for the iPXE command line...     BdsDxe: loading Boot0000 \"UiApp\" from Fv(7CB8BDC9)/FvFile(462CAA21)\n",
        "BdsDxe: starting Boot0000 \"UiApp\" from Fv(7CB8BDC9)/FvFile(462CAA21)\n",
    );

    #[test]
    fn an_ipxe_script_ending_in_exit_is_named_with_its_line() {
        let script = |url: &str| (url == "http://192.0.2.1/local.ipxe").then(|| "#!ipxe\necho on to the disk\nexit\n".to_owned());
        let cause = boot_manager_opened(IPXE_EXIT_0, script).unwrap();
        assert!(cause.contains(r#"opened its boot manager (Boot0000 "UiApp", a menu that waits for a key) when Boot0002 "UEFI PXEv4 (MAC:52540012345C)" returned status 0"#), "{cause}");
        assert!(cause.contains("iPXE's script http://192.0.2.1/local.ipxe ended with `exit` on line 3, which returns status 0"), "{cause}");
        assert!(cause.contains("end the script with `exit 1`"), "{cause}");
    }

    #[test]
    fn without_the_scripts_text_the_url_and_the_fix_are_still_named() {
        let cause = boot_manager_opened(IPXE_EXIT_0, |_| None).unwrap();
        assert!(cause.contains("iPXE's script http://192.0.2.1/local.ipxe returned success"), "{cause}");
        assert!(cause.contains("`exit 1`"), "{cause}");
    }

    #[test]
    fn a_program_other_than_ipxe_returning_success_is_named_without_ipxe() {
        let console = IPXE_EXIT_0.replace("iPXE 1.21.1", "Shell 2.2");
        let cause = boot_manager_opened(&console, |_| panic!("no script to read")).unwrap();
        assert!(cause.contains("returned status 0") && !cause.contains("iPXE"), "{cause}");
    }

    #[test]
    fn every_entry_failing_is_told_apart_from_a_success() {
        let console = concat!(
            "BdsDxe: failed to start Boot0002 \"UEFI PXEv4 (MAC:52540012345C)\" from PciRoot(0x0): Not Found\n",
            "BdsDxe: failed to load Boot0001 \"UEFI Non-Block Boot Device\" from PciRoot(0x0)/Pci(0x1,0x0): Not Found\n",
            "BdsDxe: loading Boot0000 \"UiApp\" from Fv(7CB8BDC9)/FvFile(462CAA21)\n",
            "BdsDxe: starting Boot0000 \"UiApp\" from Fv(7CB8BDC9)/FvFile(462CAA21)\n",
        );
        let cause = boot_manager_opened(console, |_| None).unwrap();
        assert!(cause.contains(r#"once no boot entry had booted: the last, Boot0001 "UEFI Non-Block Boot Device", failed to load"#), "{cause}");
    }

    #[test]
    fn a_console_where_the_boot_manager_never_opened_has_no_cause() {
        let booted = IPXE_EXIT_0.split("Press Ctrl-B").next().unwrap();
        assert_eq!(boot_manager_opened(booted, |_| None), None);
    }
}
