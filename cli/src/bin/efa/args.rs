//! The command line of `efa`: commands, connection and output options, argument parsing.

pub(crate) use crate::log::{LogCommand, LOG_HELP};
use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand};
use efa_cli::table::{render, Format, Output, Table};
use efa_domain::params::ParameterKind;
use efa_proto::convert::WireEnum;
use efa_proto::tls::ClientTlsFiles;
use efa_proto::v1 as pb;
use std::path::PathBuf;
use tonic::transport::Channel;

#[derive(Parser)]
#[command(
    name = "efa",
    version,
    about = "EfA Hub CLI for Land publishers and operators",
    after_help = "Exit status: 0 done as printed; 1 failed (the message says why); 2 usage error, or for \
                  `efa log` an inconsistent log."
)]
pub(crate) struct Cli {
    #[command(subcommand)]
    pub(crate) command: Command,
}

/// How to reach the hub.
#[derive(Args, Clone)]
pub(crate) struct Conn {
    /// Hub URL.
    #[arg(long, global = true, env = "EFA_HUB", default_value = "https://127.0.0.1:50051")]
    pub(crate) hub: String,
    /// CA certificate of the hub (PEM).
    #[arg(long, global = true, env = "EFA_CA")]
    pub(crate) ca: Option<PathBuf>,
    /// Your client certificate (PEM); its URI SAN names your role.
    #[arg(long, global = true, env = "EFA_CERT")]
    pub(crate) cert: Option<PathBuf>,
    /// Your client key (PEM).
    #[arg(long, global = true, env = "EFA_KEY")]
    pub(crate) key: Option<PathBuf>,
}

/// How to print a report.
#[derive(Args, Clone)]
pub(crate) struct Out {
    /// Output format: table, csv or json (one JSON document with typed values).
    #[arg(long, global = true, default_value = "table")]
    pub(crate) format: Format,
    /// Shorthand for --format json.
    #[arg(long, global = true)]
    pub(crate) json: bool,
    /// CSV of a report with several tables: which one (default: the first).
    #[arg(long, global = true)]
    pub(crate) table: Option<String>,
    /// CSV: start with a UTF-8 byte order mark, for spreadsheet programs that need it for umlauts.
    #[arg(long, global = true)]
    pub(crate) bom: bool,
}

impl Out {
    pub(crate) fn print(&self, tables: &[&Table]) -> Result<()> {
        let out = Output {
            format: if self.json { Format::Json } else { self.format },
            table: self.table.clone(),
            bom: self.bom,
        };
        print!("{}", render(tables, &out).map_err(anyhow::Error::msg)?);
        Ok(())
    }
}

