//! Collection configuration: fixed at creation, validated, stored in redb.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::types::{validate_vector_for, Metric, MAX_DIM};

/// Which vector index serves approximate search. Later kinds (HNSW, IVF-PQ, DiskANN) are added
/// as variants with their parameters.
///
/// Every variant has named fields (`Flat {}` too): serde ignores `deny_unknown_fields` for unit
/// variants of an internally tagged enum, so `{"kind":"flat","m":16}` would be accepted silently.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
#[non_exhaustive]
pub enum IndexConfig {
    /// Exact brute-force scan with SIMD kernels.
    Flat {},
    /// HNSW graph (Malkov & Yashunin): approximate, fast; `ef` per query trades speed for recall.
    Hnsw {
        /// Links per node per layer (2·M on layer 0), 2..=128; default 16.
        #[serde(default = "default_m")]
        m: usize,
        /// Candidate-list size while building, `M..=4096`; default 200.
        #[serde(default = "default_ef_construction")]
        ef_construction: usize,
        /// How the index stores vectors: `f32` (default), or `f16` for half the memory and
        /// faster searches, with distances computed on the vectors rounded to half precision
        /// (about 3 significant digits; components must lie within ±65504). The documents in the
        /// store keep their full `f32` vectors either way.
        #[serde(default, skip_serializing_if = "VectorPrecision::is_f32")]
        precision: VectorPrecision,
    },
    /// IVF-PQ (Jégou et al.): inverted lists of product-quantised codes; `nprobe` and `refine`
    /// per query. Exact until enough vectors exist to train (see `index::ivfpq`).
    #[serde(rename = "ivfpq")]
    IvfPq {
        /// Inverted lists, `1..=65536` (default: `4·√n` at training time).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        nlist: Option<usize>,
        /// Bytes per code (sub-quantisers); must divide the dimension (default: the largest
        /// divisor ≤ `dim / 8`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pq_m: Option<usize>,
    },
    /// DiskANN (Subramanya et al.): a Vamana graph in an SSD-resident node file, PQ codes in
    /// RAM; `search_l` and `beam` per query (see `index::diskann`).
    #[serde(rename = "diskann")]
    DiskAnn {
        /// Maximum out-degree `R`, `4..=512`; default 64.
        #[serde(default = "default_r")]
        r: usize,
        /// Candidate-list size `L` while building (and the default search list), `R..=4096`;
        /// default 100.
        #[serde(default = "default_l")]
        l: usize,
        /// PQ code bytes per vector kept in RAM; must divide the dimension (default: the
        /// largest divisor ≤ `dim / 4`, 1/16 of the raw vector).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pq_bytes: Option<usize>,
        /// Nodes around the entry point cached in RAM, `0..=10_000_000`; default 4096.
        #[serde(default = "default_cache_nodes")]
        cache_nodes: usize,
        /// RAM a (re)build may use, in MiB (larger builds are partitioned), at least 1;
        /// default 2048.
        #[serde(default = "default_build_ram_mb")]
        build_ram_mb: usize,
    },
}

impl Default for IndexConfig {
    /// The exact flat index.
    fn default() -> Self {
        IndexConfig::Flat {}
    }
}

/// How an index stores vector components.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum VectorPrecision {
    /// 32-bit floats: exact.
    #[default]
    F32,
    /// IEEE 754 half floats: half the memory, about 3 significant decimal digits, range ±65504;
    /// magnitudes under 6.1e-5 lose precision (subnormals) and under 3e-8 round to zero.
    F16,
}

impl VectorPrecision {
    /// Whether this is the default, `f32`.
    pub fn is_f32(&self) -> bool {
        *self == VectorPrecision::F32
    }

    /// The name used in configs and on the command line: `"f32"` or `"f16"`.
    pub fn name(self) -> &'static str {
        match self {
            VectorPrecision::F32 => "f32",
            VectorPrecision::F16 => "f16",
        }
    }

    /// Parses a name given on the command line.
    pub fn from_name(name: &str) -> Result<Self> {
        match name {
            "f32" => Ok(VectorPrecision::F32),
            "f16" => Ok(VectorPrecision::F16),
            other => Err(Error::InvalidConfig(format!(
                "unknown vector precision {other:?} (available: f32, f16)"
            ))),
        }
    }
}

