//! Bad artifacts fail fast: within seconds of the cause, naming the stage and the cause, not
//! at a wait's timeout. Each test serves upstream-named artifacts (the `nixos-shape`
//! flavour's) from a directory, as a user's, with one file taken out.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use pxelab::artifacts::Provider;
use pxelab::jobs::{self, Hardware, InstallOptions};
use pxelab::lab::{Lab, StageError};
use pxelab_fixtures::{HostFiles, NixosShapeImage, NixosShapeInstaller, NixosShapeKernel, SerialConsole};
use pxelab::services::tftp::TftpOutcome;
use pxelab::services::ServiceEvent;
use pxelab_scenarios::error_chain;

/// Fast: from the server's refusal to the install's error (its stage waited minutes before).
const FAST: Duration = Duration::from_secs(5);

/// A user's artifact directory: the boot loader unpacked, the rest linked; then `edit`.
fn artifacts_with(lab: &Lab, edit: impl FnOnce(&std::path::Path)) -> PathBuf {
    let kernel = lab.cache().get_or_build(&NixosShapeKernel::find().unwrap()).unwrap().join(NixosShapeKernel::IMAGE);
    let host = HostFiles::find().unwrap();
    let installer = lab.cache().get_or_build(&NixosShapeInstaller { host: host.clone(), kernel: kernel.clone(), console: SerialConsole::UPSTREAM }).unwrap();
    let image = lab.cache().get_or_build(&NixosShapeImage { host, kernel, services: None, console: SerialConsole::UPSTREAM }).unwrap();
    let dir = lab.dir().join("artifacts");
    std::fs::create_dir_all(dir.join("boot-loader")).unwrap();
    let status = Command::new("tar").arg("-xf").arg(installer.join("boot-loader.tar.xz")).arg("-C").arg(dir.join("boot-loader")).status().unwrap();
    assert!(status.success());
    for (from, name) in [(&installer, "nfsroot.tar.xz"), (&image, "nixos.tar.gz"), (&image, "config")] {
        std::os::unix::fs::symlink(from.join(name), dir.join(name)).unwrap();
    }
    edit(&dir);
    dir
}

/// A user's artifact directory with `missing` taken out of the boot loader.
fn artifacts_without(lab: &Lab, missing: &str) -> PathBuf {
    artifacts_with(lab, |dir| std::fs::remove_file(dir.join("boot-loader").join(missing)).unwrap())
}

/// The install of `options` fails at "check inputs" within [`FAST`], before any VM starts,
/// with an error that says `cause`.
async fn refused_before_boot(name: &str, options: impl FnOnce(&Lab) -> InstallOptions, cause: &str) {
    let mut lab = Lab::new(name).unwrap();
    let options = options(&lab);
    let err = match jobs::install(&mut lab, &options).await {
        Ok(_) => panic!("{name}: installed"),
        Err(e) => e,
    };
    let text = error_chain(&err);
    assert_eq!(err.stage, "check inputs", "{text}");
    assert!(err.elapsed < FAST, "{:?}: {text}", err.elapsed);
    assert!(text.contains(cause), "{text}");
    assert!(!lab.dir().join("client").exists(), "no VM was started");
}

#[tokio::test]
async fn a_disk_too_small_for_the_layout_is_refused_before_boot() {
    let name = "a_disk_too_small_for_the_layout_is_refused_before_boot";
    let hardware = Hardware { disk_bytes: 4 << 30, ..Hardware::default() };
    let cause = "disk of 4.0 GiB is too small for the protocol's layout";
    refused_before_boot(name, |_| InstallOptions { hardware, ..InstallOptions::default() }, cause).await;
}

#[tokio::test]
async fn dhcp_without_a_root_path_is_refused_before_boot() {
    let name = "dhcp_without_a_root_path_is_refused_before_boot";
    let options = InstallOptions { configure_lab: Some(|c| c.dhcp.root_path = None), ..InstallOptions::default() };
    refused_before_boot(name, |_| options, "sends no root path (option 17)").await;
}

#[tokio::test]
async fn a_root_path_the_lab_does_not_export_is_refused_before_boot() {
    let name = "a_root_path_the_lab_does_not_export_is_refused_before_boot";
    let options = InstallOptions { configure_lab: Some(|c| c.dhcp.root_path = Some("192.0.2.1:/srv/elsewhere,vers=3,tcp".into())), ..InstallOptions::default() };
    refused_before_boot(name, |_| options, "names /srv/elsewhere, which the lab does not export (it exports /srv/nixos/nfsroot)").await;
}

