//! One read transfer: option negotiation, windows of DATA, ACKs, retransmission, rollover.
//!
//! A client that asks for no `windowsize` (GRUB) still gets several blocks in flight
//! ([`TransferLimits::send_ahead`]): the lab's network delivers in order, so a client that takes
//! only the block it expects next and ACKs it (RFC 1350) sees the same packets it would see in
//! lockstep, each sooner. One round trip through QEMU's netdev and the harness then overlaps
//! the guest's work on the blocks before it, instead of adding to each block.

use std::time::Duration;

use super::wire::{code, Packet};

/// Where a transfer's bytes come from.
pub trait BlockSource {
    /// The size in bytes.
    fn size(&self) -> u64;
    /// Fill `buf` from `offset`; a short count only at the end of the data.
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> std::io::Result<usize>;
}

impl BlockSource for std::fs::File {
    fn size(&self) -> u64 {
        self.metadata().map(|m| m.len()).unwrap_or(0)
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> std::io::Result<usize> {
        let mut filled = 0;
        while filled < buf.len() {
            match std::os::unix::fs::FileExt::read_at(self, &mut buf[filled..], offset + filled as u64)? {
                0 => break,
                n => filled += n,
            }
        }
        Ok(filled)
    }
}

impl BlockSource for Vec<u8> {
    fn size(&self) -> u64 {
        self.as_slice().len() as u64
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> std::io::Result<usize> {
        let start = (offset as usize).min(self.as_slice().len());
        let n = buf.len().min(self.as_slice().len() - start);
        buf[..n].copy_from_slice(&self[start..start + n]);
        Ok(n)
    }
}

/// The largest block that fits the lab's 1500-byte MTU in one datagram (IPv4 20, UDP 8 and
/// TFTP 4 bytes of headers): the lab does no IP fragmentation, so a larger block would never
/// reach the wire.
pub const MTU_BLKSIZE: u16 = 1500 - 20 - 8 - 4;

/// The longest interval between retransmissions of one window.
pub const MAX_BACKOFF: Duration = Duration::from_secs(8);

/// What the server allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TransferLimits {
    /// Largest block granted (RFC 2348 lets the server answer less than asked).
    pub max_blksize: u16,
    pub max_windowsize: u16,
    /// Blocks in flight for a client that asked for no `windowsize`; 1 is lockstep. Each
    /// retransmission halves it for the rest of the transfer, so a client that drops what it
    /// cannot take at once, or a lossy link, falls back towards lockstep.
    pub send_ahead: u16,
    /// Retransmission timeout when the client does not ask for one.
    pub default_timeout: Duration,
    /// Retransmissions of the same window before giving up.
    pub max_retries: u32,
    /// Transfers running at once; more requests wait for the client's retransmission.
    pub max_transfers: usize,
    /// Transfers one client address runs at once (a firmware or loader fetches one file at a
    /// time; a client that opens more is flooding).
    pub max_per_client: usize,
    /// Slots kept for declared clients: undeclared ones together run at most
    /// `max_transfers - reserved_for_declared`, so a flood from unknown addresses never keeps
    /// a declared client's firmware from its boot loader.
    pub reserved_for_declared: usize,
    /// The longest `timeout` option accepted (RFC 2349 lets a server refuse the option, not
    /// change its value): a longer one is ignored and the server's own timeout applies, so no
    /// client holds a slot for 12 retries of 255 s.
    pub max_timeout: Duration,
}

impl Default for TransferLimits {
    fn default() -> Self {
        TransferLimits {
            max_blksize: MTU_BLKSIZE,
            max_windowsize: 64,
            send_ahead: 64,
            default_timeout: Duration::from_secs(1),
            max_retries: 12,
            max_transfers: 64,
            max_per_client: 8,
            reserved_for_declared: 16,
            max_timeout: Duration::from_secs(5),
        }
    }
}

/// Why a read request gets no transfer (the client's retransmission may find room later).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("the server runs its {0} transfers")]
    Full(usize),
    #[error("this client runs its {0} transfers")]
    ClientFull(usize),
    #[error("undeclared clients run their {0} transfers (the rest are kept for declared clients)")]
    UndeclaredFull(usize),
}

/// A transfer's client: its address, and the switch port its request came in on when known.
/// One port is one client, whatever addresses it sends from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Holder {
    pub ip: std::net::Ipv4Addr,
    pub port: Option<usize>,
}

impl Holder {
    fn same_client(&self, other: &Holder) -> bool {
        self.ip == other.ip || (self.port.is_some() && self.port == other.port)
    }
}

