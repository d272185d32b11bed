//! QEMU's `-netdev stream` framing: a 4-byte big-endian length, then an Ethernet frame.

/// Largest frame accepted from a stream (jumbo frames included); a larger length means the
/// stream is corrupt.
pub const MAX_FRAME: usize = 65_536;

/// Prefix `frame` with its length.
pub fn encode(frame: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(4 + frame.len());
    encode_into(&mut out, frame);
    out
}

/// Append `frame`, prefixed with its length, to `out`.
pub fn encode_into(out: &mut Vec<u8>, frame: &[u8]) {
    out.extend_from_slice(&(frame.len() as u32).to_be_bytes());
    out.extend_from_slice(frame);
}

/// The stream is not QEMU framing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("frame length {0} exceeds {MAX_FRAME}")]
pub struct FramingError(pub usize);

/// Reassembles frames from stream reads split anywhere.
#[derive(Debug, Default)]
pub struct Decoder {
    buf: Vec<u8>,
}

impl Decoder {
    /// Add bytes read from the stream; returns the frames they complete.
    pub fn push(&mut self, bytes: &[u8]) -> Result<Vec<Vec<u8>>, FramingError> {
        self.buf.extend_from_slice(bytes);
        let mut frames = Vec::new();
        let mut at = 0;
        while self.buf.len() - at >= 4 {
            let len = u32::from_be_bytes(self.buf[at..at + 4].try_into().expect("4 bytes")) as usize;
            if len > MAX_FRAME {
                return Err(FramingError(len));
            }
            if self.buf.len() - at - 4 < len {
                break;
            }
            frames.push(self.buf[at + 4..at + 4 + len].to_vec());
            at += 4 + len;
        }
        self.buf.drain(..at);
        Ok(frames)
    }
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn frames_split_across_reads() {
        let stream: Vec<u8> = [encode(b"first frame"), encode(b""), encode(&[0xa5; 1514])].concat();
        let mut d = Decoder::default();
        let mut frames = Vec::new();
        for chunk in stream.chunks(7) {
            frames.extend(d.push(chunk).unwrap());
        }
        assert_eq!(frames, vec![b"first frame".to_vec(), vec![], vec![0xa5; 1514]]);
    }

    #[test]
    fn absurd_length_is_an_error() {
        assert_eq!(Decoder::default().push(&[0xff, 0xff, 0xff, 0xff]), Err(FramingError(0xffff_ffff)));
    }
}