#[tokio::test]
async fn dhcp_without_a_router_is_refused_before_boot() {
    let name = "dhcp_without_a_router_is_refused_before_boot";
    let options = InstallOptions { configure_lab: Some(|c| c.dhcp.router = None), ..InstallOptions::default() };
    refused_before_boot(name, |_| options, "sends no router (option 3): the installer finds its network interface by the default route").await;
}

#[tokio::test]
async fn a_truncated_image_is_refused_before_boot() {
    let name = "a_truncated_image_is_refused_before_boot";
    let truncated = |dir: &std::path::Path| {
        let image = std::fs::read(dir.join("nixos.tar.gz")).unwrap();
        std::fs::remove_file(dir.join("nixos.tar.gz")).unwrap();
        std::fs::write(dir.join("nixos.tar.gz"), &image[..image.len() / 3]).unwrap();
    };
    let options = |lab: &Lab| InstallOptions { provider: Provider::Dir(artifacts_with(lab, truncated)), ..InstallOptions::default() };
    refused_before_boot(name, options, "nixos.tar.gz: the image is damaged or truncated (gzip -t: gzip:").await;
}

#[tokio::test]
async fn a_grub_cfg_syntax_error_is_refused_before_boot() {
    let name = "a_grub_cfg_syntax_error_is_refused_before_boot";
    let broken = |dir: &std::path::Path| {
        let grub = dir.join("boot-loader/grub.cfg");
        let text = std::fs::read_to_string(&grub).unwrap();
        std::fs::write(&grub, format!("{text}\nif [ -n \"$x\" ]; then\n  echo x\nfi fi\n")).unwrap();
    };
    let options = |lab: &Lab| InstallOptions { provider: Provider::Dir(artifacts_with(lab, broken)), ..InstallOptions::default() };
    refused_before_boot(name, options, "grub.cfg: GRUB cannot parse it (grub-script-check: ").await;
}

#[tokio::test]
async fn a_load_kernel_file_without_boot_is_refused_before_boot() {
    let name = "a_load_kernel_file_without_boot_is_refused_before_boot";
    let custom = |dir: &std::path::Path| {
        let file = dir.join("boot-loader/load-kernel-52:54:00:1a:5e:01.cfg");
        std::fs::write(file, "echo custom kernel\nlinux $prefix/bzImage console=ttyS0,115200n8 ip=::::::dhcp:: root=/dev/nfs\n").unwrap();
    };
    let options = |lab: &Lab| InstallOptions { provider: Provider::Dir(artifacts_with(lab, custom)), ..InstallOptions::default() };
    refused_before_boot(name, options, "load-kernel-52:54:00:1a:5e:01.cfg: loads a kernel but has no `boot`").await;
}

#[tokio::test]
async fn a_console_that_grubs_serial_line_is_not_on_is_refused_before_boot() {
    let name = "a_console_that_grubs_serial_line_is_not_on_is_refused_before_boot";
    let moved = |dir: &std::path::Path| std::fs::write(dir.join("pxelab.toml"), "console = \"ttyS1,57600\"\n").unwrap();
    let options = |lab: &Lab| InstallOptions { provider: Provider::Dir(artifacts_with(lab, moved)), ..InstallOptions::default() };
    let cause = "grub.cfg: `serial --speed=115200 --unit=0 --word=8 --parity=no --stop=1` is not on the artifact set's console ttyS1,57600";
    refused_before_boot(name, options, cause).await;
}

/// The install's error, how long after the server refused `nixos/<missing>` it came, and
/// the lab.
async fn install_without(name: &str, missing: &str) -> (StageError, Duration, Lab) {
    let mut lab = Lab::new(name).unwrap();
    let options = InstallOptions { provider: Provider::Dir(artifacts_without(&lab, missing)), ..InstallOptions::default() };
    let err = match jobs::install(&mut lab, &options).await {
        Ok(_) => panic!("installed without {missing}"),
        Err(e) => e,
    };
    let ended = lab.network().elapsed();
    let file = format!("nixos/{missing}");
    let refused = lab.network().events().all().into_iter().find_map(|(at, e)| match e {
        ServiceEvent::Tftp(t) if t.file == file && t.outcome == TftpOutcome::NotFound => Some(at),
        _ => None,
    });
    let refused = refused.unwrap_or_else(|| panic!("the server never refused {file}: {}", error_chain(&err)));
    (err, ended - refused, lab)
}