/// The largest magnitude an `f16` component can hold.
pub const F16_MAX: f32 = half::f16::MAX.to_f32_const();

/// DiskANN's default maximum out-degree `r`.
pub const DEFAULT_DISKANN_R: usize = 64;
/// DiskANN's default build list size `l`.
pub const DEFAULT_DISKANN_L: usize = 100;
/// DiskANN's default count of cached nodes.
pub const DEFAULT_DISKANN_CACHE_NODES: usize = 4096;
/// DiskANN's default build RAM budget, in MiB.
pub const DEFAULT_DISKANN_BUILD_RAM_MB: usize = 2048;

fn default_r() -> usize {
    DEFAULT_DISKANN_R
}

fn default_l() -> usize {
    DEFAULT_DISKANN_L
}

fn default_cache_nodes() -> usize {
    DEFAULT_DISKANN_CACHE_NODES
}

fn default_build_ram_mb() -> usize {
    DEFAULT_DISKANN_BUILD_RAM_MB
}

fn default_m() -> usize {
    16
}

fn default_ef_construction() -> usize {
    200
}

impl IndexConfig {
    /// The index kind's name as used by the CLI.
    pub fn kind_name(&self) -> &'static str {
        match self {
            IndexConfig::Flat {} => "flat",
            IndexConfig::Hnsw { .. } => "hnsw",
            IndexConfig::IvfPq { .. } => "ivfpq",
            IndexConfig::DiskAnn { .. } => "diskann",
        }
    }

    /// How the index stores vectors (`f32` for every kind but an `f16` HNSW).
    pub fn precision(&self) -> VectorPrecision {
        match *self {
            IndexConfig::Hnsw { precision, .. } => precision,
            _ => VectorPrecision::F32,
        }
    }

    /// HNSW with the default parameters (M = 16, efConstruction = 200).
    pub fn hnsw() -> Self {
        IndexConfig::Hnsw {
            m: default_m(),
            ef_construction: default_ef_construction(),
            precision: VectorPrecision::F32,
        }
    }

    /// IVF-PQ with the defaults (`nlist` and `m` chosen at training time).
    pub fn ivfpq() -> Self {
        IndexConfig::IvfPq {
            nlist: None,
            pq_m: None,
        }
    }

    /// DiskANN with the defaults (R = 64, L = 100, PQ bytes chosen from the dimension).
    pub fn diskann() -> Self {
        IndexConfig::DiskAnn {
            r: default_r(),
            l: default_l(),
            pq_bytes: None,
            cache_nodes: default_cache_nodes(),
            build_ram_mb: default_build_ram_mb(),
        }
    }

    /// Checks the index parameters.
    pub fn validate(&self) -> Result<()> {
        match *self {
            IndexConfig::Flat {} => Ok(()),
            IndexConfig::DiskAnn {
                r,
                l,
                pq_bytes,
                cache_nodes,
                build_ram_mb,
            } => {
                let problem = if !(4..=512).contains(&r) {
                    format!("diskann r must be in 4..=512, got {r}")
                } else if l < r || l > 4096 {
                    format!("diskann l must be in r..=4096 ({r}..=4096), got {l}")
                } else if pq_bytes == Some(0) {
                    "diskann pq_bytes must be at least 1".to_string()
                } else if cache_nodes > 10_000_000 {
                    format!("diskann cache_nodes must be at most 10000000, got {cache_nodes}")
                } else if build_ram_mb == 0 {
                    "diskann build_ram_mb must be at least 1".to_string()
                } else {
                    return Ok(());
                };
                Err(Error::InvalidConfig(problem))
            }
            IndexConfig::IvfPq { nlist, pq_m } => {
                if nlist.is_some_and(|n| !(1..=65_536).contains(&n)) {
                    return Err(Error::InvalidConfig(format!(
                        "ivfpq nlist must be in 1..=65536, got {}",
                        nlist.unwrap_or_default()
                    )));
                }
                if pq_m == Some(0) {
                    return Err(Error::InvalidConfig("ivfpq pq_m must be at least 1".into()));
                }
                Ok(())
            }
            IndexConfig::Hnsw {
                m, ef_construction, ..
            } => {
                if !(2..=128).contains(&m) {
                    return Err(Error::InvalidConfig(format!(
                        "hnsw m must be in 2..=128, got {m}"
                    )));
                }
                if ef_construction < m || ef_construction > 4096 {
                    return Err(Error::InvalidConfig(format!(
                        "hnsw ef_construction must be in m..=4096 ({m}..=4096), got {ef_construction}"
                    )));
                }
                Ok(())
            }
        }
    }

    /// Parses a kind name given on the command line.
    pub fn from_kind_name(name: &str) -> Result<Self> {
        match name {
            "flat" => Ok(IndexConfig::Flat {}),
            "hnsw" => Ok(IndexConfig::hnsw()),
            "ivfpq" => Ok(IndexConfig::ivfpq()),
            "diskann" => Ok(IndexConfig::diskann()),
            other => Err(Error::InvalidConfig(format!(
                "unknown index kind {other:?} (available: flat, hnsw, ivfpq, diskann)"
            ))),
        }
    }
}

