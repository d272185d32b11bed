//! The DHCP state machine: requests in, replies and events out.

use crate::net::Mac;
use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::time::Duration;

use dhcproto::v4::{DhcpOption, DhcpOptions, HType, Message, MessageType, Opcode, OptionCode};
use dhcproto::{Decodable, Decoder, Encodable, Encoder};

use super::{BootClient, ConfigError, DhcpConfig};

/// What a reply offers to boot.
#[derive(Clone, Copy)]
struct Boot<'a> {
    client: BootClient,
    arch: Option<u16>,
    /// The boot file (a URL for what boots over HTTP); empty for none.
    file: &'a str,
}

/// BOOTP's minimum message length (RFC 951); shorter replies are padded.
pub const BOOTP_MIN_LEN: usize = 300;
/// How long an offer holds an address for a client that has not requested it yet.
const OFFER_HOLD: Duration = Duration::from_secs(60);
/// Most pool addresses the clients on one switch port hold (offered or bound): a neighbour
/// inventing MACs (a DHCP starvation attack) takes this many, not the pool. Declared clients
/// have addresses of their own and do not count.
pub const POOL_PER_PORT: usize = 8;
/// How long a declined address stays out of the pool (another host may be using it); then
/// it is offered again, so that declines, forged or not, cannot drain the pool for good.
pub const DECLINE_QUARANTINE: Duration = Duration::from_secs(300);

/// What happened, for the lab's event log.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct DhcpEvent {
    pub kind: DhcpEventKind,
    pub mac: Mac,
    pub ip: Ipv4Addr,
    pub hostname: Option<String>,
    /// Option 93, the client's architecture.
    pub arch: Option<u16>,
    /// Option 60, the client's vendor class.
    pub vendor_class: Option<String>,
    pub boot_file: String,
    /// The switch port the message came in on (set where the frame is seen, not by the
    /// server): a message forged for a client's MAC shows another port than its own.
    pub switch_port: Option<crate::net::switch::PortId>,
    /// The server that answered, for a message of another DHCP server on the segment
    /// ([`DhcpEventKind::ForeignOffer`], [`DhcpEventKind::ForeignAck`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server: Option<Ipv4Addr>,
    /// The root path (option 17) another server gave.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub root_path: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DhcpEventKind {
    Offer,
    Ack,
    /// Another DHCP server's OFFER, seen on the segment (a rogue server).
    ForeignOffer,
    /// Another DHCP server's ACK, seen on the segment: the client took its address.
    ForeignAck,
    /// A BOOTP reply (a request without option 53).
    Bootp,
    Nak,
    Decline,
    Release,
    /// An answer to a DHCPINFORM: configuration for an address the client set itself, no
    /// lease (RFC 2131 §3.4).
    Inform,
}

/// A reply to send: the encoded message and where to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub message: Message,
    /// Encoded, padded to [`BOOTP_MIN_LEN`].
    pub bytes: Vec<u8>,
    /// Ethernet destination: the client's MAC (the switch delivers it there) or broadcast.
    pub dst_mac: Mac,
    /// IP destination: 255.255.255.255 or the client's address.
    pub dst_ip: Ipv4Addr,
}

/// One address bound (or offered) to a client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub ip: Ipv4Addr,
    pub bound: bool,
    pub expires: Duration,
    /// The switch port the client asked from, when known.
    pub port: Option<usize>,
}

/// The DHCP server: configuration plus the lease table.
#[derive(Debug)]
pub struct DhcpServer {
    config: DhcpConfig,
    leases: HashMap<Mac, Lease>,
    /// Declined addresses and until when they stay out of the pool.
    declined: HashMap<Ipv4Addr, Duration>,
    /// The switch port of the message being handled.
    arrival: Option<usize>,
}

/// Why a request got no reply (logged, never fatal).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Ignored {
    /// A message for another MAC than the frame's sender's.
    #[error("a message from {sender} for another client's MAC")]
    OtherSender { sender: Mac },
    #[error("undecodable DHCP message: {0}")]
    Malformed(String),
    #[error("not a BOOTREQUEST")]
    NotRequest,
    #[error("hardware address is not Ethernet (htype {htype}, hlen {hlen})")]
    NotEthernet { htype: u8, hlen: u8 },
    #[error("{kind:?} for {ip}, which is not this client's lease")]
    NotItsLease { kind: MessageType, ip: Ipv4Addr },
    #[error("request for another server")]
    OtherServer,
    #[error("address pool exhausted")]
    PoolExhausted,
    #[error("the clients on switch port {port} hold {held} pool addresses, their most")]
    PortFull { port: usize, held: usize },
    #[error("message type {0:?} needs no reply")]
    NoReply(MessageType),
}

/// Another DHCP server's OFFER or ACK (a UDP payload from port 67 to port 68 that the lab did
/// not send), as an event: the client it names, the address and boot file it gives, the
/// server (option 54, else `siaddr`). `None` for anything else.
pub fn foreign_reply(payload: &[u8]) -> Option<DhcpEvent> {
    let message = decode(payload).ok()?;
    if message.opcode() != Opcode::BootReply || message.htype() != HType::Eth || message.hlen() != 6 {
        return None;
    }
    let kind = match message.opts().msg_type() {
        Some(MessageType::Offer) => DhcpEventKind::ForeignOffer,
        Some(MessageType::Ack) => DhcpEventKind::ForeignAck,
        _ => return None,
    };
    let server = match message.opts().get(OptionCode::ServerIdentifier) {
        Some(DhcpOption::ServerIdentifier(ip)) => *ip,
        _ => message.siaddr(),
    };
    let boot_file = match message.opts().get(OptionCode::BootfileName) {
        Some(DhcpOption::BootfileName(name)) => String::from_utf8_lossy(name).into_owned(),
        _ => String::from_utf8_lossy(message.fname().unwrap_or_default()).trim_end_matches('\0').to_owned(),
    };
    Some(DhcpEvent {
        kind,
        mac: Mac(message.chaddr().get(..6)?.try_into().ok()?),
        ip: message.yiaddr(),
        hostname: None,
        arch: None,
        vendor_class: None,
        boot_file,
        switch_port: None,
        server: Some(server),
        root_path: match message.opts().get(OptionCode::RootPath) {
            Some(DhcpOption::RootPath(path)) => Some(path.clone()),
            _ => None,
        },
    })
}

