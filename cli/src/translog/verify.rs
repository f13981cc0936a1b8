//! `efa log verify`: re-derive the tree from the entry bundles, check the checkpoints, recompute the adoption figures.

use super::*;

/// A checkpoint the auditor kept from before, opened with the log's key.
#[derive(Clone, Debug)]
pub struct Kept {
    /// Where it came from, for messages (e.g. the file name).
    pub label: String,
    /// Its tree size.
    pub size: u64,
    /// Its root.
    pub root: Hash,
}

/// Reads a checkpoint kept in a file and opens it with `trust`.
pub fn open_checkpoint_file(trust: &Trust, path: &Path) -> Result<Kept> {
    let note = read_bounded(path, MAX_NOTE)?;
    let cp = trust.open(&note).map_err(|e| LogError::invalid(path.display().to_string(), e))?;
    Ok(Kept { label: format!("the checkpoint in {}", path.display()), size: cp.size, root: cp.root })
}

/// What [`verify`] found: the log checked and the adoption figures recomputed from its leaves.
#[derive(Clone, Debug, Serialize)]
pub struct VerifyReport {
    /// The log's origin (its name in every checkpoint).
    pub origin: String,
    /// Leaves in the newest checkpoint, all re-hashed.
    pub size: u64,
    /// Its root, base64, as in the checkpoint.
    pub root: String,
    /// Configured witnesses that cosigned it.
    pub cosigned_by: Vec<String>,
    /// Kept checkpoints whose roots the leaves reproduced.
    pub kept_checkpoints: Vec<KeptMatch>,
    /// Adoption reports among the leaves.
    pub adoption_reports: u64,
    /// Adoption per service, from the leaves alone.
    pub services: Vec<ServiceFigures>,
}

/// A kept checkpoint the log still matches.
#[derive(Clone, Debug, Serialize)]
pub struct KeptMatch {
    /// Where it came from.
    pub checkpoint: String,
    /// Its size.
    pub size: u64,
    /// Its root, base64.
    pub root: String,
}

/// One service's adoption as the log's leaves give it (the dashboard's rule: each
/// Kommune's reports folded by `AdoptionRecord::apply`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ServiceFigures {
    /// The service id.
    pub service: String,
    /// Kommunen running a version.
    pub running: u64,
    /// Kommunen whose latest state is rejected.
    pub rejected: u64,
    /// Kommunen running a version, per Land (first two AGS digits).
    pub running_per_land: BTreeMap<String, u64>,
}

/// Fetches the newest checkpoint from `source` and opens it with `trust`, re-derives the
/// root of every kept checkpoint and of the newest one from the log's entry bundles, checks
/// each leaf is the event its index says, and recomputes adoption from the leaves. Streams
/// bundle by bundle: memory is one entry per (service, Kommune) pair, not per leaf.
/// `progress` gets (bundles checked, bundles) now and then.
pub async fn verify(
    source: &Source,
    trust: &Trust,
    mut kept: Vec<Kept>,
    progress: &(dyn Fn(u64, u64) + Sync),
) -> Result<VerifyReport> {
    let note = source.checkpoint().await?;
    let newest = trust.open(&note).map_err(|e| LogError::invalid("the newest checkpoint", e))?;
    kept.sort_by_key(|k| k.size);
    if let Some(k) = kept.iter().find(|k| k.size > newest.size) {
        return Err(LogError::Inconsistent(format!(
            "the log was rewritten: {} signs {} leaves, but the newest checkpoint only {} (the log shrank)",
            k.label, k.size, newest.size
        )));
    }
    let mut audit = Audit { kept, ..Audit::default() };
    audit.check_kept()?;
    let bundles = newest.size.div_ceil(WIDTH);
    let mut queue: VecDeque<JoinHandle<Result<Digested>>> = VecDeque::new();
    let mut next = 0u64;
    let run = async {
        loop {
            // Bundles are fetched and hashed ahead, in parallel, and taken in log order.
            while next < bundles && queue.len() < IN_FLIGHT {
                let (s, index) = (source.clone(), next);
                let width = (newest.size - index * WIDTH).min(WIDTH) as u16;
                queue.push_back(tokio::spawn(async move { digest_bundle(&s, index, width).await }));
                next += 1;
            }
            let Some(done) = queue.pop_front() else { break };
            let d = done.await.map_err(joined)??;
            audit.take(d)?;
            let checked = next - queue.len() as u64;
            if checked.is_multiple_of(64) || checked == bundles {
                progress(checked, bundles);
            }
        }
        Ok::<_, LogError>(())
    };
    let ran = run.await;
    for h in &queue {
        h.abort();
    }
    ran?;
    audit.finish(trust.origin(), newest)
}

