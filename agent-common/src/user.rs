//! Userland impls for the shared types (daemon side only).

use crate::{
    config::AgentConfig,
    flow::{FlowInfo, PeerKey, RefusalKey, RefusalRecord},
    process::{PendingArgv, ProcessEvent, ScopeEntry, TracepointOffsets},
    target::{TargetMatch, TargetValue},
};

// SAFETY: each type is #[repr(C)], Copy, has no pointers and its padding is
// written out as fields (checked by assert_layout!), so any byte pattern the
// kernel writes is a valid value.
unsafe impl aya::Pod for AgentConfig {}
// SAFETY: as above.
unsafe impl aya::Pod for FlowInfo {}
// SAFETY: as above.
unsafe impl aya::Pod for PeerKey {}
// SAFETY: as above.
unsafe impl aya::Pod for RefusalKey {}
// SAFETY: as above.
unsafe impl aya::Pod for RefusalRecord {}
// SAFETY: as above.
unsafe impl aya::Pod for ProcessEvent {}
// SAFETY: as above.
unsafe impl aya::Pod for TracepointOffsets {}
// SAFETY: as above.
unsafe impl aya::Pod for ScopeEntry {}
// SAFETY: as above.
unsafe impl aya::Pod for PendingArgv {}
// SAFETY: as above.
unsafe impl aya::Pod for TargetMatch {}
// SAFETY: as above.
unsafe impl aya::Pod for TargetValue {}
