//! The running segment: one task switches frames between ports and captures them.

use std::os::fd::OwnedFd;
use std::path::Path;
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender};
use tokio::task::JoinHandle;

use super::fault::{FaultPolicy, Verdict};
use super::framing::{self, Decoder};
use super::pcap::Capture;
use super::switch::{Forward, PortId, Switch};

type Ports = Arc<Mutex<Vec<UnboundedSender<Vec<u8>>>>>;

/// A frame sender for one port: what it sends enters the switch from that port.
#[derive(Debug, Clone)]
pub struct PortSender {
    port: PortId,
    ingress: UnboundedSender<(PortId, Vec<u8>)>,
}

impl PortSender {
    /// Send a frame into the switch; false once the segment is gone.
    pub fn send(&self, frame: Vec<u8>) -> bool {
        self.ingress.send((self.port, frame)).is_ok()
    }
}

/// One L2 segment. Dropping it stops its tasks (the VMs then see a dead link).
pub struct Segment {
    ingress: UnboundedSender<(PortId, Vec<u8>)>,
    ports: Ports,
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

impl Segment {
    /// Start a segment that captures every frame to `pcap` and passes each past `faults`.
    pub fn start(pcap: &Path, faults: Box<dyn FaultPolicy>) -> std::io::Result<Self> {
        let capture = Capture::create(pcap)?;
        let (ingress, frames) = unbounded_channel();
        let ports: Ports = Arc::default();
        let switching = tokio::spawn(switch_frames(frames, ports.clone(), capture, faults));
        Ok(Segment { ingress, ports, tasks: Mutex::new(vec![switching]) })
    }

    /// Add a port; returns its sender and the frames the switch forwards to it.
    pub fn attach(&self) -> (PortSender, UnboundedReceiver<Vec<u8>>) {
        let (egress, frames) = unbounded_channel();
        let mut ports = self.ports.lock().expect("ports lock");
        ports.push(egress);
        (PortSender { port: ports.len() - 1, ingress: self.ingress.clone() }, frames)
    }

    /// Add a port for a VM NIC: returns QEMU's end of a connected stream socket
    /// (`-netdev stream,addr.type=fd`).
    pub fn attach_vm(&self) -> std::io::Result<OwnedFd> {
        let (ours, theirs) = std::os::unix::net::UnixStream::pair()?;
        ours.set_nonblocking(true)?;
        let (mut reader, mut writer) = tokio::net::UnixStream::from_std(ours)?.into_split();
        let (sender, mut frames) = self.attach();
        let reading = tokio::spawn(async move {
            let mut decoder = Decoder::default();
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                let n = match reader.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => n,
                };
                match decoder.push(&buf[..n]) {
                    Ok(done) => {
                        for frame in done {
                            if !sender.send(frame) {
                                return;
                            }
                        }
                    }
                    Err(e) => return tracing::warn!("port {}: {e}; link closed", sender.port),
                }
            }
        });
        let writing = tokio::spawn(async move {
            while let Some(frame) = frames.recv().await {
                if writer.write_all(&framing::encode(&frame)).await.is_err() {
                    return;
                }
            }
        });
        self.tasks.lock().expect("tasks lock").extend([reading, writing]);
        Ok(theirs.into())
    }
}

impl Drop for Segment {
    fn drop(&mut self) {
        for task in self.tasks.lock().expect("tasks lock").drain(..) {
            task.abort();
        }
    }
}

async fn switch_frames(
    mut frames: UnboundedReceiver<(PortId, Vec<u8>)>,
    ports: Ports,
    mut capture: Capture,
    mut faults: Box<dyn FaultPolicy>,
) {
    let mut switch = Switch::default();
    while let Some((port, frame)) = frames.recv().await {
        if let Err(e) = capture.record(&frame) {
            tracing::warn!("pcap: {e}");
        }
        if faults.on_frame(port, &frame) == Verdict::Drop {
            continue;
        }
        let ports = ports.lock().expect("ports lock");
        match switch.forward(port, &frame) {
            Forward::Port(out) => drop(ports[out].send(frame)),
            Forward::Flood => {
                for (out, egress) in ports.iter().enumerate() {
                    if out != port {
                        let _ = egress.send(frame.clone());
                    }
                }
            }
            Forward::Drop => {}
        }
    }
}

#[cfg(test)]
mod test {
    use super::*;

    fn frame(dst: [u8; 6], src: [u8; 6]) -> Vec<u8> {
        [&dst[..], &src[..], &[0x08, 0x00], &[0xa5u8; 46][..]].concat()
    }

    #[tokio::test]
    async fn vm_ports_speak_qemu_stream_framing() {
        let dir = tempfile::tempdir().unwrap();
        let segment = Segment::start(&dir.path().join("s.pcap"), Box::new(super::super::fault::NoFaults)).unwrap();
        let (host, mut to_host) = segment.attach();
        let vm: std::os::unix::net::UnixStream = segment.attach_vm().unwrap().into();
        vm.set_nonblocking(true).unwrap();
        let mut vm = tokio::net::UnixStream::from_std(vm).unwrap();
        let a = [0x52, 0x54, 0, 0, 0, 0xa];
        let host_mac = [0x52, 0x54, 0, 0, 0, 1];
        vm.write_all(&framing::encode(&frame([0xff; 6], a))).await.unwrap();
        assert_eq!(to_host.recv().await.unwrap(), frame([0xff; 6], a), "broadcast flooded to the host");
        host.send(frame(a, host_mac));
        let mut len = [0u8; 4];
        vm.read_exact(&mut len).await.unwrap();
        let mut got = vec![0u8; u32::from_be_bytes(len) as usize];
        vm.read_exact(&mut got).await.unwrap();
        assert_eq!(got, frame(a, host_mac), "unicast delivered to the learned port");
        drop(segment);
        let pcap = std::fs::read(dir.path().join("s.pcap")).unwrap();
        assert_eq!(pcap.len(), 24 + 2 * (16 + 60), "both frames captured");
    }
}
