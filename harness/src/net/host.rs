//! The harness's own host on the segment: a userspace TCP/IP stack (smoltcp, driven by
//! tokio-smoltcp) that answers ARP and ICMP echo and carries the TFTP/NFS sockets.
//!
//! Frames for the host first pass an interceptor, which lets frame-level services (DHCP,
//! whose clients have no address yet) answer before the IP stack sees them.

use super::switch::PortId;
use super::Mac;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::net::Ipv4Addr;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures::{Sink, Stream};
use smoltcp::iface::Config;
use smoltcp::phy::{DeviceCapabilities, Medium};
use smoltcp::wire::{EthernetAddress, HardwareAddress, IpCidr};
use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::mpsc::{channel, Receiver};
use tokio_smoltcp::device::AsyncDevice;
use tokio_smoltcp::{BufferSize, Net, NetConfig};

use super::segment::DropReason;
use super::segment::ServerSink;
use super::Segment;
use crate::supervise::Supervisor;

/// Frames waiting for the IP stack; more are dropped (as a NIC's full ring would) and counted.
const STACK_QUEUE: usize = 4096;

/// Most source addresses [`IpHost::port_of`] remembers.
const MAX_SOURCES: usize = 4096;

/// The source address of an IPv4 frame.
fn ipv4_source(frame: &[u8]) -> Option<Ipv4Addr> {
    if frame.get(12..14) != Some(&[0x08, 0x00]) {
        return None;
    }
    let src: [u8; 4] = frame.get(26..30)?.try_into().ok()?;
    Some(Ipv4Addr::from(src))
}

/// Looks at each frame sent to the host, with the switch port it came in on; `Some(replies)`
/// consumes it.
pub type Interceptor = Box<dyn FnMut(PortId, &[u8]) -> Option<Vec<Vec<u8>>> + Send>;

/// The host's address on the segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HostAddr {
    pub mac: Mac,
    pub ip: Ipv4Addr,
    pub prefix_len: u8,
}

/// A running IP host; its port's demultiplexer runs under the lab's supervisor.
pub struct IpHost {
    pub addr: HostAddr,
    net: Net,
    /// The switch port each IPv4 source address last sent from, for the services' events.
    sources: Arc<Mutex<HashMap<Ipv4Addr, PortId>>>,
}

impl IpHost {
    /// Attach a host with `addr` to `segment`; its MAC is pinned to its port.
    pub fn start(segment: &Segment, addr: HostAddr, mut intercept: Interceptor, supervisor: &Supervisor) -> Self {
        let (sender, mut frames) = segment.attach_server();
        segment.pin(addr.mac, sender.port());
        segment.protect(addr.ip, sender.port());
        segment.trust(sender.port());
        let (to_stack, stack_rx) = channel(STACK_QUEUE);
        let replies = sender.clone();
        let sources = Arc::new(Mutex::new(HashMap::new()));
        let seen = sources.clone();
        supervisor.spawn("host port (DHCP and IP)", async move {
            while let Some((from, frame)) = frames.recv().await {
                if let Some(src) = ipv4_source(&frame) {
                    let mut seen = seen.lock().expect("sources lock");
                    // Bounded: a flood of invented addresses starts the map over.
                    if seen.len() >= MAX_SOURCES && !seen.contains_key(&src) {
                        seen.clear();
                    }
                    seen.insert(src, from);
                }
                match intercept(from, &frame) {
                    Some(answers) => {
                        for answer in answers {
                            if !replies.send_waiting(answer).await {
                                return Err(std::io::Error::other("the segment stopped"));
                            }
                        }
                    }
                    None => match to_stack.try_send(frame) {
                        Ok(()) => {}
                        Err(TrySendError::Full(_)) => replies.count_drop(DropReason::StackFull),
                        Err(TrySendError::Closed(_)) => {
                            return Err(std::io::Error::other("the IP stack stopped"));
                        }
                    },
                }
            }
            Err(std::io::Error::other("the segment stopped"))
        });
        let mut caps = DeviceCapabilities::default();
        caps.medium = Medium::Ethernet;
        caps.max_transmission_unit = 1514;
        let device = PortDevice { rx: stack_rx, tx: sender.sink(), caps };
        let mut config = NetConfig::new(
            Config::new(HardwareAddress::Ethernet(EthernetAddress(addr.mac.0))),
            IpCidr::new(addr.ip.into(), addr.prefix_len),
            vec![],
        );
        config.buffer_size = BufferSize {
            tcp_rx_size: 1 << 20,
            tcp_tx_size: 1 << 20,
            udp_rx_size: 256 * 1024,
            udp_tx_size: 256 * 1024,
            udp_rx_meta_size: 256,
            udp_tx_meta_size: 256,
            ..BufferSize::default()
        };
        let net = Net::new(device, config);
        IpHost { addr, net, sources }
    }

    /// The switch port `ip` last sent from: where a service's peer is on the segment.
    pub fn port_of(&self, ip: Ipv4Addr) -> Option<PortId> {
        self.sources.lock().expect("sources lock").get(&ip).copied()
    }

    /// The stack, for binding sockets.
    pub fn net(&self) -> &Net {
        &self.net
    }
}

/// The stack's side of the host port. Its sink is ready only when the switch has room, so
/// a VM port that is behind holds the stack back instead of losing its frames.
struct PortDevice {
    rx: Receiver<Vec<u8>>,
    tx: ServerSink,
    caps: DeviceCapabilities,
}

impl Stream for PortDevice {
    type Item = std::io::Result<Vec<u8>>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.rx.poll_recv(cx).map(|frame| frame.map(Ok))
    }
}

impl Sink<Vec<u8>> for PortDevice {
    type Error = std::io::Error;

    fn poll_ready(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.tx.poll_ready(cx)
    }

    fn start_send(mut self: Pin<&mut Self>, frame: Vec<u8>) -> Result<(), Self::Error> {
        self.tx.send(frame)
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn poll_close(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }
}

impl AsyncDevice for PortDevice {
    fn capabilities(&self) -> &DeviceCapabilities {
        &self.caps
    }
}