/// A bundle's leaves, hashed and read, off the sequential path.
struct Digested {
    hashes: Vec<Hash>,
    adoptions: Vec<AdoptionEntry>,
    invalid: Vec<String>,
    unknown: Vec<String>,
}

async fn digest_bundle(source: &Source, index: u64, width: u16) -> Result<Digested> {
    let (data, served) = source.bundle(index, width).await?;
    tokio::task::spawn_blocking(move || digest(index, width, &data, served)).await.map_err(joined)?
}

fn digest(index: u64, width: u16, data: &[u8], served: u16) -> Result<Digested> {
    let tile = TilePath::Entries { index, width: served };
    let leaves = parse_entry_bundle(data, served).map_err(|e| LogError::invalid(tile.to_string(), e))?;
    let leaves = leaves.get(..usize::from(width)).unwrap_or(&leaves[..]);
    let mut d =
        Digested { hashes: Vec::with_capacity(leaves.len()), adoptions: vec![], invalid: vec![], unknown: vec![] };
    for (k, leaf) in leaves.iter().enumerate() {
        let n = index * WIDTH + k as u64;
        d.hashes.push(leaf_hash(leaf));
        match read_leaf(n, leaf) {
            Ok(Some(entry)) => d.adoptions.push(entry),
            Ok(None) => {}
            Err(LeafIssue::Invalid(why)) => d.invalid.push(why),
            Err(LeafIssue::Unknown(why)) => d.unknown.push(why),
        }
    }
    Ok(d)
}

enum LeafIssue {
    /// Not the event its index says: evidence against the log.
    Invalid(String),
    /// A leaf format this efa does not know: update efa.
    Unknown(String),
}

/// Reads leaf `index`: the adoption report it holds, if any.
fn read_leaf(index: u64, bytes: &[u8]) -> Result<Option<AdoptionEntry>, LeafIssue> {
    let leaf =
        pb::LogLeaf::decode(bytes).map_err(|e| LeafIssue::Invalid(format!("leaf {index} is not a LogLeaf ({e})")))?;
    if leaf.format != 1 {
        return Err(LeafIssue::Unknown(format!("leaf {index} has format {}", leaf.format)));
    }
    if leaf.seq != index + 1 {
        return Err(LeafIssue::Invalid(format!("leaf {index} says it is event {}, not event {}", leaf.seq, index + 1)));
    }
    match leaf.kind {
        Some(pb::log_leaf::Kind::AdoptionReported(a)) => adoption_entry(&a, leaf.at_ms)
            .map(Some)
            .map_err(|e| LeafIssue::Invalid(format!("leaf {index} is no valid adoption report: {e}"))),
        _ => Ok(None),
    }
}

/// The ledger entry of an adoption leaf. Its reason is only a commitment in the log, so the
/// entry has none; no figure depends on it.
pub fn adoption_entry(a: &pb::LeafAdoption, at_ms: i64) -> Result<AdoptionEntry, efa_domain::Error> {
    Ok(AdoptionEntry {
        ags: a.ags.parse()?,
        service_id: a.service_id.parse()?,
        version: if a.version.is_empty() { None } else { Some(parse_version(&a.version)?) },
        state: AdoptionState::from_wire(a.state)?,
        reason: String::new(),
        at_ms,
    })
}

