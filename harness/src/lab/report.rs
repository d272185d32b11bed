//! A run's report: `report.json` for tools, and `report.html`, one self-contained page (no
//! network, no scripts) with the stage timeline, the events per client, each console log split
//! by stage with failing lines marked, the NVRAM boot entries, a summary of the pcap and links
//! to the raw files.

use std::fmt::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use regex::Regex;

use super::events::Totals;
use super::stages::{RunLog, StageRecord};
use crate::net::pcap;
use crate::services::ServiceEvent;

/// Most events a report holds; `events.jsonl` has them all.
pub const REPORT_EVENTS: usize = 2000;
/// Most clients the report's timeline draws (the busiest).
const TIMELINE_CLIENTS: usize = 32;

/// Everything a run's report holds.
#[derive(Debug, serde::Serialize)]
pub struct RunReport {
    pub name: String,
    pub result: Outcome,
    pub failure: Option<Failure>,
    pub stages: Vec<StageRecord>,
    pub facts: Vec<(String, String)>,
    /// The events, at most [`REPORT_EVENTS`] of them (the first half and the last half of a
    /// longer run); `events.jsonl` has them all.
    pub events: Vec<EventRecord>,
    /// How many events of each kind (`dhcp`, `tftp`, `segment` …) the run had in all.
    pub event_counts: std::collections::BTreeMap<String, u64>,
    /// Events left out of [`RunReport::events`].
    pub events_left_out: usize,
    pub vms: Vec<VmRecord>,
    pub pcap: Option<pcap::Summary>,
    /// The command that runs this again, when the run maps to one.
    pub repro: Option<String>,
    /// Every file of the run, relative to its directory.
    pub files: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    Passed,
    Failed,
}

/// The stage that failed and why.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Failure {
    pub stage: String,
    pub cause: String,
}

/// A lab event at its time since the lab started.
#[derive(Debug, serde::Serialize)]
pub struct EventRecord {
    pub at: f64,
    /// The client's MAC, when the event can be tied to one.
    pub client: Option<String>,
    pub event: ServiceEvent,
}

/// A VM of the run: its files and its NVRAM boot entries.
#[derive(Debug, serde::Serialize)]
pub struct VmRecord {
    pub name: String,
    pub files: Vec<String>,
    /// `BootXXXX description path`, in BootOrder first.
    pub boot_entries: Vec<String>,
    #[serde(skip)]
    console: Vec<ConsoleLine>,
}

#[derive(Debug)]
struct ConsoleLine {
    at: f64,
    text: String,
}

