//! Settled invoices as a gapless stream, from LND's `SubscribeInvoices`.
//!
//! LND's subscription from a settle index `k > 0` first replays every invoice settled with an
//! index above `k`, then follows live events (adds, settlements, cancellations) without a gap:
//! we keep the settlements, in order, each once. From index 0, though, LND replays nothing
//! (index 0 means "live only" for backwards compatibility), so:
//! 1. we subscribe live (from 0) first, so nothing settled from now on can be missed;
//! 2. we look through the invoices (`ListInvoices`, paged by add index) for the first settled
//!    one (the lowest settle index);
//! 3. if there is none, every settlement is still to come, and the live subscription sees it;
//!    otherwise we yield that invoice and subscribe again from its index, which LND replays
//!    from without a gap.
//!
//! The stream ends with `Unavailable` when the subscription breaks (or LND ends it): the
//! consumer resubscribes from the last settle index it handled and misses nothing.

use std::collections::VecDeque;

use futures::stream::{self, BoxStream, StreamExt};
use oa_proto::lnrpc::{self, InvoiceState, InvoiceSubscription, ListInvoiceRequest};
use tonic::Streaming;

use super::{LndNode, convert::invoice, status::broken_stream};
use crate::node::{NodeError, NodeInvoice};

/// Invoices per `ListInvoices` page while looking for the first settled invoice.
const LIST_PAGE: u64 = 1_000;
/// Pages looked through at most (ten million invoices): past that the node is not one we
/// were built for, and the call fails rather than run on.
const MAX_LIST_PAGES: u32 = 10_000;

pub(super) fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Opens LND's subscription with `settle_index` (0: live only).
async fn open(node: &LndNode, settle_index: u64) -> Result<Streaming<lnrpc::Invoice>, NodeError> {
    let req = InvoiceSubscription {
        add_index: 0,
        settle_index,
    };
    node.unary(node.lightning.clone().subscribe_invoices(req))
        .await
}

/// The settled invoice with the lowest settle index, if any.
async fn first_settled(node: &LndNode) -> Result<Option<NodeInvoice>, NodeError> {
    let mut offset = 0;
    let mut first: Option<NodeInvoice> = None;
    for _ in 0..MAX_LIST_PAGES {
        let page = node
            .unary(node.lightning.clone().list_invoices(ListInvoiceRequest {
                pending_only: false,
                index_offset: offset,
                num_max_invoices: LIST_PAGE,
                reversed: false,
            }))
            .await?;
        let now = now_ms();
        for inv in &page.invoices {
            if inv.state != InvoiceState::Settled as i32 || inv.settle_index == 0 {
                continue;
            }
            if first
                .as_ref()
                .is_none_or(|f| inv.settle_index < f.settle_index)
            {
                first = Some(invoice(inv, now)?);
            }
        }
        // Settle indexes start at 1: nothing can come before it.
        if first.as_ref().is_some_and(|f| f.settle_index == 1) {
            return Ok(first);
        }
        if page.invoices.is_empty() || page.last_index_offset <= offset {
            return Ok(first);
        }
        offset = page.last_index_offset;
    }
    Err(NodeError::Unavailable(format!(
        "more than {} invoices at the node: cannot find the first settled one",
        u64::from(MAX_LIST_PAGES) * LIST_PAGE
    )))
}

pub(super) async fn subscribe_settled(
    node: &LndNode,
    after: u64,
) -> Result<BoxStream<'static, Result<NodeInvoice, NodeError>>, NodeError> {
    if after > 0 {
        let live = open(node, after).await?;
        return Ok(settled(live, after, VecDeque::new()));
    }
    let live = open(node, 0).await?;
    match first_settled(node).await? {
        None => Ok(settled(live, 0, VecDeque::new())),
        Some(first) => {
            drop(live);
            let from = first.settle_index;
            let rest = open(node, from).await?;
            Ok(settled(rest, from, VecDeque::from([first])))
        }
    }
}

struct State {
    prefix: VecDeque<NodeInvoice>,
    stream: Option<Streaming<lnrpc::Invoice>>,
    last: u64,
}

/// `prefix`, then the settlements of `stream` above `last`, in order; ends after the first
/// error.
fn settled(
    stream: Streaming<lnrpc::Invoice>,
    last: u64,
    prefix: VecDeque<NodeInvoice>,
) -> BoxStream<'static, Result<NodeInvoice, NodeError>> {
    let state = State {
        prefix,
        stream: Some(stream),
        last,
    };
    stream::unfold(state, |mut st| async move {
        if let Some(first) = st.prefix.pop_front() {
            return Some((Ok(first), st));
        }
        let mut stream = st.stream.take()?;
        loop {
            match stream.message().await {
                Ok(Some(inv)) => {
                    if inv.state != InvoiceState::Settled as i32 || inv.settle_index <= st.last {
                        continue;
                    }
                    return match invoice(&inv, now_ms()) {
                        Ok(found) => {
                            st.last = found.settle_index;
                            st.stream = Some(stream);
                            Some((Ok(found), st))
                        }
                        Err(e) => Some((Err(e), st)),
                    };
                }
                Ok(None) => {
                    return Some((
                        Err(NodeError::Unavailable(
                            "LND ended the invoice subscription".into(),
                        )),
                        st,
                    ));
                }
                Err(s) => return Some((Err(broken_stream(&s)), st)),
            }
        }
    })
    .boxed()
}
