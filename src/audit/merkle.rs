//! RFC 6962 / RFC 9162 Merkle tree hashing, inclusion and consistency proofs.
//!
//! The audit log is a Merkle tree over its entries exactly as Certificate Transparency defines
//! it (RFC 9162 section 2.1), so that any standard tooling can check our proofs:
//!
//! * leaf hash `SHA-256(0x00 || entry)`, interior node hash `SHA-256(0x01 || left || right)`;
//! * the tree of `n > 1` leaves is split at `k`, the largest power of two smaller than `n`
//!   (not at the midpoint), so a tree is a sequence of perfect subtrees whose sizes are the
//!   binary digits of `n`;
//! * the empty tree's hash is `SHA-256("")`.
//!
//! Everything here works on leaf *hashes*; callers hash their entries with [`leaf_hash`].

use sha2::{Digest, Sha256};

/// A SHA-256 digest: a leaf hash, an interior node hash or a tree root.
pub type Hash = [u8; 32];

/// Largest tree height we can meet: sizes are `u64`, so at most 64 levels plus the leaf level.
const MAX_LEVELS: usize = 65;

/// `SHA-256(0x00 || entry)`: the hash of a leaf whose data is `entry`.
pub fn leaf_hash(entry: &[u8]) -> Hash {
    let mut h = Sha256::new();
    h.update([0x00]);
    h.update(entry);
    h.finalize().into()
}

/// `SHA-256(0x01 || left || right)`: the hash of an interior node.
pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    let mut h = Sha256::new();
    h.update([0x01]);
    h.update(left);
    h.update(right);
    h.finalize().into()
}

/// The hash of the empty tree, `SHA-256("")`.
fn empty_root() -> Hash {
    Sha256::digest([]).into()
}

/// The Merkle Tree Hash (MTH, RFC 9162 2.1.1) of the given leaf hashes; the empty tree's hash
/// is SHA-256 of the empty string.
///
/// Iterative: it keeps the roots of the perfect subtrees completed so far on a fixed-size stack
/// and computes exactly `n - 1` node hashes for `n` leaves, with no allocation.
pub fn root(leaves: &[Hash]) -> Hash {
    if leaves.is_empty() {
        return empty_root();
    }
    // stack[..depth] holds the roots of the perfect subtrees of the leaves consumed so far,
    // largest (leftmost) first; their sizes are the binary digits of the count consumed.
    let mut stack = [[0u8; 32]; MAX_LEVELS];
    let mut depth = 0usize;
    for (i, leaf) in leaves.iter().enumerate() {
        let mut h = *leaf;
        // After adding leaf number i (0-based), one merge per trailing one bit of i: each
        // completes a perfect subtree twice the size of the one below it.
        let mut count = i as u64;
        while count & 1 == 1 {
            depth -= 1;
            h = node_hash(&stack[depth], &h);
            count >>= 1;
        }
        stack[depth] = h;
        depth += 1;
    }
    fold_frontier(&stack[..depth])
}

/// Combines the roots of the perfect subtrees (largest first) into the root of the whole tree:
/// the smaller subtrees on the right are merged first, as the RFC's split rule demands.
fn fold_frontier(frontier: &[Hash]) -> Hash {
    match frontier.split_last() {
        None => empty_root(),
        Some((last, rest)) => rest
            .iter()
            .rev()
            .fold(*last, |acc, left| node_hash(left, &acc)),
    }
}

/// The largest power of two strictly smaller than `n` (`n >= 2`).
fn split_point(n: u64) -> u64 {
    debug_assert!(n >= 2);
    1u64 << (63 - (n - 1).leading_zeros())
}

/// The inclusion proof (audit path) for the leaf at `index` in the tree of `leaves`
/// (RFC 9162 2.1.3.1, `PATH(m, D[n])`): the sibling hashes from the leaf up to the root.
pub fn inclusion_proof(leaves: &[Hash], index: u64) -> Result<Vec<Hash>, ProofError> {
    Ok(inclusion_ranges(index, leaves.len() as u64)?
        .into_iter()
        .map(|(lo, hi)| root(&leaves[lo as usize..hi as usize]))
        .collect())
}

/// The consistency proof between the tree of the first `old_size` leaves and the tree of all
/// `leaves` (RFC 9162 2.1.4.1, `PROOF(m, D[n])`). It is empty when `old_size` is 0 or equal to
/// `leaves.len()`, where consistency needs no proof.
pub fn consistency_proof(leaves: &[Hash], old_size: u64) -> Result<Vec<Hash>, ProofError> {
    Ok(consistency_ranges(old_size, leaves.len() as u64)?
        .into_iter()
        .map(|(lo, hi)| root(&leaves[lo as usize..hi as usize]))
        .collect())
}