impl RunReport {
    /// Gather the report of the run in `dir` from its log, its events and its files.
    /// `events` are those memory holds, `totals` count them all.
    pub fn gather(name: &str, dir: &Path, log: &RunLog, events: &[(Duration, ServiceEvent)], totals: &Totals, panicked: bool, repro: Option<String>) -> Self {
        let failure = match log.stages.iter().find(|s| s.error.is_some()) {
            Some(stage) => Some(Failure { stage: stage.name.clone(), cause: stage.error.clone().unwrap_or_default() }),
            None if panicked => Some(Failure { stage: "test".into(), cause: "the test panicked after its last stage (its output has the message)".into() }),
            None => None,
        };
        let vms = vm_dirs(dir)
            .into_iter()
            .map(|vm| {
                let name = vm.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
                let vars = pxelab_ovmf::VarStore { path: vm.join("OVMF_VARS.fd") };
                let boot_entries = match vars.boot_entries() {
                    Ok(entries) => {
                        let rank = |n: u16| entries.order.iter().position(|&o| o == n).unwrap_or(usize::MAX);
                        let mut options = entries.options.clone();
                        options.sort_by_key(|o| rank(o.number));
                        options.iter().map(|o| format!("Boot{:04X} {} {}", o.number, o.description, o.path)).collect()
                    }
                    Err(_) => Vec::new(),
                };
                let console = std::fs::read_to_string(vm.join("console.log")).map(|t| console_lines(&t)).unwrap_or_default();
                VmRecord { files: files(&vm, dir), name, boot_entries, console }
            })
            .collect();
        // Each address's client: the first MAC the DHCP server named it to, in one pass.
        let mut owners: std::collections::HashMap<std::net::Ipv4Addr, crate::net::Mac> = std::collections::HashMap::new();
        for (_, e) in events {
            if let ServiceEvent::Dhcp(d) = e {
                owners.entry(d.ip).or_insert(d.mac);
            }
        }
        let event_counts = totals.by_kind.clone();
        let owner = |ip: &std::net::Ipv4Addr| owners.get(ip).map(|m| m.to_string());
        // A flood makes hundreds of thousands of events: the report keeps the two ends.
        let half = REPORT_EVENTS / 2;
        let kept = match events.len() > REPORT_EVENTS {
            false => events.iter().collect::<Vec<_>>(),
            true => events[..half].iter().chain(&events[events.len() - half..]).collect(),
        };
        let events_left_out = totals.count.max(events.len()) - kept.len();
        let events = kept
            .into_iter()
            .cloned()
            .map(|(at, event)| {
                // A client is its MAC and the switch port its messages came in on: a message
                // forged for a MAC from another port shows as another client.
                let at_port = |client: Option<String>, port: Option<crate::net::switch::PortId>| match port {
                    Some(port) => client.map(|c| format!("{c} @ port {port}")),
                    None => client,
                };
                let client = match &event {
                    ServiceEvent::Dhcp(d) => at_port(Some(d.mac.to_string()), d.switch_port),
                    ServiceEvent::Tftp(t) => at_port(owner(&t.client), t.switch_port),
                    ServiceEvent::Nfs(n) => at_port(owner(&n.client), n.switch_port),
                    _ => None,
                };
                EventRecord { at: (at.as_secs_f64() * 1000.0).round() / 1000.0, client, event }
            })
            .collect();
        RunReport {
            name: name.to_owned(),
            result: if failure.is_some() { Outcome::Failed } else { Outcome::Passed },
            failure,
            stages: log.stages.clone(),
            facts: log.facts.clone(),
            events,
            event_counts,
            events_left_out,
            vms,
            pcap: pcap::summarize(&dir.join("segment.pcap")).ok(),
            repro,
            files: files(dir, dir),
        }
    }

    /// Write `report.json` and `report.html` into `dir`.
    pub fn write(&self, dir: &Path) -> std::io::Result<()> {
        let json = serde_json::to_string_pretty(self).map_err(std::io::Error::other)?;
        std::fs::write(dir.join("report.json"), json)?;
        std::fs::write(dir.join("report.html"), self.html())
    }

    /// The report as one self-contained HTML page.
    pub fn html(&self) -> String {
        let mut page = String::new();
        let title = format!("pxelab: {} {}", self.name, if self.failure.is_some() { "failed" } else { "passed" });
        let _ = write!(page, "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{}</title><style>{STYLE}</style></head><body>\n", esc(&title));
        let _ = writeln!(page, "<h1>{}</h1>", esc(&title));
        match &self.failure {
            Some(failure) => {
                let _ = writeln!(page, "<div class=\"failure\" id=\"failure\"><b>failed in stage <span class=\"stage-name\">{}</span></b><pre>{}</pre></div>", esc(&failure.stage), esc(&failure.cause));
            }
            None => page.push_str("<div class=\"passed\" id=\"passed\">every stage passed</div>\n"),
        }
        if let Some(repro) = &self.repro {
            let _ = writeln!(page, "<p>Reproduce: <code id=\"repro\">{}</code></p>", esc(repro));
        }
        self.timeline(&mut page);
        self.facts_table(&mut page);
        self.events_table(&mut page);
        for vm in &self.vms {
            self.vm_section(&mut page, vm);
        }
        if let Some(summary) = &self.pcap {
            let _ = write!(
                page,
                "<h2>Capture</h2><p><a href=\"segment.pcap\">segment.pcap</a>: {} frames, {} bytes over {} s{}</p><table><tr><th>protocol</th><th>frames</th></tr>",
                summary.frames,
                summary.bytes,
                summary.seconds,
                if summary.unreadable > 0 { " (its end is cut short)" } else { "" }
            );
            for (protocol, n) in &summary.protocols {
                let _ = write!(page, "<tr><td>{}</td><td>{n}</td></tr>", esc(protocol));
            }
            page.push_str("</table>\n");
            let resent: Vec<String> = summary.server_resent.iter().map(|(p, n)| format!("{n} {}", esc(p))).collect();
            let resent = if resent.is_empty() { "none".to_owned() } else { resent.join(", ") };
            let _ = write!(page, "<p>TCP segments the lab's servers sent again: {resent}</p>\n");
        }
        page.push_str("<h2>Files</h2><ul class=\"files\">");
        for file in &self.files {
            let _ = write!(page, "<li><a href=\"{}\">{}</a></li>", esc(&href(file)), esc(file));
        }
        page.push_str("</ul>\n</body></html>\n");
        page
    }

