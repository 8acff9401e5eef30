//! What rpiimg knows about Raspberry Pi OS (and Ubuntu) root filesystems:
//! where things live and what their states mean. One place that grows
//! with new OS releases.

pub mod dropins;
pub mod presets;
pub mod release;
pub mod sshd;
pub mod units;
pub mod users;
