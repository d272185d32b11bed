//! A pcap capture of every frame on the segment, readable by Wireshark and tcpdump.
//!
//! A thread of its own writes the file, so no disk write ever blocks the async runtime that
//! carries the network; each frame is written as it comes (unbuffered), so a killed test
//! still leaves a readable file.

use std::path::Path;
use std::sync::mpsc::{sync_channel, SyncSender, TrySendError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use pcap_file::pcap::{PcapHeader, PcapPacket, PcapWriter};
use pcap_file::DataLink;

/// Frames waiting for the writer thread; more are left out of the capture (and counted).
const QUEUE: usize = 8192;

/// Sends frames to the capture's writer thread; dropping it ends the thread.
pub struct Capture {
    frames: SyncSender<(Duration, Vec<u8>)>,
    missed: u64,
}

impl Capture {
    pub fn create(path: &Path) -> std::io::Result<Self> {
        let file = std::fs::File::create(path)?;
        let header = PcapHeader { datalink: DataLink::ETHERNET, ..Default::default() };
        let mut writer = PcapWriter::with_header(file, header).map_err(std::io::Error::other)?;
        let (frames, queue) = sync_channel::<(Duration, Vec<u8>)>(QUEUE);
        let name = path.display().to_string();
        std::thread::Builder::new().name("pcap".into()).spawn(move || {
            for (at, frame) in queue {
                if let Err(e) = writer.write_packet(&PcapPacket::new(at, frame.len() as u32, &frame)) {
                    return tracing::warn!("pcap {name}: {e}; capture stopped");
                }
            }
        })?;
        Ok(Capture { frames, missed: 0 })
    }

    /// Queue one frame, stamped with the wall clock.
    pub fn record(&mut self, frame: &[u8]) {
        let at = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO);
        if let Err(TrySendError::Full(_)) = self.frames.try_send((at, frame.to_vec())) {
            self.missed += 1;
            if self.missed.is_power_of_two() {
                tracing::warn!("pcap: the writer is behind; {} frames left out of the capture", self.missed);
            }
        }
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
        capture.record(&[0xff; 60]);
        capture.record(&[0x52; 1514]);
        drop(capture);
        std::thread::sleep(Duration::from_millis(200));
        let mut reader = PcapReader::new(std::fs::File::open(&path).unwrap()).unwrap();
        assert_eq!(reader.header().datalink, DataLink::ETHERNET);
        let mut lens = Vec::new();
        while let Some(packet) = reader.next_packet() {
            lens.push(packet.unwrap().data.len());
        }
        assert_eq!(lens, [60, 1514]);
    }
}