/// The leaf ranges `[lo, hi)` whose tree hashes, in this order, are the inclusion proof of
/// `index` in the tree of `size` leaves. Each `lo` is a multiple of the largest power of two
/// not above `hi - lo`, so a range's hash is the fold of its [`perfect_cover`].
pub fn inclusion_ranges(index: u64, size: u64) -> Result<Vec<(u64, u64)>, ProofError> {
    if index >= size {
        return Err(ProofError::IndexOutOfRange { index, size });
    }
    let mut out = Vec::with_capacity(64);
    path(index, 0, size, &mut out);
    Ok(out)
}

/// The leaf ranges whose tree hashes are the consistency proof from `old_size` to
/// `new_size` (see [`inclusion_ranges`]).
pub fn consistency_ranges(old_size: u64, new_size: u64) -> Result<Vec<(u64, u64)>, ProofError> {
    if old_size > new_size {
        return Err(ProofError::SizeOutOfRange { old_size, new_size });
    }
    let mut out = Vec::with_capacity(64);
    if old_size > 0 && old_size < new_size {
        subproof(old_size, 0, new_size, true, &mut out);
    }
    Ok(out)
}

/// `PATH(m, D[lo:hi])` as leaf ranges, in the RFC's order (deepest sibling first); `m`
/// counts from `lo`.
fn path(m: u64, lo: u64, hi: u64, out: &mut Vec<(u64, u64)>) {
    let n = hi - lo;
    if n <= 1 {
        return;
    }
    let k = split_point(n);
    if m < k {
        path(m, lo, lo + k, out);
        out.push((lo + k, hi));
    } else {
        path(m - k, lo + k, hi, out);
        out.push((lo, lo + k));
    }
}

/// `SUBPROOF(m, D[lo:hi], b)` as leaf ranges.
fn subproof(m: u64, lo: u64, hi: u64, b: bool, out: &mut Vec<(u64, u64)>) {
    let n = hi - lo;
    if m == n {
        if !b {
            out.push((lo, hi));
        }
        return;
    }
    let k = split_point(n);
    if m <= k {
        subproof(m, lo, lo + k, b, out);
        out.push((lo + k, hi));
    } else {
        subproof(m - k, lo + k, hi, false, out);
        out.push((lo, lo + k));
    }
}

/// The perfect subtrees that make up `[lo, hi)`, largest first, as `(level, index)`: the
/// subtree of `2^level` leaves starting at leaf `index << level`. `lo` must be a multiple of
/// the first one's size (as every range of a proof is); the range's tree hash is then
/// [`fold_cover`] of their hashes.
pub fn perfect_cover(lo: u64, hi: u64) -> Vec<(u32, u64)> {
    let mut out = Vec::new();
    let mut at = lo;
    while at < hi {
        let level = 63 - (hi - at).leading_zeros();
        out.push((level, at >> level));
        at += 1 << level;
    }
    out
}

/// The tree hash of a range from the hashes of its [`perfect_cover`], in order.
pub fn fold_cover(hashes: &[Hash]) -> Hash {
    fold_frontier(hashes)
}

/// Number of bits needed to write `x` (0 for 0).
fn bit_len(x: u64) -> u32 {
    64 - x.leading_zeros()
}

/// The exact length of the inclusion proof of `index` in a tree of `size` (index < size):
/// the levels where the path to the leaf and the path to the last leaf differ, plus one hash
/// per left-hand perfect subtree above the point where they meet.
fn inclusion_proof_len(index: u64, size: u64) -> usize {
    let inner = bit_len(index ^ (size - 1));
    let border = (index >> inner).count_ones();
    (inner + border) as usize
}

/// Verifies an inclusion proof (RFC 9162 2.1.3.2): that `leaf` is the leaf at `index` of the
/// tree of `tree_size` leaves whose root is `root`.
pub fn verify_inclusion(
    leaf: &Hash,
    index: u64,
    tree_size: u64,
    proof: &[Hash],
    root: &Hash,
) -> Result<(), ProofError> {
    if index >= tree_size {
        return Err(ProofError::IndexOutOfRange {
            index,
            size: tree_size,
        });
    }
    let want = inclusion_proof_len(index, tree_size);
    if proof.len() != want {
        return Err(ProofError::WrongProofLength {
            got: proof.len(),
            want,
        });
    }
    // The RFC's algorithm, step by step.
    let mut f_n = index;
    let mut s_n = tree_size - 1;
    let mut r = *leaf;
    for p in proof {
        if s_n == 0 {
            // Unreachable after the length check; kept as the RFC states it.
            return Err(ProofError::WrongProofLength {
                got: proof.len(),
                want,
            });
        }
        if f_n & 1 == 1 || f_n == s_n {
            r = node_hash(p, &r);
            if f_n & 1 == 0 {
                while f_n & 1 == 0 && f_n != 0 {
                    f_n >>= 1;
                    s_n >>= 1;
                }
            }
        } else {
            r = node_hash(&r, p);
        }
        f_n >>= 1;
        s_n >>= 1;
    }
    if s_n != 0 {
        return Err(ProofError::WrongProofLength {
            got: proof.len(),
            want,
        });
    }
    if &r != root {
        return Err(ProofError::RootMismatch { size: tree_size });
    }
    Ok(())
}

