//! The simulated chain and our node's on-chain wallet.
//!
//! Blocks are mined only when asked ([`super::SimNetwork::mine_blocks`]). A transaction enters
//! the mempool when it is broadcast and confirms in the next block mined (its position in the
//! block is its mempool order, from 1: position 0 is the coinbase). Transactions are real
//! `bitcoin` transactions (inputs, outputs, scripts; no witnesses), so a txid is the double
//! SHA-256 of its contents: deterministic, because every input is either one of our wallet's
//! outputs or a faucet outpoint derived from the seed.
//!
//! The wallet holds P2WPKH outputs whose keys are derived from the seed (receive and change
//! branches), on the sim's network. Its confirmed balance is the unspent outputs with at least
//! one confirmation (and, for the output of a force close, at least [`FORCE_CLOSE_CSV`]);
//! its unconfirmed balance is the unspent outputs still in the mempool, such as the change of a
//! send. A CSV-locked output counts in neither until it matures (LND shows it as "limbo" in its
//! pending channels, not in the wallet). Spends use confirmed outputs only, oldest first.
//!
//! Fees are estimated from a P2WPKH size model: 11 vbytes + 68 per input + 31 per output, at
//! the requested rate (or [`DEFAULT_SAT_PER_VBYTE`]). A change output below the dust limit is
//! left to the fee.

use std::{
    collections::{HashMap, HashSet},
    str::FromStr,
};

use bitcoin::{
    Address, Amount, CompressedPublicKey, OutPoint, ScriptBuf, Sequence, Transaction, TxIn, TxOut,
    Txid, Witness,
    absolute::LockTime,
    hashes::Hash as _,
    opcodes::all::{OP_CHECKMULTISIG, OP_PUSHNUM_2},
    secp256k1::{PublicKey, Secp256k1},
    transaction::Version,
};

use super::{derive_bytes, derive_key};
use crate::node::NodeError;

/// Height of the chain tip when the sim starts. The default topology's channels were confirmed
/// in blocks 100..=105, long before.
pub const START_HEIGHT: u32 = 200;
/// Confirmations a channel's funding transaction needs before the channel is usable (LND's
/// default on regtest is 3 as well for small channels).
pub const FUNDING_CONFIRMATIONS: u32 = 3;
/// Blocks our output of a force close stays locked (`to_self_delay`), as LND's default of 144.
pub const FORCE_CLOSE_CSV: u32 = 144;
/// Fee rate used when the caller leaves it to the node.
pub const DEFAULT_SAT_PER_VBYTE: u64 = 2;
/// Smallest output relayed (P2WPKH dust at the default relay fee).
pub const DUST_LIMIT_SAT: u64 = 294;
/// Confirmed on-chain balance of our node in the default topology (0.1 BTC), so channel opens
/// and sends work out of the box.
pub const STARTING_BALANCE_SAT: u64 = 10_000_000;

const TX_OVERHEAD_VBYTES: u64 = 11;
const INPUT_VBYTES: u64 = 68;
const OUTPUT_VBYTES: u64 = 31;

/// Estimated size of a transaction of P2WPKH inputs and outputs.
pub fn vsize(inputs: usize, outputs: usize) -> u64 {
    TX_OVERHEAD_VBYTES
        .saturating_add(INPUT_VBYTES.saturating_mul(inputs as u64))
        .saturating_add(OUTPUT_VBYTES.saturating_mul(outputs as u64))
}

/// A transaction the sim has seen.
pub(super) struct SimTx {
    pub txid: Txid,
    /// The block that confirmed it.
    pub height: Option<u32>,
    /// Its position in that block (from 1).
    pub pos: u32,
}

/// One output of our wallet.
struct Utxo {
    outpoint: OutPoint,
    value_sat: u64,
    /// The transaction that created it (index into `txs`).
    tx: usize,
    /// Confirmations needed before it can be spent (0 or 1: as soon as it confirms).
    csv: u32,
    spent: bool,
}

pub(super) struct Chain {
    seed: u64,
    network: bitcoin::Network,
    pub height: u32,
    pub txs: Vec<SimTx>,
    mempool: Vec<usize>,
    utxos: Vec<Utxo>,
    /// Send label -> transaction (labels make sends idempotent).
    labels: HashMap<String, usize>,
    /// How many transactions were built per label (never above 1).
    label_sends: HashMap<String, u32>,
    receive_index: u32,
    change_index: u32,
    faucet_index: u64,
    /// Scripts of every address of ours, to recognise outputs that pay us.
    ours: HashSet<ScriptBuf>,
}

/// A transaction the chain recorded: its index in the chain's list and its txid.
pub(super) struct Built {
    pub tx: usize,
    pub txid: Txid,
}

