//! TEMPORARY (c-engine): the names of b-sched's scheduler that the links use, as the contract
//! gives them, until b-sched is merged; then this file goes.

use p2p_protocol::ErrorCode;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct FileIx(pub u32);

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct ChunkRef {
    pub file: FileIx,
    pub index: u32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct HostIx(pub usize);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum HostFault {
    Unreachable,
    Timeout,
    ClosedIdle,
    Busy,
    Refused(ErrorCode),
    WrongNode,
    BadData(BadData),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum BadData {
    HashMismatch,
    TooLarge,
    WrongReply,
    BadRecord,
}

pub(crate) const PIPELINE_DEPTH: usize = 32;
