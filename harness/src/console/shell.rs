//! Framing shell commands on a serial console so their output and exit status can be read
//! back, even though the tty echoes what is typed.

/// Begin/end markers for one command. The typed line spells the markers with quotes split
/// in the middle (`'PXL''B7'`), so the tty's echo of the line never matches the markers
/// the shell prints (`PXLB7`).
pub struct Frame {
    id: u64,
}

impl Frame {
    pub fn new(id: u64) -> Self {
        Frame { id }
    }

    /// The line to type: marker, command (stderr folded in), marker with the exit status.
    pub fn command_line(&self, command: &str) -> String {
        let id = self.id;
        format!("echo 'PXL''B{id}'; ( {command} ) 2>&1; echo \"PXL\"\"E{id}:$?\"")
    }

    pub fn begin_pattern(&self) -> String {
        format!(r"PXLB{}\n", self.id)
    }

    /// Group 1 is the exit status; the text before the match is the command's output.
    pub fn end_pattern(&self) -> String {
        format!(r"PXLE{}:(\d+)\n", self.id)
    }
}

/// The command's output, without the final newline.
pub fn output(before_end: &str) -> String {
    before_end.strip_suffix('\n').unwrap_or(before_end).to_owned()
}

#[cfg(test)]
mod test {
    use super::*;
    use regex::Regex;

    #[test]
    fn echoed_line_never_matches_the_markers() {
        let frame = Frame::new(7);
        let typed = frame.command_line("grep -c PXLB7 /etc/x");
        assert_eq!(typed, "echo 'PXL''B7'; ( grep -c PXLB7 /etc/x ) 2>&1; echo \"PXL\"\"E7:$?\"");
        let echo = format!("{}\n", typed.replace("grep -c PXLB7 /etc/x", "true"));
        assert!(!Regex::new(&frame.begin_pattern()).unwrap().is_match(&echo));
        assert!(!Regex::new(&frame.end_pattern()).unwrap().is_match(&echo));
        let printed = "PXLE7:127\n";
        let caps = Regex::new(&frame.end_pattern()).unwrap().captures(printed).unwrap();
        assert_eq!(&caps[1], "127");
    }
}
