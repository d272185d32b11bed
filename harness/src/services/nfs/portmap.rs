//! The portmapper (RFC 1833, program 100000 version 2) on port 111: tells clients where the
//! NFS and MOUNT programs listen.

use super::rpc::{parse_call, reply, Accept};

pub const PROGRAM: u32 = 100_000;
pub const NFS_PROGRAM: u32 = 100_003;
pub const MOUNT_PROGRAM: u32 = 100_005;
pub const TCP: u32 = 6;
pub const UDP: u32 = 17;

/// One registration: program, version, protocol, port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mapping {
    pub program: u32,
    pub version: u32,
    pub protocol: u32,
    pub port: u16,
}

/// A fixed table of registrations (SET and UNSET are refused).
#[derive(Debug, Clone)]
pub struct Portmap {
    mappings: Vec<Mapping>,
}

impl Portmap {
    /// NFS v3 and MOUNT v3 over TCP at `port`, and the portmapper itself.
    pub fn nfs3_tcp(port: u16) -> Self {
        let m = |program, version, protocol, port| Mapping { program, version, protocol, port };
        Portmap {
            mappings: vec![
                m(PROGRAM, 2, TCP, 111),
                m(PROGRAM, 2, UDP, 111),
                m(NFS_PROGRAM, 3, TCP, port),
                m(MOUNT_PROGRAM, 3, TCP, port),
            ],
        }
    }

    /// Answer one call; `None` for a message that is not a call (nothing to answer).
    pub fn handle(&self, message: &[u8]) -> Option<Vec<u8>> {
        let (call, mut args) = parse_call(message).ok()?;
        if call.program != PROGRAM {
            return Some(reply(call.xid, Accept::ProgUnavail, &[]));
        }
        if call.version != 2 {
            return Some(reply(call.xid, Accept::ProgMismatch { low: 2, high: 2 }, &[]));
        }
        Some(match call.procedure {
            0 => reply(call.xid, Accept::Success, &[]),
            // SET, UNSET: registrations are fixed.
            1 | 2 => reply(call.xid, Accept::Success, &[0]),
            3 => {
                let (Ok(program), Ok(version), Ok(protocol)) = (args.u32(), args.u32(), args.u32()) else {
                    return Some(reply(call.xid, Accept::GarbageArgs, &[]));
                };
                // As rpcbind and Sun's portmap do: the exact version, else any registered
                // version of the program on that protocol (rpcinfo asks for version 0).
                let on_protocol = || self.mappings.iter().filter(|m| m.program == program && m.protocol == protocol);
                let port = on_protocol()
                    .find(|m| m.version == version)
                    .or_else(|| on_protocol().next())
                    .map_or(0, |m| u32::from(m.port));
                reply(call.xid, Accept::Success, &[port])
            }
            4 => {
                let mut list = Vec::new();
                for m in &self.mappings {
                    list.extend([1, m.program, m.version, m.protocol, u32::from(m.port)]);
                }
                list.push(0);
                reply(call.xid, Accept::Success, &list)
            }
            _ => reply(call.xid, Accept::ProcUnavail, &[]),
        })
    }
}

#[cfg(test)]
mod test {
    use super::*;

    fn call(xid: u32, program: u32, version: u32, procedure: u32, args: &[u32]) -> Vec<u8> {
        [xid, 0, 2, program, version, procedure, 0, 0, 0, 0].iter().chain(args).flat_map(|w| w.to_be_bytes()).collect()
    }

    fn words(bytes: Vec<u8>) -> Vec<u32> {
        bytes.chunks(4).map(|c| u32::from_be_bytes(c.try_into().unwrap())).collect()
    }

    #[test]
    fn getport_for_mount_and_nfs_over_tcp_only() {
        let pm = Portmap::nfs3_tcp(2049);
        let ask = |prog, vers, proto| words(pm.handle(&call(5, PROGRAM, 2, 3, &[prog, vers, proto, 0])).unwrap());
        assert_eq!(ask(MOUNT_PROGRAM, 3, TCP), [5, 1, 0, 0, 0, 0, 2049]);
        assert_eq!(ask(NFS_PROGRAM, 3, TCP), [5, 1, 0, 0, 0, 0, 2049]);
        assert_eq!(ask(MOUNT_PROGRAM, 3, UDP), [5, 1, 0, 0, 0, 0, 0], "no MOUNT over UDP");
        assert_eq!(ask(PROGRAM, 0, UDP), [5, 1, 0, 0, 0, 0, 111], "rpcinfo -u asks for version 0");
        assert_eq!(ask(MOUNT_PROGRAM, 0, TCP), [5, 1, 0, 0, 0, 0, 2049], "rpcinfo -t ... mountd");
        assert_eq!(ask(NFS_PROGRAM, 4, TCP), [5, 1, 0, 0, 0, 0, 2049], "any registered version, as rpcbind");
        assert_eq!(ask(100_021, 0, TCP), [5, 1, 0, 0, 0, 0, 0], "an unregistered program has no port");
    }

    #[test]
    fn null_dump_and_errors() {
        let pm = Portmap::nfs3_tcp(2049);
        assert_eq!(words(pm.handle(&call(1, PROGRAM, 2, 0, &[])).unwrap()), [1, 1, 0, 0, 0, 0]);
        let dump = words(pm.handle(&call(2, PROGRAM, 2, 4, &[])).unwrap());
        assert_eq!(dump.len(), 6 + 4 * 5 + 1);
        assert_eq!(&dump[6 + 10..6 + 15], &[1, NFS_PROGRAM, 3, TCP, 2049]);
        assert_eq!(words(pm.handle(&call(3, PROGRAM, 4, 3, &[])).unwrap())[5..], [2, 2, 2]);
        assert_eq!(words(pm.handle(&call(4, NFS_PROGRAM, 3, 0, &[])).unwrap())[5], 1);
        assert_eq!(words(pm.handle(&call(6, PROGRAM, 2, 3, &[100_003])).unwrap())[5], 4, "garbage args");
        assert_eq!(pm.handle(b"\x00\x00\x00\x01junk"), None);
    }
}
