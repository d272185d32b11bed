//! The installed system's services (install protocol §4): the `nixos-shape` image with a
//! TeslaMate-like stack, checked with the NixOS driver's verbs from inside the guest and from
//! the lab host over the virtual network; and TeslaMate's first-boot race (issue #5028),
//! which the harness names with the failed unit's journal. They check the installed system,
//! not its install: each starts from the installed disk an earlier identical install left in
//! the cache at its reboot ([`InstallOptions::cached_install`]), so its boot is still the
//! system's first.

use std::net::Ipv4Addr;
use std::time::Duration;

use pxelab::artifacts::Provider;
use pxelab::jobs::{self, InstallOptions, INSTALL_CLIENT};
use pxelab::lab::Lab;
use pxelab_fixtures::service_stack::{
    APP_PORT, APP_UNIT, MIGRATION_FAILED, MOSQUITTO_UNIT, MQTT_PORT, POSTGRES_PORT, POSTGRES_UNIT,
};
use pxelab_fixtures::{SerialConsole, ServiceStack};
use pxelab_scenarios::error_chain;

const MINUTE: Duration = Duration::from_secs(60);

fn stack(ordered: bool) -> InstallOptions {
    let provider = Provider::NixosShape { services: Some(ServiceStack { ordered }), console: SerialConsole::UPSTREAM };
    InstallOptions { provider, cached_install: true, ..InstallOptions::default() }
}

#[tokio::test]
async fn service_stack_runs_and_answers_the_lab_host() {
    let mut lab = Lab::new("service_stack_runs_and_answers_the_lab_host").unwrap();
    let (_, vm) = jobs::install(&mut lab, &stack(true)).await.unwrap_or_else(|e| panic!("{}", error_chain(&e)));
    for unit in [POSTGRES_UNIT, MOSQUITTO_UNIT, APP_UNIT] {
        vm.wait_for_unit(unit, MINUTE).await.unwrap();
    }
    vm.wait_for_open_port(APP_PORT, MINUTE).await.unwrap();
    // The migration ran before the app started, once.
    let migrated = vm.succeed(&format!("journalctl -o cat -u {APP_UNIT} | grep -c 'migrations done'")).await.unwrap();
    assert_eq!(migrated, "1");

    // From the lab host, over the lab network: what another machine there sees.
    let ip: Ipv4Addr = INSTALL_CLIENT.1.parse().unwrap();
    let client = lab.network().client();
    for port in [APP_PORT, POSTGRES_PORT, MQTT_PORT] {
        client.wait_for_open_port(ip, port, MINUTE).await.unwrap();
    }
    client.wait_for_closed_port(ip, 4001, MINUTE).await.unwrap();
    let status = client.http_get(ip, APP_PORT, "/cgi-bin/status", MINUTE).await.unwrap();
    assert_eq!(status.status, 200, "{status:?}");
    for line in ["database: ok", "migrations: 1", "positions: \n", "mqtt: pong"] {
        assert!(status.body.contains(line), "{line:?} not in {:?}", status.body);
    }
    let added = client.http_get(ip, APP_PORT, "/cgi-bin/add?note=first-drive", MINUTE).await.unwrap();
    assert!(added.body.contains("added: first-drive"), "{added:?}");
    let status = client.http_get(ip, APP_PORT, "/cgi-bin/status", MINUTE).await.unwrap();
    assert!(status.body.contains("positions: first-drive\n"), "{:?}", status.body);

    // The app restarts on failure; stopped, its port closes from both sides.
    vm.succeed(&format!("systemctl kill -s KILL {APP_UNIT}")).await.unwrap();
    vm.wait_until_succeeds(&format!("journalctl -o cat -u {APP_UNIT} | grep -c 'migrations done' | grep -qx 2"), MINUTE).await.unwrap();
    vm.wait_for_unit(APP_UNIT, MINUTE).await.unwrap();
    vm.succeed(&format!("systemctl stop {APP_UNIT}")).await.unwrap();
    vm.wait_for_closed_port(APP_PORT, MINUTE).await.unwrap();
    client.wait_for_closed_port(ip, APP_PORT, MINUTE).await.unwrap();
    vm.fail(&format!("systemctl is-active {APP_UNIT}")).await.unwrap();

    // Files in and out, checksummed.
    let sent: Vec<u8> = (0..20_000u32).flat_map(|i| i.to_le_bytes()).collect();
    std::fs::write(lab.dir().join("sent"), &sent).unwrap();
    vm.copy_to_vm(&lab.dir().join("sent"), "/root/sent").await.unwrap();
    vm.copy_from_vm("/root/sent", &lab.dir().join("back")).await.unwrap();
    assert_eq!(std::fs::read(lab.dir().join("back")).unwrap(), sent);
}

