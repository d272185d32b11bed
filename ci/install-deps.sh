#!/usr/bin/env bash
# Install what pxelab needs on Debian 12 (bookworm): QEMU, OVMF, iPXE ROMs, GRUB's EFI
# modules, the kernel and busybox the fixtures are built from, mmdebstrap for the installer
# root (it fetches Debian packages), the compressors the install images use, Nix (the nix
# provider's test runs the real nix-build), and the Linux 6.1 source with what building it
# needs (the nixos-shape kernel, built once and cached), Chromium (a test renders a run
# report in it), and Debian's signed shim and network GRUB with sbsign and openssl (the Secure
# Boot scenarios sign a kernel with a key of their own), and systemd-boot (the netboot-shape
# flavour's installed system boots it), and curl (a fixture fetches Debian 13's iPXE from
# Debian's archive). Run as root.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"

packages=(qemu-system-x86 ovmf ipxe-qemu ipxe grub-efi-amd64-bin grub-common linux-image-amd64 busybox-static
          shim-signed grub-efi-amd64-signed sbsigntool openssl systemd-boot-efi
          mmdebstrap kmod xz-utils zstd nix-bin chromium curl
          linux-source-6.1 build-essential bc flex bison libelf-dev libssl-dev)
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends "${packages[@]}" >/dev/null
# qemu-img must come from the same QEMU release as qemu-system-x86. Some images carry a
# newer qemu-utils (a backport) that the line above leaves broken or removes: install
# bookworm's own then.
if ! qemu-img --version >/dev/null 2>&1; then
  $sudo apt-get install -y -qq --no-install-recommends --allow-downgrades qemu-utils/bookworm >/dev/null
fi
# SKIP_NEXTEST=1: a machine that only runs the pxelab binary.
[ -n "${SKIP_NEXTEST:-}" ] || command -v cargo-nextest >/dev/null || cargo install --locked cargo-nextest
qemu-system-x86_64 --version | head -n 1
qemu-img --version | head -n 1
