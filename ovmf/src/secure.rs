//! Secure Boot as a VARS image sets it up, read from the host.
//!
//! The firmware's `SecureBoot` and `SetupMode` variables are volatile: it computes them at each
//! boot and never stores them. What it computes them from is stored: the platform key (`PK`;
//! none means setup mode, where nothing is checked), OVMF's own `SecureBootEnable` switch, and
//! the key databases (`KEK`, `db`, `dbx`). [`SecureBoot::of`] reads those, so a harness can say
//! before power-on whether a client will enforce signatures, and with which keys.

use crate::boot::{guid, Variable, GLOBAL_VARIABLE};

/// `EFI_IMAGE_SECURITY_DATABASE_GUID`, the namespace of `db` and `dbx`.
pub const IMAGE_SECURITY_DATABASE: [u8; 16] = guid(0xd719_b2cb, 0x3d3a, 0x4596, [0xa3, 0xbc, 0xda, 0xd0, 0x0e, 0x67, 0x65, 0x6f]);
/// OVMF's `EFI_SECURE_BOOT_ENABLE_DISABLE` GUID, the namespace of `SecureBootEnable`.
pub const SECURE_BOOT_ENABLE_DISABLE: [u8; 16] = guid(0xf0a3_0bc7, 0xaf08, 0x4556, [0x99, 0xc4, 0x00, 0x10, 0x09, 0xc9, 0x3a, 0x44]);
/// `EFI_CERT_X509_GUID`: a signature list of DER certificates.
pub const CERT_X509: [u8; 16] = guid(0xa5c0_59a1, 0x94e4, 0x4aa7, [0x87, 0xb5, 0xab, 0x15, 0x5c, 0x2b, 0xf0, 0x72]);
/// `EFI_CERT_SHA256_GUID`: a signature list of image hashes.
pub const CERT_SHA256: [u8; 16] = guid(0xc1c4_1626, 0x504c, 0x4092, [0xac, 0xa9, 0x41, 0xf9, 0x36, 0x93, 0x43, 0x28]);

/// The entries of one key database (`PK`, `KEK`, `db`, `dbx`), by kind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct KeyDatabase {
    /// X.509 certificates.
    pub certificates: usize,
    /// SHA-256 image hashes.
    pub hashes: usize,
    /// Entries of other kinds (RSA-2048 keys, other hashes).
    pub other: usize,
}

impl KeyDatabase {
    /// Count the entries of an `EFI_SIGNATURE_LIST` sequence; `None` when it is malformed.
    pub fn parse(mut data: &[u8]) -> Option<KeyDatabase> {
        let mut db = KeyDatabase::default();
        // Each list: type GUID, list size, header size, signature size (u32s), a header, then
        // signatures of `size` bytes each (an owner GUID and the data). The store pads a
        // variable's data to 4 bytes.
        while data.len() >= 28 {
            let kind: [u8; 16] = data[..16].try_into().ok()?;
            let u32_at = |at: usize| u32::from_le_bytes(data[at..at + 4].try_into().expect("4 bytes")) as usize;
            let (list, header, size) = (u32_at(16), u32_at(20), u32_at(24));
            if list < 28 + header || list > data.len() || size < 16 || (list - 28 - header) % size != 0 {
                return None;
            }
            let count = (list - 28 - header) / size;
            match kind {
                CERT_X509 => db.certificates += count,
                CERT_SHA256 => db.hashes += count,
                _ => db.other += count,
            }
            data = &data[list..];
        }
        // What is left is the store's padding, or a torn list.
        (data.len() < 4).then_some(db)
    }

    /// Entries of every kind.
    pub fn len(&self) -> usize {
        self.certificates + self.hashes + self.other
    }

    /// Whether it holds nothing.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl std::fmt::Display for KeyDatabase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut parts = vec![];
        for (n, one, many) in [(self.certificates, "certificate", "certificates"), (self.hashes, "hash", "hashes"), (self.other, "other entry", "other entries")] {
            if n > 0 {
                parts.push(format!("{n} {}", if n == 1 { one } else { many }));
            }
        }
        if parts.is_empty() {
            parts.push("empty".into());
        }
        f.write_str(&parts.join(", "))
    }
}

