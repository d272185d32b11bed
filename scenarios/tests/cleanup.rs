//! No QEMU process outlives a test that panics while its VM boots.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use pxelab::artifacts::host_files;
use pxelab::lab::Lab;
use pxelab::vm::{Disk, DiskFormat};
use pxelab_fixtures::{UefiDisk, UefiDiskInit};
use pxelab_scenarios::{qemu_alive, qemu_children};

#[test]
fn panic_mid_boot_leaves_no_qemu() {
    let pid = Arc::new(Mutex::new(None));
    let seen = pid.clone();
    let outcome = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(async {
            let lab = Lab::new("panic_mid_boot_leaves_no_qemu").unwrap();
            let recipe = UefiDisk { host: host_files(lab.cache()).unwrap(), init: UefiDiskInit::Shell };
            let fixture = lab.cache().get_or_build(&recipe).unwrap();
            let disk = Disk::Overlay { base: fixture.join(UefiDisk::IMAGE), format: DiskFormat::Raw };
            let vm = lab.vm("client").disk(disk, Some(1)).start().await.unwrap();
            *seen.lock().unwrap() = Some(vm.pid());
            vm.wait_for_console_text("pxelab-fixture: GRUB loading", Duration::from_secs(120)).await.unwrap();
            panic!("test panics while the kernel boots");
        })
    })
    .join();

    assert!(outcome.is_err(), "the scenario thread panicked");
    let pid = pid.lock().unwrap().expect("QEMU had started");
    assert!(!qemu_alive(pid), "QEMU {pid} outlived the panicking test");
    assert_eq!(qemu_children(), Vec::<u32>::new());
}