impl DhcpServer {
    /// A server for `config`, once [`DhcpConfig::check`] accepts it.
    pub fn new(config: DhcpConfig) -> Result<Self, ConfigError> {
        config.check()?;
        Ok(DhcpServer { config, leases: HashMap::new(), declined: HashMap::new(), arrival: None })
    }

    pub fn config(&self) -> &DhcpConfig {
        &self.config
    }

    /// The lease table.
    pub fn leases(&self) -> &HashMap<Mac, Lease> {
        &self.leases
    }

    /// Handle one UDP payload sent to port 67 at time `now` in an Ethernet frame from
    /// `sender`. A message counts only from the client's own MAC (the lab has no relay
    /// agents): with the switch's port security, that is from the port where a declared
    /// client's MAC lives, so no neighbour requests, declines or releases another client's
    /// address, or has the server send it answers it did not ask for.
    ///
    /// `port` is the switch port the frame came in on: the clients of one port hold at most
    /// [`POOL_PER_PORT`] pool addresses.
    pub fn handle_from(&mut self, now: Duration, sender: Mac, port: Option<usize>, payload: &[u8]) -> Result<(Option<Reply>, DhcpEvent), Ignored> {
        let forged = |m: &Message| m.htype() == HType::Eth && m.hlen() == 6 && m.chaddr().get(..6) != Some(&sender.0[..]);
        match decode(payload) {
            Ok(message) if forged(&message) => Err(Ignored::OtherSender { sender }),
            _ => {
                self.arrival = port;
                let handled = self.handle(now, payload);
                self.arrival = None;
                handled
            }
        }
    }

    /// Handle one UDP payload sent to port 67 at time `now`.
    pub fn handle(&mut self, now: Duration, payload: &[u8]) -> Result<(Option<Reply>, DhcpEvent), Ignored> {
        let mut request = decode(payload)?;
        // A request whose vendor area does not start with the RFC 1048 cookie is plain BOOTP
        // (RFC 951): that area is not options.
        let rfc1048 = payload.get(236..240) == Some(&dhcproto::v4::MAGIC[..]);
        if !rfc1048 {
            request.set_opts(DhcpOptions::new());
        }
        if request.opcode() != Opcode::BootRequest {
            return Err(Ignored::NotRequest);
        }
        // `chaddr()` slices by `hlen` from the wire: check it (and htype) before any use.
        if request.htype() != HType::Eth || request.hlen() != 6 {
            return Err(Ignored::NotEthernet { htype: u8::from(request.htype()), hlen: request.hlen() });
        }
        let mac = Mac(request.chaddr().try_into().expect("hlen is 6"));
        self.leases.retain(|_, lease| lease.expires > now);
        self.declined.retain(|_, until| *until > now);
        let opts = request.opts();
        let arch = match opts.get(OptionCode::ClientSystemArchitecture) {
            Some(DhcpOption::ClientSystemArchitecture(a)) => Some(u16::from(*a)),
            _ => None,
        };
        let vendor_class_bytes = match opts.get(OptionCode::ClassIdentifier) {
            Some(DhcpOption::ClassIdentifier(v)) => Some(v.as_slice()),
            _ => None,
        };
        let user_class = match opts.get(OptionCode::UserClass) {
            Some(DhcpOption::UserClass(v)) => Some(v.as_slice()),
            _ => None,
        };
        let client = BootClient::of(vendor_class_bytes, user_class);
        let vendor_class = vendor_class_bytes.map(|v| String::from_utf8_lossy(v).into_owned());
        let requested = match opts.get(OptionCode::RequestedIpAddress) {
            Some(DhcpOption::RequestedIpAddress(ip)) => Some(*ip),
            _ => None,
        };
        let server_id = match opts.get(OptionCode::ServerIdentifier) {
            Some(DhcpOption::ServerIdentifier(ip)) => Some(*ip),
            _ => None,
        };
        let event = |kind, ip, hostname: Option<String>, boot_file: &str| DhcpEvent {
            kind,
            mac,
            ip,
            hostname,
            arch,
            vendor_class: vendor_class.clone(),
            boot_file: boot_file.to_owned(),
            switch_port: None,
            server: None,
            root_path: None,
        };
        let (kind, ip) = match opts.msg_type() {
            None => {
                // BOOTP (old GRUBs and other old clients): answer with options even when the
                // request is not RFC 1048 (no cookie), like ISC dhcpd's always-reply-rfc1048,
                // and keep the address for the lease time.
                let ip = self.allocate(&mac, None)?;
                self.bind(mac, ip, now);
                (DhcpEventKind::Bootp, ip)
            }
            Some(MessageType::Discover) => {
                let ip = self.allocate(&mac, requested)?;
                self.leases.insert(mac, Lease { ip, bound: false, expires: now + OFFER_HOLD, port: self.arrival });
                (DhcpEventKind::Offer, ip)
            }
            Some(MessageType::Request) => {
                if server_id.is_some_and(|id| id != self.config.server) {
                    self.leases.retain(|m, lease| *m != mac || lease.bound);
                    return Err(Ignored::OtherServer);
                }
                let wanted = requested.unwrap_or(request.ciaddr());
                match self.allocate(&mac, Some(wanted)) {
                    Ok(ip) if ip == wanted => {
                        self.bind(mac, ip, now);
                        (DhcpEventKind::Ack, ip)
                    }
                    _ => {
                        let nak = self.nak(&request, &mac);
                        return Ok((Some(nak), event(DhcpEventKind::Nak, wanted, None, "")));
                    }
                }
            }
            // Configuration only: the client's own address is no lease of ours.
            Some(MessageType::Inform) => (DhcpEventKind::Inform, request.ciaddr()),
            // A client may decline or release only the address it holds itself.
            Some(kind @ (MessageType::Decline | MessageType::Release)) => {
                let ip = if kind == MessageType::Decline { requested.unwrap_or(request.ciaddr()) } else { request.ciaddr() };
                if self.leases.get(&mac).map(|l| l.ip) != Some(ip) || server_id.is_some_and(|id| id != self.config.server) {
                    return Err(Ignored::NotItsLease { kind, ip });
                }
                self.leases.remove(&mac);
                let event_kind = if kind == MessageType::Decline {
                    self.declined.insert(ip, now + DECLINE_QUARANTINE);
                    DhcpEventKind::Decline
                } else {
                    DhcpEventKind::Release
                };
                return Ok((None, event(event_kind, ip, None, "")));
            }
            Some(other) => return Err(Ignored::NoReply(other)),
        };
        let boot_file = self.config.boot_file_for(client, arch);
        let reply = self.answer(&request, &mac, kind, ip, Boot { client, arch, file: &boot_file }, rfc1048);
        let hostname = self.hostname(&mac).map(str::to_owned);
        Ok((Some(reply), event(kind, ip, hostname, &boot_file)))
    }

