//! [`Indexes`]: every index server this peer uses, told and asked as one.
//!
//! * **Telling** ([`Indexes::tell`]): a share or an unshare goes to every index this peer is
//!   registered with, at once, except those down (their last heartbeat failed), which are
//!   not waited for. One index refusing or not answering is a warning naming it; only when
//!   none took it is it the caller's error. An index that missed anything (down, or failed
//!   it) registers us afresh, with everything shared then, once it answers again.
//! * **Asking** ([`Indexes::locate`], [`Indexes::search`], ...): every index is asked at
//!   once, registered or not (an index answers questions from anyone). Once one has
//!   answered (a refusal too), the others get [`LATE_ANSWER_GRACE`] more: an index that is gone (a machine
//!   switched off, not answering a connect) does not hold a download up for the whole
//!   connect timeout. The answers that came are combined ([`super::merge`]) in the peer's
//!   order of its indexes.

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use futures::stream::FuturesUnordered;
use p2p_protocol::{FileSummary, HostInfo, PeerSummary};
use tracing::warn;

use super::client::{Located, Session};
use super::link::IndexLink;
use super::merge;
use crate::config::IndexSpec;
use crate::error::PeerError;

/// How long the other indexes may still answer a question once one has.
pub const LATE_ANSWER_GRACE: Duration = Duration::from_secs(1);

/// Every index server this peer uses, in the order given (the first found first).
#[derive(Debug)]
pub(crate) struct Indexes {
    /// std Mutex: copied or pushed to, never held across an await.
    links: Mutex<Vec<Arc<IndexLink>>>,
    timeout: Duration,
    tls: p2p_transport::Tls,
}

impl Indexes {
    /// Links to the indexes `specs` name (one per address); nothing is sent yet.
    pub fn new(specs: &[IndexSpec], timeout: Duration, tls: p2p_transport::Tls) -> Self {
        let indexes = Self {
            links: Mutex::new(Vec::with_capacity(specs.len())),
            timeout,
            tls,
        };
        for spec in specs {
            indexes.add(spec);
        }
        indexes
    }

    /// Every link, in order.
    pub fn links(&self) -> Vec<Arc<IndexLink>> {
        self.links.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Whether this peer uses no index (direct downloads only, unless one is added).
    pub fn is_empty(&self) -> bool {
        self.links
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_empty()
    }

    /// The first index given, if any.
    pub fn first(&self) -> Option<Arc<IndexLink>> {
        self.links
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .first()
            .cloned()
    }

    /// Adds a link to the index `spec` names, unless this peer has one to that address
    /// already: the new link, or `None`.
    pub fn add(&self, spec: &IndexSpec) -> Option<Arc<IndexLink>> {
        let mut links = self.links.lock().unwrap_or_else(|e| e.into_inner());
        if links.iter().any(|l| l.client.server() == spec.addr) {
            return None;
        }
        let link = Arc::new(IndexLink::new(spec, self.timeout, self.tls.clone()));
        links.push(link.clone());
        Some(link)
    }

    /// Runs `tell` on every index this peer is registered with, at once. `Ok` when at least
    /// one took it (the others are named in warnings) or the peer uses no index; otherwise
    /// the first error. With indexes but no registration at all: not registered (the
    /// shares are announced when an index registers us again).
    pub async fn tell<'a, F, Fut>(&'a self, what: &str, tell: F) -> Result<(), PeerError>
    where
        F: Fn(Arc<IndexLink>, Session) -> Fut,
        Fut: Future<Output = Result<(), PeerError>> + 'a,
    {
        let links = self.links();
        if links.is_empty() {
            return Ok(());
        }
        let mut registered: Vec<(Arc<IndexLink>, Session)> = Vec::new();
        for link in links {
            match link.session() {
                // Not waited for: told everything when it is back.
                Some(_) if link.is_down() => link.missed(),
                Some(session) => registered.push((link, session)),
                None => {}
            }
        }
        if registered.is_empty() {
            return Err(not_registered());
        }
        let results = futures::future::join_all(
            registered
                .iter()
                .map(|(link, session)| tell(link.clone(), session.clone())),
        )
        .await;
        let mut took = false;
        let mut first_err = None;
        for ((link, _), result) in registered.iter().zip(results) {
            match result {
                Ok(()) => took = true,
                Err(err) => {
                    link.missed();
                    if registered.len() > 1 {
                        warn!(index = %link.client.server(), %err, "an index server did not take {what}");
                    }
                    first_err.get_or_insert(err);
                }
            }
        }
        match first_err {
            Some(err) if !took => Err(err),
            _ => Ok(()),
        }
    }