#[derive(Subcommand)]
pub(crate) enum Command {
    /// Create a Land's Ed25519 release signing key (mode 0600); prints its public key and
    /// where it goes.
    Keygen {
        /// File to create for the secret key; never overwritten.
        #[arg(long)]
        out: PathBuf,
        /// Your Land code (e.g. 05), to print the `[trust]` lines Kommunen paste.
        #[arg(long)]
        land: Option<String>,
    },
    /// Print the public key of a signing key file.
    Pubkey {
        signing_key: PathBuf,
        /// Print the `[trust]` lines for a node config instead, for this Land code.
        #[arg(long, value_name = "LAND")]
        trust: Option<String>,
    },
    /// The release signing keys your Land registers with the hub, so it refuses releases
    /// signed with any other key at once (nodes still verify against the keys they pin).
    Keys {
        #[command(flatten)]
        conn: Conn,
        #[command(flatten)]
        out: Out,
        #[command(subcommand)]
        command: KeysCommand,
    },
    /// Which Kommunen a municipal IT service provider may act for (operators set it).
    Grants {
        #[command(flatten)]
        conn: Conn,
        #[command(flatten)]
        out: Out,
        #[command(subcommand)]
        command: GrantsCommand,
    },
    /// Show who the hub thinks you are.
    Whoami {
        #[command(flatten)]
        conn: Conn,
    },
    /// Check your certificate, key and CA file and the connection to the hub, and say in
    /// words what is wrong.
    Doctor {
        #[command(flatten)]
        conn: Conn,
    },
    /// List services.
    Services {
        #[command(flatten)]
        conn: Conn,
        #[command(flatten)]
        out: Out,
        /// Only this Land's (code, e.g. 05).
        #[arg(long, default_value = "")]
        land: String,
        /// Only this Themenfeld, exactly as in the OZG catalogue (e.g. "Familie & Kind").
        #[arg(long, default_value = "")]
        themenfeld: String,
    },
    /// Register (or update) a service of your Land.
    Register {
        #[command(flatten)]
        conn: Conn,
        /// Stable id: a-z, 0-9 and '-', 3..64 characters, e.g. wohngeld-nrw.
        #[arg(long)]
        id: String,
        /// 5-digit OZG-ID from the OZG catalogue.
        #[arg(long)]
        ozg_id: String,
        /// 14-digit LeiKa Leistungsschlüssel (optional).
        #[arg(long, default_value = "")]
        leistungsschluessel: String,
        /// A further LeiKa key the service covers (a bundle such as ELFE); repeat.
        #[arg(long = "also-leistungsschluessel", value_name = "KEY")]
        more_leistungsschluessel: Vec<String>,
        #[arg(long)]
        title: String,
        #[arg(long, default_value = "")]
        description: String,
        /// NAME:KIND[:required][:MAXLEN], KIND one of text, url, email, amount_cents,
        /// postcodes, boolean, integer, fit_connect_destination (a UUID), phone; or
        /// NAME[:required] for a well-known one (fit_connect_destination, epaybl_mandant,
        /// epaybl_bewirtschafter, epaybl_haushaltsstelle, epaybl_objektnummer, fee_cents,
        /// zustaendige_stelle, stelle_anschrift, stelle_organisationseinheit, kontakt_email,
        /// kontakt_telefon, postleitzahlen, impressum_url, datenschutz_url,
        /// barrierefreiheit_url, logo_url). Repeat per parameter.
        #[arg(long = "param")]
        params: Vec<String>,
        /// Let every Kommune see who adopted this service.
        #[arg(long)]
        adoption_public: bool,
    },
    /// Re-sign your Land's snapshot (newest version per service) so nodes can detect a
    /// hub that hides releases. Publishing does this too; run it daily so it never expires.
    Snapshot {
        #[command(flatten)]
        conn: Conn,
        /// Release signing key (from `efa keygen`).
        #[arg(long)]
        signing_key: PathBuf,
        /// Days until nodes treat the snapshot as stale.
        #[arg(long, default_value_t = 7)]
        valid_days: u64,
    },
    /// Offer a service another Land built to your Land's Kommunen (Nachnutzung), signed
    /// with your Land key; or withdraw your offer with --withdraw REASON.
    Offer {
        #[command(flatten)]
        conn: Conn,
        /// The service id.
        service: String,
        /// Release signing key (from `efa keygen`); Kommunen verify the offer with it.
        #[arg(long)]
        signing_key: PathBuf,
        /// The channel offered.
        #[arg(long, default_value = "stable")]
        channel: String,
        /// The first version offered (default: every version).
        #[arg(long = "from", default_value = "0.0.0")]
        from_version: String,
        /// NAME=VALUE for a parameter of the service your Land sets for all its Kommunen
        /// (e.g. the Land's ePayBL tenant); repeat. A Kommune's own value wins.
        #[arg(long = "set", value_name = "NAME=VALUE")]
        land_parameters: Vec<String>,
        /// Offer it only to this Kommune (AGS); repeat. Default: every Kommune of the Land.
        #[arg(long = "ags")]
        kommunen: Vec<String>,
        /// Withdraw the offer, with a reason your Kommunen read.
        #[arg(long, value_name = "REASON")]
        withdraw: Option<String>,
    },
    /// List offers (Nachnutzung) of a service, or of a Land.
    Offers {
        #[command(flatten)]
        conn: Conn,
        #[command(flatten)]
        out: Out,
        /// Only this service's offers.
        #[arg(long, default_value = "")]
        service: String,
        /// Only this Land's offers (code, e.g. 05).
        #[arg(long, default_value = "")]
        land: String,
    },
    /// Publish DIR as a new release, signed with your Land key.
    Publish {
        #[command(flatten)]
        conn: Conn,
        dir: PathBuf,
        #[arg(long)]
        service: String,
        /// Semantic version, e.g. 1.0.0; published versions are immutable.
        #[arg(long)]
        version: String,
        #[arg(long, default_value = "stable")]
        channel: String,
        #[arg(long, default_value = "")]
        notes: String,
        /// Release signing key (from `efa keygen`).
        #[arg(long)]
        signing_key: PathBuf,
        /// Roll the release out ring by ring by this plan (TOML; `efa rollout --help` shows
        /// one). Stored with the release, so no node takes it up before its ring opens.
        #[arg(long, value_name = "PLAN.toml")]
        rollout: Option<PathBuf>,
    },
    /// A release's rollout ring by ring: status, plan, and moves by hand.
    #[command(after_help = ROLLOUT_HELP)]
    Rollout {
        #[command(flatten)]
        conn: Conn,
        #[command(flatten)]
        out: Out,
        #[command(subcommand)]
        command: RolloutCommand,
    },
    /// Yank a release: no new deployments; running ones are left alone.
    Yank {
        #[command(flatten)]
        conn: Conn,
        #[arg(long)]
        service: String,
        #[arg(long)]
        version: String,
        /// Why; Kommunen read it.
        #[arg(long)]
        reason: String,
        /// Recall: ask Kommunen that run it to stop serving it (their nodes say so and report
        /// it retired once their operator confirms).
        #[arg(long)]
        recall: bool,
    },
    /// Deprecate a service of your Land: Kommunen keep what they run, their nodes show the
    /// notice and the successor. Again to change the notice.
    Deprecate {
        #[command(flatten)]
        conn: Conn,
        service: String,
        /// Why; Kommunen read it.
        #[arg(long)]
        reason: String,
        /// The service Kommunen should move to.
        #[arg(long)]
        successor: Option<String>,
    },
    /// List the releases of a service.
    Releases {
        #[command(flatten)]
        conn: Conn,
        #[command(flatten)]
        out: Out,
        service: String,
    },
    /// The hub's transparency log: audit it, copy it, witness it.
    #[command(after_help = LOG_HELP)]
    Log {
        #[command(flatten)]
        conn: Conn,
        #[command(subcommand)]
        command: LogCommand,
    },
    /// Adoption and rating reports.
    Report {
        #[command(flatten)]
        conn: Conn,
        #[command(flatten)]
        out: Out,
        #[command(subcommand)]
        command: ReportCommand,
    },
}