/// Whether a transfer for `client` may start beside the running ones (their clients), under
/// `limits`; `declared`: the lab's declared clients' addresses.
pub fn admit(limits: &TransferLimits, declared: &[std::net::Ipv4Addr], running: &[Holder], client: Holder) -> Result<(), Refusal> {
    if running.len() >= limits.max_transfers {
        return Err(Refusal::Full(limits.max_transfers));
    }
    if running.iter().filter(|c| c.same_client(&client)).count() >= limits.max_per_client {
        return Err(Refusal::ClientFull(limits.max_per_client));
    }
    let share = limits.max_transfers.saturating_sub(limits.reserved_for_declared).max(1);
    if !declared.contains(&client.ip) && running.iter().filter(|c| !declared.contains(&c.ip)).count() >= share {
        return Err(Refusal::UndeclaredFull(share));
    }
    Ok(())
}

/// How a transfer ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TransferOutcome {
    /// The client acknowledged the last block.
    Done { bytes: u64 },
    /// The client sent an ERROR (OVMF does this after reading `tsize`).
    ClientAborted { code: u16, message: String },
    /// No answer after the last retransmission: the first block not acknowledged (0 for
    /// the OACK), the block size, the retransmissions made.
    TimedOut { unacked_block: u64, blksize: u64, retries: u32 },
    /// Every block but the last was acknowledged, and the last one never was. RFC 1350 lets
    /// a client quit on sending its final ACK, and GRUB boots on it, so a lost final ACK is
    /// never repeated: the client most likely has the whole file.
    LastAckMissing { bytes: u64, retries: u32 },
}

/// What the transfer wants done next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    Send(Vec<Packet>),
    /// Nothing to send; wait for a packet or [`Transfer::deadline`].
    Wait,
    Finish { outcome: TransferOutcome, send: Option<Packet> },
}

/// How DATA follows the client's ACKs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pacing {
    /// The client asked for this `windowsize` (RFC 7440): it ACKs a window's last block, or
    /// the last one before a gap, and the next window starts after the block it names.
    Window(u64),
    /// The client ACKs each block: up to this many are kept in flight, each ACK sending what
    /// it makes room for.
    Ahead(u64),
}

/// The state of one read transfer.
#[derive(Debug)]
pub struct Transfer {
    size: u64,
    blksize: u64,
    pacing: Pacing,
    rto: Rto,
    max_retries: u32,
    /// The OACK, until the client acknowledges it with ACK 0.
    oack: Option<Packet>,
    /// Blocks acknowledged (block numbers count from 1, without wrapping).
    acked: u64,
    /// Highest block sent since the last retransmission started over from `acked`.
    sent: u64,
    /// Highest block ever sent: an ACK up to it is the client's.
    highest: u64,
    /// A block sent once, and when: its ACK measures the round trip (Karn's rule: a
    /// retransmitted block is never timed).
    timed: Option<(u64, Duration)>,
    retries: u32,
    last_send: Duration,
}

/// The shortest retransmission timeout measured ACKs may bring it down to.
pub const MIN_RTO: Duration = Duration::from_millis(20);

/// The shortest once a transfer is in lockstep (one block in flight, the client asked for no
/// window): a timeout that comes too soon there costs one DATA frame sent again, where with
/// blocks in flight it would halve them for the rest of the transfer. On the loss-and-delay
/// install's link (5 % loss, 1 ± 0.5 ms each way) GRUB's transfers fall to lockstep and a
/// lost block waited the 20 ms floor, with round trips of 2.2 ms (median).
pub const LOCKSTEP_MIN_RTO: Duration = Duration::from_millis(5);

/// The retransmission timeout: the client's `timeout` option when it sent one (RFC 2349),
/// else measured from ACKs as TCP does (RFC 6298; Karn's rule: a retransmitted window is
/// not measured), between a floor ([`MIN_RTO`], or [`LOCKSTEP_MIN_RTO`] in lockstep) and the
/// default timeout. On a lossy link with a short round trip a lost block then costs tens of
/// milliseconds, not a second.
#[derive(Debug, Clone, Copy)]
struct Rto {
    /// The client's timeout, or the default until an ACK is measured.
    unmeasured: Duration,
    ceiling: Duration,
    fixed: bool,
    smoothed: Option<(Duration, Duration)>,
}

impl Rto {
    fn sample(&mut self, rtt: Duration) {
        if self.fixed {
            return;
        }
        let (srtt, rttvar) = match self.smoothed {
            None => (rtt, rtt / 2),
            Some((srtt, rttvar)) => (srtt * 7 / 8 + rtt / 8, rttvar * 3 / 4 + srtt.abs_diff(rtt) / 4),
        };
        self.smoothed = Some((srtt, rttvar));
    }

    /// The timeout: the measured one no shorter than `floor`, else the client's own or the
    /// default.
    fn with_floor(&self, floor: Duration) -> Duration {
        match (self.fixed, self.smoothed) {
            (false, Some((srtt, rttvar))) => (srtt + 4 * rttvar).clamp(floor, self.ceiling),
            _ => self.unmeasured,
        }
    }
}

