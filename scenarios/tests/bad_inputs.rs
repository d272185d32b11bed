//! Bad artifacts fail fast: within seconds of the cause, naming the stage and the cause, not
//! at a wait's timeout. Each test serves upstream-named artifacts (the `nixos-shape`
//! flavour's) from a directory, as a user's, with one file taken out.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use pxelab::artifacts::Provider;
use pxelab::jobs::{self, InstallOptions};
use pxelab::lab::{Lab, StageError};
use pxelab_fixtures::{HostFiles, NixosShapeImage, NixosShapeInstaller, NixosShapeKernel};
use pxelab::services::tftp::TftpOutcome;
use pxelab::services::ServiceEvent;
use pxelab_scenarios::error_chain;

/// Fast: from the server's refusal to the install's error (its stage waited minutes before).
const FAST: Duration = Duration::from_secs(5);

/// A user's artifact directory: the boot loader unpacked without `missing`, the rest linked.
fn artifacts_without(lab: &Lab, missing: &str) -> PathBuf {
    let kernel = lab.cache().get_or_build(&NixosShapeKernel::find().unwrap()).unwrap().join(NixosShapeKernel::IMAGE);
    let host = HostFiles::find().unwrap();
    let installer = lab.cache().get_or_build(&NixosShapeInstaller { host: host.clone(), kernel: kernel.clone() }).unwrap();
    let image = lab.cache().get_or_build(&NixosShapeImage { host, kernel, services: None }).unwrap();
    let dir = lab.dir().join("artifacts");
    std::fs::create_dir_all(dir.join("boot-loader")).unwrap();
    let status = Command::new("tar").arg("-xf").arg(installer.join("boot-loader.tar.xz")).arg("-C").arg(dir.join("boot-loader")).status().unwrap();
    assert!(status.success());
    std::fs::remove_file(dir.join("boot-loader").join(missing)).unwrap();
    for (from, name) in [(&installer, "nfsroot.tar.xz"), (&image, "nixos.tar.gz"), (&image, "config")] {
        std::os::unix::fs::symlink(from.join(name), dir.join(name)).unwrap();
    }
    dir
}

/// The install's error, and how long after the server refused `nixos/<missing>` it came.
async fn install_without(name: &str, missing: &str) -> (StageError, Duration) {
    let mut lab = Lab::new(name).unwrap();
    let options = InstallOptions { provider: Provider::Dir(artifacts_without(&lab, missing)), ..InstallOptions::default() };
    let err = match jobs::install(&mut lab, &options).await {
        Ok(_) => panic!("installed without {missing}"),
        Err(e) => e,
    };
    let ended = lab.network().elapsed();
    let file = format!("nixos/{missing}");
    let refused = lab.network().events().all().into_iter().find_map(|(at, e)| match e {
        ServiceEvent::Tftp(t) if t.file == file && t.outcome == TftpOutcome::Failed => Some(at),
        _ => None,
    });
    let refused = refused.unwrap_or_else(|| panic!("the server never refused {file}: {}", error_chain(&err)));
    (err, ended - refused)
}

/// Without `missing`, the install fails at `stage` within [`FAST`] of the server's refusal,
/// naming the file and listing what the TFTP root holds instead.
async fn fails_fast_without(name: &str, missing: &str, stage: &str, holds: &str) {
    let (err, after) = install_without(name, missing).await;
    let text = error_chain(&err);
    assert_eq!(err.stage, stage, "{text}");
    assert!(after < FAST, "{after:?} after the refusal: {text}");
    assert!(text.contains(&format!(r#""nixos/{missing}" not found"#)), "{text}");
    assert!(text.contains(&format!("holds: {holds}")), "{text}");
}

#[tokio::test]
async fn a_missing_boot_loader_fails_at_once_listing_the_tftp_root() {
    let name = "a_missing_boot_loader_fails_at_once_listing_the_tftp_root";
    fails_fast_without(name, "bootx64.efi", "TFTP: GRUB", "bzImage, grub.cfg, load-kernel.cfg").await;
}

#[tokio::test]
async fn a_missing_kernel_fails_at_once_listing_the_tftp_root() {
    let name = "a_missing_kernel_fails_at_once_listing_the_tftp_root";
    fails_fast_without(name, "bzImage", "TFTP: kernel", "bootx64.efi, grub.cfg, load-kernel.cfg").await;
}
