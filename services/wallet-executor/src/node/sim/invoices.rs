//! Invoices at the simulated nodes: issuing, settling, and our node's settlement log.
//!
//! Each node numbers its invoices as it adds them (`add_index`, from 1) and its settlements as
//! they happen (`settle_index`, from 1), as LND does. A subscription to our node's settlements
//! replays the log after the caller's index, then follows it: it is woken through a `watch`
//! channel that carries the latest settle index, and always reads the log itself, so it never
//! skips an entry, however late it wakes.

use std::{collections::VecDeque, sync::Arc, time::Duration};

use futures::{StreamExt, stream::BoxStream};
use oa_invoice::{InvoiceRequest, InvoiceSigner, PaymentHash, Preimage};
use oa_money::Msat;
use tokio::sync::watch;

use super::{
    CreatedInvoice, FINAL_CLTV_DELTA, InvoiceState, SimError, SimInvoice, SimNetwork, State,
    derive_bytes, effective_state, index_of,
};
use crate::node::{InvoiceStatus, NodeError, NodeInvoice};

/// Settled invoices a subscription reads from the log at a time.
const SUBSCRIPTION_BATCH: usize = 64;

/// What wakes our node's settlement subscribers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct Signal {
    /// Our node's latest settle index.
    pub settle_index: u64,
    /// Bumped to drop every open subscription (an injected fault).
    pub epoch: u64,
}

pub(super) type Signals = Arc<watch::Sender<Signal>>;

pub(super) fn signals() -> Signals {
    Arc::new(watch::channel(Signal::default()).0)
}

impl SimNetwork {
    pub(super) fn create_invoice_at(
        &self,
        s: &mut State,
        alias: &str,
        amount: Option<Msat>,
        description: &str,
        expiry: Duration,
        now_ms: u64,
    ) -> Result<CreatedInvoice, SimError> {
        let idx = index_of(s, alias)?;
        s.invoice_counter += 1;
        let counter = s.invoice_counter;
        // Preimages are derived, not random, so a seeded run is reproducible end to end.
        let preimage = Preimage(derive_bytes(
            self.seed,
            &format!("preimage/{alias}/{counter}/{now_ms}"),
        ));
        let payment_hash = preimage.payment_hash();
        let secret = derive_bytes(self.seed, &format!("secret/{alias}/{counter}"));
        let node = &mut s.nodes[idx];
        let bolt11 = InvoiceSigner::new(node.secret).create_invoice(&InvoiceRequest {
            network: self.network,
            amount,
            payment_hash,
            payment_secret: secret,
            description: description.to_owned(),
            created_at: Duration::from_millis(now_ms),
            expiry,
            min_final_cltv_expiry_delta: u64::from(FINAL_CLTV_DELTA),
        })?;
        let expires_at_ms = (now_ms / 1000)
            .saturating_add(expiry.as_secs())
            .saturating_mul(1000);
        node.add_index += 1;
        node.invoices.insert(
            payment_hash,
            SimInvoice {
                bolt11: bolt11.clone(),
                preimage,
                amount,
                expires_at_ms,
                state: InvoiceState::Open,
                add_index: node.add_index,
                settle_index: 0,
                created_at_ms: now_ms,
                settled_at_ms: 0,
                amount_paid: Msat::ZERO,
            },
        );
        let node_pubkey = node.pubkey.to_string();
        s.payee_of.insert(payment_hash, idx);
        Ok(CreatedInvoice {
            bolt11,
            payment_hash,
            node_pubkey,
        })
    }

    /// Wakes settlement subscribers if our node settled something since the last signal.
    pub(super) fn publish(&self, s: &State) {
        let settle_index = s.nodes[Self::our_index(s)].settle_index;
        self.signals.send_if_modified(|v| {
            let changed = v.settle_index != settle_index;
            v.settle_index = settle_index;
            changed
        });
    }

