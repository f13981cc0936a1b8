//! Opening the sled store: its configuration (page cache, compression), the file lock, the
//! migration on open, and the trees it holds.

use super::{log, migrate, SledStore};
use crate::error::{Error, Result};
use std::path::Path;

/// Where the transparency log of the store at `path` lives: a sled database of its own in
/// `<path>/tlog` (inside the store's directory, so a copy or backup of it takes the log too;
/// sled's own files there are `conf`, `db`, `snap.*` and `blobs/`).
pub fn log_path(path: &Path) -> std::path::PathBuf {
    path.join("tlog")
}

/// sled's page cache. Its default (1 GiB) is counted in serialized bytes, and the nodes it
/// holds take several times that in memory: at 6.2M adoption records the hub held 5 GiB.
const CACHE_BYTES: u64 = 256 << 20;
/// zstd level of the pages sled writes. Keys and records repeat service ids, AGS prefixes,
/// versions and reasons: at 625k records compression took the store from 915 to 336 B per
/// record and the hub from 1.0 to 0.8 GiB, at twice the bulk-load time (levels 1 and 3
/// within noise of each other; 3 is zstd's default).
const COMPRESSION_LEVEL: i32 = 3;

/// How a new sled store is created. An existing store keeps how it was created: sled refuses
/// to open a database with other settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SledOptions {
    /// zstd-compress the pages sled writes (default on). A third of the disk and a fifth
    /// less memory, for more CPU on every write (see bench/RESULTS.md, issue 17).
    pub compression: bool,
}

impl Default for SledOptions {
    fn default() -> Self {
        SledOptions { compression: true }
    }
}

/// Whether the store at `path` is compressed; `new` says whether it will be when it does not
/// exist yet. A store from before compression (its `conf` says `use_compression: false`)
/// stays uncompressed.
fn compression_of(path: &Path, new: bool) -> bool {
    // Text lines followed by a binary checksum.
    match std::fs::read(path.join("conf")) {
        Ok(conf) => !String::from_utf8_lossy(&conf).lines().any(|l| l.trim() == "use_compression: false"),
        Err(_) => new,
    }
}

/// sled's configuration for the store database at `path` (its page cache, and compression
/// as the store was created with): for tools that read the database below the store.
pub fn database_config(path: &Path) -> sled::Config {
    database_config_with(path, SledOptions::default())
}

fn database_config_with(path: &Path, options: SledOptions) -> sled::Config {
    let c = sled::Config::new().path(path).cache_capacity(CACHE_BYTES);
    if compression_of(path, options.compression) {
        c.use_compression(true).compression_factor(COMPRESSION_LEVEL)
    } else {
        c
    }
}

/// Opens a sled database, waiting up to 30 s for another user's lock: whoever closed the
/// store just before (sled's background flusher of a store closed in this process, a tool
/// that checked it) may hold the file lock a while longer on a loaded machine; a second hub
/// on the same data keeps it and is refused after that.
fn open_locked(config: impl Fn() -> sled::Config, path: &Path) -> Result<sled::Db> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let mut said = false;
    loop {
        // A fresh config each time: sled's builder methods need the only reference to it.
        match config().path(path).open() {
            Ok(db) => return Ok(db),
            // sled reports a held lock as ErrorKind::Other with the OS error in the text.
            Err(sled::Error::Io(e))
                if e.to_string().contains("could not acquire lock") && std::time::Instant::now() < deadline =>
            {
                if !said {
                    said = true;
                    tracing::warn!(path = %path.display(), "the store is locked by another user; waiting up to 30 s");
                }
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            Err(e) => return Err(Error::Storage(format!("cannot open sled store at {}: {e}", path.display()))),
        }
    }
}

impl SledStore {
    /// Opens the store at `path`, creating it if missing and migrating an older format;
    /// refuses a JSON-era (format 1) or newer store.
    pub fn open(path: &Path) -> Result<Self> {
        Self::open_with(path, SledOptions::default())
    }

    /// [`open`](Self::open), creating a missing store as `options` say.
    pub fn open_with(path: &Path, options: SledOptions) -> Result<Self> {
        if path.join("conf").exists() && compression_of(path, options.compression) != options.compression {
            // Not an error: the setting is for new stores, and sled cannot convert one.
            tracing::info!(
                path = %path.display(),
                compressed = !options.compression,
                "the store keeps the compression it was created with; sled_compression applies to new stores"
            );
        }
        let db = open_locked(|| database_config_with(path, options), path)?;
        // The transparency log lives in a database of its own within the store's, so the
        // commit thread's flushes never carry the log's bytes (see `log.rs`). Its integrator
        // flushes it after each append; sled's timed background flush would only add fsyncs
        // competing with the commit thread's.
        let log = open_locked(|| sled::Config::new().flush_every_ms(None), &log_path(path))?;
        Self::from_db(db, log)
    }

    /// A store in a temporary location, removed on drop. For tests and throwaway demos.
    pub fn temporary() -> Result<Self> {
        let log = sled::Config::new().temporary(true).flush_every_ms(None).open()?;
        Self::from_db(sled::Config::new().temporary(true).open()?, log)
    }

    fn from_db(db: sled::Db, log: sled::Db) -> Result<Self> {
        let t = |name: &str| db.open_tree(name);
        let found_format = migrate::bring_up_to_date(&db)?;
        let meta = t("meta")?;
        Ok(Self {
            laender: t("laender")?,
            kreise: t("kreise")?,
            kommunen: t("kommunen")?,
            ozg: t("ozg")?,
            leika: t("leika")?,
            services: t("services")?,
            releases: t("releases")?,
            blob_refs: t("blob_refs")?,
            inline_blobs: t("inline_blobs")?,
            subscriptions: t("subscriptions")?,
            adoption: t("adoption")?,
            history: t("history")?,
            ratings: t("ratings")?,
            preflight: t("preflight")?,
            routing: t("routing")?,
            grants: t("grants")?,
            totals: t("totals")?,
            adoption_kommunen: t("adoption_kommunen")?,
            events: t("events")?,
            meta,
            snapshots: t("snapshots")?,
            signing_keys: t("signing_keys")?,
            key_sets: t("key_sets")?,
            offers: t("offers")?,
            rollouts: t("rollouts")?,
            log: log::LogTrees::open(log)?,
            db,
            found_format,
        })
    }

    /// The store format it has now (always [`migrate::CURRENT_FORMAT`] once open).
    pub fn format(&self) -> u32 {
        migrate::CURRENT_FORMAT
    }

    /// The format it had when it was opened, if it had to be migrated from an older one.
    pub fn migrated_from(&self) -> Option<u32> {
        self.found_format.filter(|f| *f < migrate::CURRENT_FORMAT)
    }
}
