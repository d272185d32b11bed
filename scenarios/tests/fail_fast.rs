//! A kernel panic ends a console wait at once, through fail-fast, not through its timeout.

use std::time::{Duration, Instant};

use pxelab::artifacts::host_files;
use pxelab::console::ConsoleError;
use pxelab::lab::Lab;
use pxelab::vm::{Disk, DiskFormat};
use pxelab_fixtures::{UefiDisk, UefiDiskInit};

#[tokio::test]
async fn kernel_panic_fails_the_wait_fast() {
    let lab = Lab::new("kernel_panic_fails_the_wait_fast").unwrap();
    let recipe = UefiDisk { host: host_files(lab.cache()).unwrap(), init: UefiDiskInit::Panic };
    let fixture = lab.cache().get_or_build(&recipe).unwrap();
    let disk = Disk::Overlay { base: fixture.join(UefiDisk::IMAGE), format: DiskFormat::Raw };
    let vm = lab.vm("client").disk(disk, Some(1)).start().await.unwrap();

    let timeout = Duration::from_secs(900);
    let started = Instant::now();
    let err = vm.wait_for_console_text(UefiDisk::SHELL_MARKER, timeout).await.unwrap_err();
    let took = started.elapsed();
    println!("fail-fast after {took:.1?} (timeout {timeout:?})");
    match &err {
        ConsoleError::FailFast { line, tail, .. } => {
            assert!(line.contains("Kernel panic - not syncing"), "{line}");
            assert!(tail.contains("init exits on purpose"), "the error quotes the console:\n{tail}");
            assert!(tail.lines().count() <= 40);
        }
        other => panic!("expected a fail-fast error, got: {other}"),
    }
    assert!(err.to_string().contains("==== Start last console lines ===="), "{err}");
}
