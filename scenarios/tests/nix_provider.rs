//! The nix provider with the real `nix-build` (Debian's nix-bin; no nixpkgs, no binary
//! cache): derivations that need no nixpkgs lay the fixture's artifacts out as upstream's
//! outputs are (`nfsroot/nfsroot.tar.xz`, `grub-efi-bootloader/boot-loader.tar.xz`, the
//! image with its config), and the install runs from what `nix-build` printed.

use pxelab::artifacts::{Provider, SYSTEM_FILE};
use pxelab::jobs::{self, InstallOptions};
use pxelab::lab::Lab;
use pxelab_fixtures::Compression;
use pxelab_scenarios::error_chain;

/// A derivation whose `/bin/sh` builder runs `script` with `$out` set (and no PATH: tools
/// by absolute path).
fn derivation(name: &str, script: &str) -> String {
    format!(
        "builtins.derivation {{ name = \"{name}\"; system = builtins.currentSystem; builder = \"/bin/sh\"; \
         args = [ \"-c\" ''{script}'' ]; }}"
    )
}

#[tokio::test]
async fn artifacts_built_by_nix_build_install() {
    // Offline, as root, without a build user group: no sandbox (the builder is the host's
    // /bin/sh) and no substituters (nothing is fetched).
    std::env::set_var("NIX_CONFIG", "sandbox = false\nbuild-users-group =\nsubstituters =\n");
    let mut lab = Lab::new("artifacts_built_by_nix_build_install").unwrap();
    let fixture = Provider::Fixture { compression: Compression::Gzip }.provide(lab.cache()).unwrap();
    let (loader, root) = (fixture.tftp_root.join("nixos"), &fixture.nfs_layers[1]);
    let image = fixture.nfs_layers[0].parent().unwrap();
    let installer = fixture.nfs_layers[0].join("installer");
    // Upstream's tarballs named .tar.xz are plain tars; pxelab reads them either way.
    let installer_nix = format!(
        "{{ nfsroot = {}; grub-efi-bootloader = {}; }}",
        derivation("nfsroot", &format!("/bin/mkdir $out && /bin/tar -cf $out/nfsroot.tar.xz -C {} .", root.display())),
        derivation("grub-efi-bootloader", &format!("/bin/mkdir $out && /bin/tar -cf $out/boot-loader.tar.xz -C {} .", loader.display())),
    );
    let image_nix = derivation(
        "nixos-install-image",
        &format!(
            "/bin/mkdir $out && /bin/cp {i}/nixos.tar.gz {i}/config $out/ && /bin/cp {m} $out/",
            i = installer.display(),
            m = image.join(SYSTEM_FILE).display()
        ),
    );
    let (installer_file, image_file) = (lab.dir().join("installer.nix"), lab.dir().join("image.nix"));
    std::fs::write(&installer_file, installer_nix).unwrap();
    std::fs::write(&image_file, image_nix).unwrap();

    let options = InstallOptions { provider: Provider::Nix { installer: installer_file, image: image_file }, ..InstallOptions::default() };
    let (report, _vm) = jobs::install(&mut lab, &options).await.unwrap_or_else(|e| panic!("{}", error_chain(&e)));
    println!("{}", report.stages.table());
    assert_eq!(report.facts.network_boot_after_reboot, 0, "the disk booted");
}