impl Chain {
    pub fn new(seed: u64, network: bitcoin::Network) -> Self {
        Chain {
            seed,
            network,
            height: START_HEIGHT,
            txs: Vec::new(),
            mempool: Vec::new(),
            utxos: Vec::new(),
            labels: HashMap::new(),
            label_sends: HashMap::new(),
            receive_index: 0,
            change_index: 0,
            faucet_index: 0,
            ours: HashSet::new(),
        }
    }

    fn our_key_address(&mut self, path: &str) -> Address {
        let secret = derive_key(self.seed, path);
        let pk = PublicKey::from_secret_key(&Secp256k1::signing_only(), &secret);
        let address = Address::p2wpkh(&CompressedPublicKey(pk), self.network);
        self.ours.insert(address.script_pubkey());
        address
    }

    /// A fresh receive address of our wallet.
    pub fn new_address(&mut self) -> Address {
        self.receive_index += 1;
        let i = self.receive_index;
        self.our_key_address(&format!("wallet/receive/{i}"))
    }

    /// A fresh change (internal) script of our wallet.
    pub fn change_script(&mut self) -> ScriptBuf {
        self.change_index += 1;
        let i = self.change_index;
        self.our_key_address(&format!("wallet/change/{i}"))
            .script_pubkey()
    }

    /// The P2WPKH script paying a node's own key (where a peer's channel balance goes on close).
    pub fn node_script(&self, pk: &PublicKey) -> ScriptBuf {
        Address::p2wpkh(&CompressedPublicKey(*pk), self.network).script_pubkey()
    }

    /// Parses an address for this chain's network; anything else is refused.
    pub fn parse_address(&self, s: &str) -> Result<Address, NodeError> {
        Address::from_str(s)
            .map_err(|e| NodeError::Refused(format!("invalid address: {e}")))?
            .require_network(self.network)
            .map_err(|e| NodeError::Refused(format!("address for another network: {e}")))
    }

    /// Our wallet's confirmed and unconfirmed balance, in satoshis.
    pub fn balance(&self) -> (u64, u64) {
        let (mut confirmed, mut unconfirmed) = (0u64, 0u64);
        for u in self.utxos.iter().filter(|u| !u.spent) {
            if self.txs[u.tx].height.is_none() {
                unconfirmed = unconfirmed.saturating_add(u.value_sat);
            } else if self.spendable(u) {
                confirmed = confirmed.saturating_add(u.value_sat);
            }
        }
        (confirmed, unconfirmed)
    }

    fn spendable(&self, u: &Utxo) -> bool {
        !u.spent && self.confirmations(u.tx) >= u.csv.max(1)
    }

    /// Confirmations of transaction `tx` (0 while in the mempool).
    pub fn confirmations(&self, tx: usize) -> u32 {
        self.txs[tx]
            .height
            .map_or(0, |h| self.height.saturating_sub(h).saturating_add(1))
    }

    /// The transaction sent under `label`, if any.
    pub fn labelled(&self, label: &str) -> Option<Txid> {
        self.labels.get(label).map(|&i| self.txs[i].txid)
    }

    /// How many transactions were built under `label` (exactly-once checks).
    pub fn label_sends(&self, label: &str) -> u32 {
        self.label_sends.get(label).copied().unwrap_or(0)
    }

    /// Records a transaction: outputs paying our scripts become wallet outputs (locked for
    /// `csv` confirmations); it confirms at the tip when `at_tip`, else waits in the mempool.
    fn record(&mut self, transaction: &Transaction, csv: u32, at_tip: bool) -> Built {
        let txid = transaction.compute_txid();
        let tx = self.txs.len();
        let (height, pos) = if at_tip {
            let pos = self
                .txs
                .iter()
                .filter(|t| t.height == Some(self.height))
                .count();
            (
                Some(self.height),
                u32::try_from(pos).unwrap_or(u32::MAX).saturating_add(1),
            )
        } else {
            self.mempool.push(tx);
            (None, 0)
        };
        self.txs.push(SimTx { txid, height, pos });
        for (vout, out) in transaction.output.iter().enumerate() {
            if self.ours.contains(&out.script_pubkey) {
                self.utxos.push(Utxo {
                    outpoint: OutPoint {
                        txid,
                        vout: u32::try_from(vout).unwrap_or(u32::MAX),
                    },
                    value_sat: out.value.to_sat(),
                    tx,
                    csv,
                    spent: false,
                });
            }
        }
        Built { tx, txid }
    }

    fn transaction(inputs: Vec<OutPoint>, output: Vec<TxOut>) -> Transaction {
        Transaction {
            version: Version::TWO,
            lock_time: LockTime::ZERO,
            input: inputs
                .into_iter()
                .map(|previous_output| TxIn {
                    previous_output,
                    script_sig: ScriptBuf::new(),
                    sequence: Sequence::ENABLE_RBF_NO_LOCKTIME,
                    witness: Witness::new(),
                })
                .collect(),
            output,
        }
    }

