//! One AFL++ entry point for every target: `target NAME` fuzzes `pxelab::fuzz::TARGETS[NAME]`.

fn main() {
    let name = std::env::args().nth(1).unwrap_or_default();
    let Some((_, target)) = pxelab::fuzz::TARGETS.iter().find(|(n, _)| *n == name) else {
        let names: Vec<&str> = pxelab::fuzz::TARGETS.iter().map(|(n, _)| *n).collect();
        eprintln!("usage: target NAME, one of {}", names.join(", "));
        std::process::exit(2);
    };
    afl::fuzz!(|data: &[u8]| target(data));
}