    /// Asks every index at once with `ask`: each answer that came, in the order of the
    /// indexes (see the module doc for when the slow ones stop counting). With no index,
    /// nothing.
    async fn ask<'a, T, F, Fut>(&'a self, ask: F) -> Vec<Result<T, PeerError>>
    where
        F: Fn(Arc<IndexLink>) -> Fut,
        Fut: Future<Output = Result<T, PeerError>> + 'a,
    {
        let links = self.links();
        let mut pending: FuturesUnordered<_> = links
            .iter()
            .enumerate()
            .map(|(at, link)| {
                let answer = ask(link.clone());
                async move { (at, answer.await) }
            })
            .collect();
        let mut answers: Vec<Option<Result<T, PeerError>>> =
            std::iter::repeat_with(|| None).take(links.len()).collect();
        let mut deadline: Option<tokio::time::Instant> = None;
        loop {
            let next = next_within(&mut pending, deadline).await;
            let Some((at, answer)) = next else { break };
            // Any answer from an index (a refusal too) starts the grace; one that could not be
            // reached does not.
            let answered = matches!(answer, Ok(_) | Err(PeerError::IndexRefused { .. }));
            if answered && deadline.is_none() {
                deadline = Some(tokio::time::Instant::now() + LATE_ANSWER_GRACE);
            }
            answers[at] = Some(answer);
        }
        answers.into_iter().flatten().collect()
    }

    /// What `id` (a full id or a unique prefix) names, with the hosts every index that knows
    /// it lists ([`merge::located`]).
    pub async fn locate(&self, id: &str) -> Result<Located, PeerError> {
        let answers = self
            .ask(|link| async move { link.client.locate(id).await })
            .await;
        merge::located(id, answers)
    }

    /// The hosts of the file or folder with full id `id`, from every index that knows it.
    pub async fn hosts(&self, id: &str) -> Result<Vec<HostInfo>, PeerError> {
        let answers = self
            .ask(|link| async move {
                Ok(match link.client.locate(id).await? {
                    Located::File(found) => found.hosts,
                    Located::Folder { hosts, .. } | Located::InFolder { hosts, .. } => hosts,
                })
            })
            .await;
        merge::hosts(answers)
    }

    /// Files on the network, from every index that answers: one line per file, and the
    /// largest count any index gave (at least the lines).
    pub async fn list_files(&self) -> Result<(Vec<FileSummary>, u64), PeerError> {
        let answers = self
            .ask(|link| async move { link.client.list_files().await })
            .await;
        merge::file_lists(answers)
    }

    /// Files whose names contain every word of `query`, from every index that answers.
    pub async fn search(&self, query: &str) -> Result<(Vec<FileSummary>, u64), PeerError> {
        let answers = self
            .ask(|link| async move { link.client.search(query).await })
            .await;
        merge::file_lists(answers)
    }

    /// Peers registered with any index that answers, one line per node.
    pub async fn list_peers(&self) -> Result<(Vec<PeerSummary>, u64), PeerError> {
        let answers = self
            .ask(|link| async move { link.client.list_peers().await })
            .await;
        merge::peer_lists(answers)
    }
}

/// The next of `pending` to end, unless `deadline` (if any) passes first.
pub(crate) async fn next_within<S: futures::Stream + Unpin>(
    pending: &mut S,
    deadline: Option<tokio::time::Instant>,
) -> Option<S::Item> {
    match deadline {
        None => pending.next().await,
        Some(at) => tokio::time::timeout_at(at, pending.next())
            .await
            .ok()
            .flatten(),
    }
}

/// A share while no index has us registered.
pub(crate) fn not_registered() -> PeerError {
    PeerError::IndexRefused {
        code: p2p_protocol::ErrorCode::UnknownPeer,
        message: "not registered with the index right now; the file will be announced when the index is back".into(),
    }
}