    fn hostname(&self, mac: &Mac) -> Option<&str> {
        self.config.hosts.iter().find(|h| h.mac == *mac).and_then(|h| h.hostname.as_deref())
    }

    fn bind(&mut self, mac: Mac, ip: Ipv4Addr, now: Duration) {
        let expires = now + Duration::from_secs(self.config.lease_secs.into());
        self.leases.insert(mac, Lease { ip, bound: true, expires, port: self.arrival });
    }

    /// The address for `mac`: its declaration, its current lease, the address it asks for if
    /// free, else the first free pool address.
    fn allocate(&self, mac: &Mac, wanted: Option<Ipv4Addr>) -> Result<Ipv4Addr, Ignored> {
        if let Some(host) = self.config.hosts.iter().find(|h| h.mac == *mac) {
            return Ok(host.ip);
        }
        if let Some(lease) = self.leases.get(mac) {
            return Ok(lease.ip);
        }
        if let Some(port) = self.arrival {
            let declared = |ip: Ipv4Addr| self.config.hosts.iter().any(|h| h.ip == ip);
            let held = self.leases.values().filter(|l| l.port == Some(port) && !declared(l.ip)).count();
            if held >= POOL_PER_PORT {
                return Err(Ignored::PortFull { port, held });
            }
        }
        let (first, last) = (u32::from(self.config.pool.0), u32::from(self.config.pool.1));
        let free = |ip: Ipv4Addr| {
            let n = u32::from(ip);
            n >= first
                && n <= last
                && !self.declined.contains_key(&ip)
                && !self.leases.values().any(|l| l.ip == ip)
                && !self.config.hosts.iter().any(|h| h.ip == ip)
        };
        if let Some(ip) = wanted.filter(|ip| free(*ip)) {
            return Ok(ip);
        }
        (first..=last).map(Ipv4Addr::from).find(|ip| free(*ip)).ok_or(Ignored::PoolExhausted)
    }

    fn answer(&self, request: &Message, mac: &Mac, kind: DhcpEventKind, ip: Ipv4Addr, boot: Boot, rfc1048: bool) -> Reply {
        let c = &self.config;
        let boot_file = boot.file;
        let mut reply = base_reply(request);
        if request.opts().msg_type() != Some(MessageType::Inform) {
            reply.set_yiaddr(ip);
        }
        reply.set_siaddr(c.server);
        reply.set_fname_str(boot_file);
        let mut opts = DhcpOptions::new();
        match kind {
            DhcpEventKind::Offer => drop(opts.insert(DhcpOption::MessageType(MessageType::Offer))),
            DhcpEventKind::Ack | DhcpEventKind::Inform => drop(opts.insert(DhcpOption::MessageType(MessageType::Ack))),
            _ => {}
        }
        opts.insert(DhcpOption::ServerIdentifier(c.server));
        if !matches!(kind, DhcpEventKind::Bootp | DhcpEventKind::Inform) {
            opts.insert(DhcpOption::AddressLeaseTime(c.lease_secs));
        }
        opts.insert(DhcpOption::SubnetMask(c.netmask));
        if let Some(router) = c.router {
            opts.insert(DhcpOption::Router(vec![router]));
        }
        if !c.dns.is_empty() {
            opts.insert(DhcpOption::DomainNameServer(c.dns.clone()));
        }
        if let Some(hostname) = self.hostname(mac) {
            opts.insert(DhcpOption::Hostname(hostname.to_owned()));
        }
        if let Some(domain) = &c.domain {
            opts.insert(DhcpOption::DomainName(domain.clone()));
        }
        if let Some(root) = &c.root_path {
            opts.insert(DhcpOption::RootPath(root.clone()));
        }
        opts.insert(DhcpOption::TFTPServerName(c.server.to_string().into_bytes()));
        if !boot_file.is_empty() {
            opts.insert(DhcpOption::BootfileName(boot_file.as_bytes().to_vec()));
        }
        // UEFI HTTP boot takes only an offer with option 60 `HTTPClient`. A PXE client gets
        // no option 60 unless a quirk asks: OVMF's PXE rejects a `PXEClient` offer without
        // option 43.
        if boot.client == BootClient::UefiHttp && !boot_file.is_empty() && !c.quirks.http_client_without_60 {
            opts.insert(DhcpOption::ClassIdentifier(b"HTTPClient".to_vec()));
        } else if c.quirks.pxe_client_without_43 && boot.arch.is_some() {
            opts.insert(DhcpOption::ClassIdentifier(b"PXEClient".to_vec()));
        }
        if c.quirks.bootp_without_options && !rfc1048 {
            opts = DhcpOptions::new();
        }
        reply.set_opts(opts);
        finish(reply, request, *mac)
    }

    fn nak(&self, request: &Message, mac: &Mac) -> Reply {
        let mut reply = base_reply(request);
        let mut opts = DhcpOptions::new();
        opts.insert(DhcpOption::MessageType(MessageType::Nak));
        opts.insert(DhcpOption::ServerIdentifier(self.config.server));
        reply.set_opts(opts);
        // A NAK always goes to broadcast (RFC 2131 4.3.2).
        let mut reply = finish(reply, request, *mac);
        reply.dst_mac = Mac::BROADCAST;
        reply.dst_ip = Ipv4Addr::BROADCAST;
        reply
    }
}

/// Options whose length dhcproto assumes rather than checks (a `debug_assert!`, or `len - 1`):
/// a request carrying one with another length is malformed.
const FIXED_LENGTHS: &[(u8, std::ops::RangeInclusive<u8>)] =
    &[(80, 0..=0), (81, 3..=255), (94, 3..=3), (151, 1..=255), (152, 4..=4), (153, 4..=4), (154, 4..=4), (155, 4..=4)];