pub(crate) const ROLLOUT_HELP: &str = r#"A plan file (TOML):

  decide_within = "14d"         # no verdict by then: pause and tell the Land
  [[ring]]
  name = "Pilot"
  kommunen = ["05913000", "05711000"]
  [[ring]]
  name = "Kreis Unna"
  kreise = ["05978"]
  [[ring]]
  name = "Zehn Prozent"
  share_percent = 10            # by a hash of AGS and release: never reshuffled
  [gates]                       # what the open ring must show before the next opens
  min_healthy = 2
  max_failed_percent = 0        # failed or rolled back
  min_bake = "1h"
  min_ratings = 1
  min_stars = 3.5
  min_criteria = { payment = 3.0 }
  max_blocked_percent = 20      # pre-flight blocked

Gemeinden no ring names form a last ring, "alle übrigen". A failed gate halts the
rollout: no further ring opens, and no node deploys the release any more.

A Land that offers the service (Nachnutzung) may set and move its own plan for its
Kommunen with the same commands; they then follow it instead of the building Land's."#;

#[derive(Subcommand)]
pub(crate) enum RolloutCommand {
    /// Ring by ring: who reported what, ratings, the open ring's gates and why it waits.
    Status {
        service: String,
        version: String,
        /// An offering Land's own plan for its Kommunen (default: the building Land's).
        #[arg(long, default_value = "")]
        land: String,
    },
    /// Set the plan of a release published without one (before nodes took it up, prefer
    /// `efa publish --rollout`).
    Plan {
        service: String,
        version: String,
        /// The plan file (TOML).
        plan: PathBuf,
    },
    /// Open the next ring now, without waiting for the gates.
    Promote { service: String, version: String },
    /// Open no further ring until resumed.
    Pause {
        service: String,
        version: String,
        #[arg(long)]
        reason: String,
    },
    /// Go on after a pause (or a pause for want of a verdict).
    Resume { service: String, version: String },
    /// Stop for good: no further ring opens and no node deploys the release any more.
    Abort {
        service: String,
        version: String,
        #[arg(long)]
        reason: String,
    },
}

