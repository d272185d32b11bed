//! The lab's servers. Each protocol's logic is pure (bytes in, replies out, time passed in)
//! and sits apart from the task that binds it to the lab's network.

pub mod dhcp;
pub mod tftp;

