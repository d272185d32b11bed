//! Seeded fault injection on the segment: what happens to each frame crossing a port.
//!
//! Per port and direction a frame may be lost, delayed (with jitter, which also reorders),
//! duplicated, held back past later frames, or corrupted; a port's link may be down. The
//! decisions come from one seeded generator, so a run with the same seed and the same frames
//! makes the same decisions. No clock is read here: delays are returned, the segment's event
//! loop schedules them.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use super::switch::PortId;

/// Which way a frame crosses a port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    /// From the VM into the switch.
    In,
    /// From the switch to the VM.
    Out,
}

/// How a port's traffic in one direction is impaired. Probabilities are fractions (0.05 is 5 %);
/// on the command line (`pxelab run --loss 5`) they are percents.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize, serde::Deserialize, clap::Args)]
pub struct Impairment {
    #[arg(long, value_name = "PERCENT", value_parser = percent, default_value = "0", help = "Frames lost, in percent")]
    pub loss: f64,
    #[arg(long, value_parser = parse_duration, default_value = "0ms", help = "Delay of each frame (e.g. 50ms, 1s)")]
    pub delay: Duration,
    /// Each frame's delay is `delay` ± up to `jitter`, uniformly.
    #[arg(long, value_parser = parse_duration, default_value = "0ms", help = "Each frame's delay varies by up to this much either way")]
    pub jitter: Duration,
    #[arg(long, value_name = "PERCENT", value_parser = percent, default_value = "0", help = "Frames duplicated, in percent")]
    pub duplicate: f64,
    /// Chance that a frame is held back by an extra `delay + jitter + 1 ms`, behind later ones.
    #[arg(long, value_name = "PERCENT", value_parser = percent, default_value = "0", help = "Frames held back behind later ones, in percent")]
    pub reorder: f64,
    /// Chance that one byte of the frame (past the Ethernet header) is flipped.
    #[arg(long, value_name = "PERCENT", value_parser = percent, default_value = "0", help = "Frames with one byte flipped, in percent")]
    pub corrupt: f64,
}

/// Which way of a port's traffic an impairment applies to.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Ways {
    /// From the VM into the switch.
    In,
    /// From the switch to the VM.
    Out,
    /// Both.
    #[default]
    Both,
}

impl Ways {
    /// The directions these ways are.
    pub fn directions(self) -> &'static [Direction] {
        match self {
            Ways::In => &[Direction::In],
            Ways::Out => &[Direction::Out],
            Ways::Both => &[Direction::In, Direction::Out],
        }
    }
}

/// A percentage (`5`, `0.5`) as a fraction.
pub fn percent(text: &str) -> Result<f64, String> {
    let value: f64 = text.trim().parse().map_err(|_| format!("{text:?} is not a percentage like 5 or 0.5"))?;
    match (0.0..=100.0).contains(&value) {
        true => Ok(value / 100.0),
        false => Err(format!("{text:?} is not between 0 and 100")),
    }
}

/// A fraction as the percentage [`percent`] reads.
pub fn percent_text(fraction: f64) -> String {
    ((fraction * 100.0 * 1e6).round() / 1e6).to_string()
}

/// `50ms`, `2s`, `1.5s`, or a number of milliseconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let (number, unit) = match text.find(|c: char| c.is_ascii_alphabetic()) {
        Some(at) => text.split_at(at),
        None => (text, "ms"),
    };
    let value: f64 = number.trim().parse().map_err(|_| format!("{text:?} is not a duration like 50ms or 2s"))?;
    let seconds = match unit {
        "ms" => value / 1000.0,
        "s" => value,
        other => return Err(format!("unknown unit {other:?} in {text:?}: use ms or s")),
    };
    Duration::try_from_secs_f64(seconds).map_err(|e| format!("{text:?}: {e}"))
}

/// A duration as [`parse_duration`] reads it, to the millisecond.
pub fn duration_text(d: Duration) -> String {
    format!("{}ms", d.as_millis())
}

impl Impairment {
    /// Loss only.
    pub fn loss(fraction: f64) -> Self {
        Impairment { loss: fraction, ..Default::default() }
    }

