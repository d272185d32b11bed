//! The disk first in BootOrder loses network control on redeploy (reported against MAAS): a
//! reinstall that reboots without setting BootNext boots the old disk. `firmware → DHCP`
//! fails at the firmware's `BdsDxe: starting Boot#### "…" from …HD(…)` line, naming the
//! entry and the fix, not at the stage's 120 s timeout. With BootNext set, the reinstall
//! passes (`services.rs`). The first install is a cached one ([`InstallOptions::cached_install`]).

use std::time::Duration;

use pxelab::jobs::{self, InstallOptions, NetworkTurn};
use pxelab::lab::Lab;
use pxelab_scenarios::error_chain;

#[tokio::test]
async fn a_redeploy_without_boot_next_that_boots_the_old_disk_is_named() {
    let mut lab = Lab::new("a_redeploy_without_boot_next_that_boots_the_old_disk_is_named").unwrap();
    let options = InstallOptions { cached_install: true, ..InstallOptions::default() };
    let (report, vm) = jobs::install(&mut lab, &options).await.unwrap_or_else(|e| panic!("{}", error_chain(&e)));
    let installed = report.facts.first_boot_entry.split_whitespace().next().unwrap_or_default().to_owned();
    let err = match jobs::reinstall_by(&lab, vm, &options, NetworkTurn::RebootOnly).await {
        Ok(_) => panic!("reinstalled without BootNext, the disk first in BootOrder"),
        Err(e) => e,
    };
    let text = error_chain(&err);
    println!("{text}");
    assert_eq!(err.stage, "firmware → DHCP", "{text}");
    assert!(err.elapsed < Duration::from_secs(60), "at the firmware's boot line, not the stage's timeout: {:?}", err.elapsed);
    assert!(text.contains(&format!("the firmware booted {installed} ")), "{installed}: {text}");
    assert!(text.contains("set BootNext to the client's network entry, or put it first in BootOrder"), "{text}");
}
