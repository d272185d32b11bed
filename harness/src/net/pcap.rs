//! A pcap capture of every frame on the segment, readable by Wireshark and tcpdump.

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use pcap_file::pcap::{PcapHeader, PcapPacket, PcapWriter};
use pcap_file::DataLink;

/// Writes frames to a pcap file, unbuffered, so a killed test still leaves a readable file.
pub struct Capture {
    writer: PcapWriter<std::fs::File>,
}

impl Capture {
    pub fn create(path: &Path) -> std::io::Result<Self> {
        let file = std::fs::File::create(path)?;
        let header = PcapHeader { datalink: DataLink::ETHERNET, ..Default::default() };
        let writer = PcapWriter::with_header(file, header).map_err(std::io::Error::other)?;
        Ok(Capture { writer })
    }

    /// Append one frame, stamped with the wall clock.
    pub fn record(&mut self, frame: &[u8]) -> std::io::Result<()> {
        let at = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO);
        let packet = PcapPacket::new(at, frame.len() as u32, frame);
        self.writer.write_packet(&packet).map(drop).map_err(std::io::Error::other)
    }
}

#[cfg(test)]
mod test {
    use super::*;
    use pcap_file::pcap::PcapReader;

    #[test]
    fn frames_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("segment.pcap");
        let mut capture = Capture::create(&path).unwrap();
        capture.record(&[0xff; 60]).unwrap();
        capture.record(&[0x52; 1514]).unwrap();
        let mut reader = PcapReader::new(std::fs::File::open(&path).unwrap()).unwrap();
        assert_eq!(reader.header().datalink, DataLink::ETHERNET);
        let mut lens = Vec::new();
        while let Some(packet) = reader.next_packet() {
            lens.push(packet.unwrap().data.len());
        }
        assert_eq!(lens, [60, 1514]);
    }
}
