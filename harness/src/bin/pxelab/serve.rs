//! `pxelab serve` and `pxelab console`: a lab for QEMUs started by hand, and a terminal on a
//! live VM's console.

use std::process::ExitCode;

use pxelab::jobs::{self, InstallOptions};
use pxelab::lab::Lab;

/// `pxelab serve`: the lab on `<run dir>/switch.sock` until Ctrl-C.
pub async fn serve(options: InstallOptions, clients: u8, spinner: &indicatif::ProgressBar) -> ExitCode {
    let mut lab = match Lab::new("serve") {
        Ok(lab) => lab,
        Err(e) => {
            eprintln!("pxelab: {e}");
            return ExitCode::FAILURE;
        }
    };
    let socket = lab.dir().join("switch.sock");
    // A unix socket's path has at most 107 bytes.
    let listener = match tokio::net::UnixListener::bind(&socket) {
        Ok(listener) => listener,
        Err(e) => {
            eprintln!("pxelab: serve: cannot listen on {}: {e} (a shorter PXELAB_RUNS_DIR helps if the path is long)", socket.display());
            return ExitCode::FAILURE;
        }
    };
    let hand = match jobs::serve(&mut lab, &options, clients, &socket).await {
        Ok(hand) => hand,
        Err(e) => {
            spinner.finish_and_clear();
            eprintln!("pxelab: serve failed: {:#}", anyhow::Error::from(e));
            return ExitCode::FAILURE;
        }
    };
    spinner.finish_and_clear();
    let network = lab.network();
    println!("serving on {} (DHCP, TFTP and NFS at {}); pcap and events in {}", socket.display(), network.server_ip(), lab.dir().display());
    for line in network.listening() {
        println!("service {line}");
    }
    for client in &hand {
        println!("{} ({}, {}, {}): start it with", client.name, client.mac, client.ip, client.hostname);
        println!("  {}", client.command);
    }
    println!("Ctrl-C stops the lab; the events follow.");
    let mut shown = 0;
    let mut ports = 0;
    loop {
        let events = network.events();
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    ports += 1;
                    let port = network.plug_stream(stream);
                    println!("[{:9.3}] switch  a client connected on port {port} ({ports} so far)", network.elapsed().as_secs_f64());
                }
                Err(e) => eprintln!("pxelab: serve: accept: {e}"),
            },
            () = events.wait_past(shown) => {
                let new = events.since(shown);
                for pxelab::lab::Logged { seq, at, event } in &new {
                    shown = seq + 1;
                    let (service, what) = pxelab::lab::describe_event(event);
                    let client = match event {
                        pxelab::services::ServiceEvent::Dhcp(d) => d.mac.to_string(),
                        pxelab::services::ServiceEvent::Tftp(t) => t.client.to_string(),
                        pxelab::services::ServiceEvent::Nfs(n) => n.client.to_string(),
                        _ => String::new(),
                    };
                    println!("[{:9.3}] {service:<7} {client:<17} {what}", at.as_secs_f64());
                }
            }
            _ = tokio::signal::ctrl_c() => break,
        }
    }
    match lab.write_report() {
        Ok(page) => println!("stopped; report: {}", page.display()),
        Err(e) => eprintln!("pxelab: cannot write the report: {e}"),
    }
    ExitCode::SUCCESS
}

/// `pxelab console`: find the live console of `run`/`vm` and attach to it.
pub async fn console(run: Option<String>, vm: Option<String>) -> ExitCode {
    let root = pxelab::lab::runs_root();
    let mut live = Vec::new();
    for run_dir in std::fs::read_dir(&root).into_iter().flatten().filter_map(|e| e.ok()) {
        let run_name = run_dir.file_name().to_string_lossy().into_owned();
        if run.as_ref().is_some_and(|r| *r != run_name) {
            continue;
        }
        for vm_dir in std::fs::read_dir(run_dir.path()).into_iter().flatten().filter_map(|e| e.ok()) {
            let vm_name = vm_dir.file_name().to_string_lossy().into_owned();
            let link = vm_dir.path().join("console.sock");
            let answers = std::fs::read_link(&link).is_ok_and(|socket| std::os::unix::net::UnixStream::connect(socket).is_ok());
            if answers && vm.as_ref().is_none_or(|v| *v == vm_name) {
                live.push((run_name.clone(), vm_name, link));
            }
        }
    }
    live.sort();
    let (run_name, vm_name, link) = match live.len() {
        1 => live.remove(0),
        0 => {
            let which = [run.as_deref(), vm.as_deref()].into_iter().flatten().collect::<Vec<_>>().join(" ");
            eprintln!("pxelab: no live console{}{which} under {}: start a lab with `pxelab run JOB --keep`", if which.is_empty() { "" } else { " for " }, root.display());
            return ExitCode::FAILURE;
        }
        _ => {
            eprintln!("pxelab: several live consoles; name one:");
            for (r, v, _) in &live {
                eprintln!("  pxelab console {r} {v}");
            }
            return ExitCode::FAILURE;
        }
    };
    eprintln!("pxelab: attached to {vm_name} of {run_name}; Ctrl-] detaches\r");
    match pxelab::console::attach::attach_terminal(&link).await {
        Ok(how) => {
            eprintln!("\r\npxelab: {}\r", match how {
                pxelab::console::attach::Detached::ConsoleClosed => "the console closed (the VM stopped or its lab ended)",
                _ => "detached",
            });
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("pxelab: cannot attach to {}: {e}", link.display());
            ExitCode::FAILURE
        }
    }
}