/// Check each option in `area` against [`FIXED_LENGTHS`] and add its length to `totals`, by
/// code (`None`: not present); returns the value of option 52 (overload), 0 without it.
fn option_lengths(mut area: &[u8], totals: &mut [Option<usize>; 256]) -> Result<u8, Ignored> {
    let mut overload = 0;
    while let [code, rest @ ..] = area {
        match (*code, rest) {
            (0, _) => area = rest,
            (255, _) | (_, []) => break,
            (code, [len, rest @ ..]) => {
                check_length(code, usize::from(*len))?;
                *totals[usize::from(code)].get_or_insert(0) += usize::from(*len);
                if code == 52 {
                    overload = rest.first().copied().unwrap_or(0);
                }
                area = rest.get(usize::from(*len)..).unwrap_or_default();
            }
        }
    }
    Ok(overload)
}

/// An option of `code` may be `len` bytes long (as one instance, and joined with its repeats).
fn check_length(code: u8, len: usize) -> Result<(), Ignored> {
    match FIXED_LENGTHS.iter().find(|(c, _)| *c == code) {
        Some((_, allowed)) if !(usize::from(*allowed.start())..=usize::from(*allowed.end())).contains(&len) => {
            Err(Ignored::Malformed(format!("option {code} of length {len}")))
        }
        _ => Ok(()),
    }
}

/// Decode a request from a guest. dhcproto trusts some option lengths (it asserts them in
/// debug builds, which is how tests run pxelab): those are checked first, and a panic left
/// in its decoder is caught and reported as a malformed message, never a stopped server.
fn decode(payload: &[u8]) -> Result<Message, Ignored> {
    // The options follow the 236-byte header and the 4-byte magic cookie (RFC 2131); option
    // 52 says that `file` (1), `sname` (2) or both (3) hold more of them (RFC 2132 9.3), and
    // repeated options may be joined (RFC 3396; dhcproto joins some): each instance and the
    // sum per code must fit.
    let mut totals = [None; 256];
    let overload = option_lengths(payload.get(240..).unwrap_or_default(), &mut totals)?;
    for (bit, area) in [(1, 108..236), (2, 44..108)] {
        if overload & bit != 0 {
            option_lengths(payload.get(area).unwrap_or_default(), &mut totals)?;
        }
    }
    for (code, _) in FIXED_LENGTHS {
        if let Some(total) = totals[usize::from(*code)] {
            check_length(*code, total)?;
        }
    }
    match std::panic::catch_unwind(|| Message::decode(&mut Decoder::new(payload))) {
        Ok(decoded) => decoded.map_err(|e| Ignored::Malformed(e.to_string())),
        Err(_) => Err(Ignored::Malformed("dhcproto panicked decoding it".into())),
    }
}

fn base_reply(request: &Message) -> Message {
    let mut reply = Message::default();
    reply
        .set_opcode(Opcode::BootReply)
        .set_xid(request.xid())
        .set_flags(request.flags())
        .set_ciaddr(request.ciaddr())
        .set_giaddr(request.giaddr())
        .set_chaddr(request.chaddr());
    reply
}

/// Encode, pad, and choose the destination: broadcast when the client asked for it or has
/// no address yet, else its own address.
fn finish(message: Message, request: &Message, mac: Mac) -> Reply {
    let mut bytes = Vec::with_capacity(BOOTP_MIN_LEN);
    message.encode(&mut Encoder::new(&mut bytes)).expect("encoding into a Vec cannot fail");
    if bytes.len() < BOOTP_MIN_LEN {
        bytes.resize(BOOTP_MIN_LEN, 0);
    }
    let broadcast = request.flags().broadcast() || request.ciaddr().is_unspecified();
    let (dst_mac, dst_ip) = if broadcast { (Mac::BROADCAST, Ipv4Addr::BROADCAST) } else { (mac, request.ciaddr()) };
    Reply { message, bytes, dst_mac, dst_ip }
}

#[cfg(test)]
mod test {
    use super::*;
    use crate::services::dhcp::{HostDecl, Quirks};
    use dhcproto::v4::{Architecture, Flags};
    use std::fmt::Write;

    const MAC: Mac = Mac([0x52, 0x54, 0x00, 0x12, 0x34, 0x56]);

    fn config() -> DhcpConfig {
        let mut c = DhcpConfig::for_subnet([192, 0, 2]);
        c.root_path = Some("192.0.2.1:/srv/nixos/nfsroot,vers=3,tcp,rsize=32768,wsize=32768,actimeo=600".into());
        c.hosts.push(HostDecl { mac: MAC, ip: "192.0.2.10".parse().unwrap(), hostname: Some("client1".into()) });
        c
    }

    fn request(mac: impl Into<Mac>, msg_type: Option<MessageType>, opts: Vec<DhcpOption>, broadcast: bool) -> Vec<u8> {
        let mac: Mac = mac.into();
        let mut m = Message::default();
        m.set_opcode(Opcode::BootRequest).set_xid(0x1234_5678).set_chaddr(&mac.0);
        if broadcast {
            m.set_flags(Flags::default().set_broadcast());
        }
        let mut o = DhcpOptions::new();
        if let Some(t) = msg_type {
            o.insert(DhcpOption::MessageType(t));
        }
        for opt in opts {
            o.insert(opt);
        }
        m.set_opts(o);
        let mut bytes = Vec::new();
        m.encode(&mut Encoder::new(&mut bytes)).unwrap();
        bytes
    }

    /// OVMF's own PXE: broadcast flag, option 93 = 7, vendor class PXEClient, 94 and 97.
    fn ovmf(msg_type: MessageType, extra: Vec<DhcpOption>) -> Vec<u8> {
        let mut opts = vec![
            DhcpOption::MaxMessageSize(1472),
            DhcpOption::ClientSystemArchitecture(Architecture::from(7)),
            DhcpOption::ClassIdentifier(b"PXEClient:Arch:00007:UNDI:003000".to_vec()),
            DhcpOption::ParameterRequestList(vec![
                OptionCode::SubnetMask, OptionCode::TimeOffset, OptionCode::Router, OptionCode::TimeServer,
                OptionCode::NameServer, OptionCode::DomainNameServer, OptionCode::Hostname, OptionCode::BootFileSize,
                OptionCode::DomainName, OptionCode::RootPath, OptionCode::VendorExtensions, OptionCode::TFTPServerName,
                OptionCode::BootfileName,
            ]),
        ];
        opts.extend(extra);
        request(MAC, Some(msg_type), opts, true)
    }

