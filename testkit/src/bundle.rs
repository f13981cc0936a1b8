//! Release bundles as files: build them in memory, write them to a directory, and compute
//! what a node must have deployed from them.

use std::collections::BTreeMap;
use std::path::Path;

/// A release bundle: relative path -> bytes, as the Land ships it.
pub type Files = BTreeMap<String, Vec<u8>>;

/// Builds a bundle file by file.
#[derive(Clone, Debug, Default)]
pub struct BundleBuilder {
    files: Files,
}

impl BundleBuilder {
    /// An empty bundle.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a file.
    pub fn file(mut self, path: &str, content: impl Into<Vec<u8>>) -> Self {
        self.files.insert(path.to_string(), content.into());
        self
    }

    /// Adds `count` random binary files of `size` bytes under `assets/`, drawn from `rng`.
    pub fn assets(mut self, rng: &mut crate::Rng, count: usize, size: usize) -> Self {
        for i in 0..count {
            self.files.insert(format!("assets/part-{i:02}.bin"), rng.bytes(size));
        }
        self
    }

    /// The files.
    pub fn build(self) -> Files {
        self.files
    }

    /// Writes the files below `dir` and returns them.
    pub fn write(self, dir: &Path) -> Files {
        write(dir, &self.files);
        self.files
    }
}

/// The small service bundle most scenarios publish: a page, a form and a payment config
/// template that uses the standard parameters `payment_purpose` and `fee_cents`.
pub fn standard(version: &str) -> BundleBuilder {
    BundleBuilder::new()
        .file("index.html", format!("<h1>Antrag</h1><p>Version {version}</p>"))
        .file("forms/antrag.json", r#"{"fields":["name","anschrift"]}"#)
        .file("config/payment.toml.tmpl", "purpose = \"{{ payment_purpose }}\"\nfee_cents = {{ fee_cents }}\n")
}

/// Writes `files` below `dir`, creating directories.
pub fn write(dir: &Path, files: &Files) {
    for (path, bytes) in files {
        let p = dir.join(path);
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent).expect("create bundle directory");
        }
        std::fs::write(p, bytes).expect("write bundle file");
    }
}

/// What a node must have on disk for `files` deployed with `params`: templates rendered
/// (`{{ name }}` replaced) and saved without `.tmpl`.
pub fn rendered(files: &Files, params: &[(&str, &str)]) -> Files {
    files
        .iter()
        .map(|(path, bytes)| match path.strip_suffix(".tmpl") {
            Some(target) => {
                let mut text = String::from_utf8(bytes.clone()).expect("template is text");
                for (name, value) in params {
                    text = text.replace(&format!("{{{{ {name} }}}}"), value);
                }
                (target.to_string(), text.into_bytes())
            }
            None => (path.clone(), bytes.clone()),
        })
        .collect()
}