/// The bytes of a signature list sequence without the store's padding after it.
fn lists_len(data: &[u8]) -> usize {
    let mut at = 0;
    while data.len() - at >= 28 {
        let list = u32::from_le_bytes(data[at + 16..at + 20].try_into().expect("4 bytes")) as usize;
        if list < 28 || list > data.len() - at {
            break;
        }
        at += list;
    }
    at
}

/// Add an X.509 certificate (DER) owned by `owner` to a VARS image's `db`, as a platform
/// owner's enrolment would: the firmware, and shim, then trust images signed by its key. The
/// image is edited as the firmware's flash holds it (no firmware may run on it meanwhile), so
/// no authentication descriptor is needed.
pub fn enrol_db_certificate(image: &mut [u8], der: &[u8], owner: [u8; 16]) -> Result<(), crate::VarsError> {
    let variables = crate::parse_variables(image)?;
    let old = variables.iter().find(|v| v.name == "db" && v.vendor == IMAGE_SECURITY_DATABASE);
    let mut data = old.map(|v| v.data[..lists_len(&v.data)].to_vec()).unwrap_or_default();
    let size = 16 + der.len();
    data.extend(CERT_X509);
    data.extend(((28 + size) as u32).to_le_bytes());
    data.extend(0u32.to_le_bytes());
    data.extend((size as u32).to_le_bytes());
    data.extend(owner);
    data.extend(der);
    // NV + BS + RT + time-based authenticated write access, as the firmware stores db.
    let attributes = old.map_or(0x27, |v| v.attributes);
    crate::set_variable(image, &crate::Variable { name: "db".into(), vendor: IMAGE_SECURITY_DATABASE, attributes, data })
}

/// Secure Boot as a VARS image sets it up (see the module doc).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SecureBoot {
    /// A platform key is enrolled: the firmware is in user mode, not setup mode.
    pub platform_key: bool,
    /// OVMF's `SecureBootEnable` switch is on (absent: off).
    pub enabled: bool,
    pub kek: KeyDatabase,
    pub db: KeyDatabase,
    pub dbx: KeyDatabase,
}

impl SecureBoot {
    /// Read the state from a VARS image's live variables. A key database that does not parse
    /// counts as empty (the firmware would not trust it either).
    pub fn of(variables: &[Variable]) -> SecureBoot {
        let find = |name: &str, vendor: [u8; 16]| variables.iter().find(|v| v.name == name && v.vendor == vendor);
        let keys = |name: &str, vendor| find(name, vendor).and_then(|v| KeyDatabase::parse(&v.data)).unwrap_or_default();
        SecureBoot {
            platform_key: !keys("PK", GLOBAL_VARIABLE).is_empty(),
            enabled: find("SecureBootEnable", SECURE_BOOT_ENABLE_DISABLE).is_some_and(|v| v.data.first() == Some(&1)),
            kek: keys("KEK", GLOBAL_VARIABLE),
            db: keys("db", IMAGE_SECURITY_DATABASE),
            dbx: keys("dbx", IMAGE_SECURITY_DATABASE),
        }
    }

    /// Whether a firmware with Secure Boot support will check every image it starts: a
    /// platform key is enrolled and the switch is on. (A firmware built without Secure Boot
    /// checks nothing, whatever its VARS hold.)
    pub fn enforcing(&self) -> bool {
        self.platform_key && self.enabled
    }
}

impl std::fmt::Display for SecureBoot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mode = match (self.platform_key, self.enabled) {
            (true, true) => "enforcing",
            (true, false) => "off (a platform key, but SecureBootEnable is off)",
            (false, _) => "setup mode (no platform key: nothing is checked)",
        };
        write!(f, "{mode}; KEK: {}; db: {}; dbx: {}", self.kek, self.db, self.dbx)
    }
}

#[cfg(test)]
mod test {
    use super::*;

