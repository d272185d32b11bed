//! Helpers shared by the end-to-end scenarios in `tests/`.

/// PIDs of live QEMU processes whose parent is this process.
pub fn qemu_children() -> Vec<u32> {
    let me = std::process::id();
    let Ok(entries) = std::fs::read_dir("/proc") else { return Vec::new() };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            // "pid (comm) state ppid ..."; comm may hold spaces, so split after the last ')'.
            let Some((head, tail)) = stat.rsplit_once(')') else { return false };
            let ppid = tail.split_whitespace().nth(1).and_then(|p| p.parse::<u32>().ok());
            head.contains("(qemu-system") && ppid == Some(me)
        })
        .collect()
}

/// Whether `pid` is a live (not zombie) QEMU process.
pub fn qemu_alive(pid: u32) -> bool {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    match stat.rsplit_once(')') {
        Some((head, tail)) => head.contains("(qemu-system") && !tail.trim_start().starts_with('Z'),
        None => false,
    }
}

/// Write `len` bytes of a deterministic pseudo-random sequence (xorshift64) to `path`.
pub fn write_pseudo_random(path: &std::path::Path, len: usize) -> std::io::Result<()> {
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut data = Vec::with_capacity(len + 8);
    while data.len() < len {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        data.extend_from_slice(&state.to_le_bytes());
    }
    data.truncate(len);
    std::fs::write(path, data)
}

/// An error and its sources, one per line, for test failure messages.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out += &format!("\ncaused by: {s}");
        source = s.source();
    }
    out
}
