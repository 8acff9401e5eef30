//! What rpiimg knows about Raspberry Pi OS (and Ubuntu) root filesystems:
//! where things live and what their states mean. One place that grows
//! with new OS releases.

pub(crate) mod dropins;
pub(crate) mod presets;
pub(crate) mod release;
pub(crate) mod sshd;
pub(crate) mod units;
pub(crate) mod users;