    /// The end of the run: the last stage's end or the last event, whichever is later.
    fn span(&self) -> f64 {
        let stages = self.stages.iter().map(|s| s.end.as_secs_f64()).fold(0.0, f64::max);
        let events = self.events.iter().map(|e| e.at).fold(0.0, f64::max);
        stages.max(events).max(0.001)
    }

    fn timeline(&self, page: &mut String) {
        let span = self.span();
        let pos = |t: f64| (t / span * 100.0).clamp(0.0, 100.0);
        page.push_str("<h2>Timeline</h2><div class=\"timeline\">\n");
        for stage in &self.stages {
            let (start, end) = (stage.start.as_secs_f64(), stage.end.as_secs_f64());
            let class = if stage.error.is_some() { "bar failed" } else { "bar" };
            let _ = writeln!(
                page,
                "<div class=\"row stage\"><span class=\"label\">{}</span><span class=\"track\"><span class=\"{class}\" style=\"left:{:.2}%;width:{:.2}%\" title=\"{:.2}s → {:.2}s\"></span></span><span class=\"took\">{:.2}s</span></div>",
                esc(&stage.name),
                pos(start),
                (pos(end) - pos(start)).max(0.3),
                start,
                end,
                end - start
            );
        }
        // One pass: each client's events; the timeline shows the busiest clients.
        let mut by_client: std::collections::BTreeMap<&str, Vec<&EventRecord>> = std::collections::BTreeMap::new();
        for event in &self.events {
            if let Some(client) = event.client.as_deref() {
                by_client.entry(client).or_default().push(event);
            }
        }
        let mut clients: Vec<(&str, Vec<&EventRecord>)> = by_client.into_iter().collect();
        if clients.len() > TIMELINE_CLIENTS {
            clients.sort_by_key(|(_, events)| std::cmp::Reverse(events.len()));
            clients.truncate(TIMELINE_CLIENTS);
            clients.sort_by_key(|(client, _)| *client);
        }
        for (client, events) in clients {
            let _ = write!(page, "<div class=\"row client\"><span class=\"label\">{}</span><span class=\"track\">", esc(client));
            for event in events {
                let (kind, what) = summary(&event.event);
                let _ = write!(page, "<span class=\"mark {kind}\" style=\"left:{:.2}%\" title=\"{:.3}s {}\"></span>", pos(event.at), event.at, esc(&what));
            }
            page.push_str("</span><span class=\"took\"></span></div>\n");
        }
        let _ = writeln!(page, "<div class=\"row axis\"><span class=\"label\"></span><span class=\"track\">0 s … {span:.1} s</span></div></div>");
    }

    fn facts_table(&self, page: &mut String) {
        if self.facts.is_empty() {
            return;
        }
        page.push_str("<h2>Facts</h2><table class=\"facts\">");
        for (what, value) in &self.facts {
            let _ = write!(page, "<tr><th>{}</th><td>{}</td></tr>", esc(what), esc(value));
        }
        page.push_str("</table>\n");
    }

    fn events_table(&self, page: &mut String) {
        let counts: Vec<String> = self.event_counts.iter().map(|(kind, n)| format!("{n} {kind}")).collect();
        let left_out = match self.events_left_out {
            0 => String::new(),
            n => format!("; the middle {n} are left out here"),
        };
        let _ = write!(page, "<h2>Events</h2><details><summary>{} events ({}{left_out}; all in <a href=\"events.jsonl\">events.jsonl</a>)</summary><table class=\"events\"><tr><th>at</th><th>client</th><th>service</th><th>what</th></tr>", self.events.len() + self.events_left_out, counts.join(", "));
        for event in &self.events {
            let (kind, what) = summary(&event.event);
            let _ = write!(page, "<tr><td>{:.3}s</td><td>{}</td><td>{kind}</td><td>{}</td></tr>", event.at, esc(event.client.as_deref().unwrap_or("")), esc(&what));
        }
        page.push_str("</table></details>\n");
    }

