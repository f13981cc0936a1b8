//! C2SP tlog-tiles: the log as static files, so a copy on any web server or bucket serves
//! auditors as well as the hub does.
//!
//! - `checkpoint`: the latest signed checkpoint.
//! - `tile/<L>/<N>[.p/<W>]`: hash tile `N` at tile level `L`: the 256 (or, for a partial
//!   tile, `W`) hashes at tree level `8·L`, each 32 bytes.
//! - `tile/entries/<N>[.p/<W>]`: entry bundle `N`: leaves `256·N ..`, each as a big-endian
//!   u16 length and its bytes.
//!
//! `N` is written in groups of three digits, all but the last prefixed with `x`
//! (`1234067` → `x001/x234/067`).

use crate::tree::stored_hash_index;
use crate::{Error, Hash, HashReader, Result};

/// Tile height: 2^8 = 256 hashes or entries per full tile.
pub const HEIGHT: u8 = 8;
/// Hashes or entries in a full tile.
pub const WIDTH: u64 = 1 << HEIGHT;
/// Longest leaf an entry bundle can carry.
pub const MAX_LEAF: usize = u16::MAX as usize;

/// A file of the tiled log.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TilePath {
    /// Hashes at tree level `8·level`, from `256·index`.
    Hashes {
        /// Tile level.
        level: u8,
        /// Tile index within its level.
        index: u64,
        /// Hashes in it: 256, or fewer for the partial tile at the right edge.
        width: u16,
    },
    /// Leaves from `256·index`.
    Entries {
        /// Bundle index.
        index: u64,
        /// Leaves in it: 256, or fewer for the partial bundle at the right edge.
        width: u16,
    },
}

impl TilePath {
    /// Parses a path such as `tile/0/x001/234.p/17` or `tile/entries/005`.
    pub fn parse(path: &str) -> Result<Self> {
        let bad = |why: &str| Error::malformed("tile path", format!("{why} (e.g. tile/0/001, tile/entries/000.p/12)"));
        if path.len() > 128 {
            return Err(bad("too long"));
        }
        let rest = path.strip_prefix("tile/").ok_or_else(|| bad("it must start with tile/"))?;
        let (kind, rest) = rest.split_once('/').ok_or_else(|| bad("no tile index"))?;
        let (digits, width) = match rest.split_once(".p/") {
            Some((d, w)) => {
                let w: u16 = w.parse().map_err(|_| bad("the partial width is not a number"))?;
                if w == 0 || u64::from(w) >= WIDTH || w.to_string().len() != rest.len() - d.len() - 3 {
                    return Err(bad("a partial width is 1 to 255, without leading zeros"));
                }
                (d, w)
            }
            None => (rest, WIDTH as u16),
        };
        let groups: Vec<&str> = digits.split('/').collect();
        let mut index: u64 = 0;
        for (i, g) in groups.iter().enumerate() {
            let last = i + 1 == groups.len();
            let g =
                if last { *g } else { g.strip_prefix('x').ok_or_else(|| bad("inner index groups start with x"))? };
            if g.len() != 3 || !g.bytes().all(|b| b.is_ascii_digit()) {
                return Err(bad("index groups have three digits"));
            }
            let v: u64 = g.parse().map_err(|_| bad("index is not a number"))?;
            index = index.checked_mul(1000).and_then(|x| x.checked_add(v)).ok_or_else(|| bad("index too large"))?;
        }
        if kind == "entries" {
            return Ok(TilePath::Entries { index, width });
        }
        let level: u8 = kind.parse().map_err(|_| bad("the level is a number or `entries`"))?;
        if level.to_string() != kind || level > 7 {
            return Err(bad("the level is 0 to 7, without leading zeros"));
        }
        Ok(TilePath::Hashes { level, index, width })
    }