/// Without `missing`, the install fails at `stage` within [`FAST`] of the server's refusal,
/// naming the file, listing what the TFTP root holds instead and showing the console's tail.
async fn fails_fast_without(name: &str, missing: &str, stage: &str, holds: &str) -> Lab {
    let (err, after, lab) = install_without(name, missing).await;
    let text = error_chain(&err);
    assert_eq!(err.stage, stage, "{text}");
    assert!(after < FAST, "{after:?} after the refusal: {text}");
    assert!(text.contains(&format!(r#""nixos/{missing}" not found"#)), "{text}");
    assert!(text.contains(&format!("holds: {holds}")), "{text}");
    assert!(text.contains("==== Start client last console lines ====\n") && text.contains("Filename: nixos/bootx64.efi"), "{text}");
    lab
}

#[tokio::test]
async fn a_missing_boot_loader_fails_at_once_listing_the_tftp_root() {
    let name = "a_missing_boot_loader_fails_at_once_listing_the_tftp_root";
    fails_fast_without(name, "bootx64.efi", "TFTP: GRUB", "bzImage, grub.cfg, load-kernel.cfg").await;
}

#[tokio::test]
async fn a_missing_kernel_fails_at_once_listing_the_tftp_root() {
    let name = "a_missing_kernel_fails_at_once_listing_the_tftp_root";
    let mut lab = fails_fast_without(name, "bzImage", "TFTP: kernel", "bootx64.efi, grub.cfg, load-kernel.cfg").await;
    the_report_shows_the_failure_in_a_browser(&mut lab);
}

/// The run's report names the failing stage in `report.json`, and a real browser (headless
/// Chromium) renders the page with the stages, the failure and the events: checked in the
/// DOM it renders; a screenshot is kept with the run.
fn the_report_shows_the_failure_in_a_browser(lab: &mut Lab) {
    let page = lab.write_report().unwrap();
    let json: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(lab.dir().join("report.json")).unwrap()).unwrap();
    assert_eq!(json["result"], "failed");
    assert_eq!(json["failure"]["stage"], "TFTP: kernel");
    assert!(json["failure"]["cause"].as_str().unwrap().contains(r#""nixos/bzImage" not found"#), "{json}");
    assert!(json["repro"].as_str().unwrap().starts_with("pxelab run install-default --artifacts "), "{json}");
    let events = json["events"].as_array().unwrap();
    // A client is its MAC and the switch port its messages came in on.
    let client = |e: &serde_json::Value| e["client"].as_str().is_some_and(|c| c.starts_with("52:54:00:1a:5e:01 @ port "));
    assert!(events.iter().any(|e| client(e) && e["event"]["service"] == "tftp"), "TFTP events are tied to the client: {json}");
    assert!(json["vms"][0]["boot_entries"].as_array().unwrap().iter().any(|e| e.as_str().unwrap().contains("IPv4")), "{json}");

    let url = format!("file://{}", page.display());
    let browser = |args: &[&str]| {
        let out = Command::new("chromium").args(["--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars"]).args(args).arg(&url).output().unwrap();
        assert!(out.status.success(), "chromium: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    };
    let dom = browser(&["--dump-dom"]);
    let failure = regex::Regex::new(r#"(?s)<div class="failure" id="failure">.*?</div>"#).unwrap().find(&dom).expect("the failure box").as_str();
    assert!(failure.contains("failed in stage <span class=\"stage-name\">TFTP: kernel</span>"), "{failure}");
    for stage in ["build artifacts", "firmware → DHCP", "TFTP: GRUB", "TFTP: kernel"] {
        assert!(dom.contains(&format!("<span class=\"label\">{stage}</span>")), "{stage} is not on the timeline");
    }
    assert!(dom.contains(r#"<span class="bar failed""#), "the failed stage's bar");
    assert!(dom.contains(r#"<details class="console failed" open=""><summary>TFTP: kernel"#), "the failing stage's console is open");
    assert!(dom.contains(r#"<div class="row client"><span class="label">52:54:00:1a:5e:01 @ port "#), "the client's events row");
    let screenshot = lab.dir().join("report.png");
    browser(&["--window-size=1280,1600", &format!("--screenshot={}", screenshot.display())]);
    let png = std::fs::read(&screenshot).unwrap();
    assert!(png.starts_with(b"\x89PNG") && png.len() > 20_000, "a screenshot with content: {} bytes", png.len());
}