/// The value type of a declared payload (metadata) index.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PayloadKind {
    /// Exact string values.
    Keyword,
    /// 64-bit integers.
    Integer,
    /// 64-bit floats.
    Float,
    /// Booleans.
    Bool,
}

impl PayloadKind {
    /// The kind's lower-case name, as the CLI and JSON spell it.
    pub fn name(self) -> &'static str {
        match self {
            PayloadKind::Keyword => "keyword",
            PayloadKind::Integer => "integer",
            PayloadKind::Float => "float",
            PayloadKind::Bool => "bool",
        }
    }
}

impl std::str::FromStr for PayloadKind {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "keyword" => Ok(PayloadKind::Keyword),
            "integer" => Ok(PayloadKind::Integer),
            "float" => Ok(PayloadKind::Float),
            "bool" => Ok(PayloadKind::Bool),
            other => Err(Error::InvalidConfig(format!(
                "unknown payload kind {other:?} (expected keyword, integer, float or bool)"
            ))),
        }
    }
}

/// How the keyword index splits `text` into terms (chosen at creation; queries use the same).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TextTokenizer {
    /// Words (runs of letters and digits), lower-cased, English (Snowball) stemming:
    /// "Running runners" → `run`, `runner`.
    #[default]
    English,
    /// Words, lower-cased, no stemming.
    Simple,
    /// Whitespace-separated tokens, kept exactly (case and punctuation): for codes and tags.
    Whitespace,
}

impl TextTokenizer {
    /// The tokenizer's name, as the CLI and JSON spell it.
    pub fn name(self) -> &'static str {
        match self {
            TextTokenizer::English => "english",
            TextTokenizer::Simple => "simple",
            TextTokenizer::Whitespace => "whitespace",
        }
    }
}

impl std::str::FromStr for TextTokenizer {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "english" => Ok(TextTokenizer::English),
            "simple" => Ok(TextTokenizer::Simple),
            "whitespace" => Ok(TextTokenizer::Whitespace),
            other => Err(Error::InvalidConfig(format!(
                "unknown tokenizer {other:?} (expected english, simple or whitespace)"
            ))),
        }
    }
}

/// A metadata field declared for a payload index (used by filtered search).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PayloadField {
    /// Dotted path into the metadata object, e.g. `"author.name"`.
    pub path: String,
    /// The value type indexed.
    pub kind: PayloadKind,
}

impl std::str::FromStr for PayloadField {
    type Err = Error;
    /// Parses `path:kind`, e.g. `year:integer`.
    fn from_str(s: &str) -> Result<Self> {
        let (path, kind) = s.rsplit_once(':').ok_or_else(|| {
            Error::InvalidConfig(format!("payload field {s:?} must look like path:kind"))
        })?;
        Ok(PayloadField {
            path: path.to_string(),
            kind: kind.parse()?,
        })
    }
}

/// The configuration of a collection.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CollectionConfig {
    /// Vector dimension, `1..=65536`.
    pub dim: usize,
    /// Distance metric.
    pub metric: Metric,
    /// The vector index.
    #[serde(default)]
    pub index: IndexConfig,
    /// Whether `text` is indexed for keyword search.
    #[serde(default)]
    pub text_indexed: bool,
    /// How indexed text is split into terms.
    #[serde(default)]
    pub text_tokenizer: TextTokenizer,
    /// Declared payload indexes.
    #[serde(default)]
    pub payload_fields: Vec<PayloadField>,
}

