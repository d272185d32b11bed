//! Seed corpora from real captures: `seed RUNS_DIR OUT_DIR` reads every `segment.pcap` and
//! `OVMF_VARS.fd` below RUNS_DIR (the scenarios' per-test directories) and writes inputs for
//! each target below OUT_DIR/<target>/.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use pcap_file::pcap::PcapReader;
use smoltcp::wire::{EthernetFrame, EthernetProtocol, IpProtocol, Ipv4Packet, TcpPacket, UdpPacket};

fn main() -> std::io::Result<()> {
    let args: Vec<PathBuf> = std::env::args_os().skip(1).map(PathBuf::from).collect();
    let [runs, out] = &args[..] else {
        eprintln!("usage: seed RUNS_DIR OUT_DIR");
        std::process::exit(2);
    };
    let mut seeds: BTreeMap<&str, BTreeSet<Vec<u8>>> = BTreeMap::new();
    for file in files(runs) {
        let name = file.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        if name == "OVMF_VARS.fd" {
            seeds.entry("varstore").or_default().insert(std::fs::read(&file)?);
        } else if name == "segment.pcap" {
            frames(&file, &mut seeds)?;
        }
    }
    for (target, inputs) in &seeds {
        // Keep a sample: AFL++ wants a small, varied corpus.
        let sample: Vec<Vec<u8>> = inputs.iter().step_by((inputs.len() / 64).max(1)).cloned().collect();
        pxelab::fuzz::write_seeds(out, target, &sample)?;
        println!("{target}: {} seeds", sample.len());
    }
    Ok(())
}

fn files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        match entry.file_type() {
            Ok(t) if t.is_dir() => out.extend(files(&entry.path())),
            Ok(t) if t.is_file() => out.push(entry.path()),
            _ => {}
        }
    }
    out
}

fn frames(pcap: &Path, seeds: &mut BTreeMap<&str, BTreeSet<Vec<u8>>>) -> std::io::Result<()> {
    let mut reader = PcapReader::new(std::fs::File::open(pcap)?).map_err(std::io::Error::other)?;
    let mut streams: BTreeMap<(u16, u16), Vec<u8>> = BTreeMap::new();
    let mut count = 0;
    while let Some(Ok(packet)) = reader.next_packet() {
        count += 1;
        if count <= 64 {
            seeds.entry("framing").or_default().insert(encode(&packet.data));
        }
        let Ok(eth) = EthernetFrame::new_checked(&packet.data[..]) else { continue };
        if eth.ethertype() != EthernetProtocol::Ipv4 {
            continue;
        }
        let Ok(ip) = Ipv4Packet::new_checked(eth.payload()) else { continue };
        match ip.next_header() {
            IpProtocol::Udp => {
                let Ok(udp) = UdpPacket::new_checked(ip.payload()) else { continue };
                let target = match (udp.src_port(), udp.dst_port()) {
                    (_, 67) => "dhcp",
                    (_, 111) => "rpc_records",
                    (a, b) if a == 69 || b == 69 || a > 1024 && b > 1024 => "tftp_wire",
                    _ => continue,
                };
                seeds.entry(target).or_default().insert(udp.payload().to_vec());
            }
            IpProtocol::Tcp => {
                let Ok(tcp) = TcpPacket::new_checked(ip.payload()) else { continue };
                if matches!(tcp.dst_port(), 111 | 2049) {
                    let stream = streams.entry((tcp.src_port(), tcp.dst_port())).or_default();
                    if stream.len() < 16 * 1024 {
                        stream.extend_from_slice(tcp.payload());
                    }
                }
            }
            _ => {}
        }
    }
    for ((_, port), stream) in streams {
        let target = if port == 111 { "rpc_records" } else { "nfs_stream" };
        seeds.entry(target).or_default().insert(stream);
    }
    Ok(())
}

fn encode(frame: &[u8]) -> Vec<u8> {
    [&(frame.len() as u32).to_be_bytes()[..], frame].concat()
}