    /// Delay with jitter only.
    pub fn delay(delay: Duration, jitter: Duration) -> Self {
        Impairment { delay, jitter, ..Default::default() }
    }
}

/// One fault injected into one frame (or a link), for the event log.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase", tag = "fault")]
pub enum Injected {
    Drop,
    LinkDown,
    /// Dropped: its IP packet of `len` bytes is over the link's `mtu` (a misconfigured
    /// switch port).
    TooBig { len: usize, mtu: usize },
    Duplicate,
    Reorder { held_ms: u64 },
    Corrupt { offset: usize },
}

/// What becomes of one frame at one port: the copies to deliver, each after its delay, and
/// the faults injected on the way.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Fate {
    pub copies: Vec<(Duration, Vec<u8>)>,
    pub injected: Vec<Injected>,
}

/// The segment's faults: impairments by port and direction, links that are down.
#[derive(Debug)]
pub struct Faults {
    rng: fastrand::Rng,
    seed: u64,
    impaired: HashMap<(PortId, Direction), Impairment>,
    down: HashSet<PortId>,
    /// Ports whose link drops frames with an IP packet over this size.
    mtu: HashMap<PortId, usize>,
}

impl Faults {
    /// No faults yet; decisions drawn from `seed`.
    pub fn new(seed: u64) -> Self {
        Faults { rng: fastrand::Rng::with_seed(seed), seed, impaired: HashMap::new(), down: HashSet::new(), mtu: HashMap::new() }
    }

    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// Impair `port`'s traffic in `direction` (replacing what was set).
    pub fn impair(&mut self, port: PortId, direction: Direction, impairment: Impairment) {
        self.impaired.insert((port, direction), impairment);
    }

    /// Remove every impairment of `port`.
    pub fn clear(&mut self, port: PortId) {
        self.impaired.retain(|(p, _), _| *p != port);
    }

    /// Drop `port`'s frames, either way, whose payload (the IP packet) is over `mtu` bytes.
    pub fn set_mtu(&mut self, port: PortId, mtu: usize) {
        self.mtu.insert(port, mtu);
    }

    /// Take `port`'s link down (`false`) or up; a down link passes nothing either way.
    pub fn set_link(&mut self, port: PortId, up: bool) {
        if up {
            self.down.remove(&port);
        } else {
            self.down.insert(port);
        }
    }

    pub fn link_up(&self, port: PortId) -> bool {
        !self.down.contains(&port)
    }

    /// Decide the fate of `frame` crossing `port` in `direction`.
    pub fn fate(&mut self, port: PortId, direction: Direction, frame: &[u8]) -> Fate {
        if self.down.contains(&port) {
            return Fate { copies: vec![], injected: vec![Injected::LinkDown] };
        }
        if let Some(&mtu) = self.mtu.get(&port) {
            let len = frame.len().saturating_sub(14);
            if len > mtu {
                return Fate { copies: vec![], injected: vec![Injected::TooBig { len, mtu }] };
            }
        }
        let Some(imp) = self.impaired.get(&(port, direction)).copied() else {
            return Fate { copies: vec![(Duration::ZERO, frame.to_vec())], injected: vec![] };
        };
        let mut fate = Fate::default();
        if self.chance(imp.loss) {
            fate.injected.push(Injected::Drop);
            return fate;
        }
        let mut frame = frame.to_vec();
        if self.chance(imp.corrupt) && frame.len() > 14 {
            let offset = self.rng.usize(14..frame.len());
            frame[offset] ^= 1 << self.rng.u8(0..8);
            fate.injected.push(Injected::Corrupt { offset });
        }
        let mut delay = self.delay(&imp);
        if self.chance(imp.reorder) {
            let held = imp.delay + imp.jitter + Duration::from_millis(1);
            delay += held;
            fate.injected.push(Injected::Reorder { held_ms: held.as_millis() as u64 });
        }
        if self.chance(imp.duplicate) {
            fate.injected.push(Injected::Duplicate);
            fate.copies.push((self.delay(&imp), frame.clone()));
        }
        fate.copies.insert(0, (delay, frame));
        fate
    }

    fn chance(&mut self, p: f64) -> bool {
        p > 0.0 && self.rng.f64() < p
    }