impl CollectionConfig {
    /// A flat-index collection with this dimension and metric, no text index, no payload fields.
    pub fn new(dim: usize, metric: Metric) -> Self {
        CollectionConfig {
            dim,
            metric,
            index: IndexConfig::Flat {},
            text_indexed: false,
            text_tokenizer: TextTokenizer::default(),
            payload_fields: Vec::new(),
        }
    }

    /// Sets the vector index.
    pub fn with_index(mut self, index: IndexConfig) -> Self {
        self.index = index;
        self
    }

    /// Enables keyword indexing of `text`.
    pub fn with_text_index(mut self, enabled: bool) -> Self {
        self.text_indexed = enabled;
        self
    }

    /// Sets the tokenizer of the keyword index.
    pub fn with_text_tokenizer(mut self, tokenizer: TextTokenizer) -> Self {
        self.text_tokenizer = tokenizer;
        self
    }

    /// Declares a payload index.
    pub fn with_payload_field(mut self, path: impl Into<String>, kind: PayloadKind) -> Self {
        self.payload_fields.push(PayloadField {
            path: path.into(),
            kind,
        });
        self
    }

    /// A 64-bit fingerprint of what shapes an index file (dimension, metric, index kind and
    /// parameters) and of which collection it belongs to (`instance`, a random number drawn when
    /// the collection was created): an index file written under another fingerprint is not
    /// loaded, so a file copied from another collection or database is never served.
    pub fn index_fingerprint(&self, instance: u64) -> u64 {
        let index = serde_json::to_string(&self.index).unwrap_or_default();
        fnv1a(&format!(
            "{instance}|{}|{}|{}",
            self.dim,
            self.metric.name(),
            index
        ))
    }

    /// Like [`CollectionConfig::index_fingerprint`], for the keyword index (its tokenizer).
    pub fn text_fingerprint(&self, instance: u64) -> u64 {
        fnv1a(&format!("{instance}|text|{}", self.text_tokenizer.name()))
    }

    /// Checks a document's vector for this collection: dimension, finite values, a norm whose
    /// distances cannot overflow, a direction under cosine, and, where the index stores `f16`,
    /// components within its range (±65504; cosine vectors are normalised first, so any fits).
    pub fn validate_document_vector(&self, vector: &[f32]) -> Result<()> {
        validate_vector_for(vector, self.dim, self.metric)?;
        if self.index.precision() == VectorPrecision::F16 && self.metric != Metric::Cosine {
            if let Some((i, x)) = vector.iter().enumerate().find(|(_, x)| x.abs() > F16_MAX) {
                return Err(Error::InvalidVector(format!(
                    "component {i} is {x}, outside the range of this collection's f16 index \
                     (±{F16_MAX})"
                )));
            }
        }
        Ok(())
    }

    /// Checks every rule; called by `create_collection`.
    pub fn validate(&self) -> Result<()> {
        self.index.validate()?;
        if self.dim == 0 || self.dim > MAX_DIM {
            return Err(Error::InvalidConfig(format!(
                "dimension {} is out of range 1..={MAX_DIM}",
                self.dim
            )));
        }
        if let IndexConfig::IvfPq { pq_m: Some(m), .. } = self.index {
            if m > self.dim || !self.dim.is_multiple_of(m) {
                return Err(Error::InvalidConfig(format!(
                    "ivfpq pq_m must divide the dimension {}, got {m}",
                    self.dim
                )));
            }
        }
        if let IndexConfig::DiskAnn {
            pq_bytes: Some(m), ..
        } = self.index
        {
            if !self.dim.is_multiple_of(m) {
                return Err(Error::InvalidConfig(format!(
                    "diskann pq_bytes must divide the dimension {}, got {m}",
                    self.dim
                )));
            }
        }
        if self.payload_fields.len() > MAX_PAYLOAD_FIELDS {
            return Err(Error::InvalidConfig(format!(
                "at most {MAX_PAYLOAD_FIELDS} payload indexes per collection, got {}",
                self.payload_fields.len()
            )));
        }
        let mut seen = std::collections::HashSet::new();
        for field in &self.payload_fields {
            validate_field_path(&field.path)?;
            if !seen.insert(field.path.as_str()) {
                return Err(Error::InvalidConfig(format!(
                    "payload field {:?} is declared twice",
                    field.path
                )));
            }
        }
        Ok(())
    }
}

