//! RFC 6962 (RFC 9162 section 2.1) Merkle trees over an issuer's receipt log.
//!
//! The leaves of an issuer's tree are the 32 raw bytes of each receipt `hash`, in `log_index`
//! order. A leaf hashes as `SHA-256(0x00 || data)` and an interior node as
//! `SHA-256(0x01 || left || right)`; the tree of `n` leaves splits at the largest power of two
//! below `n`; the root of the empty tree is `SHA-256("")`. The domain-separation bytes make a
//! leaf impossible to pass off as a node, which is what makes inclusion and consistency proofs
//! sound.
//!
//! Proof generation follows RFC 6962 section 2.1.1 (`PATH`) and 2.1.2 (`SUBPROOF`); verification
//! is the iterative algorithm of RFC 9162 sections 2.1.3.2 and 2.1.4.2, which checks the proof
//! length implicitly (a proof with a missing, extra or garbage element fails).

use sha2::{Digest as _, Sha256};

/// A SHA-256 node or leaf hash of the tree.
pub type Digest = [u8; 32];

/// Why a Merkle proof was refused or could not be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MerkleError {
    /// The leaf index is not below the tree size.
    #[error("leaf index {index} is not below tree size {size}")]
    IndexOutOfRange {
        /// The leaf index.
        index: u64,
        /// The tree size.
        size: u64,
    },
    /// The two sizes of a consistency proof are not `first <= second`, or exceed the tree.
    #[error("tree sizes {first} and {second} are not ordered or exceed the tree")]
    BadSizes {
        /// The older size.
        first: u64,
        /// The newer size.
        second: u64,
    },
    /// The proof has the wrong number of elements for the sizes given.
    #[error("proof has the wrong number of elements")]
    WrongLength,
    /// The proof is well-formed but the recomputed root does not match.
    #[error("recomputed root does not match")]
    RootMismatch,
}

/// `SHA-256(0x00 || data)`.
#[must_use]
pub fn leaf_hash(data: &[u8]) -> Digest {
    let mut h = Sha256::new();
    h.update([0u8]);
    h.update(data);
    h.finalize().into()
}

/// `SHA-256(0x01 || left || right)`.
#[must_use]
pub fn node_hash(left: &Digest, right: &Digest) -> Digest {
    let mut h = Sha256::new();
    h.update([1u8]);
    h.update(left);
    h.update(right);
    h.finalize().into()
}

/// `SHA-256("")`: the root of the empty tree.
#[must_use]
pub fn empty_root() -> Digest {
    Sha256::digest(b"").into()
}

/// The largest power of two strictly below `n` (`n >= 2`).
fn split(n: usize) -> usize {
    debug_assert!(n >= 2);
    1 << (usize::BITS - 1 - (n - 1).leading_zeros())
}

/// The root (RFC 6962 `MTH`) of a tree whose leaf hashes are `leaves`.
#[must_use]
pub fn root(leaves: &[Digest]) -> Digest {
    let mut acc = Accumulator::default();
    for leaf in leaves {
        acc.push(*leaf);
    }
    acc.root()
}

/// Builds a tree leaf by leaf and yields the root of the leaves so far in `O(log n)`: it keeps
/// the roots of the perfect subtrees the tree decomposes into (a "compact range"). The auditor
/// uses it to check every checkpoint of a log in one pass.
#[derive(Debug, Clone, Default)]
pub struct Accumulator {
    /// Roots of the perfect subtrees, largest (leftmost) first, with their heights.
    stack: Vec<(u32, Digest)>,
    size: u64,
}

impl Accumulator {
    /// Appends a leaf hash.
    pub fn push(&mut self, leaf: Digest) {
        let mut node = (0u32, leaf);
        while let Some(&(height, left)) = self.stack.last() {
            if height != node.0 {
                break;
            }
            self.stack.pop();
            node = (height + 1, node_hash(&left, &node.1));
        }
        self.stack.push(node);
        self.size += 1;
    }

    /// Leaves pushed so far.
    #[must_use]
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The roots of the perfect subtrees the tree decomposes into, leftmost (largest) first:
    /// one per set bit of [`Accumulator::size`]. With the size, enough to resume appending.
    #[must_use]
    pub fn frontier(&self) -> Vec<Digest> {
        self.stack.iter().map(|(_, d)| *d).collect()
    }

    /// Resumes a tree of `size` leaves from its [`Accumulator::frontier`]; `None` if the
    /// number of roots does not match the size.
    #[must_use]
    pub fn from_frontier(size: u64, frontier: &[Digest]) -> Option<Accumulator> {
        let heights: Vec<u32> = (0..u64::BITS)
            .rev()
            .filter(|bit| size >> bit & 1 == 1)
            .collect();
        if heights.len() != frontier.len() {
            return None;
        }
        Some(Accumulator {
            stack: heights.into_iter().zip(frontier.iter().copied()).collect(),
            size,
        })
    }