impl Transfer {
    /// Negotiate `options` (from the RRQ) for a file of `size` bytes.
    pub fn new(size: u64, options: &[(String, String)], limits: TransferLimits) -> Self {
        let mut accepted = Vec::new();
        let mut blksize = 512u64;
        let mut pacing = Pacing::Ahead(limits.send_ahead.max(1).into());
        let mut rto = Rto { unmeasured: limits.default_timeout, ceiling: limits.default_timeout, fixed: false, smoothed: None };
        for (name, value) in options {
            let Ok(n) = value.parse::<u64>() else { continue };
            match name.as_str() {
                "blksize" if n >= 8 => {
                    blksize = n.min(limits.max_blksize.into());
                    accepted.push((name.clone(), blksize.to_string()));
                }
                "windowsize" if n >= 1 => {
                    let windowsize = n.min(limits.max_windowsize.into());
                    pacing = Pacing::Window(windowsize);
                    accepted.push((name.clone(), windowsize.to_string()));
                }
                "timeout" if (1..=255).contains(&n) && Duration::from_secs(n) <= limits.max_timeout => {
                    (rto.unmeasured, rto.fixed) = (Duration::from_secs(n), true);
                    accepted.push((name.clone(), value.clone()));
                }
                "tsize" => accepted.push((name.clone(), size.to_string())),
                _ => {}
            }
        }
        Transfer {
            size,
            blksize,
            pacing,
            rto,
            max_retries: limits.max_retries,
            oack: (!accepted.is_empty()).then_some(Packet::Oack { options: accepted }),
            acked: 0,
            sent: 0,
            highest: 0,
            timed: None,
            retries: 0,
            last_send: Duration::ZERO,
        }
    }

    /// Blocks in the file; the last one is shorter than `blksize` (possibly empty).
    fn total_blocks(&self) -> u64 {
        self.size / self.blksize + 1
    }

    /// When to call [`Transfer::on_timeout`] if no packet arrives.
    ///
    /// Each retransmission of the same window doubles the interval, up to `MAX_BACKOFF` (8 s), so
    /// a transfer outlasts a link that is down for a while (with the default limits at least
    /// 34 s in all: twelve retransmissions from the 20 ms floor, doubling up to 8 s; 26 s from
    /// lockstep's 5 ms floor), as GRUB, which never retransmits itself, does.
    pub fn deadline(&self) -> Duration {
        let floor = match (self.pacing, &self.oack) {
            (Pacing::Ahead(1), None) => LOCKSTEP_MIN_RTO,
            _ => MIN_RTO,
        };
        let timeout = self.rto.with_floor(floor);
        self.last_send + timeout.saturating_mul(1 << self.retries.min(16)).min(MAX_BACKOFF.max(timeout))
    }

    /// The first packets: the OACK, or the first window of data.
    pub fn begin(&mut self, now: Duration, src: &dyn BlockSource) -> std::io::Result<Step> {
        self.last_send = now;
        match &self.oack {
            Some(oack) => Ok(Step::Send(vec![oack.clone()])),
            None => {
                self.sent = self.acked;
                self.send_window(now, src)
            }
        }
    }

    /// Handle a packet from the client's transfer ID.
    pub fn on_packet(&mut self, now: Duration, packet: &Packet, src: &dyn BlockSource) -> std::io::Result<Step> {
        match packet {
            Packet::Error { code, message } => {
                Ok(Step::Finish { outcome: TransferOutcome::ClientAborted { code: *code, message: message.clone() }, send: None })
            }
            Packet::Ack { block } if self.oack.is_some() => {
                if *block != 0 {
                    return Ok(Step::Wait);
                }
                if self.retries == 0 {
                    self.rto.sample(now.saturating_sub(self.last_send));
                }
                self.oack = None;
                self.last_send = now;
                self.retries = 0;
                self.send_window(now, src)
            }
            Packet::Ack { block } => {
                // Widen the 16-bit block number to the one nearest above what was acked.
                let full = self.acked + u64::from(block.wrapping_sub(self.acked as u16));
                if full <= self.acked || full > self.highest {
                    return Ok(Step::Wait); // duplicate or stale: never answer (Sorcerer's Apprentice)
                }
                self.acked = full;
                if let Some((_, sent_at)) = self.timed.filter(|(timed, _)| full >= *timed) {
                    self.rto.sample(now.saturating_sub(sent_at));
                    self.timed = None;
                }
                self.retries = 0;
                if full == self.total_blocks() {
                    return Ok(Step::Finish { outcome: TransferOutcome::Done { bytes: self.size }, send: None });
                }
                self.last_send = now;
                self.sent = match self.pacing {
                    Pacing::Window(_) => full, // the next window starts after the block the client names
                    Pacing::Ahead(_) => self.sent.max(full),
                };
                if let Pacing::Ahead(n) = self.pacing {
                    // Refilled by halves: the blocks then leave together (one wake-up of
                    // QEMU's main loop for several), and the client still has half a window.
                    let end = self.window_end();
                    if end < self.total_blocks() && end.saturating_sub(self.sent) < n.div_ceil(2) {
                        return Ok(Step::Wait);
                    }
                }
                self.send_window(now, src)
            }
            _ => Ok(Step::Wait),
        }
    }