/// Verifies a consistency proof (RFC 9162 2.1.4.2): that the tree of `new_size` leaves with
/// root `new_root` extends the tree of `old_size` leaves with root `old_root`.
///
/// Edge cases the RFC leaves to the caller: equal sizes need an empty proof and equal roots;
/// an old size of 0 needs an empty proof and `old_root` must be the empty tree's hash.
pub fn verify_consistency(
    old_size: u64,
    new_size: u64,
    old_root: &Hash,
    new_root: &Hash,
    proof: &[Hash],
) -> Result<(), ProofError> {
    if old_size > new_size {
        return Err(ProofError::SizeOutOfRange { old_size, new_size });
    }
    if old_size == new_size || old_size == 0 {
        if !proof.is_empty() {
            return Err(ProofError::WrongProofLength {
                got: proof.len(),
                want: 0,
            });
        }
        if old_size == 0 {
            if old_root != &empty_root() {
                return Err(ProofError::OldRootMismatch { size: 0 });
            }
        } else if old_root != new_root {
            return Err(ProofError::RootsDiffer { size: old_size });
        }
        return Ok(());
    }

    // 0 < old_size < new_size. Expected length: the inclusion proof of leaf old_size - 1 in the
    // new tree, minus the levels inside the perfect subtree that the old tree ends with, plus
    // that subtree's root unless it is the whole old tree (old_size a power of two).
    let shift = old_size.trailing_zeros();
    let inner = bit_len((old_size - 1) ^ (new_size - 1)) - shift;
    let border = ((old_size - 1) >> (inner + shift)).count_ones();
    let seeded = !old_size.is_power_of_two();
    let want = usize::from(seeded) + (inner + border) as usize;
    if proof.len() != want {
        return Err(ProofError::WrongProofLength {
            got: proof.len(),
            want,
        });
    }

    // The RFC's algorithm, step by step.
    let mut path: Vec<Hash> = Vec::with_capacity(proof.len() + 1);
    if old_size.is_power_of_two() {
        path.push(*old_root);
    }
    path.extend_from_slice(proof);
    let (first, rest) = match path.split_first() {
        Some(x) => x,
        None => {
            return Err(ProofError::WrongProofLength {
                got: proof.len(),
                want,
            })
        }
    };
    let mut f_n = old_size - 1;
    let mut s_n = new_size - 1;
    while f_n & 1 == 1 {
        f_n >>= 1;
        s_n >>= 1;
    }
    let mut f_r = *first;
    let mut s_r = *first;
    for c in rest {
        if s_n == 0 {
            return Err(ProofError::WrongProofLength {
                got: proof.len(),
                want,
            });
        }
        if f_n & 1 == 1 || f_n == s_n {
            f_r = node_hash(c, &f_r);
            s_r = node_hash(c, &s_r);
            if f_n & 1 == 0 {
                while f_n & 1 == 0 && f_n != 0 {
                    f_n >>= 1;
                    s_n >>= 1;
                }
            }
        } else {
            s_r = node_hash(&s_r, c);
        }
        f_n >>= 1;
        s_n >>= 1;
    }
    if s_n != 0 {
        return Err(ProofError::WrongProofLength {
            got: proof.len(),
            want,
        });
    }
    if &f_r != old_root {
        return Err(ProofError::OldRootMismatch { size: old_size });
    }
    if &s_r != new_root {
        return Err(ProofError::NewRootMismatch { size: new_size });
    }
    Ok(())
}

/// An append-only Merkle tree that keeps only its "frontier": the roots of the perfect
/// subtrees whose sizes are the binary digits of the tree size (largest first). Appending is
/// amortised O(1) node hashes, [`CompactTree::root`] is O(log n), memory is O(log n).
#[derive(Clone, Debug, Default)]
pub struct CompactTree {
    frontier: Vec<Hash>,
    size: u64,
}

impl CompactTree {
    /// The empty tree.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends one leaf hash (see [`leaf_hash`]).
    pub fn append(&mut self, leaf: Hash) {
        self.append_with(leaf, |_, _, _| {});
    }

    /// Appends one leaf hash and hands `completed` each perfect subtree the leaf completes,
    /// as `(level, index, hash)` (see [`perfect_cover`] for what they name), smallest first.
    pub fn append_with(&mut self, leaf: Hash, mut completed: impl FnMut(u32, u64, &Hash)) {
        let mut h = leaf;
        let mut count = self.size;
        let mut level = 0;
        while count & 1 == 1 {
            // A perfect subtree of the same size is on top: merge, as the binary carry does.
            let left = self
                .frontier
                .pop()
                .expect("the frontier has one subtree per set bit of the size");
            h = node_hash(&left, &h);
            count >>= 1;
            level += 1;
            completed(level, ((self.size + 1) >> level) - 1, &h);
        }
        self.frontier.push(h);
        self.size += 1;
    }