    /// Our node's settlements after `after`, replayed then followed (see the module docs).
    pub(super) fn settled_stream(
        &self,
        after: u64,
    ) -> BoxStream<'static, Result<NodeInvoice, NodeError>> {
        struct Follow {
            sim: SimNetwork,
            cursor: u64,
            rx: watch::Receiver<Signal>,
            epoch: u64,
            buf: VecDeque<NodeInvoice>,
            done: bool,
        }
        let rx = self.signals.subscribe();
        let epoch = rx.borrow().epoch;
        let start = Follow {
            sim: self.clone(),
            cursor: after,
            rx,
            epoch,
            buf: VecDeque::new(),
            done: false,
        };
        futures::stream::unfold(start, |mut f| async move {
            if f.done {
                return None;
            }
            loop {
                if let Some(inv) = f.buf.pop_front() {
                    return Some((Ok(inv), f));
                }
                // Mark the signal seen before reading the log: a settlement after the read
                // changes the signal again and wakes us below.
                let signal = *f.rx.borrow_and_update();
                if signal.epoch != f.epoch {
                    f.done = true;
                    return Some((
                        Err(NodeError::Unavailable(
                            "the invoice subscription was dropped".into(),
                        )),
                        f,
                    ));
                }
                let batch = {
                    let s = f.sim.lock();
                    settled_after(&s, Self::our_index(&s), f.cursor, SUBSCRIPTION_BATCH)
                };
                if let Some(last) = batch.last() {
                    f.cursor = last.settle_index;
                    f.buf.extend(batch);
                    continue;
                }
                if f.rx.changed().await.is_err() {
                    return None;
                }
            }
        })
        .boxed()
    }

    /// Ends every open settlement subscription with an `Unavailable` error, as a dropped
    /// connection to the node would.
    pub fn drop_invoice_subscriptions(&self) {
        self.signals.send_modify(|v| v.epoch += 1);
    }
}

/// Settles invoice `hash` at node `dest` with `amount_paid`; returns its preimage, or `None` if
/// the node does not know it.
pub(super) fn settle(
    s: &mut State,
    dest: usize,
    hash: &PaymentHash,
    amount_paid: Msat,
    now_ms: u64,
) -> Option<Preimage> {
    let node = &mut s.nodes[dest];
    let inv = node.invoices.get_mut(hash)?;
    node.settle_index += 1;
    inv.state = InvoiceState::Settled;
    inv.settle_index = node.settle_index;
    inv.settled_at_ms = now_ms;
    inv.amount_paid = amount_paid;
    node.settled.push(*hash);
    Some(inv.preimage.clone())
}

/// An invoice of node `idx` as the node trait reports it.
pub(super) fn to_node_invoice(hash: &PaymentHash, inv: &SimInvoice, now_ms: u64) -> NodeInvoice {
    NodeInvoice {
        bolt11: inv.bolt11.clone(),
        payment_hash: *hash,
        amount: inv.amount.unwrap_or(Msat::ZERO),
        amount_paid: inv.amount_paid,
        status: match effective_state(inv, now_ms) {
            InvoiceState::Open => InvoiceStatus::Open,
            InvoiceState::Settled => InvoiceStatus::Settled,
            InvoiceState::Cancelled => InvoiceStatus::Cancelled,
            InvoiceState::Expired => InvoiceStatus::Expired,
        },
        add_index: inv.add_index,
        settle_index: inv.settle_index,
        created_at_ms: inv.created_at_ms,
        settled_at_ms: inv.settled_at_ms,
    }
}

/// At most `max` settlements of node `idx` after settle index `after`, in order.
fn settled_after(s: &State, idx: usize, after: u64, max: usize) -> Vec<NodeInvoice> {
    let node = &s.nodes[idx];
    let start = usize::try_from(after)
        .unwrap_or(usize::MAX)
        .min(node.settled.len());
    node.settled[start..]
        .iter()
        .take(max)
        .filter_map(|h| node.invoices.get(h).map(|inv| to_node_invoice(h, inv, 0)))
        .collect()
}