#[derive(Subcommand)]
pub(crate) enum GrantsCommand {
    /// Replace the Kommunen a provider may act for.
    Set {
        /// The provider's name (efa://provider/NAME in its certificate).
        #[arg(long)]
        provider: String,
        /// AGS of a Kommune it runs the node of; repeat. None revokes every grant.
        #[arg(long = "ags")]
        kommunen: Vec<String>,
    },
    /// Show the Kommunen a provider may act for (default: yours, as a provider).
    Show {
        #[arg(long, default_value = "")]
        provider: String,
    },
}

#[derive(Subcommand)]
pub(crate) enum KeysCommand {
    /// List the keys a Land registered (default: yours).
    List {
        #[arg(long, default_value = "")]
        land: String,
    },
    /// Register a key: the public key of a signing key file, or a public key in text form.
    Add {
        /// Signing key file (from `efa keygen`); its public key is registered.
        #[arg(long, conflicts_with = "public", required_unless_present = "public")]
        signing_key: Option<PathBuf>,
        /// A public key, `efa-ed25519-public:...`.
        #[arg(long)]
        public: Option<String>,
    },
    /// Stop accepting releases signed by a key (after rotating to a new one). Refused once
    /// the Land publishes signed key sets (use new-set then).
    Remove {
        /// The public key, `efa-ed25519-public:...`.
        public: String,
    },
    /// The key sets a Land published to the transparency log (default: yours).
    Sets {
        #[arg(long, default_value = "")]
        land: String,
    },
    /// The next signed key set of your Land: its keys, threshold and revoked keys, signed
    /// by keys of the current set (or a federation root key). Published at once, or, with
    /// --out, written to a file for further signatures (sign-set) and publish-set.
    NewSet {
        /// A key of the new set: a signing key file or `efa-ed25519-public:...`; repeat.
        #[arg(long = "set-key", required = true)]
        keys: Vec<String>,
        /// Signatures of this set's keys the set after it needs.
        #[arg(long, default_value_t = 1)]
        threshold: u32,
        /// A key withdrawn as possibly compromised (`efa-ed25519-public:...`); repeat.
        #[arg(long = "revoke")]
        revoked: Vec<String>,
        /// Days until nodes warn that the set is stale.
        #[arg(long, default_value_t = 365)]
        expires_days: u32,
        /// A signing key file to sign with (of the current set); repeat.
        #[arg(long = "sign-with", required = true)]
        sign_with: Vec<PathBuf>,
        /// Write the signed set here instead of publishing it.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Add your signature to a key-set file (for a threshold above 1).
    SignSet {
        file: PathBuf,
        #[arg(long = "sign-with")]
        sign_with: PathBuf,
    },
    /// Publish a signed key-set file.
    PublishSet { file: PathBuf },
}

#[derive(Subcommand)]
pub(crate) enum ReportCommand {
    /// Which Kommunen adopted a service, in which state and version.
    Adopters { service: String },
    /// What a Kommune runs, and its adoption history.
    Kommune { ags: String },
    /// Share of Gemeinden per Land and Kreis that run a service.
    Coverage {
        service: String,
        #[arg(long, default_value = "")]
        land: String,
        /// Include Länder and Kreise without any adoption.
        #[arg(long)]
        all: bool,
    },
    /// Rating summary per version.
    Ratings { service: String },
    /// Pre-flight results of a release: which Kommunen are ready for it and which are
    /// blocked (missing or invalid parameters), before anything is deployed.
    Preflight { service: String, version: String },
    /// The adoption matrix (Kommunen × services: what each runs, or its last report), for
    /// export as CSV or JSON; by default every service you may read.
    Matrix {
        /// Only these services (repeat); default: all.
        #[arg(long = "service")]
        services: Vec<String>,
        /// Only services of this Land (code, e.g. 05).
        #[arg(long, default_value = "")]
        land: String,
    },
    /// FIT-Connect routing for a Leistungsschlüssel: per ARS the destination the Kommune's
    /// node declared.
    Routing {
        #[arg(long)]
        leistungsschluessel: String,
    },
    /// Comments and rejection reasons for your Land's services (operators: any).
    Feedback {
        #[arg(long, default_value = "")]
        service: String,
        #[arg(long, default_value = "")]
        land: String,
    },
}

pub(crate) fn parse_param(s: &str) -> Result<pb::ParameterSpec> {
    let parts: Vec<&str> = s.split(':').collect();
    let (name, rest) = parts.split_first().filter(|(n, _)| !n.is_empty()).with_context(|| {
        format!("--param {s:?}: expected NAME:KIND[:required][:MAXLEN], or NAME[:required] for a well-known one")
    })?;
    // A well-known parameter (datenschutz_url, fit_connect_destination, ...) brings its
    // kind, description and length limit; naming the kind again is allowed.
    let well_known = efa_domain::vocabulary::lookup(name);
    let (kind, rest) = match (rest.split_first(), well_known) {
        (Some((k, more)), _) if k.parse::<ParameterKind>().is_ok() => (k.parse::<ParameterKind>()?, more),
        (_, Some(w)) => (w.kind, rest),
        (Some((k, _)), None) => {
            let err = k.parse::<ParameterKind>().unwrap_err();
            return Err(anyhow::Error::from(err).context(format!("--param {s:?}")));
        }
        (None, None) => bail!(
            "--param {s:?}: name a kind (NAME:KIND), or use a well-known name ({})",
            efa_domain::vocabulary::WELL_KNOWN.iter().map(|w| w.name).collect::<Vec<_>>().join(", ")
        ),
    };
    let mut spec = pb::ParameterSpec { name: name.to_string(), kind: kind.to_wire(), ..Default::default() };
    if let Some(w) = well_known.filter(|w| w.kind == kind) {
        spec.description = w.description.to_string();
        spec.max_length = w.max_length;
    }
    for r in rest {
        if *r == "required" {
            spec.required = true;
        } else {
            spec.max_length =
                r.parse().with_context(|| format!("--param {s:?}: {r:?} is neither 'required' nor a length"))?;
        }
    }
    Ok(spec)
}

impl Conn {
    pub(crate) async fn channel(&self) -> Result<Channel> {
        let tls = match (&self.ca, &self.cert, &self.key) {
            (Some(ca), Some(cert), Some(key)) => {
                Some(ClientTlsFiles { ca: ca.clone(), cert: cert.clone(), key: key.clone() })
            }
            (None, None, None) if self.hub.starts_with("http://") => None,
            _ => {
                let missing: Vec<&str> =
                    [("--ca/EFA_CA", &self.ca), ("--cert/EFA_CERT", &self.cert), ("--key/EFA_KEY", &self.key)]
                        .iter()
                        .filter(|(_, v)| v.is_none())
                        .map(|(n, _)| *n)
                        .collect();
                bail!("missing {} to talk to the hub over mTLS (all three are needed)", missing.join(", "))
            }
        };
        match efa_proto::tls::connect(&self.hub, tls.as_ref()).await {
            Ok(ch) => Ok(ch),
            Err(e) => match tls.as_ref().and_then(efa_cli::doctor::explain) {
                Some(why) => bail!("{e}\n  {why}\n  (`efa doctor` runs every check)"),
                None => bail!("{e}\n  (`efa doctor` checks your certificate, key and CA file)"),
            },
        }
    }
}

/// The `[trust]` lines a Kommune pastes into its node config for `land`.
pub(crate) fn trust_snippet(land: &str, public: &str) -> String {
    format!("[trust]\n\"{land}\" = [\"{public}\"]")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_parameter_is_named_with_its_kind_or_by_its_well_known_name() {
        let p = parse_param("payment_purpose:text:required:27").unwrap();
        assert_eq!((p.kind, p.required, p.max_length), (pb::ParameterKind::Text as i32, true, 27));
        let p = parse_param("datenschutz_url:required").unwrap();
        assert_eq!((p.kind, p.required), (pb::ParameterKind::Url as i32, true));
        assert_eq!(p.description, "Datenschutzerklärung");
        let p = parse_param("epaybl_mandant").unwrap();
        assert_eq!((p.kind, p.max_length), (pb::ParameterKind::Text as i32, 64));
        let err = parse_param("gebuehr").unwrap_err().to_string();
        assert!(err.contains("name a kind"), "{err}");
        assert!(parse_param("x:texte").is_err());
        assert!(parse_param(":text").is_err());
    }
}

#[cfg(test)]
mod command_line {
    /// clap checks option names only when a command is parsed: two options of one command
    /// with the same long name would abort `efa`/`efa-node`/`efa-hub` at run time.
    #[test]
    fn every_command_is_well_formed() {
        <super::Cli as clap::CommandFactory>::command().debug_assert();
    }
}