    /// A readable decoding of a reply, for snapshots.
    fn describe(reply: &Reply) -> String {
        let m = &reply.message;
        let mut out = String::new();
        writeln!(out, "op={:?} xid={:#x} flags={} len={}", m.opcode(), m.xid(), m.flags(), reply.bytes.len()).unwrap();
        writeln!(out, "ciaddr={} yiaddr={} siaddr={}", m.ciaddr(), m.yiaddr(), m.siaddr()).unwrap();
        writeln!(out, "file={:?}", m.fname_str().and_then(Result::ok).unwrap_or("")).unwrap();
        writeln!(out, "to {} {}", reply.dst_mac, reply.dst_ip).unwrap();
        let mut opts: Vec<_> = m.opts().iter().collect();
        opts.sort_by_key(|(code, _)| u8::from(**code));
        for (code, opt) in opts {
            let text = match opt {
                DhcpOption::TFTPServerName(b) | DhcpOption::BootfileName(b) => format!("{:?}", String::from_utf8_lossy(b)),
                other => format!("{other:?}"),
            };
            writeln!(out, "  {:>3} {text}", u8::from(*code)).unwrap();
        }
        out
    }

    fn reply(server: &mut DhcpServer, now: u64, bytes: &[u8]) -> (Reply, DhcpEvent) {
        let (reply, event) = server.handle(Duration::from_secs(now), bytes).unwrap();
        (reply.expect("a reply"), event)
    }

    #[test]
    fn ovmf_pxe_discover_and_request() {
        let mut server = DhcpServer::new(config()).unwrap();
        let (offer, event) = reply(&mut server, 0, &ovmf(MessageType::Discover, vec![]));
        assert_eq!(event.kind, DhcpEventKind::Offer);
        assert_eq!(event.vendor_class.as_deref(), Some("PXEClient:Arch:00007:UNDI:003000"));
        assert!(offer.message.opts().get(OptionCode::ClassIdentifier).is_none(), "no option 60 for OVMF");
        insta::assert_snapshot!("ovmf_offer", describe(&offer));
        let req = ovmf(
            MessageType::Request,
            vec![DhcpOption::ServerIdentifier("192.0.2.1".parse().unwrap()), DhcpOption::RequestedIpAddress("192.0.2.10".parse().unwrap())],
        );
        let (ack, event) = reply(&mut server, 1, &req);
        assert_eq!((event.kind, event.hostname.as_deref()), (DhcpEventKind::Ack, Some("client1")));
        insta::assert_snapshot!("ovmf_ack", describe(&ack));
        assert!(server.leases()[&MAC].bound);
    }

    #[test]
    fn ipxe_discover_gets_the_efi_loader() {
        let mut server = DhcpServer::new(config()).unwrap();
        let mac = Mac([0x52, 0x54, 0, 0, 0, 0x42]);
        let req = request(
            mac,
            Some(MessageType::Discover),
            vec![
                DhcpOption::ClientSystemArchitecture(Architecture::from(7)),
                DhcpOption::ClassIdentifier(b"PXEClient:Arch:00007:UNDI:003010".to_vec()),
                DhcpOption::UserClass(b"iPXE".to_vec()),
                DhcpOption::Unknown(dhcproto::v4::UnknownOption::new(OptionCode::Unknown(175), vec![177, 5, 1, 128, 134, 16, 14])),
            ],
            false,
        );
        let (offer, event) = reply(&mut server, 0, &req);
        assert_eq!((event.ip, event.boot_file.as_str()), ("192.0.2.100".parse().unwrap(), "nixos/bootx64.efi"));
        insta::assert_snapshot!("ipxe_offer", describe(&offer));
    }

    #[test]
    fn uefi_http_boot_gets_option_60_and_a_url_and_ipxe_its_script() {
        let mut c = config();
        c.http_boot = crate::services::dhcp::HttpBoot { uefi: Some("ipxe/ipxe.efi".into()), ipxe_script: Some("pxelab.ipxe".into()) };
        let mut server = DhcpServer::new(c).unwrap();
        // OVMF's HttpBootDxe: architecture 16 (x64 UEFI HTTP), vendor class HTTPClient.
        let http_boot = request(
            MAC,
            Some(MessageType::Discover),
            vec![
                DhcpOption::ClientSystemArchitecture(Architecture::from(16)),
                DhcpOption::ClassIdentifier(b"HTTPClient:Arch:00016:UNDI:003001".to_vec()),
            ],
            true,
        );
        let (offer, event) = reply(&mut server, 0, &http_boot);
        assert_eq!(event.boot_file, "http://192.0.2.1/ipxe/ipxe.efi");
        insta::assert_snapshot!("uefi_http_boot_offer", describe(&offer));
        let ipxe = request(
            Mac([0x52, 0x54, 0, 0, 0, 0x42]),
            Some(MessageType::Discover),
            vec![
                DhcpOption::ClientSystemArchitecture(Architecture::from(7)),
                DhcpOption::ClassIdentifier(b"PXEClient:Arch:00007:UNDI:003010".to_vec()),
                DhcpOption::UserClass(b"iPXE".to_vec()),
            ],
            false,
        );
        let (offer, event) = reply(&mut server, 0, &ipxe);
        assert_eq!(event.boot_file, "http://192.0.2.1/pxelab.ipxe");
        assert_eq!(offer.message.fname_str().and_then(Result::ok), Some("http://192.0.2.1/pxelab.ipxe"));
        assert!(offer.message.opts().get(OptionCode::ClassIdentifier).is_none(), "iPXE needs no option 60");
        let (offer, event) = reply(&mut server, 0, &ovmf(MessageType::Discover, vec![]));
        assert_eq!(event.boot_file, "nixos/bootx64.efi", "PXE firmware still gets its TFTP file");
        assert!(offer.message.opts().get(OptionCode::ClassIdentifier).is_none());
    }

    /// `bytes` with its RFC 1048 cookie zeroed, as a GRUB that sends no cookie: plain BOOTP.
    fn non_rfc1048(mut bytes: Vec<u8>) -> Vec<u8> {
        bytes[236..240].fill(0);
        bytes
    }

