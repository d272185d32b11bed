//! The accelerator probe boots OVMF to its boot manager, so TCG always passes it.

use pxelab::vm::{probe_accel, Accel};

#[tokio::test]
async fn ovmf_reaches_its_boot_manager_under_tcg() {
    let firmware = pxelab_ovmf::discover().unwrap();
    let scratch = tempfile_dir();
    let dir = scratch.clone();
    let took = tokio::task::spawn_blocking(move || probe_accel(Accel::Tcg, &firmware, &dir)).await.unwrap().unwrap();
    println!("OVMF reached BdsDxe under TCG in {took:.1?}");
    std::fs::remove_dir_all(&scratch).unwrap();
}

fn tempfile_dir() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("pxelab-accel-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}
