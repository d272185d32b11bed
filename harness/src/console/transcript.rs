//! The console's whole plain-text transcript and the cursor that matches consume.

use regex::Regex;

use super::ansi::PlainText;

/// A successful match: what matched, its capture groups, and the text between the previous
/// match and this one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Match {
    pub matched: String,
    /// Capture groups (group 1 first); `None` for a group that did not take part.
    pub groups: Vec<Option<String>>,
    pub before: String,
}

/// A fail-fast pattern matched before the awaited one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailFast {
    pub pattern: String,
    /// The whole console line the pattern matched in.
    pub line: String,
}

/// Everything the console printed, as plain text, with a read cursor.
///
/// A search looks only at text after the cursor, and a match moves the cursor past it, so a
/// later wait never matches old output again.
#[derive(Debug, Default)]
pub struct Transcript {
    decoder: PlainText,
    text: String,
    cursor: usize,
    /// Raw bytes received, control sequences included.
    received: u64,
}

impl Transcript {
    /// Append raw console bytes; returns the plain text they added.
    pub fn push(&mut self, bytes: &[u8]) -> String {
        self.received += bytes.len() as u64;
        let added = self.decoder.push(bytes);
        self.text.push_str(&added);
        added
    }

    /// Look for `want` after the cursor. A fail-fast pattern that matches earlier (or when
    /// `want` does not match at all) wins. `None`: neither matched yet.
    pub fn find(&mut self, want: &Regex, fail_fast: &[Regex]) -> Option<Result<Match, FailFast>> {
        let unread = &self.text[self.cursor..];
        let wanted = want.captures(unread);
        let wanted_at = wanted.as_ref().map_or(usize::MAX, |c| c.get(0).expect("group 0").start());
        let failed = fail_fast
            .iter()
            .filter_map(|re| re.find(unread).map(|m| (m.start(), re)))
            .filter(|(start, _)| *start < wanted_at)
            .min_by_key(|(start, _)| *start);
        if let Some((start, re)) = failed {
            let line_start = unread[..start].rfind('\n').map_or(0, |i| i + 1);
            let line_end = unread[start..].find('\n').map_or(unread.len(), |i| start + i);
            return Some(Err(FailFast { pattern: re.as_str().to_owned(), line: unread[line_start..line_end].to_owned() }));
        }
        let caps = wanted?;
        let whole = caps.get(0).expect("group 0");
        let found = Match {
            matched: whole.as_str().to_owned(),
            groups: caps.iter().skip(1).map(|g| g.map(|g| g.as_str().to_owned())).collect(),
            before: unread[..whole.start()].to_owned(),
        };
        self.cursor += whole.end();
        Some(Ok(found))
    }

    /// The last `n` lines of the transcript (read or not).
    pub fn tail(&self, n: usize) -> String {
        let lines: Vec<&str> = self.text.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    /// How many raw bytes the console has received.
    pub fn received(&self) -> u64 {
        self.received
    }

    /// The whole plain-text transcript.
    pub fn text(&self) -> &str {
        &self.text
    }
}

#[cfg(test)]
mod test {
    use super::*;

    fn re(s: &str) -> Regex {
        Regex::new(s).unwrap()
    }

    #[test]
    fn match_split_across_chunks_consumes_output() {
        let mut t = Transcript::default();
        t.push(b"booting...\nlogin");
        assert_eq!(t.find(&re("login: "), &[]), None);
        t.push(b": \x1b[0m");
        let m = t.find(&re("log(in): "), &[]).unwrap().unwrap();
        assert_eq!((m.matched.as_str(), m.before.as_str()), ("login: ", "booting...\n"));
        assert_eq!(m.groups, vec![Some("in".to_owned())]);
        // Consumed: the same text does not match twice.
        assert_eq!(t.find(&re("login: "), &[]), None);
        t.push(b"\nlogin: ");
        assert_eq!(t.find(&re("login: "), &[]).unwrap().unwrap().before, "\n");
    }

    #[test]
    fn fail_fast_before_the_wanted_text_wins() {
        let panic = [re("Kernel panic - not syncing")];
        let mut t = Transcript::default();
        t.push(b"[ 1.0] Kernel panic - not syncing: Attempted to kill init!\n[ 1.1] ready\n");
        let ff = t.find(&re("ready"), &panic).unwrap().unwrap_err();
        assert_eq!(ff.line, "[ 1.0] Kernel panic - not syncing: Attempted to kill init!");

        let mut t = Transcript::default();
        t.push(b"ready\nKernel panic - not syncing\n");
        assert!(t.find(&re("ready"), &panic).unwrap().is_ok(), "wanted text came first");
        assert!(t.find(&re("never"), &panic).unwrap().is_err(), "panic is still unread");
    }

    #[test]
    fn fail_fast_in_colour() {
        let ff = [re("Something went wrong, starting interactive shell")];
        let mut t = Transcript::default();
        t.push(b"\x1b[1;31mSomething went wrong, starting\x1b[0m");
        assert_eq!(t.find(&re("done"), &ff), None);
        t.push(b"\x1b[1;31m interactive shell...\x1b[0m\r\n");
        assert!(t.find(&re("done"), &ff).unwrap().is_err());
    }

    #[test]
    fn tail_keeps_the_last_lines() {
        let mut t = Transcript::default();
        for i in 0..50 {
            t.push(format!("line {i}\r\n").as_bytes());
        }
        let tail = t.tail(40);
        assert!(tail.starts_with("line 10\n") && tail.ends_with("line 49"), "{tail}");
    }
}
