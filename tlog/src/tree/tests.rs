//! The tree against the published RFC 6962 test vectors of the certificate-transparency
//! reference implementation (leaves, roots for sizes 1 to 8, audit paths and consistency
//! proofs), so our use of `tlog_tiles` is checked against an implementation other than its own.

use super::*;
use crate::EMPTY_HASH;

const LEAVES: [&str; 8] =
    ["", "00", "10", "2021", "3031", "40414243", "5051525354555657", "606162636465666768696a6b6c6d6e6f"];

const ROOTS: [&str; 8] = [
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
];

/// (leaf number from 1, tree size, audit path)
const INCLUSION: [(u64, u64, &[&str]); 4] = [
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
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ],
    ),
    (3, 3, &["fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125"]),
    (
        2,
        5,
        &[
            "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
        ],
    ),
];

/// (old size, new size, consistency proof)
const CONSISTENCY: [(u64, u64, &[&str]); 3] = [
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
];

fn h(s: &str) -> Hash {
    Hash(hex::decode(s).unwrap().try_into().unwrap())
}

fn tree() -> MemoryHashes {
    let mut t = MemoryHashes::default();
    let leaves: Vec<Hash> = LEAVES.iter().map(|l| leaf_hash(&hex::decode(l).unwrap())).collect();
    // Appended in uneven batches, as the hub's integrator does.
    t.append(&leaves[..3]).unwrap();
    t.append(&leaves[3..4]).unwrap();
    t.append(&leaves[4..]).unwrap();
    t
}

#[test]
fn roots_match_the_reference_vectors_both_from_stored_hashes_and_re_derived() {
    let t = tree();
    assert_eq!(t.leaves(), 8);
    assert_eq!(root(0, &t).unwrap(), EMPTY_HASH);
    let mut frontier = Frontier::new();
    assert_eq!(frontier.root(), EMPTY_HASH);
    for (i, want) in ROOTS.iter().enumerate() {
        let size = i as u64 + 1;
        assert_eq!(root(size, &t).unwrap(), h(want), "stored root of size {size}");
        frontier.push(leaf_hash(&hex::decode(LEAVES[i]).unwrap()));
        assert_eq!(frontier.root(), h(want), "re-derived root of size {size}");
    }
}

#[test]
fn inclusion_proofs_match_and_check_against_the_reference_vectors() {
    let t = tree();
    for (leaf, size, path) in INCLUSION {
        let want: Vec<Hash> = path.iter().map(|p| h(p)).collect();
        let index = leaf - 1;
        assert_eq!(inclusion_proof(size, index, &t).unwrap(), want, "leaf {leaf} in {size}");
        let lh = leaf_hash(&hex::decode(LEAVES[index as usize]).unwrap());
        let r = h(ROOTS[size as usize - 1]);
        check_inclusion(&want, size, r, index, lh).unwrap();
        // Any change to the proof, the index, the size or the leaf is refused.
        assert!(check_inclusion(&want, size, r, index ^ 1, lh).is_err());
        assert!(check_inclusion(&want, size, r, index, leaf_hash(b"WrongLeaf")).is_err());
        assert!(check_inclusion(&want, size, EMPTY_HASH, index, lh).is_err());
        assert!(check_inclusion(&want[..want.len() - 1], size, r, index, lh).is_err());
        let mut longer = want.clone();
        longer.push(r);
        assert!(check_inclusion(&longer, size, r, index, lh).is_err());
        assert!(check_inclusion(&want, size, r, size, lh).is_err(), "an index past the tree");
    }
}

#[test]
fn consistency_proofs_match_and_check_against_the_reference_vectors() {
    let t = tree();
    for (old, new, path) in CONSISTENCY {
        let want: Vec<Hash> = path.iter().map(|p| h(p)).collect();
        assert_eq!(consistency_proof(old, new, &t).unwrap(), want, "{old} -> {new}");
        let (r1, r2) = (h(ROOTS[old as usize - 1]), h(ROOTS[new as usize - 1]));
        check_consistency(&want, old, r1, new, r2).unwrap();
        assert!(check_consistency(&want, old, r2, new, r1).is_err(), "swapped roots");
        assert!(check_consistency(&want, old, r1, new, EMPTY_HASH).is_err());
        assert!(check_consistency(&want[1..], old, r1, new, r2).is_err());
        assert!(check_consistency(&want, new, r2, old, r1).is_err(), "shrinking");
    }
    // Same size: equal roots pass, different roots are a split view.
    check_consistency(&[], 3, h(ROOTS[2]), 3, h(ROOTS[2])).unwrap();
    let split = check_consistency(&[], 3, h(ROOTS[2]), 3, h(ROOTS[3])).unwrap_err();
    assert!(split.to_string().contains("split view"), "{split}");
}

#[test]
fn hostile_sizes_and_indexes_are_refused_without_panicking() {
    let t = tree();
    assert!(inclusion_proof(8, 8, &t).is_err());
    assert!(inclusion_proof(0, 0, &t).is_err());
    assert!(consistency_proof(9, 8, &t).is_err());
    assert!(root(9, &t).is_err(), "a size past the stored hashes");
    let big = vec![EMPTY_HASH; 65];
    assert!(check_inclusion(&big, u64::MAX, EMPTY_HASH, u64::MAX - 1, EMPTY_HASH).is_err());
    assert!(check_consistency(&big, 1, EMPTY_HASH, u64::MAX, EMPTY_HASH).is_err());
    assert!(check_inclusion(&[], u64::MAX, EMPTY_HASH, 0, EMPTY_HASH).is_err());
    assert!(check_consistency(&[], u64::MAX - 1, EMPTY_HASH, u64::MAX, EMPTY_HASH).is_err());
}

#[test]
fn leaves_for_stored_inverts_stored_hash_count() {
    for n in 0..2000u64 {
        assert_eq!(leaves_for_stored(stored_hash_count(n)), n);
    }
}

#[test]
fn proofs_from_the_wire_are_bounded_and_exact() {
    let ok = proof_from_wire(&[vec![1; 32], vec![2; 32]]).unwrap();
    assert_eq!(ok, [Hash([1; 32]), Hash([2; 32])]);
    assert!(proof_from_wire(&[vec![1; 31]]).is_err());
    assert!(proof_from_wire(&vec![vec![0; 32]; 65]).is_err());
}