    fn list(kind: [u8; 16], entries: usize, size: usize) -> Vec<u8> {
        let mut out = kind.to_vec();
        out.extend(((28 + entries * size) as u32).to_le_bytes());
        out.extend(0u32.to_le_bytes());
        out.extend((size as u32).to_le_bytes());
        out.extend(std::iter::repeat_n(0xab, entries * size));
        out
    }

    #[test]
    fn signature_lists_are_counted_by_kind_and_a_torn_one_is_refused() {
        let data = [list(CERT_X509, 2, 900), list(CERT_SHA256, 3, 48), vec![0, 0]].concat();
        assert_eq!(KeyDatabase::parse(&data), Some(KeyDatabase { certificates: 2, hashes: 3, other: 0 }));
        assert_eq!(KeyDatabase::parse(&data[..data.len() - 100]), None, "a list cut short");
        let mut bad_size = list(CERT_SHA256, 3, 48);
        bad_size[24] = 50; // 144 bytes of signatures are not a whole number of 50-byte ones
        assert_eq!(KeyDatabase::parse(&bad_size), None);
        assert_eq!(KeyDatabase::parse(&[]).map(|d| d.to_string()), Some("empty".into()));
    }

    #[test]
    fn state_follows_the_platform_key_and_the_switch() {
        let var = |name: &str, vendor, data: Vec<u8>| Variable { name: name.into(), vendor, attributes: 0x27, data };
        let mut vars = vec![var("SecureBootEnable", SECURE_BOOT_ENABLE_DISABLE, vec![1])];
        assert!(!SecureBoot::of(&vars).enforcing(), "no platform key: setup mode");
        vars.push(var("PK", GLOBAL_VARIABLE, list(CERT_X509, 1, 800)));
        vars.push(var("db", IMAGE_SECURITY_DATABASE, list(CERT_X509, 2, 900)));
        let state = SecureBoot::of(&vars);
        assert!(state.enforcing(), "{state}");
        assert_eq!(state.to_string(), "enforcing; KEK: empty; db: 2 certificates; dbx: empty");
        vars[0].data = vec![0];
        assert!(!SecureBoot::of(&vars).enforcing());
    }

    #[test]
    fn a_certificate_enrolled_in_db_is_one_more_and_the_rest_stay() {
        let mut image = std::fs::read("/usr/share/OVMF/OVMF_VARS_4M.ms.fd").unwrap();
        let before = SecureBoot::of(&crate::parse_variables(&image).unwrap());
        enrol_db_certificate(&mut image, &[0x30; 700], [7; 16]).unwrap();
        let after = SecureBoot::of(&crate::parse_variables(&image).unwrap());
        assert_eq!(after.db.certificates, before.db.certificates + 1, "{after}");
        assert_eq!((after.platform_key, after.enabled, after.kek, after.dbx), (before.platform_key, before.enabled, before.kek, before.dbx));
        let db = crate::parse_variables(&image).unwrap().into_iter().find(|v| v.name == "db").unwrap();
        assert!(db.data.windows(700).any(|w| w == [0x30; 700]), "the certificate itself is there");
    }

    /// Debian's `ovmf` package: the plain VARS hold no keys, the `.ms` VARS hold Microsoft's
    /// (and Debian's snakeoil ones a test key), with Secure Boot switched on.
    #[test]
    fn debians_variable_stores_read_as_their_names_say() {
        let read = |name: &str| {
            let path = std::path::Path::new("/usr/share/OVMF").join(name);
            let image = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e} (apt-get install ovmf)", path.display()));
            SecureBoot::of(&crate::parse_variables(&image).unwrap())
        };
        let plain = read("OVMF_VARS_4M.fd");
        assert!(!plain.platform_key && !plain.enforcing(), "{plain}");
        let ms = read("OVMF_VARS_4M.ms.fd");
        assert!(ms.enforcing(), "{ms}");
        assert!(ms.kek.certificates >= 1 && ms.db.certificates >= 2, "Microsoft's KEK and two db certificates: {ms}");
        let snakeoil = read("OVMF_VARS_4M.snakeoil.fd");
        assert!(snakeoil.enforcing(), "{snakeoil}");
    }
}
