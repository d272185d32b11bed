//! Fuzz targets: each takes arbitrary bytes, drives one piece of code that guests (or users'
//! files) feed, and panics when an invariant breaks. `fuzz/` runs them under AFL++
//! (`ci/fuzz.sh TARGET SECONDS`); the unit tests below run each over its seed corpus and
//! seeded mutations of it, so a regression shows in every test run.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

use crate::net::framing;
use crate::services::dhcp::{DhcpConfig, DhcpServer, HostDecl, BOOTP_MIN_LEN};
use crate::services::nfs::rpc::{RecordDecoder, MAX_RECORD};
use crate::services::nfs::{Portmap, StackedExport};
use crate::services::tftp::wire::Packet;
use crate::services::tftp::{resolve_in, Step, Transfer, TransferLimits, TransferOutcome};

/// A fuzz target: its name (a `fuzz/` binary and a `ci/fuzz.sh` argument) and its body.
pub type Target = (&'static str, fn(&[u8]));

/// Every target.
pub const TARGETS: &[Target] = &[
    ("dhcp", dhcp),
    ("tftp_wire", tftp_wire),
    ("tftp_transfer", tftp_transfer),
    ("rpc_records", rpc_records),
    ("nfs_stream", nfs_stream),
    ("framing", framing_decoder),
    ("varstore", varstore),
    ("paths", paths),
    ("http", http),
];

/// DHCP `handle`: never panics; a reply is padded, decodes, and answers the request's xid
/// and hardware address.
pub fn dhcp(data: &[u8]) {
    let mut config = DhcpConfig::for_subnet([192, 0, 2]);
    config.root_path = Some("192.0.2.1:/srv/nixos/nfsroot,vers=3,tcp".into());
    config.hosts.push(HostDecl { mac: crate::net::Mac([0x52, 0x54, 0, 0x12, 0x34, 0x56]), ip: [192, 0, 2, 10].into(), hostname: Some("h".into()) });
    let mut server = DhcpServer::new(config).expect("a valid config");
    // Several messages from one input, so lease state is exercised: split on a marker.
    for (i, message) in data.split(|&b| b == 0xfe).enumerate().take(16) {
        if let Ok((Some(reply), event)) = server.handle(Duration::from_secs(i as u64 * 30), message) {
            assert!(reply.bytes.len() >= BOOTP_MIN_LEN);
            use dhcproto::Decodable;
            let decoded = dhcproto::v4::Message::decode(&mut dhcproto::Decoder::new(&reply.bytes)).expect("a reply decodes");
            assert_eq!(decoded.xid(), u32::from_be_bytes(message[4..8].try_into().expect("a decoded request has an xid")));
            assert_eq!(event.mac, crate::net::Mac(decoded.chaddr()[..6].try_into().expect("6 bytes")));
        }
    }
}

/// TFTP wire parsing: never panics; what parses emits bytes that parse to the same packet.
pub fn tftp_wire(data: &[u8]) {
    if let Ok(packet) = Packet::parse(data) {
        assert_eq!(Packet::parse(&packet.emit()).as_ref(), Ok(&packet), "emit then parse");
    }
}

/// The read-transfer state machine driven by a scripted client: DATA stays within the file,
/// with the file's bytes, and within the window (the client's, or the blocks sent ahead),
/// nothing is sent after the end, and Done comes only after the last block's ACK.
pub fn tftp_transfer(data: &[u8]) {
    let Some((head, script)) = data.split_first_chunk::<4>() else { return };
    let size = u64::from(u16::from_be_bytes([head[0], head[1]])) * 8 + u64::from(head[2] & 7);
    let options: Vec<(String, String)> = [("blksize", head[3] as u64 * 8), ("windowsize", u64::from(head[3] & 15))]
        .iter()
        .filter(|(_, v)| *v > 0)
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let file: Vec<u8> = (0..size).map(|i| (i * 31 % 251) as u8).collect();
    let limits = TransferLimits::default();
    let mut transfer = Transfer::new(size, &options, limits);
    let in_flight = match options.iter().find(|(k, _)| k == "windowsize") {
        Some((_, v)) => v.parse::<u64>().expect("a number").min(limits.max_windowsize.into()),
        None => limits.send_ahead.into(),
    };
    let mut blksize = 512u64;
    if let Some((_, v)) = options.iter().find(|(k, _)| k == "blksize") {
        blksize = v.parse::<u64>().expect("a number").clamp(8, u64::from(crate::services::tftp::MTU_BLKSIZE));
    }
    let total = size / blksize + 1;
    let mut now = Duration::ZERO;
    let mut step = transfer.begin(now, &file).expect("reads from memory");
    let mut last_acked = 0u64; // widened, as the server tracks it
    let mut highest = 0u64; // the highest block sent
    for event in script.chunks(3) {
        now += Duration::from_millis(10);
        match step {
            Step::Finish { ref outcome, .. } => {
                if let TransferOutcome::Done { bytes } = outcome {
                    assert_eq!((*bytes, last_acked), (size, total), "Done only after the last block's ACK");
                }
                return;
            }
            Step::Send(ref packets) => {
                for packet in packets {
                    if let Packet::Data { block, data } = packet {
                        let full = widen(last_acked, *block);
                        assert!(full >= 1 && full <= total, "block {full} of {total}");
                        assert!(full <= last_acked + in_flight, "block {full} with {last_acked} acknowledged, {in_flight} in flight");
                        highest = highest.max(full);
                        let offset = ((full - 1) * blksize) as usize;
                        assert_eq!(data[..], file[offset..(offset + blksize as usize).min(file.len())], "bytes of block {full}");
                    }
                }
            }
            Step::Wait => {}
        }
        let block = u16::from_be_bytes([event[0], *event.get(1).unwrap_or(&0)]);
        step = match event.get(2).copied().unwrap_or(0) % 8 {
            0 => transfer.on_timeout(now, &file),
            1 => transfer.on_packet(now, &Packet::Error { code: 0, message: "x".into() }, &file),
            _ => {
                let result = transfer.on_packet(now, &Packet::Ack { block }, &file);
                let full = widen(last_acked, block);
                if full > last_acked && full <= highest {
                    last_acked = full; // the server takes an ACK for any block it sent
                }
                result
            }
        }
        .expect("reads from memory");
    }
}

/// The block number nearest above `acked` that `block` names (16-bit numbers wrap).
fn widen(acked: u64, block: u16) -> u64 {
    acked + u64::from(block.wrapping_sub(acked as u16))
}

/// RPC record marking and the portmapper: records stay within their bound, every call gets
/// a reply to its own xid.
pub fn rpc_records(data: &[u8]) {
    let portmap = Portmap::nfs3_tcp(2049);
    let mut decoder = RecordDecoder::default();
    for chunk in data.chunks(data.first().map_or(1, |&b| usize::from(b % 64) + 1)) {
        let Ok(records) = decoder.push(chunk) else { return };
        for record in records {
            assert!(record.len() <= MAX_RECORD);
            if let Some(reply) = portmap.handle(&record) {
                assert_eq!(reply[..4], record[..4], "the reply answers the call's xid");
            }
        }
    }
}

/// A raw RPC byte stream into the NFS server over the export: the server never panics or
/// hangs, and whatever it answers is whole RPC records.
pub fn nfs_stream(data: &[u8]) {
    static TREE: OnceLock<(tempfile::TempDir, PathBuf)> = OnceLock::new();
    let (_, root) = TREE.get_or_init(|| {
        let dir = tempfile::tempdir().expect("a temp dir");
        let root = dir.path().join("root");
        std::fs::create_dir_all(root.join("installer")).expect("mkdir");
        std::fs::write(root.join("installer/config"), "rootDevice=/dev/vda\n").expect("write");
        std::fs::write(dir.path().join("secret"), "outside").expect("write");
        std::os::unix::fs::symlink("../../secret", root.join("installer/leak")).expect("symlink");
        (dir, root)
    });
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a runtime");
    runtime.block_on(async {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let export = std::sync::Arc::new(StackedExport::new(vec![root.clone()]));
        let nfs = nfsserve::tcp::NFSConnections::new(export, "srv/nixos/nfsroot");
        let (mut client, server) = tokio::io::duplex(1 << 16);
        let serving = nfs.serve(server, "fuzz".into(), 2049);
        let talking = async {
            let _ = client.write_all(data).await;
            let _ = client.shutdown().await;
            let mut replies = Vec::new();
            let _ = tokio::time::timeout(Duration::from_millis(200), client.read_to_end(&mut replies)).await;
            replies
        };
        let (_, replies) = tokio::join!(tokio::time::timeout(Duration::from_secs(5), serving), talking);
        let mut decoder = RecordDecoder::default();
        assert!(decoder.push(&replies).is_ok(), "replies are RPC records");
        assert!(!String::from_utf8_lossy(&replies).contains("outside"), "nothing outside the export is read");
    });
}

/// The stream framing decoder: frames come out exactly as they went in, however the stream
/// is split, and an oversized length is an error, never an allocation.
pub fn framing_decoder(data: &[u8]) {
    let mut decoder = framing::Decoder::default();
    let mut out = Vec::new();
    let step = data.first().map_or(1, |&b| usize::from(b) + 1);
    for chunk in data.chunks(step) {
        match decoder.push(chunk) {
            Ok(frames) => out.extend(frames),
            Err(framing::FramingError(len)) => return assert!(len > framing::MAX_FRAME),
        }
    }
    let encoded: Vec<u8> = out.iter().flat_map(|f| framing::encode(f)).collect();
    assert_eq!(encoded[..], data[..encoded.len()], "frames are the stream's own bytes, in order");
}

/// The OVMF variable store parser and the boot entries read from it: never panic.
pub fn varstore(data: &[u8]) {
    if let Ok(variables) = pxelab_ovmf::parse_variables(data) {
        let entries = pxelab_ovmf::boot_entries(&variables);
        let _ = entries.first().map(|e| e.path.len());
    }
}

/// The HTTP server's answer (`services::http::respond`) to a request line and a `Range`
/// header from the input, over a tree with a symlink out of the root: never a panic, a file
/// body only from inside the root and within the file, a status of the server's set, and a
/// Content-Length that is the body's.
pub fn http(data: &[u8]) {
    use crate::services::http::{respond, Body};
    let Ok(dir) = tempfile::tempdir() else { return };
    let root = dir.path().join("root");
    let _ = std::fs::create_dir_all(root.join("nixos"));
    let _ = std::fs::write(dir.path().join("secret"), "SECRET");
    let _ = std::fs::write(root.join("nixos/bzImage"), vec![7u8; 1000]);
    let _ = std::os::unix::fs::symlink(dir.path().join("secret"), root.join("out"));
    let text = String::from_utf8_lossy(data);
    let mut lines = text.split('\n');
    let request = lines.next().unwrap_or_default();
    let (method, target) = request.split_once(' ').unwrap_or((request, "/"));
    let range = lines.next();
    let plan = respond(std::slice::from_ref(&root), method, target, range);
    assert!([200, 206, 400, 403, 404, 405, 416].contains(&plan.status), "{plan:?}");
    let real_root = root.canonicalize().expect("the root exists");
    if let Body::File { path, start, len } = &plan.body {
        assert!(path.starts_with(&real_root) || path.starts_with(&root), "{target:?} served {}", path.display());
        let size = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
        assert!(start + len <= size, "{start}+{len} of {size}: {plan:?}");
    }
    if let Some((_, length)) = plan.headers.iter().find(|(h, _)| *h == "content-length") {
        if method != "HEAD" {
            assert_eq!(length.parse::<u64>().ok(), Some(plan.body_len()), "{plan:?}");
        }
    }
}

/// TFTP and NFS path resolution over a tree with symlinks made from the input: nothing
/// outside the roots is ever served.
pub fn paths(data: &[u8]) {
    let Ok(dir) = tempfile::tempdir() else { return };
    let root = dir.path().join("root");
    let _ = std::fs::create_dir_all(root.join("a/b"));
    let _ = std::fs::write(dir.path().join("secret"), "SECRET");
    let _ = std::fs::write(root.join("a/file"), "inside");
    let mut parts = data.split(|&b| b == b'\n');
    // The first lines make symlinks (`name=target`), the rest are names to resolve.
    let names: Vec<String> = parts.by_ref().map(|p| String::from_utf8_lossy(p).into_owned()).collect();
    for spec in names.iter().take(4) {
        if let Some((name, target)) = spec.split_once('=') {
            let link = root.join(name.trim_start_matches('/'));
            if link.starts_with(&root) && !name.contains("..") {
                let _ = std::os::unix::fs::symlink(target, link);
            }
        }
    }
    let real_root = root.canonicalize().expect("the root exists");
    for name in names.iter().skip(4) {
        if let Ok(path) = resolve_in(std::slice::from_ref(&root), name) {
            assert!(path.starts_with(&real_root), "{name:?} resolved to {}", path.display());
        }
    }
    let export = StackedExport::new(vec![root.clone()]);
    let runtime = tokio::runtime::Builder::new_current_thread().build().expect("a runtime");
    runtime.block_on(async {
        use nfsserve::vfs::NFSFileSystem;
        for name in names.iter().skip(4) {
            let mut id = export.root_dir();
            for part in name.split('/') {
                match export.lookup(id, &part.as_bytes().to_vec().into()).await {
                    Ok(next) => id = next,
                    Err(_) => break,
                }
            }
            if let Ok((bytes, _)) = export.read(id, 0, 64).await {
                assert_ne!(bytes, b"SECRET", "{name:?} read a file outside the export");
            }
        }
    });
}

/// Write each target's seed inputs (one file per input) below `dir/<target>/`.
pub fn write_seeds(dir: &Path, target: &str, seeds: &[Vec<u8>]) -> std::io::Result<()> {
    let dir = dir.join(target);
    std::fs::create_dir_all(&dir)?;
    for (i, seed) in seeds.iter().enumerate() {
        std::fs::File::create(dir.join(format!("seed-{i:04}")))?.write_all(seed)?;
    }
    Ok(())
}

#[cfg(test)]
mod test {
    use super::*;

    /// Each target over its committed seeds (from the scenarios' captures, and every crash
    /// AFL++ found) and seeded mutations of them: the regression check that every test run
    /// makes. Like AFL++'s, a panic counts even where the code catches it.
    #[test]
    fn every_target_holds_its_invariants_on_seeds_and_mutations() {
        static PANICKED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
        let default_hook = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            PANICKED.store(true, std::sync::atomic::Ordering::SeqCst);
            default_hook(info);
        }));
        // At run time nextest names the crate's directory, also for an archive run elsewhere.
        let manifest = std::env::var_os("CARGO_MANIFEST_DIR").map_or_else(|| env!("CARGO_MANIFEST_DIR").into(), std::path::PathBuf::from);
        let corpus = manifest.join("../fuzz/corpus");
        let mut rng = fastrand::Rng::with_seed(0x5eed);
        for (name, target) in TARGETS {
            let mut seeds: Vec<Vec<u8>> = std::fs::read_dir(corpus.join(name))
                .map(|dir| dir.flatten().filter_map(|e| std::fs::read(e.path()).ok()).collect())
                .unwrap_or_default();
            assert!(!seeds.is_empty(), "no seeds for {name} in {}", corpus.display());
            seeds.sort();
            let runs = if *name == "nfs_stream" || *name == "paths" { 50 } else { 2000 };
            for i in 0..runs {
                let mut input = seeds[i % seeds.len()].clone();
                for _ in 0..rng.usize(0..8) {
                    match rng.u8(0..4) {
                        0 if !input.is_empty() => {
                            let at = rng.usize(0..input.len());
                            input[at] = rng.u8(..);
                        }
                        1 => input.insert(rng.usize(0..=input.len()), rng.u8(..)),
                        2 if !input.is_empty() => drop(input.remove(rng.usize(0..input.len()))),
                        _ => input.extend_from_slice(&[0xff; 4]),
                    }
                }
                target(&input);
                assert!(!PANICKED.load(std::sync::atomic::Ordering::SeqCst), "{name} panicked on {input:02x?}");
            }
        }
    }
}
