//! What a failed check of the installed system adds to its error: for each failed unit, the
//! console's lines about it. A unit that failed before journald ran has an empty journal
//! (`systemd-sysctl.service` failing at `Couldn't write '4194304' to 'kernel/pid_max'`), and
//! its cause is only on the console. Pure: text in, text out.

use regex::Regex;

/// Most console lines quoted for one unit (the last ones).
const LINES_PER_UNIT: usize = 12;

/// The units `systemctl --failed` lists in `diagnosis` (`● systemd-sysctl.service loaded
/// failed failed Apply Kernel Variables`), in order, each once.
pub fn failed_units(diagnosis: &str) -> Vec<String> {
    let unit = Regex::new(r"(?m)^\W*([A-Za-z0-9@_.:\\-]+\.(?:service|mount|socket|timer|path|swap|target|device|scope|slice|automount))\s+\S+\s+\S+\s+failed\b")
        .expect("valid pattern");
    let mut units: Vec<String> = Vec::new();
    for found in unit.captures_iter(diagnosis) {
        if !units.contains(&found[1].to_owned()) {
            units.push(found[1].to_owned());
        }
    }
    units
}

/// The console lines about `unit`: those naming it or its program (`systemd-sysctl[241]:
/// Couldn't write …`), and systemd's own lines about it (`[FAILED] Failed to start …` names
/// its description, which the caller passes when it has it). The last [`LINES_PER_UNIT`].
pub fn console_lines_about<'a>(unit: &str, description: Option<&str>, console: &'a str) -> Vec<&'a str> {
    let program = unit.rsplit_once('.').map_or(unit, |(base, _)| base).trim_end_matches('@');
    let lines: Vec<&str> = console
        .lines()
        .filter(|line| line.contains(unit) || line.contains(&format!("{program}[")) || line.contains(&format!("{program}:")) || description.is_some_and(|d| !d.is_empty() && line.contains(d)))
        .collect();
    lines[lines.len().saturating_sub(LINES_PER_UNIT)..].to_vec()
}

/// A unit's description as `systemctl --failed` shows it (what follows `failed failed`).
pub fn description(unit: &str, diagnosis: &str) -> Option<String> {
    diagnosis.lines().find(|l| l.contains(unit)).and_then(|l| l.split_once(" failed ")).and_then(|(_, rest)| rest.trim().strip_prefix("failed")).map(|d| d.trim().to_owned()).filter(|d| !d.is_empty())
}

/// The shell command that prints the boot's journal around `unit`'s program: what came just
/// before and after it, whichever unit logged it.
pub fn journal_around(unit: &str) -> String {
    let program = unit.rsplit_once('.').map_or(unit, |(base, _)| base).trim_end_matches('@');
    let quoted = program.replace('\'', "");
    format!("journalctl -b --no-pager -o short-monotonic | grep -F -C 3 -- '{quoted}' | tail -n 30")
}

#[cfg(test)]
mod test {
    use super::*;

    const FAILED: &str = "  UNIT                   LOAD   ACTIVE SUB    DESCRIPTION\n\
● systemd-sysctl.service loaded failed failed Apply Kernel Variables\n\
● foo@bar.service        loaded failed failed Foo for bar\n\n\
LOAD   = Reflects whether the unit definition was properly loaded.\n\
2 loaded units listed.\n\
--- journal of systemd-sysctl.service\n\
--- journal of foo@bar.service\n";

    #[test]
    fn failed_units_are_read_from_systemctls_list() {
        assert_eq!(failed_units(FAILED), ["systemd-sysctl.service", "foo@bar.service"]);
        assert_eq!(failed_units("0 loaded units listed.\n"), Vec::<String>::new());
        assert_eq!(description("systemd-sysctl.service", FAILED).as_deref(), Some("Apply Kernel Variables"));
    }

    /// The cause of a unit that failed before journald ran is on the console only: its
    /// program's line and systemd's status line are quoted, other lines are not.
    #[test]
    fn the_consoles_lines_about_a_unit_are_quoted() {
        let console = "[    1.200] systemd[1]: Starting Apply Kernel Variables...\n\
[    1.250] systemd-sysctl[241]: Couldn't write '4194304' to 'kernel/pid_max', ignoring: Invalid argument\n\
[    1.300] [FAILED] Failed to start Apply Kernel Variables.\n\
[    1.310] systemd-udevd[250]: starting version 252\n\
[    1.320] See 'systemctl status systemd-sysctl.service' for details.\n";
        let lines = console_lines_about("systemd-sysctl.service", Some("Apply Kernel Variables"), console);
        assert_eq!(lines.len(), 4, "{lines:#?}");
        assert!(lines[1].contains("Couldn't write '4194304' to 'kernel/pid_max'"));
        assert!(!lines.iter().any(|l| l.contains("udevd")));
        assert!(journal_around("systemd-sysctl.service").contains("grep -F -C 3 -- 'systemd-sysctl'"));
    }
}