    fn vm_section(&self, page: &mut String, vm: &VmRecord) {
        let _ = writeln!(page, "<h2>VM {}</h2>", esc(&vm.name));
        if !vm.boot_entries.is_empty() {
            page.push_str("<h3>NVRAM boot entries (BootOrder first)</h3><ol class=\"boot\">");
            for entry in &vm.boot_entries {
                let _ = write!(page, "<li><code>{}</code></li>", esc(entry));
            }
            page.push_str("</ol>\n");
        }
        let _ = writeln!(page, "<h3>Console by stage (<a href=\"{}/console.log\">console.log</a>)</h3>", esc(&href(&vm.name)));
        let failing = Regex::new(&format!("{}|{}", crate::console::DEFAULT_FAIL_FAST.join("|"), FAILING_LINE)).expect("valid patterns");
        let failed_stage = self.failure.as_ref().map(|f| f.stage.as_str());
        let stage_of = |at: f64| self.stages.iter().rposition(|s| s.start.as_secs_f64() <= at);
        let mut groups: Vec<(Option<usize>, Vec<&ConsoleLine>)> = Vec::new();
        for line in &vm.console {
            let stage = stage_of(line.at);
            match groups.last_mut() {
                Some((s, lines)) if *s == stage => lines.push(line),
                _ => groups.push((stage, vec![line])),
            }
        }
        for (stage, lines) in groups {
            let name = stage.map_or("before the first stage", |i| self.stages[i].name.as_str());
            let failed = Some(name) == failed_stage;
            let open = if failed { " open" } else { "" };
            let class = if failed { "console failed" } else { "console" };
            let _ = write!(page, "<details class=\"{class}\"{open}><summary>{} ({} lines)</summary><pre>", esc(name), lines.len());
            for line in lines {
                let text = format!("[{:9.3}] {}", line.at, line.text);
                match failing.is_match(&line.text) {
                    true => {
                        let _ = writeln!(page, "<mark class=\"failing\">{}</mark>", esc(&text));
                    }
                    false => {
                        let _ = writeln!(page, "{}", esc(&text));
                    }
                }
            }
            page.push_str("</pre></details>\n");
        }
        page.push_str("<p>Files: ");
        for file in &vm.files {
            let _ = write!(page, "<a href=\"{}\">{}</a> ", esc(&href(file)), esc(file));
        }
        page.push_str("</p>\n");
    }
}

/// Console lines marked as failing, besides the fail-fast patterns.
const FAILING_LINE: &str = r"(?i)\b(error|failed|failure|panic|cannot|not found|timed out)\b";

const STYLE: &str = "body{font:14px system-ui,sans-serif;margin:1.5em;color:#222}\
h1{font-size:1.5em}h2{margin-top:1.5em;border-bottom:1px solid #ccc}\
.failure{background:#fde8e8;border:1px solid #d33;padding:.5em}.passed{background:#e6f6e6;border:1px solid #3a3;padding:.5em}\
.timeline .row{display:flex;align-items:center;height:20px}.label{width:16em;flex:none;overflow:hidden;white-space:nowrap;text-overflow:ellipsis}\
.track{position:relative;flex:1;height:14px;background:#f3f3f3}.took{width:6em;text-align:right;flex:none}\
.bar{position:absolute;top:0;height:14px;background:#4a7fd4}.bar.failed{background:#d33}\
.mark{position:absolute;top:0;width:3px;height:14px}.mark.dhcp{background:#e89b1a}.mark.tftp{background:#2a9d5c}.mark.nfs{background:#8e44ad}.mark.http{background:#1a7fb5}.mark.segment,.mark.server{background:#777}\
.axis .track{background:none;font-size:11px;color:#666}\
pre{background:#fafafa;border:1px solid #ddd;padding:.4em;overflow-x:auto;font-size:12px}\
mark.failing{background:#fbb;display:inline-block;width:100%}details.failed>summary{color:#c00;font-weight:bold}\
table{border-collapse:collapse}td,th{border:1px solid #ddd;padding:2px 6px;text-align:left;vertical-align:top}";