    #[test]
    fn a_bootp_request_without_the_rfc1048_cookie_is_answered_with_options() {
        let mut server = DhcpServer::new(config()).unwrap();
        // Its vendor area is opaque, even where it holds what would read as a DHCP Discover.
        let plain = non_rfc1048(request(MAC, Some(MessageType::Discover), vec![], false));
        let (reply, event) = reply(&mut server, 0, &plain);
        assert_eq!(event.kind, DhcpEventKind::Bootp);
        assert_eq!(reply.message.opts().msg_type(), None);
        assert!(reply.message.opts().get(OptionCode::RootPath).is_some(), "options all the same");
    }

    #[test]
    fn grub_bootp_request_is_answered_with_options() {
        let mut server = DhcpServer::new(config()).unwrap();
        let (reply, event) = reply(&mut server, 0, &request(MAC, None, vec![], false));
        assert_eq!(event.kind, DhcpEventKind::Bootp);
        assert_eq!(reply.message.opts().msg_type(), None, "a BOOTP reply has no message type");
        insta::assert_snapshot!("grub_bootp", describe(&reply));
    }

    #[test]
    fn quirks_reproduce_other_servers_replies() {
        let mut quirky = config();
        quirky.quirks = Quirks { pxe_client_without_43: true, bootp_without_options: true, http_client_without_60: false };
        let mut server = DhcpServer::new(quirky).unwrap();
        let (offer, _) = reply(&mut server, 0, &ovmf(MessageType::Discover, vec![]));
        let class = offer.message.opts().get(OptionCode::ClassIdentifier);
        assert_eq!(class, Some(&DhcpOption::ClassIdentifier(b"PXEClient".to_vec())), "option 60 PXEClient");
        assert!(offer.message.opts().get(OptionCode::VendorExtensions).is_none(), "and no option 43");
        let (bootp, event) = reply(&mut server, 0, &non_rfc1048(request(MAC, None, vec![], false)));
        assert_eq!(event.kind, DhcpEventKind::Bootp);
        assert_eq!(bootp.message.opts().iter().count(), 0, "a BOOTP reply without options");
        assert_eq!(bootp.message.yiaddr(), "192.0.2.10".parse::<Ipv4Addr>().unwrap(), "but with the address");
        let (rfc1048, _) = reply(&mut server, 0, &request(MAC, None, vec![], false));
        assert!(rfc1048.message.opts().get(OptionCode::SubnetMask).is_some(), "an RFC 1048 BOOTP request gets options from ISC too");
    }

    #[test]
    fn linux_ipconfig_and_udhcpc_get_no_boot_file() {
        let mut server = DhcpServer::new(config()).unwrap();
        let ipconfig = request(
            [2, 0, 0, 0, 0, 1],
            Some(MessageType::Discover),
            vec![
                DhcpOption::ClassIdentifier(b"Linux ipconfig".to_vec()),
                DhcpOption::ParameterRequestList(vec![OptionCode::SubnetMask, OptionCode::Router, OptionCode::RootPath]),
            ],
            false,
        );
        let (offer, _) = reply(&mut server, 0, &ipconfig);
        insta::assert_snapshot!("ipconfig_offer", describe(&offer));
        let udhcpc = request(
            [2, 0, 0, 0, 0, 2],
            Some(MessageType::Discover),
            vec![DhcpOption::ClientIdentifier(vec![1, 2, 0, 0, 0, 0, 2]), DhcpOption::ClassIdentifier(b"udhcp 1.35.0".to_vec())],
            false,
        );
        let (offer, event) = reply(&mut server, 0, &udhcpc);
        assert_eq!((event.ip, event.boot_file.as_str()), ("192.0.2.101".parse().unwrap(), ""));
        assert!(offer.message.opts().get(OptionCode::BootfileName).is_none());
    }

    #[test]
    fn short_replies_are_padded_to_the_bootp_minimum() {
        let mut c = DhcpConfig::for_subnet([192, 0, 2]);
        (c.router, c.dns, c.domain) = (None, vec![], None);
        let mut server = DhcpServer::new(c).unwrap();
        let (offer, _) = reply(&mut server, 0, &request([2, 0, 0, 0, 0, 9], Some(MessageType::Discover), vec![], false));
        assert_eq!(offer.bytes.len(), BOOTP_MIN_LEN);
        let decoded = Message::decode(&mut Decoder::new(&offer.bytes)).unwrap();
        assert_eq!((decoded.yiaddr(), decoded.opts()), (offer.message.yiaddr(), offer.message.opts()), "padding decodes away");
    }

    #[test]
    fn request_for_another_server_or_taken_address() {
        let mut server = DhcpServer::new(config()).unwrap();
        let other = request(
            [2, 0, 0, 0, 0, 3],
            Some(MessageType::Request),
            vec![DhcpOption::ServerIdentifier("192.0.2.254".parse().unwrap())],
            false,
        );
        assert_eq!(server.handle(Duration::ZERO, &other).unwrap_err(), Ignored::OtherServer);
        // Asking for a declared host's address from another MAC gets a NAK, to broadcast.
        let taken = request(
            [2, 0, 0, 0, 0, 4],
            Some(MessageType::Request),
            vec![DhcpOption::RequestedIpAddress("192.0.2.10".parse().unwrap())],
            false,
        );
        let (nak, event) = reply(&mut server, 0, &taken);
        assert_eq!(event.kind, DhcpEventKind::Nak);
        assert_eq!(nak.message.opts().msg_type(), Some(MessageType::Nak));
        assert_eq!(nak.dst_mac, Mac::BROADCAST);
    }

    #[test]
    fn decline_retires_the_address_and_release_frees_it() {
        let mut server = DhcpServer::new(config()).unwrap();
        let mac = Mac([2, 0, 0, 0, 0, 5]);
        let discover = request(mac, Some(MessageType::Discover), vec![], false);
        let (_, first) = reply(&mut server, 0, &discover);
        let decline = request(mac, Some(MessageType::Decline), vec![DhcpOption::RequestedIpAddress(first.ip)], false);
        let (none, event) = server.handle(Duration::from_secs(1), &decline).unwrap();
        assert!(none.is_none());
        assert_eq!(event.kind, DhcpEventKind::Decline);
        let (_, second) = reply(&mut server, 2, &discover);
        assert_ne!(second.ip, first.ip, "a declined address is not offered again");

        let mut m = Message::decode(&mut Decoder::new(&request(mac, Some(MessageType::Release), vec![], false))).unwrap();
        m.set_ciaddr(second.ip);
        let mut release = Vec::new();
        m.encode(&mut Encoder::new(&mut release)).unwrap();
        let (none, event) = server.handle(Duration::from_secs(3), &release).unwrap();
        assert!(none.is_none() && event.kind == DhcpEventKind::Release);
        assert!(!server.leases().contains_key(&mac));
    }

