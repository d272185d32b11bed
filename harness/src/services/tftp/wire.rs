//! TFTP packets (RFC 1350, OACK from RFC 2347).

/// TFTP error codes (RFC 1350, 8 from RFC 2347).
pub mod code {
    pub const NOT_DEFINED: u16 = 0;
    pub const FILE_NOT_FOUND: u16 = 1;
    pub const ACCESS_VIOLATION: u16 = 2;
    pub const ILLEGAL_OPERATION: u16 = 4;
    pub const OPTION_REFUSED: u16 = 8;
}

/// A TFTP packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Packet {
    /// Read request: file name, mode, options in the order sent (names lower-cased).
    Rrq { filename: String, mode: String, options: Vec<(String, String)> },
    Wrq { filename: String },
    Data { block: u16, data: Vec<u8> },
    Ack { block: u16 },
    Error { code: u16, message: String },
    Oack { options: Vec<(String, String)> },
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    #[error("packet too short")]
    Truncated,
    #[error("unknown opcode {0}")]
    Opcode(u16),
    #[error("string field not NUL-terminated or not UTF-8")]
    BadString,
    #[error("OACK without option name-value pairs")]
    BadOptions,
}

fn strings(mut body: &[u8]) -> Result<Vec<String>, WireError> {
    let mut out = Vec::new();
    while !body.is_empty() {
        let end = body.iter().position(|&b| b == 0).ok_or(WireError::BadString)?;
        out.push(std::str::from_utf8(&body[..end]).map_err(|_| WireError::BadString)?.to_owned());
        body = &body[end + 1..];
    }
    Ok(out)
}

fn pairs(fields: &[String]) -> Vec<(String, String)> {
    fields.chunks_exact(2).map(|kv| (kv[0].to_ascii_lowercase(), kv[1].clone())).collect()
}

impl Packet {
    /// Parse a UDP payload.
    pub fn parse(bytes: &[u8]) -> Result<Self, WireError> {
        if bytes.len() < 4 {
            return Err(WireError::Truncated);
        }
        let opcode = u16::from_be_bytes([bytes[0], bytes[1]]);
        let number = u16::from_be_bytes([bytes[2], bytes[3]]);
        Ok(match opcode {
            1 | 2 => {
                let fields = strings(&bytes[2..])?;
                if fields.len() < 2 {
                    return Err(WireError::Truncated);
                }
                let filename = fields[0].clone();
                if opcode == 2 {
                    Packet::Wrq { filename }
                } else {
                    Packet::Rrq { filename, mode: fields[1].to_ascii_lowercase(), options: pairs(&fields[2..]) }
                }
            }
            3 => Packet::Data { block: number, data: bytes[4..].to_vec() },
            4 => Packet::Ack { block: number },
            5 => {
                let message = strings(&bytes[4..]).ok().and_then(|f| f.into_iter().next()).unwrap_or_default();
                Packet::Error { code: number, message }
            }
            // An OACK acknowledges at least one option, each a name and a value (RFC 2347).
            6 => {
                let fields = strings(&bytes[2..])?;
                if fields.is_empty() || fields.len() % 2 != 0 {
                    return Err(WireError::BadOptions);
                }
                Packet::Oack { options: pairs(&fields) }
            }
            other => return Err(WireError::Opcode(other)),
        })
    }

    /// Encode for sending.
    pub fn emit(&self) -> Vec<u8> {
        let mut out = Vec::new();
        let cstr = |out: &mut Vec<u8>, s: &str| {
            out.extend_from_slice(s.as_bytes());
            out.push(0);
        };
        match self {
            Packet::Rrq { filename, mode, options } => {
                out.extend_from_slice(&1u16.to_be_bytes());
                cstr(&mut out, filename);
                cstr(&mut out, mode);
                for (k, v) in options {
                    cstr(&mut out, k);
                    cstr(&mut out, v);
                }
            }
            Packet::Wrq { filename } => {
                out.extend_from_slice(&2u16.to_be_bytes());
                cstr(&mut out, filename);
                cstr(&mut out, "octet");
            }
            Packet::Data { block, data } => {
                out.extend_from_slice(&3u16.to_be_bytes());
                out.extend_from_slice(&block.to_be_bytes());
                out.extend_from_slice(data);
            }
            Packet::Ack { block } => {
                out.extend_from_slice(&4u16.to_be_bytes());
                out.extend_from_slice(&block.to_be_bytes());
            }
            Packet::Error { code, message } => {
                out.extend_from_slice(&5u16.to_be_bytes());
                out.extend_from_slice(&code.to_be_bytes());
                cstr(&mut out, message);
            }
            Packet::Oack { options } => {
                out.extend_from_slice(&6u16.to_be_bytes());
                for (k, v) in options {
                    cstr(&mut out, k);
                    cstr(&mut out, v);
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod test {
    use super::*;

    /// OVMF's second request, as captured: blksize 1468, windowsize 4.
    const OVMF_RRQ: &[u8] = b"\x00\x01nixos/bootx64.efi\x00octet\x00blksize\x001468\x00windowsize\x004\x00";

    #[test]
    fn parse_and_emit_a_read_request() {
        let p = Packet::parse(OVMF_RRQ).unwrap();
        assert_eq!(
            p,
            Packet::Rrq {
                filename: "nixos/bootx64.efi".into(),
                mode: "octet".into(),
                options: vec![("blksize".into(), "1468".into()), ("windowsize".into(), "4".into())],
            }
        );
        assert_eq!(p.emit(), OVMF_RRQ);
    }

    #[test]
    fn data_ack_error_oack_roundtrip() {
        for p in [
            Packet::Data { block: 65535, data: vec![0xa5; 3] },
            Packet::Ack { block: 0 },
            Packet::Error { code: code::FILE_NOT_FOUND, message: "no such file".into() },
            Packet::Oack { options: vec![("tsize".into(), "8388608".into())] },
        ] {
            assert_eq!(Packet::parse(&p.emit()).unwrap(), p);
        }
    }

    #[test]
    fn malformed_packets_are_errors() {
        assert_eq!(Packet::parse(b"\x00\x01"), Err(WireError::Truncated));
        assert_eq!(Packet::parse(b"\x00\x09\x00\x00"), Err(WireError::Opcode(9)));
        assert_eq!(Packet::parse(b"\x00\x01name-without-nul"), Err(WireError::BadString));
        assert_eq!(Packet::parse(b"\x00\x01\xff\xfe\x00octet\x00"), Err(WireError::BadString));
        // Found by the tftp_wire fuzz target: a lone string parsed as an OACK of no options.
        assert_eq!(Packet::parse(b"\x00\x06nixos/bootx64.eF;;0\x00"), Err(WireError::BadOptions));
    }
}