    /// The tiles and bundles of a tree of `size` leaves, full ones first within each level.
    pub fn all(size: u64) -> Vec<TilePath> {
        let mut out = Vec::new();
        for index in 0..size.div_ceil(WIDTH) {
            out.push(TilePath::Entries { index, width: width_at(size, index) });
        }
        let mut level = 0u8;
        let mut n = size; // nodes at tree level 8·level
        while n > 0 && level <= 7 {
            for index in 0..n.div_ceil(WIDTH) {
                out.push(TilePath::Hashes { level, index, width: width_at(n, index) });
            }
            n /= WIDTH;
            level += 1;
        }
        out
    }

    /// Whether a tree of `size` leaves has this tile (with exactly this width).
    pub fn within(&self, size: u64) -> bool {
        match *self {
            TilePath::Entries { index, width } => index < size.div_ceil(WIDTH) && width == width_at(size, index),
            TilePath::Hashes { level, index, width } => {
                let n = size >> (u32::from(level) * u32::from(HEIGHT));
                index < n.div_ceil(WIDTH) && width == width_at(n, index)
            }
        }
    }
}

fn width_at(n: u64, index: u64) -> u16 {
    (n - index * WIDTH).min(WIDTH) as u16
}

impl std::fmt::Display for TilePath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (kind, index, width) = match *self {
            TilePath::Hashes { level, index, width } => (level.to_string(), index, width),
            TilePath::Entries { index, width } => ("entries".to_string(), index, width),
        };
        let mut groups = vec![format!("{:03}", index % 1000)];
        let mut n = index / 1000;
        while n > 0 {
            groups.push(format!("x{:03}", n % 1000));
            n /= 1000;
        }
        groups.reverse();
        write!(f, "tile/{kind}/{}", groups.join("/"))?;
        if u64::from(width) < WIDTH {
            write!(f, ".p/{width}")?;
        }
        Ok(())
    }
}

/// The content of hash tile (`level`, `index`, `width`): the stored hashes at tree level
/// `8·level`, concatenated.
pub fn hash_tile(level: u8, index: u64, width: u16, stored: &impl HashReader) -> Result<Vec<u8>> {
    let tree_level = level * HEIGHT;
    let first = index * WIDTH;
    let indexes: Vec<u64> = (first..first + u64::from(width)).map(|n| stored_hash_index(tree_level, n)).collect();
    let hashes = stored.read_hashes(&indexes).map_err(|e| Error::Hashes(e.to_string()))?;
    Ok(hashes.iter().flat_map(|h| h.0).collect())
}

/// An entry bundle of `leaves`.
pub fn entry_bundle<L: AsRef<[u8]>>(leaves: &[L]) -> Result<Vec<u8>> {
    let mut out = Vec::with_capacity(leaves.iter().map(|l| l.as_ref().len() + 2).sum());
    for leaf in leaves {
        let leaf = leaf.as_ref();
        let len = u16::try_from(leaf.len())
            .map_err(|_| Error::malformed("leaf", format!("{} bytes is longer than {MAX_LEAF}", leaf.len())))?;
        out.extend(len.to_be_bytes());
        out.extend(leaf);
    }
    Ok(out)
}

/// The leaves of an entry bundle that must hold `width` of them.
pub fn parse_entry_bundle(bundle: &[u8], width: u16) -> Result<Vec<&[u8]>> {
    let mut out = Vec::with_capacity(usize::from(width));
    let mut rest = bundle;
    while !rest.is_empty() {
        let [a, b, tail @ ..] = rest else {
            return Err(Error::malformed("entry bundle", "a length prefix is cut short"));
        };
        let len = usize::from(u16::from_be_bytes([*a, *b]));
        if tail.len() < len {
            return Err(Error::malformed("entry bundle", "an entry is cut short"));
        }
        out.push(&tail[..len]);
        rest = &tail[len..];
    }
    if out.len() != usize::from(width) {
        return Err(Error::malformed("entry bundle", format!("{} entries where {width} belong", out.len())));
    }
    Ok(out)
}