    /// The root of the leaves pushed so far.
    #[must_use]
    pub fn root(&self) -> Digest {
        let mut iter = self.stack.iter().rev();
        let Some(&(_, mut acc)) = iter.next() else {
            return empty_root();
        };
        for (_, left) in iter {
            acc = node_hash(left, &acc);
        }
        acc
    }
}

/// RFC 6962 `PATH(index, leaves)`: the inclusion proof of leaf `index`.
///
/// # Errors
///
/// [`MerkleError::IndexOutOfRange`] unless `index < leaves.len()`.
pub fn inclusion_proof(leaves: &[Digest], index: u64) -> Result<Vec<Digest>, MerkleError> {
    let size = leaves.len() as u64;
    let i = usize::try_from(index)
        .ok()
        .filter(|&i| i < leaves.len())
        .ok_or(MerkleError::IndexOutOfRange { index, size })?;
    let mut proof = Vec::new();
    path(i, leaves, &mut proof);
    Ok(proof)
}

fn path(m: usize, d: &[Digest], out: &mut Vec<Digest>) {
    if d.len() <= 1 {
        return;
    }
    let k = split(d.len());
    if m < k {
        path(m, &d[..k], out);
        out.push(root(&d[k..]));
    } else {
        path(m - k, &d[k..], out);
        out.push(root(&d[..k]));
    }
}

/// RFC 6962 `PROOF(first, leaves[..second])`: the consistency proof between the tree of the
/// first `first` leaves and that of the first `second` leaves. Empty when `first` is 0 or equal
/// to `second`.
///
/// # Errors
///
/// [`MerkleError::BadSizes`] unless `first <= second <= leaves.len()`.
pub fn consistency_proof(
    leaves: &[Digest],
    first: u64,
    second: u64,
) -> Result<Vec<Digest>, MerkleError> {
    let bad = MerkleError::BadSizes { first, second };
    let (m, n) = match (usize::try_from(first), usize::try_from(second)) {
        (Ok(m), Ok(n)) if m <= n && n <= leaves.len() => (m, n),
        _ => return Err(bad),
    };
    let mut proof = Vec::new();
    if m > 0 && m < n {
        subproof(m, &leaves[..n], true, &mut proof);
    }
    Ok(proof)
}

fn subproof(m: usize, d: &[Digest], complete: bool, out: &mut Vec<Digest>) {
    let n = d.len();
    if m == n {
        if !complete {
            out.push(root(d));
        }
        return;
    }
    let k = split(n);
    if m <= k {
        subproof(m, &d[..k], complete, out);
        out.push(root(&d[k..]));
    } else {
        subproof(m - k, &d[k..], false, out);
        out.push(root(&d[..k]));
    }
}

/// Checks that `leaf` (a leaf hash) is at `index` of the tree of `size` leaves with root `root`
/// (RFC 9162 section 2.1.3.2).
///
/// # Errors
///
/// [`MerkleError::IndexOutOfRange`], [`MerkleError::WrongLength`] or
/// [`MerkleError::RootMismatch`].
pub fn verify_inclusion(
    index: u64,
    size: u64,
    leaf: &Digest,
    proof: &[Digest],
    root: &Digest,
) -> Result<(), MerkleError> {
    if index >= size {
        return Err(MerkleError::IndexOutOfRange { index, size });
    }
    let (mut f, mut s) = (index, size - 1);
    let mut r = *leaf;
    for p in proof {
        if s == 0 {
            return Err(MerkleError::WrongLength);
        }
        if f & 1 == 1 || f == s {
            r = node_hash(p, &r);
            while f & 1 == 0 && f != 0 {
                f >>= 1;
                s >>= 1;
            }
        } else {
            r = node_hash(&r, p);
        }
        f >>= 1;
        s >>= 1;
    }
    if s != 0 {
        return Err(MerkleError::WrongLength);
    }
    if r == *root {
        Ok(())
    } else {
        Err(MerkleError::RootMismatch)
    }
}