    /// A DECLINE or RELEASE forged for another client's MAC (a neighbour sent 70, and the
    /// declined addresses left the pool) is ignored: only the client's own MAC counts.
    #[test]
    fn decline_and_release_count_only_from_the_clients_own_mac() {
        let mut server = DhcpServer::new(config()).unwrap();
        let (victim, neighbour) = (Mac([2, 0, 0, 0, 0, 0x41]), Mac([2, 0, 0, 0, 0, 0x42]));
        let (_, lease) = reply(&mut server, 0, &request(victim, Some(MessageType::Discover), vec![], false));
        let decline = request(victim, Some(MessageType::Decline), vec![DhcpOption::RequestedIpAddress(lease.ip)], false);
        assert_eq!(server.handle_from(Duration::from_secs(1), neighbour, None, &decline).unwrap_err(), Ignored::OtherSender { sender: neighbour });
        assert_eq!(server.leases()[&victim].ip, lease.ip, "the victim keeps its offer");
        let (_, event) = server.handle_from(Duration::from_secs(1), victim, None, &decline).unwrap();
        assert_eq!(event.kind, DhcpEventKind::Decline, "its own decline counts");
        let discover = request(neighbour, Some(MessageType::Discover), vec![], false);
        assert!(server.handle_from(Duration::from_secs(2), neighbour, None, &discover).is_ok(), "its own messages count");
        let forged = request(victim, Some(MessageType::Request), vec![DhcpOption::RequestedIpAddress(lease.ip)], false);
        assert_eq!(server.handle_from(Duration::from_secs(2), neighbour, None, &forged).unwrap_err(), Ignored::OtherSender { sender: neighbour }, "nor a REQUEST for another's MAC");
    }

    /// A neighbour inventing MACs on one port (DHCP starvation: 240 s of a flood's DISCOVERs
    /// held the whole pool, and a well-behaved client on another port got no offer) holds at
    /// most its port's share; another port's client still gets an address, and a declared
    /// client its own. A port's share frees as its offers expire.
    #[test]
    fn one_port_inventing_macs_holds_its_share_of_the_pool_only() {
        let mut server = DhcpServer::new(config()).unwrap();
        let mut offered = 0;
        for i in 0..200u8 {
            let mac = Mac([2, 0x66, 0, 0, 1, i]);
            match server.handle_from(Duration::from_secs(1), mac, Some(3), &request(mac, Some(MessageType::Discover), vec![], false)) {
                Ok(_) => offered += 1,
                Err(e) => assert_eq!(e, Ignored::PortFull { port: 3, held: POOL_PER_PORT }),
            }
        }
        assert_eq!(offered, POOL_PER_PORT);
        let other = Mac([2, 0, 0, 0, 0, 0x77]);
        assert!(server.handle_from(Duration::from_secs(2), other, Some(4), &request(other, Some(MessageType::Discover), vec![], false)).is_ok(), "another port's client");
        let declared = config().hosts[0].mac;
        let (_, event) = server.handle_from(Duration::from_secs(2), declared, Some(3), &request(declared, Some(MessageType::Discover), vec![], false)).unwrap();
        assert_eq!(event.ip, config().hosts[0].ip, "a declared client on a full port");
        let later = Duration::from_secs(2) + OFFER_HOLD;
        let mac = Mac([2, 0x66, 0, 0, 2, 0]);
        assert!(server.handle_from(later, mac, Some(3), &request(mac, Some(MessageType::Discover), vec![], false)).is_ok(), "offers expired");
    }

    /// Declines cannot drain the pool for good (a neighbour forged 70 of them, and clients
    /// without a declaration got no address): a declined address comes back after its
    /// quarantine.
    #[test]
    fn a_declined_address_returns_to_the_pool_after_its_quarantine() {
        let mut c = config();
        c.pool = ("192.0.2.100".parse().unwrap(), "192.0.2.100".parse().unwrap());
        let mut server = DhcpServer::new(c).unwrap();
        let (mac, other) = (Mac([2, 0, 0, 0, 0, 0x21]), Mac([2, 0, 0, 0, 0, 0x22]));
        let (_, offered) = reply(&mut server, 0, &request(mac, Some(MessageType::Discover), vec![], false));
        let decline = request(mac, Some(MessageType::Decline), vec![DhcpOption::RequestedIpAddress(offered.ip)], false);
        server.handle(Duration::from_secs(1), &decline).unwrap();
        let discover = request(other, Some(MessageType::Discover), vec![], false);
        let during = server.handle(Duration::from_secs(1) + DECLINE_QUARANTINE - Duration::from_secs(1), &discover);
        assert_eq!(during.unwrap_err(), Ignored::PoolExhausted, "quarantined for its time");
        let after = Duration::from_secs(2) + DECLINE_QUARANTINE;
        let (_, event) = server.handle(after, &discover).unwrap();
        assert_eq!(event.ip, offered.ip, "offered again after the quarantine");
    }