/// The sequential part of [`verify`]: the tree's right edge, the kept checkpoints still to
/// meet, and the adoption tally.
#[derive(Default)]
struct Audit {
    frontier: Frontier,
    kept: Vec<Kept>,
    next_kept: usize,
    tally: Tally,
    invalid: u64,
    first_invalid: Option<String>,
    unknown: u64,
    first_unknown: Option<String>,
}

impl Audit {
    fn take(&mut self, d: Digested) -> Result<()> {
        for h in d.hashes {
            self.frontier.push(h);
            self.check_kept()?;
        }
        for entry in d.adoptions {
            self.tally.fold(entry);
        }
        self.invalid += d.invalid.len() as u64;
        self.unknown += d.unknown.len() as u64;
        if self.first_invalid.is_none() {
            self.first_invalid = d.invalid.into_iter().next();
        }
        if self.first_unknown.is_none() {
            self.first_unknown = d.unknown.into_iter().next();
        }
        Ok(())
    }

    /// Compares the re-derived root with every kept checkpoint of the current size.
    fn check_kept(&mut self) -> Result<()> {
        while let Some(k) = self.kept.get(self.next_kept) {
            if k.size != self.frontier.size() {
                break;
            }
            let found = self.frontier.root();
            if found != k.root {
                return Err(rewritten(k.size, &k.label, k.root, found));
            }
            self.next_kept += 1;
        }
        Ok(())
    }

    fn finish(self, origin: &str, newest: Checkpoint) -> Result<VerifyReport> {
        let found = self.frontier.root();
        if self.frontier.size() != newest.size || found != newest.root {
            return Err(rewritten(newest.size, "the newest checkpoint", newest.root, found));
        }
        if let Some(first) = self.first_invalid {
            return Err(LogError::Inconsistent(format!(
                "the log signed leaves that are no valid events: {first}{}",
                more(self.invalid)
            )));
        }
        if let Some(first) = self.first_unknown {
            return Err(LogError::invalid(
                "the log's leaves",
                format!("{first}{}; this efa knows format 1 only: update efa", more(self.unknown)),
            ));
        }
        Ok(VerifyReport {
            origin: origin.to_string(),
            size: newest.size,
            root: newest.root.to_string(),
            cosigned_by: newest.witnesses,
            kept_checkpoints: self
                .kept
                .iter()
                .map(|k| KeptMatch { checkpoint: k.label.clone(), size: k.size, root: k.root.to_string() })
                .collect(),
            adoption_reports: self.tally.reports,
            services: self.tally.figures(),
        })
    }
}

fn rewritten(size: u64, label: &str, expected: Hash, found: Hash) -> LogError {
    LogError::Inconsistent(format!(
        "the log was rewritten: at size {size}, {label} signs root {expected}, but the log's leaves give root {found}"
    ))
}

fn more(n: u64) -> String {
    if n > 1 {
        format!(" (and {} more)", n - 1)
    } else {
        String::new()
    }
}

/// Each (service, Kommune) pair's state, folded from the adoption leaves in log order.
/// Ids are interned: at federal scale there are millions of pairs but few services and
/// versions.
#[derive(Default)]
struct Tally {
    services: HashMap<ServiceId, u32>,
    service_ids: Vec<ServiceId>,
    versions: HashMap<semver::Version, u32>,
    version_list: Vec<semver::Version>,
    /// (service, AGS as a number) → the pair's state.
    pairs: HashMap<(u32, u32), Pair>,
    reports: u64,
}

/// A pair's state in 4 bytes (12 per map entry with its key: 6.2M pairs at federal scale):
/// the running version's index + 1 (0: none) in the low 31 bits, rejected in the top bit.
#[derive(Clone, Copy)]
struct Pair(u32);

impl Pair {
    const REJECTED: u32 = 1 << 31;

