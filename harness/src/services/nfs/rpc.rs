//! ONC RPC (RFC 5531) as far as the portmapper needs it: record marking on TCP, call headers,
//! accepted replies, and the XDR integers they are made of (RFC 4506).

/// Largest record accepted on a stream.
pub const MAX_RECORD: usize = 1 << 20;

/// Frame a reply as one last fragment.
pub fn record(message: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(4 + message.len());
    out.extend_from_slice(&(0x8000_0000u32 | message.len() as u32).to_be_bytes());
    out.extend_from_slice(message);
    out
}

/// Why a record or call could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RpcError {
    #[error("record of {0} bytes exceeds {MAX_RECORD}")]
    RecordTooLarge(usize),
    #[error("message truncated")]
    Truncated,
    #[error("not an RPC version 2 call")]
    NotACall,
}

/// Reassembles records (possibly of several fragments) from stream reads.
#[derive(Debug, Default)]
pub struct RecordDecoder {
    buf: Vec<u8>,
    partial: Vec<u8>,
}

impl RecordDecoder {
    /// Add bytes read from the stream; returns the records they complete.
    pub fn push(&mut self, bytes: &[u8]) -> Result<Vec<Vec<u8>>, RpcError> {
        self.buf.extend_from_slice(bytes);
        let mut records = Vec::new();
        let mut at = 0;
        while self.buf.len() - at >= 4 {
            let header = u32::from_be_bytes(self.buf[at..at + 4].try_into().expect("4 bytes"));
            let (last, len) = (header & 0x8000_0000 != 0, (header & 0x7fff_ffff) as usize);
            if len + self.partial.len() > MAX_RECORD {
                return Err(RpcError::RecordTooLarge(len + self.partial.len()));
            }
            if self.buf.len() - at - 4 < len {
                break;
            }
            self.partial.extend_from_slice(&self.buf[at + 4..at + 4 + len]);
            at += 4 + len;
            if last {
                records.push(std::mem::take(&mut self.partial));
            }
        }
        self.buf.drain(..at);
        Ok(records)
    }
}

/// Reads XDR items from a message.
#[derive(Debug)]
pub struct Xdr<'a> {
    bytes: &'a [u8],
}

impl<'a> Xdr<'a> {
    pub fn new(bytes: &'a [u8]) -> Self {
        Xdr { bytes }
    }

    pub fn u32(&mut self) -> Result<u32, RpcError> {
        let (head, rest) = self.bytes.split_at_checked(4).ok_or(RpcError::Truncated)?;
        self.bytes = rest;
        Ok(u32::from_be_bytes(head.try_into().expect("4 bytes")))
    }

    /// Variable-length opaque data, padded to 4 bytes.
    pub fn opaque(&mut self) -> Result<&'a [u8], RpcError> {
        let len = self.u32()? as usize;
        let padded = len.div_ceil(4) * 4;
        if self.bytes.len() < padded {
            return Err(RpcError::Truncated);
        }
        let (data, rest) = self.bytes.split_at(padded);
        self.bytes = rest;
        Ok(&data[..len])
    }
}

/// The header of an RPC call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Call {
    pub xid: u32,
    pub program: u32,
    pub version: u32,
    pub procedure: u32,
}

/// Parse a call's header; returns it and the reader positioned at its arguments.
pub fn parse_call(message: &[u8]) -> Result<(Call, Xdr<'_>), RpcError> {
    let mut x = Xdr::new(message);
    let xid = x.u32()?;
    if x.u32()? != 0 || x.u32()? != 2 {
        return Err(RpcError::NotACall);
    }
    let (program, version, procedure) = (x.u32()?, x.u32()?, x.u32()?);
    for _ in 0..2 {
        x.u32()?; // credential, then verifier: flavor and body
        x.opaque()?;
    }
    Ok((Call { xid, program, version, procedure }, x))
}