    /// A deposit from outside into a fresh receive address, confirmed in the tip block.
    pub fn deposit(&mut self, value_sat: u64) -> Txid {
        self.faucet_index += 1;
        let faucet = OutPoint {
            txid: Txid::from_byte_array(derive_bytes(
                self.seed,
                &format!("faucet/{}", self.faucet_index),
            )),
            vout: 0,
        };
        let script_pubkey = self.new_address().script_pubkey();
        let tx = Self::transaction(
            vec![faucet],
            vec![TxOut {
                value: Amount::from_sat(value_sat),
                script_pubkey,
            }],
        );
        self.record(&tx, 0, true).txid
    }

    /// Spends confirmed wallet outputs (oldest first) to `outputs` plus change, at
    /// `sat_per_vbyte` (0: the default). The transaction waits in the mempool.
    pub fn spend(
        &mut self,
        outputs: Vec<TxOut>,
        sat_per_vbyte: u64,
        label: Option<&str>,
    ) -> Result<Built, NodeError> {
        let rate = if sat_per_vbyte == 0 {
            DEFAULT_SAT_PER_VBYTE
        } else {
            sat_per_vbyte
        };
        if outputs.iter().any(|o| o.value.to_sat() < DUST_LIMIT_SAT) {
            return Err(NodeError::Refused(format!(
                "an output is below the dust limit of {DUST_LIMIT_SAT} sat"
            )));
        }
        let target = outputs
            .iter()
            .try_fold(0u64, |acc, o| acc.checked_add(o.value.to_sat()))
            .ok_or(NodeError::InsufficientFunds)?;
        let fee = |inputs: usize, outs: usize| vsize(inputs, outs).saturating_mul(rate);
        let mut selected = Vec::new();
        let mut total = 0u64;
        for (i, u) in self.utxos.iter().enumerate() {
            if !self.spendable(u) {
                continue;
            }
            selected.push(i);
            total = total.saturating_add(u.value_sat);
            if total >= target.saturating_add(fee(selected.len(), outputs.len() + 1)) {
                break;
            }
        }
        let with_change = fee(selected.len(), outputs.len() + 1);
        let change = match total.checked_sub(target.saturating_add(with_change)) {
            Some(c) if c >= DUST_LIMIT_SAT => Some(c),
            _ if total >= target.saturating_add(fee(selected.len(), outputs.len())) => None,
            _ => return Err(NodeError::InsufficientFunds),
        };
        let mut output = outputs;
        if let Some(c) = change {
            let script_pubkey = self.change_script();
            output.push(TxOut {
                value: Amount::from_sat(c),
                script_pubkey,
            });
        }
        let inputs = selected.iter().map(|&i| self.utxos[i].outpoint).collect();
        for &i in &selected {
            self.utxos[i].spent = true;
        }
        let built = self.record(&Self::transaction(inputs, output), 0, false);
        if let Some(label) = label.filter(|l| !l.is_empty()) {
            self.labels.insert(label.to_owned(), built.tx);
            *self.label_sends.entry(label.to_owned()).or_insert(0) += 1;
        }
        Ok(built)
    }

    /// Broadcasts a transaction spending an outpoint that is not a wallet output (a channel's
    /// funding output); our outputs in it are locked for `csv` confirmations.
    pub fn broadcast(&mut self, input: OutPoint, outputs: Vec<TxOut>, csv: u32) -> Built {
        self.record(&Self::transaction(vec![input], outputs), csv, false)
    }

    /// Mines one block: every mempool transaction confirms in it, in mempool order.
    pub fn mine(&mut self) {
        self.height = self.height.saturating_add(1);
        for (n, tx) in std::mem::take(&mut self.mempool).into_iter().enumerate() {
            self.txs[tx].height = Some(self.height);
            self.txs[tx].pos = u32::try_from(n).unwrap_or(u32::MAX).saturating_add(1);
        }
    }
}

/// The funding output script of a channel: P2WSH of a 2-of-2 multisig of both node keys
/// (sorted, as BOLT 3 says).
pub fn funding_script(a: &PublicKey, b: &PublicKey) -> ScriptBuf {
    let (x, y) = if a.serialize() <= b.serialize() {
        (a, b)
    } else {
        (b, a)
    };
    let witness = bitcoin::script::Builder::new()
        .push_opcode(OP_PUSHNUM_2)
        .push_key(&bitcoin::PublicKey::new(*x))
        .push_key(&bitcoin::PublicKey::new(*y))
        .push_opcode(OP_PUSHNUM_2)
        .push_opcode(OP_CHECKMULTISIG)
        .into_script();
    ScriptBuf::new_p2wsh(&witness.wscript_hash())
}

/// The funding outpoint of a channel of the default topology (confirmed before the sim's chain
/// starts, so its funding transaction is not in it).
pub fn genesis_funding(seed: u64, chan_id: u64) -> OutPoint {
    OutPoint {
        txid: Txid::from_byte_array(derive_bytes(seed, &format!("funding/{chan_id}"))),
        vout: 0,
    }
}