    /// The deadline passed: resend what is unacknowledged, or give up.
    pub fn on_timeout(&mut self, now: Duration, src: &dyn BlockSource) -> std::io::Result<Step> {
        self.retries += 1;
        self.timed = None;
        if let Pacing::Ahead(n) = &mut self.pacing {
            if self.oack.is_none() {
                *n = (*n / 2).max(1);
            }
        }
        if self.retries > self.max_retries {
            let error = Packet::Error { code: code::NOT_DEFINED, message: "timed out".into() };
            let unacked_block = if self.oack.is_some() { 0 } else { self.acked + 1 }; // 0: the OACK
            let outcome = match self.acked > 0 && unacked_block == self.total_blocks() {
                true => TransferOutcome::LastAckMissing { bytes: self.size, retries: self.max_retries },
                false => TransferOutcome::TimedOut { unacked_block, blksize: self.blksize, retries: self.max_retries },
            };
            return Ok(Step::Finish { outcome, send: Some(error) });
        }
        self.begin(now, src)
    }

    /// The last block the pacing lets be sent before more ACKs: as many past the acknowledged
    /// ones as may be unacknowledged, within the file.
    fn window_end(&self) -> u64 {
        let (Pacing::Window(n) | Pacing::Ahead(n)) = self.pacing;
        (self.acked + n).min(self.total_blocks())
    }

    /// DATA for the blocks after the last one sent, up to the window's end.
    fn send_window(&mut self, now: Duration, src: &dyn BlockSource) -> std::io::Result<Step> {
        let last = self.window_end();
        if last <= self.sent {
            return Ok(Step::Wait);
        }
        if self.timed.is_none() && last > self.highest {
            self.timed = Some((last, now));
        }
        let mut packets = Vec::new();
        for block in self.sent + 1..=last {
            let offset = (block - 1) * self.blksize;
            let mut data = vec![0u8; self.size.saturating_sub(offset).min(self.blksize) as usize];
            let n = src.read_at(offset, &mut data)?;
            data.truncate(n);
            packets.push(Packet::Data { block: block as u16, data });
        }
        self.sent = last;
        self.highest = self.highest.max(last);
        Ok(Step::Send(packets))
    }
}

#[cfg(test)]
mod test {
    use super::*;