/// Checks that the tree of `second` leaves with root `root2` extends the tree of `first` leaves
/// with root `root1` (RFC 9162 section 2.1.4.2). Equal sizes need an empty proof and equal
/// roots; the empty tree is consistent with every tree (with an empty proof).
///
/// # Errors
///
/// [`MerkleError::BadSizes`], [`MerkleError::WrongLength`] or [`MerkleError::RootMismatch`].
pub fn verify_consistency(
    first: u64,
    second: u64,
    proof: &[Digest],
    root1: &Digest,
    root2: &Digest,
) -> Result<(), MerkleError> {
    if first > second {
        return Err(MerkleError::BadSizes { first, second });
    }
    if first == second {
        if !proof.is_empty() {
            return Err(MerkleError::WrongLength);
        }
        return if root1 == root2 {
            Ok(())
        } else {
            Err(MerkleError::RootMismatch)
        };
    }
    if first == 0 {
        return if proof.is_empty() {
            Ok(())
        } else {
            Err(MerkleError::WrongLength)
        };
    }
    if proof.is_empty() {
        return Err(MerkleError::WrongLength);
    }
    // When `first` is a power of two, the old root is itself a node of the new tree and the
    // proof starts above it.
    let mut path: Vec<&Digest> = Vec::with_capacity(proof.len() + 1);
    if first.is_power_of_two() {
        path.push(root1);
    }
    path.extend(proof);
    let (mut f, mut s) = (first - 1, second - 1);
    while f & 1 == 1 {
        f >>= 1;
        s >>= 1;
    }
    let mut iter = path.into_iter();
    let Some(&start) = iter.next() else {
        return Err(MerkleError::WrongLength);
    };
    let (mut fr, mut sr) = (start, start);
    for c in iter {
        if s == 0 {
            return Err(MerkleError::WrongLength);
        }
        if f & 1 == 1 || f == s {
            fr = node_hash(c, &fr);
            sr = node_hash(c, &sr);
            while f & 1 == 0 && f != 0 {
                f >>= 1;
                s >>= 1;
            }
        } else {
            sr = node_hash(&sr, c);
        }
        f >>= 1;
        s >>= 1;
    }
    if s != 0 {
        return Err(MerkleError::WrongLength);
    }
    if fr == *root1 && sr == *root2 {
        Ok(())
    } else {
        Err(MerkleError::RootMismatch)
    }
}

#[cfg(test)]
// A failed unwrap in a test is a test failure with a backtrace, which is what we want.
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn leaves(n: usize) -> Vec<Digest> {
        (0..n).map(|i| leaf_hash(&i.to_be_bytes())).collect()
    }

    /// The recursive definition of `MTH`, to check the accumulator against.
    fn mth(d: &[Digest]) -> Digest {
        match d.len() {
            0 => empty_root(),
            1 => d[0],
            n => {
                let k = split(n);
                node_hash(&mth(&d[..k]), &mth(&d[k..]))
            }
        }
    }

    #[test]
    fn accumulator_matches_recursive_root_for_every_size() {
        let all = leaves(70);
        let mut acc = Accumulator::default();
        assert_eq!(acc.root(), empty_root());
        for n in 1..=all.len() {
            acc.push(all[n - 1]);
            assert_eq!(acc.root(), mth(&all[..n]), "size {n}");
        }
    }

    #[test]
    fn every_generated_proof_verifies_and_a_changed_one_does_not() {
        let all = leaves(33);
        for n in 1..=all.len() {
            let r = root(&all[..n]);
            for i in 0..n {
                let proof = inclusion_proof(&all[..n], i as u64).unwrap();
                verify_inclusion(i as u64, n as u64, &all[i], &proof, &r).unwrap();
                let wrong = leaf_hash(b"x");
                assert!(verify_inclusion(i as u64, n as u64, &wrong, &proof, &r).is_err());
            }
            for m in 0..=n {
                let proof = consistency_proof(&all, m as u64, n as u64).unwrap();
                let r1 = root(&all[..m]);
                verify_consistency(m as u64, n as u64, &proof, &r1, &r).unwrap();
                if m > 0 && m < n {
                    let forked = root(&leaves(m + 1)[1..]);
                    assert!(verify_consistency(m as u64, n as u64, &proof, &forked, &r).is_err());
                }
            }
        }
    }

    #[test]
    fn an_accumulator_resumed_from_its_frontier_continues_the_same_tree() {
        let all = leaves(40);
        for cut in 0..all.len() {
            let mut acc = Accumulator::default();
            for l in &all[..cut] {
                acc.push(*l);
            }
            let mut resumed = Accumulator::from_frontier(cut as u64, &acc.frontier()).unwrap();
            for l in &all[cut..] {
                resumed.push(*l);
            }
            assert_eq!(resumed.root(), mth(&all), "cut at {cut}");
        }
        assert!(Accumulator::from_frontier(3, &[[0; 32]]).is_none());
    }

    #[test]
    fn refuses_out_of_range_requests() {
        let all = leaves(4);
        assert!(inclusion_proof(&all, 4).is_err());
        assert!(consistency_proof(&all, 3, 2).is_err());
        assert!(consistency_proof(&all, 1, 5).is_err());
    }
}