/// An event's service and a one-line description.
pub fn summary(event: &ServiceEvent) -> (&'static str, String) {
    match event {
        ServiceEvent::Dhcp(d) => (super::events::kind(event), format!("{:?} {} {}{}", d.kind, d.ip, d.boot_file, d.vendor_class.as_deref().map(|v| format!(" ({v})")).unwrap_or_default())),
        ServiceEvent::Tftp(t) => ("tftp", format!("{} {:?} {} bytes in {} ms {}", t.file, t.outcome, t.bytes, t.millis, t.detail)),
        ServiceEvent::Nfs(n) => ("nfs", format!("{} {}:{}", if n.connected { "connected" } else { "closed" }, n.client, n.port)),
        ServiceEvent::Http(h) => ("http", format!("{} {} {} {} bytes in {} ms", h.served.method, h.served.path, h.served.status, h.served.bytes, h.served.millis)),
        ServiceEvent::Segment(s) => ("segment", format!("{s:?}")),
        ServiceEvent::Server { name, running } => ("server", format!("{name} {}", if *running { "started" } else { "stopped" })),
    }
}

/// `[   12.345] text` lines of a console log; a line without a stamp keeps the one before.
fn console_lines(log: &str) -> Vec<ConsoleLine> {
    let stamp = Regex::new(r"^\[ *(\d+\.\d+)\] ?(.*)$").expect("valid pattern");
    let mut at = 0.0;
    log.lines()
        .map(|line| match stamp.captures(line) {
            Some(c) => {
                at = c[1].parse().unwrap_or(at);
                ConsoleLine { at, text: c[2].to_owned() }
            }
            None => ConsoleLine { at, text: line.to_owned() },
        })
        .collect()
}

/// The subdirectories of a run that are VMs' (they hold a `qemu.cmdline`).
fn vm_dirs(dir: &Path) -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|entries| entries.filter_map(|e| e.ok()).map(|e| e.path()).filter(|p| p.join("qemu.cmdline").is_file()).collect())
        .unwrap_or_default();
    dirs.sort();
    dirs
}

/// Files under `dir`, relative to `base`, sorted (the NFS top layer's included).
fn files(dir: &Path, base: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut pending = vec![dir.to_owned()];
    while let Some(d) = pending.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else { continue };
        for entry in entries.filter_map(|e| e.ok()) {
            let path = entry.path();
            match entry.file_type() {
                Ok(t) if t.is_dir() => pending.push(path),
                Ok(_) => out.push(path.strip_prefix(base).unwrap_or(&path).display().to_string()),
                Err(_) => {}
            }
        }
    }
    out.sort();
    out
}

/// A relative link to `path` (each component percent-encoded where HTML needs it).
fn href(path: &str) -> String {
    path.replace('%', "%25").replace(' ', "%20").replace('#', "%23").replace('?', "%3F")
}

