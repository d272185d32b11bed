//! `pxelab cache` and `pxelab doctor`: the artifact cache, and the host's tools.

use std::process::ExitCode;
use std::time::Duration;

use crate::CacheCommand;

/// `pxelab cache`: list the artifact cache, or prune it.
pub fn cache(what: CacheCommand) -> ExitCode {
    use std::io::Write;
    let cache = pxelab::artifacts::Cache::new(&pxelab::artifacts::Cache::default_root());
    let now = std::time::SystemTime::now();
    let line = |e: &pxelab::artifacts::CacheEntry| format!("{:>9}  {:>10}  {}", size(e.bytes), ago(now, e.last_used), e.name);
    let (lines, result) = match what {
        CacheCommand::List => {
            let listing = cache.list();
            let lines = listing.as_ref().map_or_else(|_| vec![], |l| {
                let entries = plural(l.entries.len() as u64, "entry", "entries");
                let head = format!("{} ({} in {entries}, hard-linked files counted once)", cache.root().display(), size(l.bytes));
                [head, format!("{:>9}  {:>10}  entry", "size", "last used")].into_iter().chain(l.entries.iter().map(line)).collect()
            });
            (lines, listing.map(drop))
        }
        CacheCommand::Prune { unused_for_days, dry_run } => {
            let unused_for = Duration::from_secs(unused_for_days * 86_400);
            let gone = if dry_run { cache.prunable(unused_for) } else { cache.prune(unused_for) };
            let lines = gone.as_ref().map_or_else(|_| vec![], |gone| {
                let verb = if dry_run { "would remove" } else { "removed" };
                let freed: u64 = gone.iter().map(|e| e.bytes).sum();
                let (entries, days) = (plural(gone.len() as u64, "entry", "entries"), plural(unused_for_days, "day", "days"));
                let total = format!("{verb} {entries} unused for over {days} ({}) from {}", size(freed), cache.root().display());
                gone.iter().map(line).chain([total]).collect()
            });
            (lines, gone.map(drop))
        }
    };
    // A reader that stops early (`| head`) ends the output, not with a panic.
    let mut out = std::io::stdout().lock();
    let _ = lines.iter().try_for_each(|l| writeln!(out, "{l}"));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("pxelab: cache: {:#}", anyhow::Error::from(e));
            ExitCode::FAILURE
        }
    }
}

/// `1 entry`, `2 entries`.
fn plural(n: u64, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// Bytes for people: `512 B`, `1.5 MB`, `6.5 GB`.
fn size(bytes: u64) -> String {
    let units = ["B", "kB", "MB", "GB", "TB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1000.0 && unit + 1 < units.len() {
        value /= 1000.0;
        unit += 1;
    }
    match unit {
        0 => format!("{bytes} B"),
        _ => format!("{value:.1} {}", units[unit]),
    }
}

/// How long ago `then` was: `40 s ago`, `12 min ago`, `3 h ago`, `2 d ago`.
fn ago(now: std::time::SystemTime, then: std::time::SystemTime) -> String {
    let secs = now.duration_since(then).unwrap_or_default().as_secs();
    match secs {
        0..=119 => format!("{secs} s ago"),
        120..=7199 => format!("{} min ago", secs / 60),
        7200..=172_799 => format!("{} h ago", secs / 3600),
        _ => format!("{} d ago", secs / 86_400),
    }
}


/// `pxelab doctor`: check QEMU, OVMF, the fixture inputs, the accelerator and the cache.
pub fn doctor(runtime: &tokio::runtime::Runtime) -> ExitCode {
    let mut ok = true;
    let mut check = |what: &str, result: Result<String, String>| match result {
        Ok(detail) => println!("ok    {what}: {detail}"),
        Err(why) => {
            ok = false;
            println!("FAIL  {what}: {why}");
        }
    };
    for (tool, package) in [("qemu-system-x86_64", "qemu-system-x86"), ("qemu-img", "qemu-utils"), ("grub-mkimage", "grub-common")] {
        let out = std::process::Command::new(tool).arg("--version").output();
        check(
            tool,
            match out {
                Ok(o) if o.status.success() => Ok(String::from_utf8_lossy(&o.stdout).lines().next().unwrap_or("").to_owned()),
                _ => Err(format!("not runnable; install the Debian package {package}")),
            },
        );
    }
    check(
        "OVMF",
        pxelab_ovmf::discover().map(|f| format!("{} + {} ({})", f.code.display(), f.vars_template.display(), f.source)).map_err(|e| e.to_string()),
    );
    check(
        "fixture inputs",
        pxelab_fixtures::HostFiles::find()
            .map(|h| format!("kernel {}, busybox {}", h.kernel.display(), h.busybox.display()))
            .map_err(|e| e.to_string()),
    );
    // Optional: without it the fixtures boot the host's kernel as it is, about 3 s slower.
    if let Ok(host) = pxelab_fixtures::HostFiles::find() {
        match pxelab_fixtures::ZstdKernel::of(&host) {
            Ok(recipe) => println!("ok    fixture kernel: repacked with a zstd payload, its stub from linux-source-6.1 {}", recipe.release),
            Err(why) => println!("skip  fixture kernel repack (optional): {why}; the fixtures boot the kernel as it is"),
        }
    }
    if let Ok(firmware) = pxelab_ovmf::discover() {
        check(
            "accelerator",
            runtime
                .block_on(pxelab::vm::select_accel(&firmware, &pxelab::artifacts::Cache::default_root()))
                .map(|a| a.qemu_arg())
                .map_err(|e| e.to_string()),
        );
    }
    let cache = pxelab::artifacts::Cache::new(&pxelab::artifacts::Cache::default_root());
    check(
        "artifact cache",
        cache
            .list()
            .map(|l| format!("{}: {} in {} (`pxelab cache` lists them)", cache.root().display(), size(l.bytes), plural(l.entries.len() as u64, "entry", "entries")))
            .map_err(|e| format!("{:#}", anyhow::Error::from(e))),
    );
    // Optional: only clients that ask for Secure Boot (`VmBuilder::secure_boot`) run it.
    match pxelab_ovmf::discover_secure_boot() {
        Ok(f) => {
            let state = pxelab_ovmf::read_variables(&f.vars_template).map(|v| pxelab_ovmf::SecureBoot::of(&v).to_string());
            println!(
                "ok    Secure Boot firmware: {} + {} ({}); its NVRAM: {}",
                f.code.display(),
                f.vars_template.display(),
                f.source,
                state.unwrap_or_else(|e| format!("unreadable: {e}"))
            )
        }
        Err(why) => println!("skip  Secure Boot firmware (optional): {why}"),
    }
    match pxelab_fixtures::SignedBinaries::find() {
        Ok(b) => println!("ok    signed shim and GRUB: {}, {}, {}", b.shim.display(), b.grub.display(), b.disk_grub.display()),
        Err(why) => println!("skip  signed shim and GRUB (optional: Secure Boot scenarios): {why}"),
    }
    match pxelab_fixtures::BootLoader::systemd_boot() {
        Ok(_) => println!("ok    systemd-boot: {}", pxelab_fixtures::install::SYSTEMD_BOOT_EFI),
        Err(why) => println!("skip  systemd-boot (optional: the netboot-shape flavour): {why}"),
    }
    // Optional: only `pxelab bench nfs` compares with it.
    match pxelab::jobs::nfs_peer::NfsPeer::available() {
        Ok(()) => println!("ok    bench nfs's peer: nfs-ganesha {}", pxelab::jobs::nfs_peer::NfsPeer::version()),
        Err(why) => println!("skip  bench nfs's peer (optional): {why}"),
    }
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
