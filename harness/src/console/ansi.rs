//! Streaming text decoding for the serial console: UTF-8 split across reads, ANSI escapes.

/// Turns raw console bytes into plain text: invalid UTF-8 becomes U+FFFD, ANSI escape
/// sequences (CSI, OSC, charset selection) and carriage returns are dropped. Input may be
/// split anywhere, even inside an escape sequence or a multi-byte character.
#[derive(Debug, Default)]
pub struct PlainText {
    pending: Vec<u8>,
    state: Escape,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum Escape {
    #[default]
    None,
    /// After ESC.
    Start,
    /// Inside `ESC [ ...` until a final byte in `@`..=`~`.
    Csi,
    /// Inside `ESC ] ...` until BEL or `ESC \`.
    Osc,
    /// `ESC` seen inside an OSC string.
    OscEsc,
    /// After `ESC (` or `ESC )`: one charset byte follows.
    Charset,
}

impl PlainText {
    /// Decode one chunk, returning the plain text it completes.
    pub fn push(&mut self, bytes: &[u8]) -> String {
        let mut pending = std::mem::take(&mut self.pending);
        pending.extend_from_slice(bytes);
        let mut text = String::new();
        let mut rest = &pending[..];
        loop {
            match std::str::from_utf8(rest) {
                Ok(valid) => {
                    self.filter(valid, &mut text);
                    rest = &[];
                    break;
                }
                Err(e) => {
                    let (valid, after) = rest.split_at(e.valid_up_to());
                    self.filter(std::str::from_utf8(valid).expect("checked prefix"), &mut text);
                    match e.error_len() {
                        Some(bad) => {
                            self.filter("\u{FFFD}", &mut text);
                            rest = &after[bad..];
                        }
                        None => {
                            rest = after;
                            break;
                        }
                    }
                }
            }
        }
        self.pending = rest.to_vec();
        text
    }

    fn filter(&mut self, input: &str, out: &mut String) {
        for c in input.chars() {
            self.state = match (self.state, c) {
                (Escape::None, '\x1b') => Escape::Start,
                (Escape::None, '\n' | '\t') => {
                    out.push(c);
                    Escape::None
                }
                (Escape::None, c) if c.is_control() => Escape::None,
                (Escape::None, c) => {
                    out.push(c);
                    Escape::None
                }
                (Escape::Start, '[') => Escape::Csi,
                (Escape::Start, ']') => Escape::Osc,
                (Escape::Start, '(' | ')') => Escape::Charset,
                (Escape::Start | Escape::Charset, _) => Escape::None,
                (Escape::Csi, '@'..='~') => Escape::None,
                (Escape::Csi, _) => Escape::Csi,
                (Escape::Osc | Escape::OscEsc, '\x07') => Escape::None,
                (Escape::Osc | Escape::OscEsc, '\x1b') => Escape::OscEsc,
                (Escape::OscEsc, '\\') => Escape::None,
                (Escape::Osc | Escape::OscEsc, _) => Escape::Osc,
            }
        }
    }
}

#[cfg(test)]
mod test {
    use super::*;

    fn all(chunks: &[&[u8]]) -> String {
        let mut p = PlainText::default();
        chunks.iter().map(|c| p.push(c)).collect()
    }

    #[test]
    fn colour_codes_are_stripped() {
        let raw = b"\x1b[1;32m<<< NixOS fully automated install >>>\x1b[0m\r\n";
        assert_eq!(all(&[raw]), "<<< NixOS fully automated install >>>\n");
    }

    #[test]
    fn escape_split_across_chunks() {
        assert_eq!(all(&[b"a\x1b", b"[1", b";31", b"mb\x1b[", b"0mc"]), "abc");
    }

    #[test]
    fn utf8_split_across_chunks_and_invalid_bytes() {
        let euro = "€".as_bytes();
        assert_eq!(all(&[b"x", &euro[..1], &euro[1..], b"\xff", b"y"]), "x€\u{FFFD}y");
    }

    #[test]
    fn osc_title_and_charset_selection() {
        assert_eq!(all(&[b"\x1b]0;title\x07A\x1b]2;t\x1b\\B\x1b(BC"]), "ABC");
    }
}
