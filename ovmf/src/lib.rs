//! OVMF (UEFI firmware for QEMU) discovery and per-VM variable stores.
//!
//! OVMF ships as a split pair: a read-only CODE image and a VARS template that each VM copies
//! and writes its NVRAM (boot entries, boot order) into. The two halves of a pair together fill
//! one flash device of 2 MiB or 4 MiB; a 4M CODE with a 2M VARS does not boot, so every pair is
//! checked before use. A VM's copy of VARS is its NVRAM: [`VarStore::boot_entries`] reads
//! the boot entries the firmware and the guest wrote there.

mod boot;
mod discover;
mod secure;
mod vars;

pub use discover::{discover, discover_secure_boot, discover_secure_boot_with, discover_with, DiscoverError, Firmware, FlashSize, Lookup, CANDIDATES, SECURE_BOOT_CANDIDATES};
pub use boot::{boot_entries, device_path, parse_variables, read_variables, set_variable, BootEntries, BootTarget, LoadOption, Variable, VarsError, BOOT_VARIABLE_ATTRIBUTES, GLOBAL_VARIABLE};
pub use secure::{enrol_db_certificate, KeyDatabase, SecureBoot, CERT_SHA256, CERT_X509, IMAGE_SECURITY_DATABASE, SECURE_BOOT_ENABLE_DISABLE};
pub use vars::{VarStore, VarStoreError};
