//! Choosing the accelerator: KVM only when it really runs a guest, else TCG.
//!
//! `/dev/kvm` can exist while KVM cannot run a guest: on nested setups real-mode code runs but
//! OVMF dies in its first phase ("KVM internal error ... emulation failure"). So KVM is proved
//! by booting the very firmware pxelab uses until its boot manager (`BdsDxe`) prints on the
//! serial port; the verdict is cached per host boot in the cache directory.

use std::path::Path;
use std::time::{Duration, Instant};

use pxelab_ovmf::Firmware;

use super::process::QemuProcess;

/// A QEMU accelerator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accel {
    Kvm,
    Tcg,
}

/// TCG's translation cache, in MiB. QEMU 7.2 gives system emulation 1 GiB, with which a guest
/// that rebooted after a busy run brought its firmware up far more slowly (the cause was not
/// traced): OVMF took 11.7 s from the reset to its boot manager on an installed nixos-shape
/// disk, against 4.7 s with 128 MiB (the first boot to login the same, 28.6 against 28.4 s;
/// 32 MiB cut the reboot to 3.3 s but cost the first boot 3.5 s). 2026-12-07, TCG, 2 cores.
pub const TCG_TB_SIZE_MIB: u32 = 128;

impl Accel {
    /// The accelerator's name: `kvm` or `tcg`.
    pub fn name(self) -> &'static str {
        match self {
            Accel::Kvm => "kvm",
            Accel::Tcg => "tcg",
        }
    }

    /// The value of QEMU's `-accel` option.
    pub fn qemu_arg(self) -> String {
        match self {
            Accel::Kvm => "kvm".into(),
            Accel::Tcg => format!("tcg,tb-size={TCG_TB_SIZE_MIB}"),
        }
    }
}

/// Why `PXELAB_ACCEL` could not be honoured.
#[derive(Debug, thiserror::Error)]
#[error("PXELAB_ACCEL={0:?} is not one of kvm, tcg")]
pub struct AccelError(String);

/// What OVMF prints on the serial port once its boot manager runs.
const BOOT_MANAGER_MARKER: &[u8] = b"BdsDxe";
/// Under TCG OVMF reaches its boot manager in ~4.5 s here; KVM takes well under a second.
const PROBE_TIMEOUT: Duration = Duration::from_secs(20);

/// Pick the accelerator: `PXELAB_ACCEL` if set, else KVM if OVMF boots under it.
/// `cache_dir` keeps the probe's verdict for this boot of the host.
/// The probe polls files and waits, so it runs on the runtime's blocking pool.
pub async fn select(firmware: &Firmware, cache_dir: &Path) -> Result<Accel, AccelError> {
    let accel = match std::env::var("PXELAB_ACCEL").ok().as_deref() {
        Some("kvm") => Accel::Kvm,
        Some("tcg") => Accel::Tcg,
        Some(other) => return Err(AccelError(other.to_owned())),
        None => {
            let (firmware, cache_dir) = (firmware.clone(), cache_dir.to_owned());
            tokio::task::spawn_blocking(move || cached_probe(&firmware, &cache_dir)).await.unwrap_or(Accel::Tcg)
        }
    };
    tracing::info!(accel = accel.qemu_arg(), "accelerator chosen");
    Ok(accel)
}

fn cached_probe(firmware: &Firmware, cache_dir: &Path) -> Accel {
    if std::fs::OpenOptions::new().read(true).write(true).open("/dev/kvm").is_err() {
        tracing::info!("/dev/kvm cannot be opened: using TCG");
        return Accel::Tcg;
    }
    let boot_id = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").unwrap_or_default();
    let verdict = cache_dir.join(format!("accel-{}", boot_id.trim()));
    if let Ok(text) = std::fs::read_to_string(&verdict) {
        return if text.trim() == "kvm" { Accel::Kvm } else { Accel::Tcg };
    }
    let accel = match probe(Accel::Kvm, firmware, cache_dir) {
        Ok(took) => {
            tracing::info!("KVM probe: OVMF reached its boot manager in {took:.1?}");
            Accel::Kvm
        }
        Err(why) => {
            tracing::warn!("KVM probe failed ({why}): falling back to TCG");
            Accel::Tcg
        }
    };
    let _ = std::fs::create_dir_all(cache_dir).and_then(|_| std::fs::write(&verdict, accel.name()));
    accel
}

/// Boot OVMF under `accel` with no disks; `Ok(time)` once its boot manager prints. QEMU is
/// spawned as every VM is ([`QemuProcess`]: killed with the harness, reaped on drop).
/// Blocking: call it from a runtime's blocking pool.
pub fn probe(accel: Accel, firmware: &Firmware, scratch: &Path) -> Result<Duration, String> {
    std::fs::create_dir_all(scratch).map_err(|e| e.to_string())?;
    let dir = tempfile::Builder::new().prefix("accel-probe").tempdir_in(scratch).map_err(|e| e.to_string())?;
    let vars = firmware.new_var_store(&dir.path().join("vars.fd")).map_err(|e| e.to_string())?;
    let serial = dir.path().join("serial.log");
    let stderr_path = dir.path().join("qemu.log");
    let mut argv: Vec<String> = ["qemu-system-x86_64", "-machine", "q35", "-accel", &accel.qemu_arg(), "-m", "256", "-nodefaults", "-no-user-config"]
        .map(String::from)
        .into();
    if accel == Accel::Kvm {
        argv.extend(["-cpu".into(), "host".into()]);
    }
    argv.extend([
        "-display".into(),
        "none".into(),
        "-drive".into(),
        format!("if=pflash,format=raw,unit=0,readonly=on,file={}", firmware.code.display()),
        "-drive".into(),
        format!("if=pflash,format=raw,unit=1,file={}", vars.path.display()),
        "-serial".into(),
        format!("file:{}", serial.display()),
    ]);
    let mut child = QemuProcess::spawn(&argv, vec![], &stderr_path).map_err(|e| format!("cannot run qemu-system-x86_64: {e}"))?;
    let first_stderr_line = || {
        let text = std::fs::read_to_string(&stderr_path).unwrap_or_default();
        text.lines().next().unwrap_or_default().to_owned()
    };
    let started = Instant::now();
    let outcome = loop {
        let printed = std::fs::read(&serial).unwrap_or_default();
        if printed.windows(BOOT_MANAGER_MARKER.len()).any(|w| w == BOOT_MANAGER_MARKER) {
            break Ok(started.elapsed());
        }
        let complaint = first_stderr_line();
        // A KVM internal error pauses the guest rather than ending QEMU: stop waiting at once.
        if complaint.contains("KVM internal error") {
            break Err(complaint);
        }
        match child.try_wait() {
            Ok(Some(status)) => break Err(format!("QEMU ended with {status}: {complaint}")),
            Err(e) => break Err(e.to_string()),
            Ok(None) if started.elapsed() > PROBE_TIMEOUT => {
                break Err(format!("OVMF did not reach its boot manager within {PROBE_TIMEOUT:?}"))
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(50)),
        }
    };
    drop(child);
    outcome
}