/// How an accepted call went (RFC 5531 `accept_stat`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accept {
    Success,
    ProgUnavail,
    /// The program exists in versions `low..=high` only.
    ProgMismatch { low: u32, high: u32 },
    ProcUnavail,
    GarbageArgs,
}

/// An accepted reply to `xid` with `results` (XDR words) after the status.
pub fn reply(xid: u32, accept: Accept, results: &[u32]) -> Vec<u8> {
    let (stat, extra): (u32, Vec<u32>) = match accept {
        Accept::Success => (0, results.to_vec()),
        Accept::ProgUnavail => (1, vec![]),
        Accept::ProgMismatch { low, high } => (2, vec![low, high]),
        Accept::ProcUnavail => (3, vec![]),
        Accept::GarbageArgs => (4, vec![]),
    };
    // xid, REPLY, MSG_ACCEPTED, verifier AUTH_NULL with empty body, accept_stat, results.
    [xid, 1, 0, 0, 0, stat].iter().chain(&extra).flat_map(|w| w.to_be_bytes()).collect()
}

#[cfg(test)]
mod test {
    use super::*;

    /// A portmapper GETPORT call for MOUNT v3 over TCP, as the Linux client sends it.
    fn getport_call(xid: u32, program: u32, version: u32, protocol: u32) -> Vec<u8> {
        let words = [xid, 0, 2, 100_000, 2, 3, 0, 0, 0, 0, program, version, protocol, 0];
        words.iter().flat_map(|w| w.to_be_bytes()).collect()
    }

    #[test]
    fn records_in_fragments_and_split_reads() {
        let call = getport_call(7, 100_005, 3, 6);
        let (a, b) = call.split_at(20);
        let mut stream = Vec::new();
        stream.extend_from_slice(&(a.len() as u32).to_be_bytes()); // not last
        stream.extend_from_slice(a);
        stream.extend_from_slice(&record(b));
        stream.extend_from_slice(&record(b"second"));
        let mut d = RecordDecoder::default();
        let mut records = Vec::new();
        for chunk in stream.chunks(3) {
            records.extend(d.push(chunk).unwrap());
        }
        assert_eq!(records, vec![call, b"second".to_vec()]);
        assert_eq!(RecordDecoder::default().push(&[0xff, 0xff, 0xff, 0xff]), Err(RpcError::RecordTooLarge(0x7fff_ffff)));
    }

    #[test]
    fn call_header_with_auth_unix_credential() {
        let mut words = vec![42u32, 0, 2, 100_000, 2, 3, 1];
        let cred = [0u32, 5, 0x6162_6364, 0x6500_0000, 0, 0, 0]; // stamp, "abcde" padded, uid, gid, no groups
        words.push((cred.len() * 4) as u32);
        words.extend_from_slice(&cred);
        words.extend_from_slice(&[0, 0, 100_003, 3, 6, 0]);
        let bytes: Vec<u8> = words.iter().flat_map(|w| w.to_be_bytes()).collect();
        let (call, mut args) = parse_call(&bytes).unwrap();
        assert_eq!(call, Call { xid: 42, program: 100_000, version: 2, procedure: 3 });
        assert_eq!([args.u32().unwrap(), args.u32().unwrap(), args.u32().unwrap()], [100_003, 3, 6]);
        assert_eq!(parse_call(&bytes[..30]).unwrap_err(), RpcError::Truncated);
        let mut reply_not_call = bytes.clone();
        reply_not_call[7] = 1;
        assert_eq!(parse_call(&reply_not_call).unwrap_err(), RpcError::NotACall);
    }

    #[test]
    fn accepted_replies() {
        let words = |b: Vec<u8>| b.chunks(4).map(|c| u32::from_be_bytes(c.try_into().unwrap())).collect::<Vec<_>>();
        assert_eq!(words(reply(9, Accept::Success, &[2049])), [9, 1, 0, 0, 0, 0, 2049]);
        assert_eq!(words(reply(9, Accept::ProgMismatch { low: 2, high: 4 }, &[])), [9, 1, 0, 0, 0, 2, 2, 4]);
    }
}