    /// A DHCPINFORM is answered with configuration and no lease (RFC 2131 §3.4, §4.3.5): the
    /// event says Inform, not Ack (a flood of them read as 791 leases of 192.0.2.10 for random
    /// MACs), and the server binds nothing.
    #[test]
    fn an_inform_is_answered_as_an_inform_and_binds_nothing() {
        let mut server = DhcpServer::new(config()).unwrap();
        let mac = Mac([2, 0, 0, 0, 0, 0x31]);
        let mut m = Message::decode(&mut Decoder::new(&request(mac, Some(MessageType::Inform), vec![], false))).unwrap();
        m.set_ciaddr("192.0.2.10".parse::<Ipv4Addr>().unwrap());
        let mut inform = Vec::new();
        m.encode(&mut Encoder::new(&mut inform)).unwrap();
        let (answer, event) = server.handle(Duration::ZERO, &inform).unwrap();
        assert_eq!((event.kind, event.ip), (DhcpEventKind::Inform, "192.0.2.10".parse().unwrap()));
        let answer = answer.expect("an answer");
        assert_eq!(answer.message.opts().msg_type(), Some(MessageType::Ack));
        assert_eq!(answer.message.yiaddr(), Ipv4Addr::UNSPECIFIED, "no address given");
        assert!(answer.message.opts().get(OptionCode::AddressLeaseTime).is_none(), "no lease time");
        assert!(server.leases().is_empty());
        let lab_event = crate::services::ServiceEvent::Dhcp(event);
        assert!(!matches!(lab_event, crate::services::ServiceEvent::Dhcp(ref d) if matches!(d.kind, DhcpEventKind::Ack | DhcpEventKind::Bootp)));
    }

    #[test]
    fn offers_expire_and_renewal_is_unicast() {
        let mut server = DhcpServer::new(config()).unwrap();
        let mac = Mac([2, 0, 0, 0, 0, 6]);
        let (_, offered) = reply(&mut server, 0, &request(mac, Some(MessageType::Discover), vec![], false));
        let (_, other) = reply(&mut server, 61, &request([2, 0, 0, 0, 0, 7], Some(MessageType::Discover), vec![], false));
        assert_eq!(other.ip, offered.ip, "an unanswered offer is free again after its hold time");

        let mut m = Message::decode(&mut Decoder::new(&request(mac, Some(MessageType::Request), vec![], false))).unwrap();
        m.set_ciaddr("192.0.2.150".parse::<Ipv4Addr>().unwrap());
        let mut renew = Vec::new();
        m.encode(&mut Encoder::new(&mut renew)).unwrap();
        let (ack, _) = reply(&mut server, 62, &renew);
        assert_eq!((ack.dst_mac, ack.dst_ip), (mac, "192.0.2.150".parse().unwrap()));
    }

    /// dhcproto's `chaddr()` slices `chaddr[..hlen]` with `hlen` from the wire.
    #[test]
    fn hardware_lengths_from_the_wire_are_checked_before_use() {
        let mut server = DhcpServer::new(config()).unwrap();
        let good = request(MAC, Some(MessageType::Discover), vec![], false);
        for (htype, hlen) in [(1u8, 17u8), (1, 255), (1, 16), (1, 0), (6, 6), (32, 20)] {
            let mut bad = good.clone();
            (bad[1], bad[2]) = (htype, hlen);
            assert_eq!(server.handle(Duration::ZERO, &bad).unwrap_err(), Ignored::NotEthernet { htype, hlen });
        }
        assert!(server.handle(Duration::ZERO, &good).is_ok(), "the server still answers");
    }

    #[test]
    fn decline_and_release_touch_only_the_senders_own_lease() {
        let mut server = DhcpServer::new(config()).unwrap();
        let (victim, attacker) = (Mac([2, 0, 0, 0, 0, 0x11]), Mac([2, 0, 0, 0, 0, 0x12]));
        let (_, lease) = reply(&mut server, 0, &request(victim, Some(MessageType::Discover), vec![], false));
        let decline = request(attacker, Some(MessageType::Decline), vec![DhcpOption::RequestedIpAddress(lease.ip)], false);
        assert_eq!(
            server.handle(Duration::from_secs(1), &decline).unwrap_err(),
            Ignored::NotItsLease { kind: MessageType::Decline, ip: lease.ip }
        );
        let mut m = Message::decode(&mut Decoder::new(&request(attacker, Some(MessageType::Release), vec![], false))).unwrap();
        m.set_ciaddr(lease.ip);
        let mut release = Vec::new();
        m.encode(&mut Encoder::new(&mut release)).unwrap();
        assert!(server.handle(Duration::from_secs(2), &release).is_err());
        assert_eq!(server.leases()[&victim].ip, lease.ip, "the victim keeps its address");
        let (_, again) = reply(&mut server, 3, &request(victim, Some(MessageType::Discover), vec![], false));
        assert_eq!(again.ip, lease.ip, "and it was not retired");
    }

    /// Found by the `dhcp` fuzz target: dhcproto asserts the lengths of these options.
    #[test]
    fn options_of_the_wrong_length_are_malformed_not_a_panic() {
        let mut server = DhcpServer::new(config()).unwrap();
        let good = request(MAC, Some(MessageType::Discover), vec![], false);
        for (code, len) in [(80u8, 1u8), (94, 2), (151, 0), (152, 3), (81, 1)] {
            let mut bad = good[..240].to_vec();
            bad.extend([53, 1, 1, code, len]);
            bad.extend(std::iter::repeat_n(0xa5, usize::from(len)));
            bad.push(255);
            assert!(matches!(server.handle(Duration::ZERO, &bad), Err(Ignored::Malformed(_))), "option {code} length {len}");
        }
        // Option 155 as 4 bytes, then 0: the sum fits, the second instance does not.
        let mut split = good[..240].to_vec();
        split.extend([53, 1, 1, 155, 4, 0, 0, 0, 0, 155, 0, 255]);
        assert!(matches!(server.handle(Duration::ZERO, &split), Err(Ignored::Malformed(_))));
        // Twice 4 bytes of option 153: dhcproto joins them into one of 8 (RFC 3396).
        let mut twice = good[..240].to_vec();
        twice.extend([53, 1, 1, 153, 4, 0, 0, 0, 0, 153, 4, 0, 0, 0, 0, 255]);
        assert!(matches!(server.handle(Duration::ZERO, &twice), Err(Ignored::Malformed(_))));
        // The same, carried in the `file` field (option 52, overload 1).
        let mut overloaded = good[..240].to_vec();
        overloaded[108..113].copy_from_slice(&[154, 2, 0, 0, 255]);
        overloaded.extend([53, 1, 1, 52, 1, 1, 255]);
        assert!(matches!(server.handle(Duration::ZERO, &overloaded), Err(Ignored::Malformed(_))));
        assert!(server.handle(Duration::ZERO, &good).is_ok());
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        let mut server = DhcpServer::new(config()).unwrap();
        for junk in [&b""[..], b"\x01", &[0u8; 240], &[1u8; 400]] {
            assert!(server.handle(Duration::ZERO, junk).is_err());
        }
    }
}
