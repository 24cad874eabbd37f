//! The index servers a peer uses: several at once, each registered, heartbeaten and asked on
//! its own, their answers combined.
//!
//! * `merge`: one answer from what several indexes said about an id.

pub(crate) mod merge;