fn esc(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

#[cfg(test)]
mod test {
    use super::*;

    fn stage(name: &str, start: f64, end: f64, error: Option<&str>) -> StageRecord {
        StageRecord { name: name.into(), start: Duration::from_secs_f64(start), end: Duration::from_secs_f64(end), error: error.map(Into::into) }
    }

    #[test]
    fn a_failed_run_names_its_stage_and_marks_the_failing_console_line() {
        let dir = tempfile::tempdir().unwrap();
        let vm = dir.path().join("client");
        std::fs::create_dir_all(&vm).unwrap();
        std::fs::write(vm.join("qemu.cmdline"), "qemu-system-x86_64\n").unwrap();
        std::fs::write(vm.join("console.log"), "[    0.500] BdsDxe: loading Boot0001\n[    3.000] <script>alert(1)</script>\n[    4.200] Kernel panic - not syncing: VFS\n").unwrap();
        let log = RunLog {
            stages: vec![stage("firmware → DHCP", 0.1, 2.0, None), stage("kernel → NFS root", 2.0, 5.0, Some("timed out"))],
            facts: vec![],
        };
        let report = RunReport::gather("t", dir.path(), &log, &[], &Totals::default(), false, Some("pxelab run install-default --keep".into()));
        report.write(dir.path()).unwrap();
        assert_eq!(report.result, Outcome::Failed);
        assert_eq!(report.failure.as_ref().unwrap().stage, "kernel → NFS root");
        let html = std::fs::read_to_string(dir.path().join("report.html")).unwrap();
        assert!(html.contains("<mark class=\"failing\">[    4.200] Kernel panic"), "{html}");
        assert!(html.contains("&lt;script&gt;") && !html.contains("<script>"), "console text is escaped");
        assert!(html.contains("<details class=\"console failed\" open><summary>kernel → NFS root (2 lines)"), "{html}");
        assert!(html.contains("<summary>firmware → DHCP (1 lines)"), "{html}");
        let json: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(dir.path().join("report.json")).unwrap()).unwrap();
        assert_eq!(json["result"], "failed");
        assert_eq!(json["stages"][1]["end"], 5.0);
        assert!(json["files"].as_array().unwrap().iter().any(|f| f == "client/console.log"), "{json}");
    }

    /// A flood of 450,000 events from one port (a 240 s flood made a 23 MB report, built in
    /// one pass over the events per MAC, and memory grew with the log): memory keeps the
    /// port's latest [`PORT_WINDOW`] and a client's on another port all, `events.jsonl` all
    /// of them, and the report a bounded number with per-kind counts, built and written fast.
    #[test]
    fn a_flood_of_events_makes_a_report_of_bounded_size() {
        use super::super::events::{port_of_event, Events, PORT_WINDOW};
        use crate::event::Sink;
        use crate::services::dhcp::{DhcpEvent, DhcpEventKind};
        let dir = tempfile::tempdir().unwrap();
        let (_failed, watch) = tokio::sync::watch::channel(None);
        let log = Events::new(&dir.path().join("events.jsonl"), tokio::time::Instant::now(), watch).unwrap();
        let dhcp = |i: u32, port| {
            let [_, a, b, c] = i.to_be_bytes();
            ServiceEvent::Dhcp(DhcpEvent {
                kind: DhcpEventKind::Offer,
                mac: crate::net::Mac([2, a, b, c, 0, 1]),
                ip: std::net::Ipv4Addr::new(192, 0, 2, 100 + (i % 100) as u8),
                hostname: None,
                arch: None,
                vendor_class: None,
                boot_file: String::new(),
                switch_port: Some(port),
                server: None,
                root_path: None,
            })
        };
        let begun = std::time::Instant::now();
        log.publish(dhcp(0, 2));
        for i in 1..450_000u32 {
            log.publish(dhcp(i, 3));
        }
        log.publish(dhcp(450_000, 2));
        let events = log.all();
        assert_eq!(events.len(), PORT_WINDOW + 2, "port 3's latest, and both of port 2's");
        assert_eq!(events.first().map(|(_, e)| port_of_event(e)), Some(Some(2)), "the client's first event outlives the flood");
        let jsonl = std::fs::read_to_string(dir.path().join("events.jsonl")).unwrap();
        assert_eq!(jsonl.lines().count(), 450_001);
        let last: serde_json::Value = serde_json::from_str(jsonl.lines().last().unwrap()).unwrap();
        assert_eq!((last["service"].as_str(), last["switch_port"].as_u64(), last["at_ms"].is_u64()), (Some("dhcp"), Some(2), true), "{last}");
        let report = RunReport::gather("flood", dir.path(), &RunLog::default(), &events, &log.totals(), false, None);
        report.write(dir.path()).unwrap();
        let took = begun.elapsed();
        assert_eq!((report.events.len(), report.events_left_out), (REPORT_EVENTS, 450_001 - REPORT_EVENTS));
        assert_eq!(report.event_counts.get("dhcp"), Some(&450_001));
        let (json, html) = (std::fs::metadata(dir.path().join("report.json")).unwrap().len(), std::fs::metadata(dir.path().join("report.html")).unwrap().len());
        assert!(json < 2 << 20 && html < 2 << 20, "report.json {json} bytes, report.html {html} bytes");
        assert!(took < Duration::from_secs(10), "{took:?}");
    }
}