/// The hashes of a hash tile's content.
pub fn parse_hash_tile(tile: &[u8], width: u16) -> Result<Vec<Hash>> {
    if tile.len() != usize::from(width) * 32 {
        return Err(Error::malformed("hash tile", format!("{} bytes where {width} hashes belong", tile.len())));
    }
    Ok(tile.chunks_exact(32).map(|c| Hash(c.try_into().expect("32-byte chunks"))).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tree::{leaf_hash, MemoryHashes};

    #[test]
    fn paths_follow_the_c2sp_examples() {
        // Examples of c2sp.org/tlog-tiles.
        let p = TilePath::Hashes { level: 0, index: 1_234_067, width: 256 };
        assert_eq!(p.to_string(), "tile/0/x001/x234/067");
        let p = TilePath::Hashes { level: 0, index: 1_234_067, width: 128 };
        assert_eq!(p.to_string(), "tile/0/x001/x234/067.p/128");
        assert_eq!(TilePath::Entries { index: 0, width: 12 }.to_string(), "tile/entries/000.p/12");
        for p in ["tile/0/x001/x234/067", "tile/0/x001/x234/067.p/128", "tile/entries/000.p/12", "tile/3/000"] {
            assert_eq!(TilePath::parse(p).unwrap().to_string(), p);
        }
        for bad in [
            "tile/0/1",
            "tile/0/x1/001",
            "tile/8/000",
            "tile/00/000",
            "tile/0/000.p/0",
            "tile/0/000.p/256",
            "tile/0/000.p/012",
            "tile/0/001/002",
            "checkpoint",
            "tile/entries/",
            "tile/0/x999/x999/x999/x999/x999/x999/x999/999",
        ] {
            assert!(TilePath::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn all_lists_each_tile_of_a_tree_once_and_within_agrees() {
        let tiles = TilePath::all(256 * 256 + 3);
        assert!(tiles.contains(&TilePath::Hashes { level: 1, index: 0, width: 256 }));
        assert!(tiles.contains(&TilePath::Hashes { level: 2, index: 0, width: 1 }));
        assert!(tiles.contains(&TilePath::Hashes { level: 0, index: 256, width: 3 }));
        assert!(tiles.contains(&TilePath::Entries { index: 256, width: 3 }));
        assert!(tiles.iter().all(|t| t.within(256 * 256 + 3)));
        assert!(!TilePath::Entries { index: 256, width: 4 }.within(256 * 256 + 3));
        assert!(TilePath::all(0).is_empty());
    }

    #[test]
    fn a_hash_tile_holds_the_leaf_hashes_and_bundles_round_trip() {
        let leaves: Vec<Vec<u8>> = (0..300u32).map(|i| i.to_be_bytes().repeat((i % 5) as usize)).collect();
        let mut t = MemoryHashes::default();
        t.append(&leaves.iter().map(|l| leaf_hash(l)).collect::<Vec<_>>()).unwrap();
        let tile = parse_hash_tile(&hash_tile(0, 1, 44, &t).unwrap(), 44).unwrap();
        assert_eq!(tile[0], leaf_hash(&leaves[256]));
        let top = parse_hash_tile(&hash_tile(1, 0, 1, &t).unwrap(), 1).unwrap();
        assert_eq!(top[0], crate::tree::root(256, &t).unwrap(), "level 1 holds the roots of full level-0 tiles");
        let bundle = entry_bundle(&leaves[256..]).unwrap();
        let back = parse_entry_bundle(&bundle, 44).unwrap();
        assert_eq!(back, leaves[256..].iter().map(|l| l.as_slice()).collect::<Vec<_>>());
        assert!(parse_entry_bundle(&bundle, 45).is_err());
        assert!(parse_entry_bundle(&bundle[..bundle.len() - 1], 44).is_err());
        assert!(entry_bundle(&[vec![0u8; MAX_LEAF + 1]]).is_err());
    }
}