/// FNV-1a, 64 bit: stable across builds and platforms.
fn fnv1a(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// Most payload indexes one collection may declare.
pub const MAX_PAYLOAD_FIELDS: usize = 64;

/// Longest accepted collection name.
pub const MAX_NAME_LEN: usize = 64;

/// Checks a collection name: 1–64 characters of `[A-Za-z0-9_-]`, starting with a letter or digit.
/// Names never reach the file system (folders are named by numeric id), but the rule keeps them
/// portable in URLs and shells.
pub fn validate_collection_name(name: &str) -> Result<()> {
    let reject = |reason| {
        Err(Error::InvalidName {
            name: name.to_string(),
            reason,
        })
    };
    if name.is_empty() {
        return reject("must not be empty");
    }
    if name.len() > MAX_NAME_LEN {
        return reject("must be at most 64 characters");
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        return reject("may only contain ASCII letters, digits, '_' and '-'");
    }
    if !name.as_bytes()[0].is_ascii_alphanumeric() {
        return reject("must start with a letter or a digit");
    }
    Ok(())
}

fn validate_field_path(path: &str) -> Result<()> {
    if path.is_empty() || path.len() > 256 || path.split('.').any(str::is_empty) {
        return Err(Error::InvalidConfig(format!(
            "payload field path {path:?} must be non-empty dotted segments of at most 256 bytes"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_validated() {
        for good in ["a", "docs", "my-docs_2", "0abc"] {
            assert!(validate_collection_name(good).is_ok(), "{good}");
        }
        let long = "x".repeat(65);
        for bad in [
            "",
            "../etc",
            "a/b",
            "a.b",
            "-a",
            "_a",
            "é",
            "a b",
            long.as_str(),
        ] {
            assert!(
                matches!(
                    validate_collection_name(bad),
                    Err(Error::InvalidName { .. })
                ),
                "{bad}"
            );
        }
    }

    #[test]
    fn payload_field_count_is_limited() {
        let mut config = CollectionConfig::new(4, Metric::L2);
        for i in 0..MAX_PAYLOAD_FIELDS {
            config = config.with_payload_field(format!("f{i}"), PayloadKind::Keyword);
        }
        assert!(config.validate().is_ok());
        let config = config.with_payload_field("one_more", PayloadKind::Bool);
        assert!(matches!(config.validate(), Err(Error::InvalidConfig(m)) if m.contains("at most")));
    }

    #[test]
    fn config_validation() {
        assert!(CollectionConfig::new(1, Metric::L2).validate().is_ok());
        assert!(CollectionConfig::new(65_536, Metric::L2).validate().is_ok());
        assert!(CollectionConfig::new(0, Metric::L2).validate().is_err());
        assert!(CollectionConfig::new(65_537, Metric::L2)
            .validate()
            .is_err());
        let dup = CollectionConfig::new(4, Metric::Dot)
            .with_payload_field("a", PayloadKind::Keyword)
            .with_payload_field("a", PayloadKind::Integer);
        assert!(matches!(dup.validate(), Err(Error::InvalidConfig(_))));
        let bad_path =
            CollectionConfig::new(4, Metric::Dot).with_payload_field("a..b", PayloadKind::Bool);
        assert!(bad_path.validate().is_err());
        assert_eq!(
            "year:integer".parse::<PayloadField>().unwrap(),
            PayloadField {
                path: "year".into(),
                kind: PayloadKind::Integer
            }
        );
        assert!("year".parse::<PayloadField>().is_err());
        assert_eq!(
            IndexConfig::from_kind_name("hnsw").unwrap(),
            IndexConfig::hnsw()
        );
        assert_eq!(
            IndexConfig::from_kind_name("ivfpq").unwrap(),
            IndexConfig::ivfpq()
        );
        assert_eq!(
            IndexConfig::from_kind_name("diskann").unwrap(),
            IndexConfig::diskann()
        );
        assert!(IndexConfig::from_kind_name("annoy").is_err());
        let bad_m = CollectionConfig::new(4, Metric::L2).with_index(IndexConfig::Hnsw {
            precision: VectorPrecision::F32,
            m: 1,
            ef_construction: 100,
        });
        assert!(bad_m.validate().is_err());
        let bad_ef = CollectionConfig::new(4, Metric::L2).with_index(IndexConfig::Hnsw {
            precision: VectorPrecision::F16,
            m: 16,
            ef_construction: 8,
        });
        assert!(bad_ef.validate().is_err());
    }

    #[test]
    fn precision_is_stored_only_when_not_the_default() {
        let f32_json = serde_json::to_string(&IndexConfig::hnsw()).unwrap();
        assert_eq!(f32_json, r#"{"kind":"hnsw","m":16,"ef_construction":200}"#);
        let old: IndexConfig = serde_json::from_str(&f32_json).unwrap();
        assert_eq!(old, IndexConfig::hnsw());
        let half = IndexConfig::Hnsw {
            m: 16,
            ef_construction: 200,
            precision: VectorPrecision::F16,
        };
        let half_json = serde_json::to_string(&half).unwrap();
        assert!(half_json.contains(r#""precision":"f16""#), "{half_json}");
        assert_eq!(
            serde_json::from_str::<IndexConfig>(&half_json).unwrap(),
            half
        );
        assert!(
            serde_json::from_str::<IndexConfig>(r#"{"kind":"hnsw","precision":"f8"}"#).is_err()
        );
        assert_eq!(
            VectorPrecision::from_name("f16").unwrap(),
            VectorPrecision::F16
        );
        assert_eq!(VectorPrecision::F32.name(), "f32");
        let err = VectorPrecision::from_name("bf16").unwrap_err().to_string();
        assert!(err.contains("f32, f16"), "{err}");
        // The fingerprint of an f32 index is the one it had before precision existed.
        let config = CollectionConfig::new(4, Metric::L2).with_index(IndexConfig::hnsw());
        let f16_config = CollectionConfig::new(4, Metric::L2).with_index(half);
        assert_ne!(config.index_fingerprint(7), f16_config.index_fingerprint(7));
    }

    #[test]
    fn every_index_kind_refuses_unknown_fields() {
        for kind in ["flat", "hnsw", "ivfpq", "diskann"] {
            let plain = format!(r#"{{"kind":"{kind}"}}"#);
            let config: IndexConfig = serde_json::from_str(&plain).unwrap();
            assert_eq!(config.kind_name(), kind);
            assert_eq!(serde_json::to_string(&config).unwrap().find(kind), Some(9));
            let extra = format!(r#"{{"kind":"{kind}","precision":"f16","bogus":1}}"#);
            let err = serde_json::from_str::<IndexConfig>(&extra).unwrap_err();
            assert!(err.to_string().contains("unknown field"), "{kind}: {err}");
        }
        assert_eq!(
            serde_json::to_string(&IndexConfig::default()).unwrap(),
            r#"{"kind":"flat"}"#
        );
    }

    #[test]
    fn f16_collections_refuse_components_out_of_half_range() {
        let half = IndexConfig::Hnsw {
            m: 16,
            ef_construction: 200,
            precision: VectorPrecision::F16,
        };
        for metric in [Metric::L2, Metric::Dot] {
            let config = CollectionConfig::new(3, metric).with_index(half.clone());
            assert!(config
                .validate_document_vector(&[1.0, -65504.0, 3.0])
                .is_ok());
            let err = config
                .validate_document_vector(&[1.0, 70000.0, 3.0])
                .unwrap_err();
            assert!(
                matches!(&err, Error::InvalidVector(m) if m.contains("component 1")),
                "{err}"
            );
            // An f32 index takes the same vector.
            let exact = CollectionConfig::new(3, metric).with_index(IndexConfig::hnsw());
            assert!(exact.validate_document_vector(&[1.0, 70000.0, 3.0]).is_ok());
        }
        // Cosine vectors are normalised before they are stored, so any magnitude fits.
        let cosine = CollectionConfig::new(3, Metric::Cosine).with_index(half);
        assert!(cosine
            .validate_document_vector(&[1.0, 70000.0, 3.0])
            .is_ok());
        assert!(cosine.validate_document_vector(&[0.0, 0.0, 0.0]).is_err());
    }
}