    fn new(running: Option<u32>, rejected: bool) -> Self {
        Pair(running.map_or(0, |i| (i + 1) & !Self::REJECTED) | if rejected { Self::REJECTED } else { 0 })
    }

    fn running(self) -> Option<u32> {
        (self.0 & !Self::REJECTED).checked_sub(1)
    }

    fn rejected(self) -> bool {
        self.0 & Self::REJECTED != 0
    }
}

impl Tally {
    fn fold(&mut self, entry: AdoptionEntry) {
        self.reports += 1;
        let service = match self.services.get(&entry.service_id) {
            Some(&i) => i,
            None => {
                let i = self.service_ids.len() as u32;
                self.service_ids.push(entry.service_id.clone());
                self.services.insert(entry.service_id.clone(), i);
                i
            }
        };
        let key = (service, ags_number(&entry.ags));
        // The figures depend on the running version and the latest state only, so a pair
        // keeps just those; the previous record is rebuilt from them for the dashboard's rule
        // (`apply` reads `running` and `seen_versions` of it, and replaces `latest`).
        let previous = self.pairs.get(&key).map(|p| AdoptionRecord {
            latest: entry.clone(),
            running: p.running().and_then(|i| self.version_list.get(i as usize).cloned()),
            seen_versions: Vec::new(),
        });
        let record = AdoptionRecord::apply(previous, entry);
        let running = record.running.map(|v| self.intern_version(v));
        self.pairs.insert(key, Pair::new(running, record.latest.state == AdoptionState::Rejected));
    }

    fn intern_version(&mut self, v: semver::Version) -> u32 {
        if let Some(&i) = self.versions.get(&v) {
            return i;
        }
        let i = self.version_list.len() as u32;
        self.version_list.push(v.clone());
        self.versions.insert(v, i);
        i
    }

    fn figures(&self) -> Vec<ServiceFigures> {
        let mut out: Vec<ServiceFigures> =
            self.service_ids.iter().map(|s| ServiceFigures { service: s.to_string(), ..Default::default() }).collect();
        for (&(service, ags), pair) in &self.pairs {
            let Some(f) = out.get_mut(service as usize) else { continue };
            if pair.running().is_some() {
                f.running += 1;
                *f.running_per_land.entry(format!("{:02}", ags / 1_000_000)).or_default() += 1;
            }
            f.rejected += u64::from(pair.rejected());
        }
        out.sort_by(|a, b| a.service.cmp(&b.service));
        out
    }
}

/// An AGS (8 validated digits) as a number, a compact map key.
fn ags_number(ags: &Ags) -> u32 {
    ags.as_str().bytes().fold(0u32, |n, b| n.wrapping_mul(10).wrapping_add(u32::from(b.wrapping_sub(b'0'))))
}

impl VerifyReport {
    /// The report for people: what was checked, then adoption per service.
    pub fn to_text(&self) -> String {
        use crate::table::{render, Cell, Output, Table};
        let mut out = format!("log {}: {} leaves, root {}\n", self.origin, self.size, self.root);
        if !self.cosigned_by.is_empty() {
            out += &format!("cosigned by: {}\n", self.cosigned_by.join(", "));
        }
        out += &format!("every leaf re-hashed: the root of the newest checkpoint ({} leaves) matches", self.size);
        for k in &self.kept_checkpoints {
            out += &format!("\n{} ({} leaves) matches", k.checkpoint, k.size);
        }
        out += "\n\n";
        let mut t = Table::new(
            "adoption",
            format!("Adoption from the log's {} adoption reports", self.adoption_reports),
            &["service", "running", "rejected", "running per land"],
        );
        for s in &self.services {
            let per_land: Vec<String> = s.running_per_land.iter().map(|(l, n)| format!("{l}: {n}")).collect();
            t.push(vec![
                s.service.clone().into(),
                s.running.into(),
                s.rejected.into(),
                Cell::with_value(per_land.join(", "), serde_json::json!(s.running_per_land)),
            ]);
        }
        out + &render(&[&t], &Output::default()).unwrap_or_default()
    }
}
