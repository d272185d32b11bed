//! [`Mac`]: an Ethernet address, the one type for a MAC in frames, events, VMs, DHCP and the
//! lab. It is compared as a value and written one way (`52:54:00:1a:5e:01`).

use std::fmt;
use std::str::FromStr;

/// An Ethernet (MAC) address.
///
/// ```
/// use pxelab::net::Mac;
/// let mac: Mac = "52:54:00:1a:5e:01".parse().unwrap();
/// assert_eq!(mac, Mac([0x52, 0x54, 0x00, 0x1a, 0x5e, 0x01]));
/// assert_eq!(mac.to_string(), "52:54:00:1a:5e:01");
/// assert_eq!(mac.hex(), "5254001a5e01");
/// ```
#[derive(Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Mac(pub [u8; 6]);

impl Mac {
    /// The broadcast address.
    pub const BROADCAST: Mac = Mac([0xff; 6]);

    /// The address's bytes.
    pub const fn bytes(self) -> [u8; 6] {
        self.0
    }

    /// The source address of an Ethernet frame (`None`: shorter than a header).
    pub fn source_of(frame: &[u8]) -> Option<Mac> {
        Some(Mac(frame.get(6..12)?.try_into().ok()?))
    }

    /// The destination address of an Ethernet frame (`None`: shorter than a header).
    pub fn destination_of(frame: &[u8]) -> Option<Mac> {
        Some(Mac(frame.get(0..6)?.try_into().ok()?))
    }

    /// Whether it is a group (multicast or broadcast) address.
    pub fn is_group(self) -> bool {
        self.0[0] & 1 == 1
    }

    /// The twelve hex digits without separators, as UEFI device paths write it (`MAC(…)`).
    pub fn hex(self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }
}

impl From<[u8; 6]> for Mac {
    fn from(bytes: [u8; 6]) -> Self {
        Mac(bytes)
    }
}

impl From<Mac> for [u8; 6] {
    fn from(mac: Mac) -> Self {
        mac.0
    }
}

impl fmt::Display for Mac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [a, b, c, d, e, g] = self.0;
        write!(f, "{a:02x}:{b:02x}:{c:02x}:{d:02x}:{e:02x}:{g:02x}")
    }
}

impl fmt::Debug for Mac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// Text that is not a MAC address.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a MAC address like 52:54:00:1a:5e:01")]
pub struct MacParseError(String);

impl FromStr for Mac {
    type Err = MacParseError;

    /// Six hex bytes separated by `:` or `-`.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let err = || MacParseError(text.to_owned());
        let parts: Vec<&str> = text.split([':', '-']).collect();
        if parts.len() != 6 || parts.iter().any(|p| p.len() != 2) {
            return Err(err());
        }
        let mut bytes = [0; 6];
        for (byte, part) in bytes.iter_mut().zip(parts) {
            *byte = u8::from_str_radix(part, 16).map_err(|_| err())?;
        }
        Ok(Mac(bytes))
    }
}

impl serde::Serialize for Mac {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Mac {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer)?.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn text_and_json_round_trip_and_bad_text_is_refused() {
        let mac = Mac([0x52, 0x54, 0x00, 0xab, 0xcd, 0x01]);
        assert_eq!(mac.to_string().parse::<Mac>(), Ok(mac));
        assert_eq!("52-54-00-AB-CD-01".parse::<Mac>(), Ok(mac));
        let json = serde_json::to_string(&mac).unwrap();
        assert_eq!(json, "\"52:54:00:ab:cd:01\"");
        assert_eq!(serde_json::from_str::<Mac>(&json).unwrap(), mac);
        for bad in ["", "52:54:00:ab:cd", "52:54:00:ab:cd:01:02", "52:54:00:ab:cd:g1", "5254:00:ab:cd:01:0"] {
            assert!(bad.parse::<Mac>().is_err(), "{bad:?}");
        }
        assert_eq!(Mac::source_of(&[0; 11]), None);
        assert!(Mac::BROADCAST.is_group() && !mac.is_group());
    }
}
