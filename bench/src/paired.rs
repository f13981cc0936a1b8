//! Interleaved pairs: the hub and its peer measured by turns (hub, peer; peer, hub; …), so
//! drift of the shared machine (another build, the VM's neighbours) hits both alike and the
//! median of the per-pair ratios holds from run to run, where best-of-N of one side and
//! then of the other compared two different moments.

use crate::report::Row;
use crate::sys::percentile;
use anyhow::Result;
use std::future::Future;

/// The samples of `n` pairs. `peer` is shorter than `hub` if the peer was not measured or
/// failed part-way (`peer_error` says why); ratios use complete pairs only.
pub struct Pairs<T> {
    pub hub: Vec<T>,
    pub peer: Vec<T>,
    pub peer_error: Option<String>,
}

/// Runs `n` pairs of `hub` and `peer` (if any), alternating which goes first. A failing hub
/// sample ends the run; a failing peer is recorded and not asked again, so the hub's
/// figures survive a peer that breaks.
pub async fn interleave<T, F, G>(
    n: usize,
    mut hub: impl FnMut() -> F,
    mut peer: Option<impl FnMut() -> G>,
) -> Result<Pairs<T>>
where
    F: Future<Output = Result<T>>,
    G: Future<Output = Result<T>>,
{
    let mut out = Pairs { hub: Vec::new(), peer: Vec::new(), peer_error: None };
    for i in 0..n.max(1) {
        let hub_first = i % 2 == 0;
        if hub_first {
            out.hub.push(hub().await?);
        }
        if let Some(p) = peer.as_mut() {
            match p().await {
                Ok(v) => out.peer.push(v),
                Err(e) => {
                    out.peer_error = Some(format!("{e:#}"));
                    peer = None;
                }
            }
        }
        if !hub_first {
            out.hub.push(hub().await?);
        }
    }
    Ok(out)
}

impl<T> Pairs<T> {
    /// Per complete pair, `key(hub) / key(peer)`.
    pub fn ratios(&self, key: impl Fn(&T) -> f64) -> Vec<f64> {
        self.hub.iter().zip(&self.peer).map(|(h, p)| key(h) / key(p)).filter(|r| r.is_finite()).collect()
    }

    /// The hub's median, the peer's (if measured), the median ratio and the ratios' spread.
    pub fn summary(&self, key: impl Fn(&T) -> f64) -> Summary {
        let hub: Vec<f64> = self.hub.iter().map(&key).collect();
        let peer: Vec<f64> = self.peer.iter().map(&key).collect();
        let ratios = self.ratios(&key);
        let min = ratios.iter().copied().fold(f64::INFINITY, f64::min);
        let max = ratios.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        Summary {
            hub: percentile(&hub, 50.0),
            peer: (!peer.is_empty()).then(|| percentile(&peer, 50.0)),
            ratio: (!ratios.is_empty()).then(|| percentile(&ratios, 50.0)),
            spread: (!ratios.is_empty()).then_some((min, max)),
            pairs: ratios.len(),
            hub_samples: hub.len(),
        }
    }
}

/// Medians of one figure over the pairs.
#[derive(Clone, Copy)]
pub struct Summary {
    pub hub: f64,
    pub peer: Option<f64>,
    /// Median of the per-pair ratios hub / peer.
    pub ratio: Option<f64>,
    pub spread: Option<(f64, f64)>,
    pub pairs: usize,
    pub hub_samples: usize,
}

impl Summary {
    /// A row with the hub's median as value, the peer's median as peer and the median
    /// ratio in the ratio column.
    pub fn row(&self, scen: &str, metric: impl Into<String>, unit: &str, peer_name: &str) -> Row {
        Row::new(scen, metric, self.hub, unit).peer(peer_name, self.peer).ratio(self.ratio)
    }

    /// How the figure was taken, for the row's note.
    pub fn how(&self) -> String {
        match self.spread {
            Some((lo, hi)) => {
                format!("median of {} interleaved pairs; ratio spread {lo:.2}–{hi:.2}", self.pairs)
            }
            None => format!("median of {} samples (no peer)", self.hub_samples),
        }
    }
}