    /// The number of leaves appended so far.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The frontier, concatenated (32 bytes a subtree root, largest subtree first): with
    /// the size, all a later append needs ([`CompactTree::from_frontier`]).
    pub fn frontier_bytes(&self) -> Vec<u8> {
        self.frontier.concat()
    }

    /// The tree of `size` leaves whose frontier is `bytes` (from
    /// [`CompactTree::frontier_bytes`]); `None` if `bytes` is not one 32-byte hash per set
    /// bit of `size`.
    pub fn from_frontier(size: u64, bytes: &[u8]) -> Option<CompactTree> {
        if bytes.len() != size.count_ones() as usize * 32 {
            return None;
        }
        let frontier = bytes
            .chunks_exact(32)
            .map(|c| c.try_into().expect("32-byte chunks"))
            .collect();
        Some(CompactTree { frontier, size })
    }

    /// The root hash of the tree of the leaves appended so far (the empty tree's hash when
    /// none has been).
    pub fn root(&self) -> Hash {
        fold_frontier(&self.frontier)
    }
}

/// Why a proof could not be produced or did not verify.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProofError {
    #[error("leaf index {index} is out of range for a tree of size {size}")]
    IndexOutOfRange { index: u64, size: u64 },
    #[error(
        "old tree size {old_size} is larger than new tree size {new_size}: a log never shrinks"
    )]
    SizeOutOfRange { old_size: u64, new_size: u64 },
    #[error("the proof has {got} hashes, but a proof for these sizes has exactly {want}")]
    WrongProofLength { got: usize, want: usize },
    #[error("the inclusion proof does not lead to the given root of the tree of size {size}")]
    RootMismatch { size: u64 },
    #[error("the consistency proof does not lead to the given old root (tree size {size})")]
    OldRootMismatch { size: u64 },
    #[error("the consistency proof does not lead to the given new root (tree size {size})")]
    NewRootMismatch { size: u64 },
    #[error("two trees of the same size {size} have different roots")]
    RootsDiffer { size: u64 },
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(s: &str) -> Hash {
        hex::decode(s).unwrap().try_into().unwrap()
    }

    // ---- published vectors --------------------------------------------------------------------
    //
    // From transparency-dev/merkle (the Go `merkle` package used by certificate-transparency-go):
    // testonly/constants.go (LeafInputs, NodeHashes, RootHashes) and proof/verify_test.go
    // (inclusionProofs, consistencyProofs; there the leaf number is 1-based).

    const REF_LEAVES: [&str; 8] = [
        "",
        "00",
        "10",
        "2021",
        "3031",
        "40414243",
        "5051525354555657",
        "606162636465666768696a6b6c6d6e6f",
    ];

    /// Root hashes for tree sizes 0..=8.
    const REF_ROOTS: [&str; 9] = [
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
        "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
        "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
        "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
        "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
        "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
        "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
        "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
    ];

    /// The eight leaf hashes (level 0 of NodeHashes).
    const REF_LEAF_HASHES: [&str; 8] = [
        "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
        "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
        "0298d122906dcfc10892cb53a73992fc5b9f493ea4c9badb27b791b4127a7fe7",
        "07506a85fd9dd2f120eb694f86011e5bb4662e5c415a62917033d4a9624487e7",
        "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
        "4271a26be0d8a84f0bd54c8c302e7cb3a3b5d1fa6780a40bcce2873477dab658",
        "b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f",
        "46f6ffadd3d06a09ff3c5860d2755c8b9819db7df44251788c7d8e3180de8eb1",
    ];

    /// (0-based index, tree size, proof)
    const REF_INCLUSION: [(u64, u64, &[&str]); 4] = [
        (
            0,
            8,
            &[
                "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
                "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
            ],
        ),
        (
            5,
            8,
            &[
                "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
                "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
                "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
            ],
        ),
        (
            2,
            3,
            &["fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125"],
        ),
        (
            1,
            5,
            &[
                "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
                "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
            ],
        ),
    ];

    /// (old size, new size, proof)
    const REF_CONSISTENCY: [(u64, u64, &[&str]); 5] = [
        (1, 1, &[]),
        (
            1,
            8,
            &[
                "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
                "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
            ],
        ),
        (
            6,
            8,
            &[
                "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
                "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
                "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
            ],
        ),
        (
            2,
            5,
            &[
                "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
            ],
        ),
        (
            6,
            7,
            &[
                "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
                "b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f",
                "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
            ],
        ),
    ];

    fn ref_leaf_hashes() -> Vec<Hash> {
        REF_LEAVES
            .iter()
            .map(|e| leaf_hash(&hex::decode(e).unwrap()))
            .collect()
    }

    #[test]
    fn leaf_hashes_match_published_vectors() {
        let got = ref_leaf_hashes();
        for (i, want) in REF_LEAF_HASHES.iter().enumerate() {
            assert_eq!(hex::encode(got[i]), *want, "leaf {i}");
        }
    }

    #[test]
    fn roots_match_published_vectors() {
        let leaves = ref_leaf_hashes();
        for (size, want) in REF_ROOTS.iter().enumerate() {
            assert_eq!(hex::encode(root(&leaves[..size])), *want, "size {size}");
            let mut t = CompactTree::new();
            leaves[..size].iter().for_each(|l| t.append(*l));
            assert_eq!(hex::encode(t.root()), *want, "compact tree, size {size}");
        }
    }

    #[test]
    fn inclusion_proofs_match_published_vectors() {
        let leaves = ref_leaf_hashes();
        for (index, size, want) in REF_INCLUSION {
            let want: Vec<Hash> = want.iter().map(|s| h(s)).collect();
            let tree = &leaves[..size as usize];
            assert_eq!(
                inclusion_proof(tree, index).unwrap(),
                want,
                "index {index} size {size}"
            );
            let r = h(REF_ROOTS[size as usize]);
            verify_inclusion(&leaves[index as usize], index, size, &want, &r).unwrap();
        }
    }

    #[test]
    fn consistency_proofs_match_published_vectors() {
        let leaves = ref_leaf_hashes();
        for (old, new, want) in REF_CONSISTENCY {
            let want: Vec<Hash> = want.iter().map(|s| h(s)).collect();
            let tree = &leaves[..new as usize];
            assert_eq!(
                consistency_proof(tree, old).unwrap(),
                want,
                "old {old} new {new}"
            );
            let (r1, r2) = (h(REF_ROOTS[old as usize]), h(REF_ROOTS[new as usize]));
            verify_consistency(old, new, &r1, &r2, &want).unwrap();
        }
    }

    #[test]
    fn node_hash_is_prefixed_concatenation() {
        let (a, b) = ([1u8; 32], [2u8; 32]);
        let mut buf = vec![0x01];
        buf.extend_from_slice(&a);
        buf.extend_from_slice(&b);
        let want: Hash = Sha256::digest(&buf).into();
        assert_eq!(node_hash(&a, &b), want);
        assert_ne!(node_hash(&b, &a), want);
        assert_eq!(
            hex::encode(root(&[])),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }

    // ---- an independent, deliberately naive implementation straight from the RFC text ------

    mod naive {
        use sha2::{Digest, Sha256};

        pub type H = [u8; 32];

        /// What a tree is built of: real hashes, or (to see a proof's shape) symbolic
        /// expressions such as "(([0],[1]),[2])".
        pub trait Node: Clone {
            fn empty() -> Self;
            fn join(left: &Self, right: &Self) -> Self;
        }

        impl Node for H {
            fn empty() -> Self {
                sha(&[])
            }
            fn join(left: &Self, right: &Self) -> Self {
                sha(&[&[1u8], left, right])
            }
        }

        impl Node for String {
            fn empty() -> Self {
                "()".into()
            }
            fn join(left: &Self, right: &Self) -> Self {
                format!("({left},{right})")
            }
        }

        fn sha(parts: &[&[u8]]) -> H {
            let mut buf = Vec::new();
            for p in parts {
                buf.extend_from_slice(p);
            }
            Sha256::digest(&buf).into()
        }

        /// The leaf hash of entry `i` of the synthetic test log.
        pub fn leaf(i: usize) -> H {
            let entry = format!("audit entry #{i}");
            sha(&[&[0u8], entry.as_bytes()])
        }

        /// k: the largest power of two smaller than n, by counting up.
        fn k(n: usize) -> usize {
            let mut k = 1;
            while k * 2 < n {
                k *= 2;
            }
            k
        }

        /// MTH(D[n]).
        pub fn mth<N: Node>(d: &[N]) -> N {
            match d.len() {
                0 => N::empty(),
                1 => d[0].clone(),
                n => {
                    let k = k(n);
                    N::join(&mth(&d[..k]), &mth(&d[k..]))
                }
            }
        }

        /// PATH(m, D[n]).
        pub fn path<N: Node>(m: usize, d: &[N]) -> Vec<N> {
            let n = d.len();
            if n == 1 {
                return vec![];
            }
            let k = k(n);
            if m < k {
                let mut p = path(m, &d[..k]);
                p.push(mth(&d[k..]));
                p
            } else {
                let mut p = path(m - k, &d[k..]);
                p.push(mth(&d[..k]));
                p
            }
        }

        /// For PATH(m, D[n]): whether each sibling is on the left (true) or right (false).
        pub fn sides(m: usize, n: usize) -> Vec<bool> {
            if n == 1 {
                return vec![];
            }
            let k = k(n);
            if m < k {
                let mut s = sides(m, k);
                s.push(false);
                s
            } else {
                let mut s = sides(m - k, n - k);
                s.push(true);
                s
            }
        }

        /// PROOF(m, D[n]) for 0 < m <= n.
        pub fn proof<N: Node>(m: usize, d: &[N]) -> Vec<N> {
            subproof(m, d, true)
        }

        fn subproof<N: Node>(m: usize, d: &[N], b: bool) -> Vec<N> {
            let n = d.len();
            if m == n {
                return if b { vec![] } else { vec![mth(d)] };
            }
            let k = k(n);
            if m <= k {
                let mut p = subproof(m, &d[..k], b);
                p.push(mth(&d[k..]));
                p
            } else {
                let mut p = subproof(m - k, &d[k..], false);
                p.push(mth(&d[..k]));
                p
            }
        }

        /// The shape of the consistency proof for 0 < m < n: the old and new roots written in
        /// terms of the values the verifier combines, `<0>`, `<1>`, ... (the old root first
        /// when m is a power of two and the proof leaves it out, then the proof's hashes).
        /// Two size pairs with the same shape make the verifier do the same computation.
        pub fn consistency_shape(m: usize, n: usize) -> (String, String) {
            let sym: Vec<String> = (0..n).map(|i| format!("[{i}]")).collect();
            let mut old = mth(&sym[..m]);
            let mut new = mth(&sym);
            let mut values = proof(m, &sym);
            if m.is_power_of_two() {
                values.insert(0, old.clone());
            }
            // The values are disjoint subtrees: substitute the largest first.
            let mut order: Vec<usize> = (0..values.len()).collect();
            order.sort_by_key(|&j| std::cmp::Reverse(values[j].len()));
            for j in order {
                assert!(new.contains(&values[j]), "value {j} unused for {m}/{n}");
                old = old.replace(&values[j], &format!("<{j}>"));
                new = new.replace(&values[j], &format!("<{j}>"));
            }
            assert!(
                !old.contains('[') && !new.contains('['),
                "{m}/{n}: {old} {new}"
            );
            (old, new)
        }
    }

    fn synthetic(n: usize) -> Vec<Hash> {
        (0..n).map(naive::leaf).collect()
    }

    #[test]
    fn naive_leaf_hash_agrees() {
        assert_eq!(naive::leaf(7), leaf_hash(b"audit entry #7"));
    }

    #[test]
    fn root_matches_naive_mth_for_sizes_0_to_64() {
        let all = synthetic(64);
        for n in 0..=64 {
            assert_eq!(root(&all[..n]), naive::mth(&all[..n]), "size {n}");
        }
    }

    #[test]
    fn inclusion_proofs_match_naive_path_for_sizes_1_to_64() {
        let all = synthetic(64);
        for n in 1..=64usize {
            let tree = &all[..n];
            for m in 0..n {
                let got = inclusion_proof(tree, m as u64).unwrap();
                assert_eq!(got, naive::path(m, tree), "index {m} size {n}");
                assert_eq!(got.len(), inclusion_proof_len(m as u64, n as u64));
            }
            assert_eq!(
                inclusion_proof(tree, n as u64),
                Err(ProofError::IndexOutOfRange {
                    index: n as u64,
                    size: n as u64
                })
            );
        }
        assert!(inclusion_proof(&[], 0).is_err());
    }

    #[test]
    fn consistency_proofs_match_naive_proof_for_sizes_1_to_64() {
        let all = synthetic(64);
        for n in 1..=64usize {
            let tree = &all[..n];
            assert!(consistency_proof(tree, 0).unwrap().is_empty());
            for m in 1..=n {
                let got = consistency_proof(tree, m as u64).unwrap();
                assert_eq!(got, naive::proof(m, tree), "old {m} new {n}");
            }
            assert_eq!(
                consistency_proof(tree, n as u64 + 1),
                Err(ProofError::SizeOutOfRange {
                    old_size: n as u64 + 1,
                    new_size: n as u64
                })
            );
        }
    }

    // ---- verification accepts every good proof and rejects tampered ones ---------------------

    #[test]
    fn verify_inclusion_accepts_all_and_rejects_tampering() {
        let all = synthetic(64);
        let other = [0xabu8; 32];
        let mut same_shape = 0;
        for n in 1..=64usize {
            let tree = &all[..n];
            let r = naive::mth(tree);
            let size = n as u64;
            for m in 0..n {
                let i = m as u64;
                let leaf = &tree[m];
                let proof = inclusion_proof(tree, i).unwrap();
                assert_eq!(verify_inclusion(leaf, i, size, &proof, &r), Ok(()));

                // Wrong leaf, wrong root.
                assert!(verify_inclusion(&other, i, size, &proof, &r).is_err());
                assert!(verify_inclusion(leaf, i, size, &proof, &other).is_err());
                // One bit flipped in each hash of the proof.
                for j in 0..proof.len() {
                    let mut bad = proof.clone();
                    bad[j][0] ^= 8;
                    assert!(
                        verify_inclusion(leaf, i, size, &bad, &r).is_err(),
                        "flipped proof[{j}] index {m} size {n}"
                    );
                }
                // Truncated, extended.
                if !proof.is_empty() {
                    let short = &proof[..proof.len() - 1];
                    assert!(matches!(
                        verify_inclusion(leaf, i, size, short, &r),
                        Err(ProofError::WrongProofLength { .. })
                    ));
                }
                let mut long = proof.clone();
                long.push(r);
                assert!(verify_inclusion(leaf, i, size, &long, &r).is_err());
                // Wrong index: every other index in the tree, and out of range.
                for wrong in 0..n as u64 {
                    if wrong != i {
                        assert!(
                            verify_inclusion(leaf, wrong, size, &proof, &r).is_err(),
                            "index {wrong} accepted for leaf {m} size {n}"
                        );
                    }
                }
                assert!(matches!(
                    verify_inclusion(leaf, size, size, &proof, &r),
                    Err(ProofError::IndexOutOfRange { .. })
                ));
                // Wrong size. An audit path does not encode the tree size: where the path of
                // leaf m in a tree of another size has the same left/right shape, the
                // verifier's computation is identical and must accept (e.g. leaf 0 of size 3
                // and of size 4); that is inherent to RFC 6962, and why checkpoints sign the
                // size with the root. Every other size must be rejected, and doubling or
                // halving the size always changes the shape (the cases Go's tests probe).
                let shape = naive::sides(m, n);
                for wrong in (i + 1)..=(2 * size + 2) {
                    if wrong == size {
                        continue;
                    }
                    let result = verify_inclusion(leaf, i, wrong, &proof, &r);
                    if naive::sides(m, wrong as usize) == shape {
                        assert_eq!(
                            result,
                            Ok(()),
                            "same shape, size {wrong}, leaf {m} size {n}"
                        );
                        same_shape += 1;
                    } else {
                        assert!(
                            result.is_err(),
                            "size {wrong} accepted for leaf {m} size {n}"
                        );
                    }
                }
                for wrong in [size * 2, size / 2] {
                    if wrong > i {
                        assert!(verify_inclusion(leaf, i, wrong, &proof, &r).is_err());
                    }
                }
            }
        }
        // The same-shape branch is exercised (leaf 0 of size 3 verifies as size 4, etc.).
        assert!(same_shape > 0);
    }

    #[test]
    fn verify_consistency_accepts_all_and_rejects_tampering() {
        let all = synthetic(64);
        let other = [0xcdu8; 32];
        let mut same_shape = 0;
        let roots: Vec<Hash> = (0..=64).map(|n| naive::mth(&all[..n])).collect();
        for n in 1..=64usize {
            let tree = &all[..n];
            let new = n as u64;
            for m in 0..=n {
                let old = m as u64;
                let (r1, r2) = (&roots[m], &roots[n]);
                let proof = consistency_proof(tree, old).unwrap();
                assert_eq!(
                    verify_consistency(old, new, r1, r2, &proof),
                    Ok(()),
                    "old {m} new {n}"
                );

                // Wrong roots (a wrong old root of a power-of-two size is caught because the
                // proof omits it and the recomputed new root then differs).
                assert!(verify_consistency(old, new, &other, r2, &proof).is_err());
                // (From the empty tree every tree is consistent: there is nothing to check.)
                if m != n && m != 0 {
                    assert!(verify_consistency(old, new, r1, &other, &proof).is_err());
                    assert!(verify_consistency(old, new, r2, r1, &proof).is_err());
                }
                // One bit flipped in each hash.
                for j in 0..proof.len() {
                    let mut bad = proof.clone();
                    bad[j][0] ^= 16;
                    assert!(
                        verify_consistency(old, new, r1, r2, &bad).is_err(),
                        "flipped proof[{j}] old {m} new {n}"
                    );
                }
                // Truncated, extended.
                if !proof.is_empty() {
                    let short = &proof[..proof.len() - 1];
                    assert!(matches!(
                        verify_consistency(old, new, r1, r2, short),
                        Err(ProofError::WrongProofLength { .. })
                    ));
                    assert!(verify_consistency(old, new, r1, r2, &[]).is_err());
                }
                let mut long = proof.clone();
                long.push(*r2);
                assert!(verify_consistency(old, new, r1, r2, &long).is_err());
                // Wrong sizes, with the roots of the true sizes. As with audit paths, a
                // consistency proof does not encode the sizes: where another pair of sizes
                // gives the verifier the very same computation (same shape), it must accept
                // (e.g. 1 -> 3 and 1 -> 4); every other pair must be rejected.
                if m == 0 || m == n {
                    continue;
                }
                let shape = naive::consistency_shape(m, n);
                let probes = [
                    (old + 1, new),
                    (old - 1, new),
                    (old ^ 2, new),
                    (old, new + 1),
                    (old, new - 1),
                    (old, new * 2),
                    (old, new / 2),
                    (old + 1, new + 1),
                ];
                for (wo, wn) in probes {
                    if (wo, wn) == (old, new) {
                        continue;
                    }
                    let result = verify_consistency(wo, wn, r1, r2, &proof);
                    if 0 < wo
                        && wo < wn
                        && naive::consistency_shape(wo as usize, wn as usize) == shape
                    {
                        assert_eq!(result, Ok(()), "same shape {wo}/{wn} as {m}/{n}");
                        same_shape += 1;
                    } else {
                        assert!(result.is_err(), "sizes {wo}/{wn} accepted for {m}/{n}");
                    }
                }
                for (wo, wn) in [(old, new * 2), (old, new / 2), (old ^ 2, new)] {
                    // Go's probes: always a different shape, always rejected.
                    if (wo, wn) != (old, new) {
                        assert!(verify_consistency(wo, wn, r1, r2, &proof).is_err());
                    }
                }
            }
            assert!(matches!(
                verify_consistency(new + 1, new, &roots[n], &roots[n], &[]),
                Err(ProofError::SizeOutOfRange { .. })
            ));
        }
        // The same-shape branch is exercised (1 -> 3 verifies as 1 -> 4, etc.).
        assert!(same_shape > 0);
    }

    #[test]
    fn compact_tree_matches_root_for_sizes_0_to_100() {
        let all = synthetic(100);
        let mut t = CompactTree::new();
        assert_eq!(t.size(), 0);
        assert_eq!(t.root(), root(&[]));
        for n in 1..=100usize {
            t.append(all[n - 1]);
            assert_eq!(t.size(), n as u64);
            assert_eq!(t.root(), root(&all[..n]), "size {n}");
            assert_eq!(t.root(), naive::mth(&all[..n]), "naive, size {n}");
            assert_eq!(t.frontier.len(), (n as u64).count_ones() as usize);
        }
    }

    #[test]
    fn completed_subtrees_and_perfect_covers_give_the_tree_hashes_of_their_leaves() {
        let all = synthetic(300);
        let mut t = CompactTree::new();
        let mut nodes = std::collections::HashMap::new();
        for leaf in &all {
            t.append_with(*leaf, |level, index, hash| {
                nodes.insert((level, index), *hash);
            });
        }
        for (&(level, index), hash) in &nodes {
            let lo = (index << level) as usize;
            assert_eq!(
                *hash,
                root(&all[lo..lo + (1 << level)]),
                "({level}, {index})"
            );
        }
        assert_eq!(nodes.len(), 300 - 300u32.count_ones() as usize);
        // Every range of every proof is the fold of its cover.
        let hash_of = |level: u32, index: u64| -> Hash {
            if level == 0 {
                all[index as usize]
            } else {
                nodes[&(level, index)]
            }
        };
        let folds_to_its_root = |ranges: Vec<(u64, u64)>| {
            for (lo, hi) in ranges {
                let cover: Vec<Hash> = perfect_cover(lo, hi)
                    .into_iter()
                    .map(|(l, i)| hash_of(l, i))
                    .collect();
                assert_eq!(fold_cover(&cover), root(&all[lo as usize..hi as usize]));
            }
        };
        for size in [1u64, 2, 7, 64, 255, 256, 257, 300] {
            for index in [0, size / 3, size - 1] {
                folds_to_its_root(inclusion_ranges(index, size).unwrap());
            }
            for old in 1..size.min(20) {
                folds_to_its_root(consistency_ranges(old, size).unwrap());
            }
        }
    }

    #[test]
    fn a_tree_restored_from_its_frontier_goes_on_as_the_original() {
        let all = synthetic(70);
        for n in 0..=40usize {
            let mut t = CompactTree::new();
            all[..n].iter().for_each(|l| t.append(*l));
            let mut restored = CompactTree::from_frontier(n as u64, &t.frontier_bytes()).unwrap();
            assert_eq!(restored.root(), t.root(), "size {n}");
            all[n..].iter().for_each(|l| restored.append(*l));
            assert_eq!(restored.root(), root(&all), "size {n}, then all 70");
        }
        let mut t = CompactTree::new();
        all[..7].iter().for_each(|l| t.append(*l));
        assert!(CompactTree::from_frontier(8, &t.frontier_bytes()).is_none());
        assert!(CompactTree::from_frontier(7, &t.frontier_bytes()[1..]).is_none());
    }

    /// `cargo test --release --lib audit::merkle -- --ignored --nocapture`
    #[test]
    #[ignore]
    fn root_of_a_million_leaves_timing() {
        let leaves: Vec<Hash> = (0u32..1_000_000)
            .map(|i| leaf_hash(&i.to_be_bytes()))
            .collect();
        let start = std::time::Instant::now();
        let r = root(&leaves);
        let elapsed = start.elapsed();
        println!(
            "root() of {} leaves took {elapsed:?} ({})",
            leaves.len(),
            hex::encode(r)
        );
        let mut t = CompactTree::new();
        let start = std::time::Instant::now();
        leaves.iter().for_each(|l| t.append(*l));
        let r2 = t.root();
        println!("CompactTree append x1e6 + root took {:?}", start.elapsed());
        assert_eq!(r, r2);
        assert!(elapsed < std::time::Duration::from_secs(1));
    }
}