    fn opts(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// One block in flight for a client that asks for no window.
    fn lockstep() -> TransferLimits {
        TransferLimits { send_ahead: 1, ..TransferLimits::default() }
    }

    /// Sixteen blocks in flight for a client that asks for no window.
    fn ahead() -> TransferLimits {
        TransferLimits { send_ahead: 16, ..TransferLimits::default() }
    }

    /// How a client that asks for no window takes DATA.
    #[derive(Clone, Copy)]
    enum Client {
        /// GRUB: keeps blocks ahead of the expected one and takes one block an arrival.
        Grub,
        /// RFC 1350 to the letter: takes only the expected block; ACKs the last one it took
        /// again on anything else.
        Strict,
    }

    /// What a client made of a transfer over an in-order link that drops the DATA packets
    /// `lost` picks (by their count from 0): the bytes it took, the DATA packets sent, and
    /// the size of each window the server sent on a timeout.
    #[allow(clippy::ptr_arg)] // a Vec is what serves blocks in these tests
    fn over_link(file: &Vec<u8>, client: Client, lost: impl Fn(usize) -> bool) -> (Vec<u8>, usize, Vec<usize>) {
        let mut t = Transfer::new(file.len() as u64, &[], ahead());
        let (mut now, mut count, mut resends) = (ms(0), 0, Vec::new());
        let (mut took, mut next, mut kept) = (Vec::new(), 1u16, std::collections::BTreeMap::new());
        let mut wire = std::collections::VecDeque::new();
        let mut step = t.begin(now, file).unwrap();
        loop {
            match step {
                Step::Send(packets) => wire.extend(packets),
                Step::Wait => {}
                Step::Finish { outcome, .. } => {
                    assert_eq!(outcome, TransferOutcome::Done { bytes: file.len() as u64 });
                    return (took, count, resends);
                }
            }
            now += ms(1);
            let Some(packet) = wire.pop_front() else {
                step = t.on_timeout(t.deadline(), file).unwrap();
                if let Step::Send(p) = &step {
                    resends.push(p.len());
                }
                continue;
            };
            let Packet::Data { block, data } = packet else { panic!("{packet:?}") };
            count += 1;
            if lost(count - 1) {
                step = Step::Wait;
                continue;
            }
            let ack = match client {
                Client::Grub => {
                    kept.insert(block, data);
                    kept.retain(|b, _| *b >= next);
                    kept.remove(&next).map(|data| {
                        took.extend(data);
                        next += 1;
                        next - 1
                    })
                }
                Client::Strict if block == next => {
                    took.extend(data);
                    next += 1;
                    Some(block)
                }
                Client::Strict => Some(next - 1),
            };
            step = match ack {
                Some(block) => t.on_packet(now, &Packet::Ack { block }, file).unwrap(),
                None => Step::Wait,
            };
        }
    }

    #[test]
    fn a_client_without_a_window_gets_blocks_ahead_of_its_acks() {
        let file = vec![5u8; 512 * 40];
        let mut t = Transfer::new(file.len() as u64, &[], ahead());
        let numbers = |step: Step| blocks(&step).iter().map(|b| b.0).collect::<Vec<_>>();
        assert_eq!(numbers(t.begin(ms(0), &file).unwrap()), (1..=16).collect::<Vec<_>>());
        assert_eq!(t.on_packet(ms(1), &Packet::Ack { block: 1 }, &file).unwrap(), Step::Wait, "room for one block: not yet");
        assert_eq!(t.on_packet(ms(2), &Packet::Ack { block: 3 }, &file).unwrap(), Step::Wait);
        assert_eq!(t.on_packet(ms(3), &Packet::Ack { block: 2 }, &file).unwrap(), Step::Wait, "an old ACK");
        assert_eq!(t.on_packet(ms(4), &Packet::Ack { block: 20 }, &file).unwrap(), Step::Wait, "an ACK for a block never sent");
        let refill = numbers(t.on_packet(ms(5), &Packet::Ack { block: 8 }, &file).unwrap());
        assert_eq!(refill, (17..=24).collect::<Vec<_>>(), "half the blocks acknowledged: they go out together");
        let resent = numbers(t.on_timeout(t.deadline(), &file).unwrap());
        assert_eq!(resent, (9..=16).collect::<Vec<_>>(), "back to the first unacknowledged block, half as many");
        let after = numbers(t.on_packet(t.deadline(), &Packet::Ack { block: 20 }, &file).unwrap());
        assert_eq!(after, (21..=28).collect::<Vec<_>>(), "an ACK for a block sent before the timeout");
    }

    /// Over the lab's in-order link every client gets the file whole, with loss too; a lost
    /// block brings back lockstep by halves.
    #[test]
    fn clients_that_ack_each_block_get_the_file_whole_with_blocks_sent_ahead() {
        let file: Vec<u8> = (0..512 * 300 + 77).map(|i| (i * 7 % 253) as u8).collect();
        for client in [Client::Grub, Client::Strict] {
            let (took, count, resends) = over_link(&file, client, |_| false);
            assert!(took == file && count == 301 && resends.is_empty(), "no loss: each block once, no retransmission");
            let (took, count, resends) = over_link(&file, client, |n| n == 40 || n == 150 || n == 151);
            assert!(took == file, "the bytes, in order");
            assert!(resends.len() >= 2 && resends.windows(2).all(|w| w[1] <= w[0].max(1)), "windows after timeouts: {resends:?}");
            assert!(resends[0] == 8 && count < 301 + 16 + 8 + 4 + 2, "{count} packets, resends {resends:?}");
        }
        let (took, _, resends) = over_link(&file, Client::Grub, |n| n % 3 == 0 && n < 60);
        assert!(took == file && resends.last() == Some(&1), "a lossy start ends in lockstep: {resends:?}");
    }

    fn blocks(step: &Step) -> Vec<(u16, usize)> {
        match step {
            Step::Send(packets) => packets
                .iter()
                .map(|p| match p {
                    Packet::Data { block, data } => (*block, data.len()),
                    other => panic!("expected DATA, got {other:?}"),
                })
                .collect(),
            other => panic!("expected packets, got {other:?}"),
        }
    }

    #[test]
    fn ovmf_tsize_probe_then_abort() {
        let file = vec![7u8; 3000];
        let mut t = Transfer::new(3000, &opts(&[("tsize", "0"), ("blksize", "1468")]), TransferLimits::default());
        let step = t.begin(ms(0), &file).unwrap();
        assert_eq!(
            step,
            Step::Send(vec![Packet::Oack { options: opts(&[("tsize", "3000"), ("blksize", "1468")]) }])
        );
        let abort = Packet::Error { code: 0, message: "abort".into() };
        match t.on_packet(ms(5), &abort, &file).unwrap() {
            Step::Finish { outcome: TransferOutcome::ClientAborted { code: 0, .. }, send: None } => {}
            other => panic!("{other:?}"),
        }
    }

    /// A block larger than the MTU would never reach the wire: grant what fits.
    #[test]
    fn blksize_is_granted_up_to_what_fits_the_mtu() {
        let file = vec![0u8; 20_000];
        let mut t = Transfer::new(20_000, &opts(&[("blksize", "8192")]), lockstep());
        assert_eq!(t.begin(ms(0), &file).unwrap(), Step::Send(vec![Packet::Oack { options: opts(&[("blksize", "1468")]) }]));
        assert_eq!(blocks(&t.on_packet(ms(1), &Packet::Ack { block: 0 }, &file).unwrap()), [(1, 1468)]);
    }

    /// Blocks in flight keep the 20 ms floor; once a timeout has brought them down to one,
    /// the floor is 5 ms.
    #[test]
    fn lockstep_has_the_lower_floor() {
        let file = vec![0u8; 512 * 400];
        let mut t = Transfer::new(file.len() as u64, &[], TransferLimits { send_ahead: 2, ..TransferLimits::default() });
        t.begin(ms(0), &file).unwrap();
        let mut now = 0;
        for block in 1..=100u16 {
            now += 1;
            t.on_packet(ms(now), &Packet::Ack { block }, &file).unwrap();
        }
        assert_eq!(t.deadline(), ms(now + 20), "two in flight, 1 ms round trips: the 20 ms floor");
        t.on_timeout(ms(now + 20), &file).unwrap(); // halves the blocks in flight to one
        now += 20;
        for block in 101..=300u16 {
            now += 1;
            t.on_packet(ms(now), &Packet::Ack { block }, &file).unwrap();
        }
        assert_eq!(t.deadline(), ms(now + 5), "lockstep, 1 ms round trips: the 5 ms floor");
        let mut client = Transfer::new(file.len() as u64, &opts(&[("timeout", "1")]), lockstep());
        client.begin(ms(0), &file).unwrap();
        client.on_packet(ms(1), &Packet::Ack { block: 0 }, &file).unwrap();
        assert_eq!(client.deadline(), ms(1001), "a client's timeout option is kept in lockstep");
    }

    /// With no `timeout` option the interval follows the measured round trip: a lost block
    /// on a fast link costs tens of milliseconds, not a second.
    #[test]
    fn the_retransmission_timeout_follows_the_round_trip() {
        let file = vec![0u8; 512 * 200];
        let mut t = Transfer::new(file.len() as u64, &[], lockstep());
        t.begin(ms(0), &file).unwrap();
        assert_eq!(t.deadline(), ms(1000), "before any ACK: the default");
        let mut now = 0;
        for block in 1..=3u16 {
            now += 100;
            t.on_packet(ms(now), &Packet::Ack { block }, &file).unwrap();
        }
        assert!((ms(now + 150)..ms(now + 400)).contains(&t.deadline()), "100 ms round trips: {:?}", t.deadline() - ms(now));
        for block in 4..=150u16 {
            now += 10;
            t.on_packet(ms(now), &Packet::Ack { block }, &file).unwrap();
        }
        assert_eq!(t.deadline(), ms(now + 10), "steady 10 ms round trips in lockstep: the round trip");
        t.on_timeout(ms(now + 10), &file).unwrap();
        assert_eq!(t.deadline(), ms(now + 10 + 20), "then it backs off");
        let mut at = ms(now + 10 + 20);
        while let Step::Send(_) = t.on_timeout(at, &file).unwrap() {
            at = t.deadline();
        }
        assert!(at >= ms(now + 20_000), "gives up only after {at:?}: a 10 s link-down is outlasted");
        let mut fixed = Transfer::new(100, &opts(&[("timeout", "2")]), lockstep());
        fixed.begin(ms(0), &file).unwrap();
        fixed.on_packet(ms(5), &Packet::Ack { block: 0 }, &file).unwrap();
        assert_eq!(fixed.deadline(), ms(2005), "the client's timeout option is kept");
    }

    #[test]
    fn window_of_four_with_a_lost_block() {
        let file: Vec<u8> = (0..10_000u32).map(|i| i as u8).collect();
        let mut t = Transfer::new(10_000, &opts(&[("blksize", "1468"), ("windowsize", "4")]), TransferLimits::default());
        t.begin(ms(0), &file).unwrap();
        let first = t.on_packet(ms(1), &Packet::Ack { block: 0 }, &file).unwrap();
        assert_eq!(blocks(&first), [(1, 1468), (2, 1468), (3, 1468), (4, 1468)]);
        // Block 3 was lost: the client acknowledges 2, the server resends from 3.
        let resend = t.on_packet(ms(2), &Packet::Ack { block: 2 }, &file).unwrap();
        assert_eq!(blocks(&resend), [(3, 1468), (4, 1468), (5, 1468), (6, 1468)]);
        let last = t.on_packet(ms(3), &Packet::Ack { block: 6 }, &file).unwrap();
        assert_eq!(blocks(&last), [(7, 10_000 - 6 * 1468)]);
        match t.on_packet(ms(4), &Packet::Ack { block: 7 }, &file).unwrap() {
            Step::Finish { outcome: TransferOutcome::Done { bytes: 10_000 }, .. } => {}
            other => panic!("{other:?}"),
        }
        if let Step::Send(p) = &last {
            let Packet::Data { data, .. } = &p[0] else { unreachable!() };
            assert_eq!(data[..], file[6 * 1468..], "bytes come from the right offset");
        }
    }

    #[test]
    fn no_options_means_no_oack_and_an_empty_final_block() {
        let file = vec![1u8; 1024];
        let mut t = Transfer::new(1024, &opts(&[("unknown", "1")]), lockstep());
        assert_eq!(blocks(&t.begin(ms(0), &file).unwrap()), [(1, 512)]);
        assert_eq!(blocks(&t.on_packet(ms(1), &Packet::Ack { block: 1 }, &file).unwrap()), [(2, 512)]);
        assert_eq!(blocks(&t.on_packet(ms(2), &Packet::Ack { block: 2 }, &file).unwrap()), [(3, 0)]);
        assert_eq!(t.on_packet(ms(3), &Packet::Ack { block: 2 }, &file).unwrap(), Step::Wait, "duplicate ACK");
    }

    /// 100 unacknowledged requests from other addresses and ports (a flood held all 64 slots,
    /// and the firmware's own request went unanswered): a declared client still gets a slot,
    /// no address takes more than its share, and undeclared ones together stop at theirs.
    #[test]
    fn a_flood_of_requests_leaves_room_for_declared_clients() {
        let limits = TransferLimits::default();
        let at = |ip: &str| Holder { ip: ip.parse().unwrap(), port: None };
        let declared: Vec<std::net::Ipv4Addr> = vec!["192.0.2.10".parse().unwrap(), "192.0.2.11".parse().unwrap()];
        let mut running = Vec::new();
        for i in 0..100u32 {
            let attacker = Holder { ip: std::net::Ipv4Addr::from(u32::from(std::net::Ipv4Addr::new(192, 0, 2, 100)) + i % 30), port: None };
            if admit(&limits, &declared, &running, attacker).is_ok() {
                running.push(attacker);
            }
        }
        let share = limits.max_transfers - limits.reserved_for_declared;
        assert_eq!(running.len(), share, "undeclared clients stop at their share");
        assert_eq!(admit(&limits, &declared, &running, at("192.0.2.150")), Err(Refusal::UndeclaredFull(share)));
        let first = Holder { ip: declared[0], port: None };
        for _ in 0..limits.max_per_client {
            assert_eq!(admit(&limits, &declared, &running, first), Ok(()), "a declared client is served");
            running.push(first);
        }
        assert_eq!(admit(&limits, &declared, &running, first), Err(Refusal::ClientFull(limits.max_per_client)));
        assert_eq!(admit(&limits, &declared, &running, Holder { ip: declared[1], port: None }), Ok(()));
        let one = at("192.0.2.200");
        let mut alone = Vec::new();
        while admit(&limits, &[], &alone, one).is_ok() {
            alone.push(one);
        }
        assert_eq!(alone.len(), limits.max_per_client, "one address runs at most its share");
        let full = vec![Holder { ip: declared[1], port: None }; limits.max_transfers];
        assert_eq!(admit(&TransferLimits { max_per_client: usize::MAX, ..limits }, &declared, &full, first), Err(Refusal::Full(limits.max_transfers)));
    }

    /// A neighbour sending from many addresses on one switch port (a flood's random sources
    /// held every undeclared slot, and a well-behaved undeclared client got no answer): the
    /// port is one client and holds its share only, so another port's client is served.
    #[test]
    fn one_port_is_one_client_whatever_addresses_it_sends_from() {
        let limits = TransferLimits::default();
        let mut running = Vec::new();
        for i in 0..200u32 {
            let spoofed = Holder { ip: std::net::Ipv4Addr::from(u32::from(std::net::Ipv4Addr::new(192, 0, 2, 100)) + i % 100), port: Some(3) };
            if admit(&limits, &[], &running, spoofed).is_ok() {
                running.push(spoofed);
            }
        }
        assert_eq!(running.len(), limits.max_per_client, "the flooding port holds its share");
        let neighbour = Holder { ip: "192.0.2.150".parse().unwrap(), port: Some(4) };
        assert_eq!(admit(&limits, &[], &running, neighbour), Ok(()));
    }

    /// A `timeout` option past the cap is not accepted (RFC 2349: the server answers the
    /// client's value or leaves the option out): the server's own timeout and backoff apply,
    /// and the transfer gives up within its bounded retries.
    #[test]
    fn a_long_timeout_option_is_refused_and_the_transfer_gives_up_in_bounded_time() {
        let file = vec![1u8; 100];
        let mut t = Transfer::new(100, &opts(&[("timeout", "255")]), TransferLimits::default());
        let first = t.begin(ms(0), &file).unwrap();
        assert!(!format!("{first:?}").contains("timeout"), "no timeout in the OACK: {first:?}");
        assert_eq!(t.deadline(), TransferLimits::default().default_timeout, "the server's own timeout");
        let mut now = t.deadline();
        let mut gave_up = false;
        for _ in 0..100 {
            match t.on_timeout(now, &file).unwrap() {
                Step::Finish { outcome: TransferOutcome::TimedOut { .. }, .. } => {
                    gave_up = true;
                    break;
                }
                _ => now = t.deadline(),
            }
        }
        assert!(gave_up && now < Duration::from_secs(120), "gave up after {now:?}");
        let mut kept = Transfer::new(100, &opts(&[("timeout", "5")]), TransferLimits::default());
        kept.begin(ms(0), &file).unwrap();
        assert_eq!(kept.deadline(), Duration::from_secs(5), "a timeout within the cap is kept");
    }

    #[test]
    fn timeouts_retransmit_then_give_up() {
        let file = vec![1u8; 100];
        let limits = TransferLimits { max_retries: 2, ..Default::default() };
        let mut t = Transfer::new(100, &opts(&[("timeout", "3")]), limits);
        t.begin(ms(0), &file).unwrap();
        assert_eq!(t.deadline(), Duration::from_secs(3));
        assert!(matches!(t.on_timeout(Duration::from_secs(3), &file).unwrap(), Step::Send(ref p) if matches!(p[0], Packet::Oack { .. })));
        assert_eq!(t.deadline(), Duration::from_secs(3 + 6), "the interval doubles");
        assert!(matches!(t.on_timeout(Duration::from_secs(9), &file).unwrap(), Step::Send(_)));
        assert_eq!(t.deadline(), Duration::from_secs(9 + 8), "up to the cap");
        match t.on_timeout(Duration::from_secs(17), &file).unwrap() {
            Step::Finish { outcome: TransferOutcome::TimedOut { unacked_block: 0, .. }, send: Some(Packet::Error { .. }) } => {}
            other => panic!("{other:?}"),
        }
    }

    /// A client that quits on its final ACK, which is lost: the transfer says so, not that
    /// the client stopped answering somewhere in the file.
    #[test]
    fn a_missing_last_ack_is_told_apart_from_a_client_gone_mid_file() {
        let file = vec![1u8; 1200];
        let limits = TransferLimits { max_retries: 1, ..Default::default() };
        let give_up = |acks: &[u16]| {
            let mut t = Transfer::new(1200, &[], limits);
            t.begin(ms(0), &file).unwrap();
            for (i, &block) in acks.iter().enumerate() {
                t.on_packet(ms(i as u64 + 1), &Packet::Ack { block }, &file).unwrap();
            }
            t.on_timeout(t.deadline(), &file).unwrap();
            match t.on_timeout(t.deadline(), &file).unwrap() {
                Step::Finish { outcome, send: Some(Packet::Error { .. }) } => outcome,
                other => panic!("{other:?}"),
            }
        };
        assert_eq!(give_up(&[1, 2]), TransferOutcome::LastAckMissing { bytes: 1200, retries: 1 });
        assert_eq!(give_up(&[1]), TransferOutcome::TimedOut { unacked_block: 2, blksize: 512, retries: 1 });
        assert_eq!(give_up(&[]), TransferOutcome::TimedOut { unacked_block: 1, blksize: 512, retries: 1 }, "nothing heard");
    }

    /// A file over 32 MiB at 512-byte blocks passes block 65535 and wraps to 0.
    #[test]
    fn block_numbers_roll_over() {
        struct Zeros(u64);
        impl BlockSource for Zeros {
            fn size(&self) -> u64 {
                self.0
            }
            fn read_at(&self, offset: u64, buf: &mut [u8]) -> std::io::Result<usize> {
                let n = (self.0 - offset).min(buf.len() as u64) as usize;
                buf[..n].fill(0);
                Ok(n)
            }
        }
        let src = Zeros(33 * 1024 * 1024);
        let mut t = Transfer::new(src.0, &[], lockstep());
        let mut step = t.begin(ms(0), &src).unwrap();
        let mut seen = Vec::new();
        let mut count = 0u64;
        loop {
            let (block, len) = blocks(&step)[0];
            count += 1;
            if (65534..=65538).contains(&count) {
                seen.push(block);
            }
            step = t.on_packet(ms(count), &Packet::Ack { block }, &src).unwrap();
            if let Step::Finish { outcome, .. } = step {
                assert_eq!(outcome, TransferOutcome::Done { bytes: src.0 });
                assert_eq!(len, 0);
                break;
            }
        }
        assert_eq!(seen, [65534, 65535, 0, 1, 2]);
        assert_eq!(count, 33 * 2048 + 1);
    }
}