#[tokio::test]
async fn an_app_not_ordered_after_its_database_loses_the_first_boot_race() {
    let mut lab = Lab::new("an_app_not_ordered_after_its_database_loses_the_first_boot_race").unwrap();
    let err = match jobs::install(&mut lab, &stack(false)).await {
        Ok(_) => panic!("the unordered app came up: the race did not happen"),
        Err(e) => error_chain(&e),
    };
    // The harness names the stage, the failed unit, and quotes the unit's journal.
    for evidence in ["system ready", "degraded", APP_UNIT, MIGRATION_FAILED, "Failed with result 'exit-code'"] {
        assert!(err.contains(evidence), "{evidence:?} not in:\n{err}");
    }
}

#[tokio::test]
async fn app_data_survives_a_reinstall_through_backup_and_restore() {
    let mut lab = Lab::new("app_data_survives_a_reinstall_through_backup_and_restore").unwrap();
    let options = stack(true);
    let (_, vm) = jobs::install(&mut lab, &options).await.unwrap_or_else(|e| panic!("{}", error_chain(&e)));
    let ip: Ipv4Addr = INSTALL_CLIENT.1.parse().unwrap();
    let client = lab.network().client();
    vm.wait_for_unit(APP_UNIT, MINUTE).await.unwrap();
    client.wait_for_open_port(ip, APP_PORT, MINUTE).await.unwrap();
    for note in ["home-to-work", "work-to-home"] {
        client.http_get(ip, APP_PORT, &format!("/cgi-bin/add?note={note}"), MINUTE).await.unwrap();
    }
    // Back up as the seed's script does: pg_dump to a file, kept on the host.
    vm.succeed("cd /tmp && runuser -u postgres -- pg_dump --schema=app postgres > /root/app.sql").await.unwrap();
    let dump = lab.dir().join("app.sql");
    vm.copy_from_vm("/root/app.sql", &dump).await.unwrap();
    assert!(std::fs::read_to_string(&dump).unwrap().contains("home-to-work"));

    // The same client, not a new VM: PXE again (BootNext), install over its disk.
    let (report, vm) = jobs::reinstall(&lab, vm, &options).await.unwrap_or_else(|e| panic!("{}", error_chain(&e)));
    assert!(report.stages.durations().iter().any(|(s, _)| s == "BootNext → PXE, reboot"), "{report:?}");
    vm.wait_for_unit(APP_UNIT, MINUTE).await.unwrap();
    client.wait_for_open_port(ip, APP_PORT, MINUTE).await.unwrap();
    let fresh = client.http_get(ip, APP_PORT, "/cgi-bin/status", MINUTE).await.unwrap();
    assert!(fresh.body.contains("positions: \n"), "a fresh system: {:?}", fresh.body);

    // Restore as the seed describes: stop the app, recreate the schema, load the dump, start.
    vm.copy_to_vm(&dump, "/root/app.sql").await.unwrap();
    vm.succeed(&format!("systemctl stop {APP_UNIT}")).await.unwrap();
    vm.succeed("cd /tmp && runuser -u postgres -- psql -q -d postgres -c 'DROP SCHEMA app CASCADE'").await.unwrap();
    vm.succeed("cd /tmp && runuser -u postgres -- psql -q -v ON_ERROR_STOP=1 -d postgres < /root/app.sql").await.unwrap();
    vm.succeed(&format!("systemctl start {APP_UNIT}")).await.unwrap();
    vm.wait_for_unit(APP_UNIT, MINUTE).await.unwrap();
    client.wait_for_open_port(ip, APP_PORT, MINUTE).await.unwrap();
    let restored = client.http_get(ip, APP_PORT, "/cgi-bin/status", MINUTE).await.unwrap();
    assert!(restored.body.contains("positions: home-to-work,work-to-home\n"), "{:?}", restored.body);
    assert!(restored.body.contains("migrations: 1\n"), "{:?}", restored.body);
}