    fn delay(&mut self, imp: &Impairment) -> Duration {
        let jitter = imp.jitter.as_micros() as i64;
        let offset = if jitter > 0 { self.rng.i64(-jitter..=jitter) } else { 0 };
        let micros = (imp.delay.as_micros() as i64 + offset).max(0);
        Duration::from_micros(micros as u64)
    }
}

#[cfg(test)]
mod test {
    use super::*;

    const FRAME: [u8; 60] = [0xa5; 60];

    fn run(seed: u64, imp: Impairment, n: usize) -> Vec<Fate> {
        let mut faults = Faults::new(seed);
        faults.impair(1, Direction::In, imp);
        (0..n).map(|_| faults.fate(1, Direction::In, &FRAME)).collect()
    }

    /// A port with an MTU drops, either way, frames whose IP packet is over it and passes the
    /// rest: what a misconfigured switch port does to TFTP blocks that do not fit.
    #[test]
    fn frames_over_a_ports_mtu_are_dropped_either_way() {
        let mut faults = Faults::new(1);
        faults.set_mtu(1, 1400);
        let (fits, big) = (vec![0u8; 14 + 1400], vec![0u8; 14 + 1401]);
        for direction in [Direction::In, Direction::Out] {
            assert_eq!(faults.fate(1, direction, &fits).copies.len(), 1);
            assert_eq!(faults.fate(1, direction, &big), Fate { copies: vec![], injected: vec![Injected::TooBig { len: 1401, mtu: 1400 }] });
        }
        assert_eq!(faults.fate(2, Direction::In, &big).copies.len(), 1, "another port");
    }

    #[test]
    fn the_same_seed_makes_the_same_decisions() {
        let imp = Impairment { loss: 0.2, duplicate: 0.1, corrupt: 0.1, reorder: 0.1, ..Impairment::delay(Duration::from_millis(50), Duration::from_millis(20)) };
        assert_eq!(run(7, imp, 500), run(7, imp, 500));
        assert_ne!(run(7, imp, 500), run(8, imp, 500));
    }

    #[test]
    fn rates_and_delays_are_what_was_asked() {
        let imp = Impairment { loss: 0.05, ..Impairment::delay(Duration::from_millis(50), Duration::from_millis(20)) };
        let fates = run(1, imp, 10_000);
        let lost = fates.iter().filter(|f| f.copies.is_empty()).count();
        assert!((350..650).contains(&lost), "{lost} of 10000 lost at 5 %");
        for (delay, frame) in fates.iter().flat_map(|f| &f.copies) {
            assert!((30..=70).contains(&delay.as_millis()), "{delay:?}");
            assert_eq!(frame[..], FRAME[..]);
        }
        let spread: HashSet<u128> = fates.iter().flat_map(|f| &f.copies).map(|(d, _)| d.as_millis()).collect();
        assert!(spread.len() > 30, "jitter spreads delays");
    }

    #[test]
    fn duplicates_and_corruption_are_reported() {
        let fates = run(3, Impairment { duplicate: 1.0, corrupt: 1.0, ..Default::default() }, 20);
        for fate in fates {
            assert_eq!(fate.copies.len(), 2);
            let Some(Injected::Corrupt { offset }) = fate.injected.first() else { panic!("{fate:?}") };
            assert!(*offset >= 14 && fate.copies[0].1[*offset] != FRAME[*offset]);
            assert_eq!(fate.copies[0].1, fate.copies[1].1, "the duplicate carries the same bytes");
        }
    }

    #[test]
    fn a_down_link_passes_nothing_either_way_and_other_ports_are_untouched() {
        let mut faults = Faults::new(0);
        faults.set_link(2, false);
        for dir in [Direction::In, Direction::Out] {
            assert_eq!(faults.fate(2, dir, &FRAME).injected, [Injected::LinkDown]);
        }
        assert_eq!(faults.fate(3, Direction::In, &FRAME).copies, vec![(Duration::ZERO, FRAME.to_vec())]);
        faults.set_link(2, true);
        assert_eq!(faults.fate(2, Direction::Out, &FRAME).copies.len(), 1);
    }
}
