//! Retrieval-quality evaluation of keyword (BM25), vector, and hybrid search on a synthetic
//! corpus whose queries have a known relevant document.
//!
//! Run with `cargo run --release --example hybrid_eval`, optionally followed by
//! `-- --docs N --queries Q --seed S` (defaults: 20000, 1000, 42). By default it sweeps the
//! queries' paraphrase rate (0, 0.25, 0.5, 0.75, 1: see below) over one indexed corpus and prints
//! recall@10 / MRR@10 per mode; `--paraphrase P` prints the detailed table of one rate instead.
//! Everything is generated from the seed by a SplitMix64 generator written here, so a run is
//! reproducible.
//!
//! # The corpus
//!
//! It models the usual complementarity of lexical and semantic retrieval, nothing more: the
//! parameters below were chosen up front as plausible, not tuned so that one mode wins.
//!
//! - **Vocabulary.** 300 *concepts*, grouped into 30 *topics* of 10 concepts. Each concept has 3
//!   or 4 *synonyms*: distinct pseudo-words made of syllables ("kesimo", "toravalu"), checked to
//!   stay distinct after the collection's English stemmer. There is also a pool of rare
//!   *identifiers* (product-code-like tokens such as "zx4471": lower-case letters and digits, so
//!   the tokenizer keeps them whole), ten times as many as there are documents.
//! - **Documents.** Each picks 2 or 3 topics and writes 8 to 12 concept mentions: 85% of them
//!   drawn from its topics, the rest from any concept; each mention uses a random synonym of its
//!   concept. Then 1 or 2 identifiers drawn uniformly from the pool (so a document's identifier
//!   is its own about 86% of the time, otherwise shared with one or two others), and 3 to 6
//!   common filler words. Many documents share topics, so many are semantically close.
//! - **Embeddings** (a stand-in for a sentence encoder, 64-D, cosine): each topic and each concept
//!   has a fixed random unit vector; a concept's embedding is the normalised sum of its own and
//!   its topic's vectors (related concepts embed near each other, cosine ≈ 0.5). A text embeds as
//!   the normalised sum of its mentions' concept embeddings — synonyms share their concept's
//!   embedding, so paraphrases embed close — plus, per identifier, a hashed random unit vector of
//!   small weight (encoders represent rare codes poorly), plus a little Gaussian noise. Filler
//!   words do not contribute.
//! - **Queries.** Each is generated from one target document, the single relevant one (targets
//!   are distinct documents): 3 to 5 of the document's concepts, each written with a synonym the
//!   document did *not* use for it where one exists (a paraphrase, so BM25 misses those terms),
//!   and, in half of the queries, one of the document's identifiers. The paraphrase rate `P`
//!   is the probability that a concept is rewritten (the document's own word is kept otherwise):
//!   0 copies the document's words, 1 never does. Queries are embedded by the same function.
//!
//! Expected: keyword search is strong when the query carries an identifier and weak otherwise;
//! vector search finds the right topic neighbourhood but confuses documents with similar topic
//! mixtures; hybrid search should gain from both.
//!
//! # What it shows (seed 42, defaults)
//!
//! Keyword search falls from recall@10 1.00 (queries copy the document's words) to 0.25 (only
//! the identifier can match) as the paraphrase rate rises; vector search stays at 0.74. Hybrid
//! search beats both arms on recall@10 from rate 0.25 to 0.75 (at 0.5: 0.85 RRF and 0.89
//! weighted, against 0.73 keyword and 0.74 vector). At the ends the better arm alone is as good
//! or better: at 0 keyword search is near perfect, and at 1 the keyword arm is noise on the
//! queries without an identifier, which fusion mixes in (RRF 0.69, weighted 0.74, vector 0.74).
//! `--paraphrase 1` shows the split by queries with and without an identifier.
//!
//! # What is measured
//!
//! For each mode (keyword, vector, hybrid RRF with k = 60, hybrid weighted with alpha = 0.5; the
//! hybrid modes fuse each arm's default 50 candidates), recall@10 (the fraction of queries whose
//! relevant document is in the top 10) and MRR@10 (the mean of 1/rank, 0 when not in the top 10),
//! over all queries and separately over the queries with and without an identifier. The vector
//! index is flat (exact), so the vector arm has no approximate-search error.

use std::collections::HashSet;
#[path = "common/rng.rs"]
mod rng;

use std::error::Error;
use std::process::ExitCode;
use std::time::Instant;

use quiverdb::keyword::terms;
use quiverdb::{
    Collection, CollectionConfig, Database, DocumentInput, Fusion, IndexConfig, Metric,
    SearchRequest, SearchResponse, TextTokenizer,
};
use uuid::Uuid;

use rng::{normalise, SplitMix64};

type AnyResult<T> = std::result::Result<T, Box<dyn Error>>;

/// Embedding dimension.
const DIM: usize = 64;
/// Number of topics; each groups [`CONCEPTS_PER_TOPIC`] concepts.
const TOPICS: usize = 30;
/// Concepts per topic.
const CONCEPTS_PER_TOPIC: usize = 10;
/// Share of a document's concept mentions drawn from its own topics.
const ON_TOPIC: f64 = 0.85;
/// Weight of each identifier's hashed vector in an embedding (the concepts weigh 1 together).
const IDENTIFIER_WEIGHT: f32 = 0.15;
/// Norm (about) of the Gaussian noise added to an embedding.
const NOISE: f32 = 0.1;
/// Fraction of queries that carry one of the target document's identifiers.
const QUERY_IDENTIFIER_RATE: f64 = 0.5;
/// Identifiers in the pool, per document.
const IDENTIFIER_POOL_PER_DOC: usize = 10;
/// Largest `--docs`: the identifier pool must stay well inside the 6.76 million codes.
const MAX_DOCS: usize = 200_000;
/// Documents per write (one transaction each).
const BATCH: usize = 10_000;
/// Hits per query: the `@10` of the metrics.
const K: usize = 10;
/// Common words sprinkled into documents; they carry no topic.
const FILLER: &[&str] = &[
    "the", "and", "with", "for", "from", "about", "report", "notes", "update", "review", "team",
    "system", "process", "version", "service", "general", "summary", "details", "overview",
    "issue", "plan", "results", "draft", "meeting", "project", "status", "changes", "support",
    "guide", "request",
];

// ----- deterministic randomness ------------------------------------------------------------

/// `acc += weight · v`.
fn add_scaled(acc: &mut [f32], v: &[f32], weight: f32) {
    acc.iter_mut().zip(v).for_each(|(a, x)| *a += weight * x);
}

/// FNV-1a: a fixed hash, so an identifier's vector does not depend on the run.
fn fnv1a(text: &str) -> u64 {
    text.bytes().fold(0xCBF2_9CE4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01B3)
    })
}

// ----- vocabulary ---------------------------------------------------------------------------

/// Concepts, their synonyms and embeddings, and the identifier pool.
struct Vocabulary {
    /// Surface words of each concept.
    synonyms: Vec<Vec<String>>,
    /// Concepts of each topic.
    topics: Vec<Vec<usize>>,
    /// Embedding of each concept.
    concept_vectors: Vec<Vec<f32>>,
    /// Rare identifiers.
    identifiers: Vec<String>,
}

/// The analysed form of `word` under the collection's tokenizer (English, stemmed), if it stays
/// a single term.
fn single_term(word: &str) -> Option<String> {
    match terms(TextTokenizer::English, word).as_slice() {
        [term] => Some(term.clone()),
        _ => None,
    }
}

/// A pseudo-word of 2 to 4 consonant-vowel syllables, sometimes with a final consonant.
fn pseudo_word(rng: &mut SplitMix64) -> String {
    const CONSONANTS: &[u8] = b"bdfgklmnprstvz";
    const VOWELS: &[u8] = b"aeiou";
    let mut word = String::new();
    for _ in 0..rng.between(2, 4) {
        word.push(char::from(*rng.pick(CONSONANTS)));
        word.push(char::from(*rng.pick(VOWELS)));
    }
    if rng.chance(0.3) {
        word.push(char::from(*rng.pick(CONSONANTS)));
    }
    word
}

/// A fresh pseudo-word whose analysed term is not in `taken` (which then records it).
fn fresh_word(rng: &mut SplitMix64, taken: &mut HashSet<String>) -> String {
    loop {
        let word = pseudo_word(rng);
        if let Some(term) = single_term(&word) {
            if taken.insert(term) {
                return word;
            }
        }
    }
}

/// A fresh identifier: two letters and four digits, e.g. `zx4471`.
fn fresh_identifier(rng: &mut SplitMix64, taken: &mut HashSet<String>) -> String {
    loop {
        let id = format!(
            "{}{}{:04}",
            char::from(b'a' + rng.below(26) as u8),
            char::from(b'a' + rng.below(26) as u8),
            rng.below(10_000)
        );
        if taken.insert(id.clone()) {
            return id;
        }
    }
}

/// Checks that the English analyser keeps every identifier whole and unchanged (one analysis per
/// chunk of distinct identifiers: building an analyser per word would be slow).
fn check_identifiers(identifiers: &[String]) -> AnyResult<()> {
    for chunk in identifiers.chunks(1000) {
        let analysed = terms(TextTokenizer::English, &chunk.join(" "));
        if analysed.as_slice() != chunk {
            return Err("the English analyser splits or alters some identifiers".into());
        }
    }
    Ok(())
}

impl Vocabulary {
    fn generate(seed: u64, docs: usize) -> AnyResult<Self> {
        let mut rng = SplitMix64::stream(seed, 1);
        let mut taken: HashSet<String> = FILLER.iter().filter_map(|w| single_term(w)).collect();
        let concepts = TOPICS * CONCEPTS_PER_TOPIC;
        let synonyms: Vec<Vec<String>> = (0..concepts)
            .map(|_| {
                let count = rng.between(3, 4);
                (0..count)
                    .map(|_| fresh_word(&mut rng, &mut taken))
                    .collect()
            })
            .collect();
        let topics: Vec<Vec<usize>> = (0..TOPICS)
            .map(|t| (t * CONCEPTS_PER_TOPIC..(t + 1) * CONCEPTS_PER_TOPIC).collect())
            .collect();
        let topic_vectors: Vec<Vec<f32>> = (0..TOPICS).map(|_| rng.unit_vector(DIM)).collect();
        let concept_vectors = (0..concepts)
            .map(|c| {
                let mut v = rng.unit_vector(DIM);
                add_scaled(&mut v, &topic_vectors[c / CONCEPTS_PER_TOPIC], 1.0);
                normalise(&mut v);
                v
            })
            .collect();
        let identifiers = (0..docs * IDENTIFIER_POOL_PER_DOC)
            .map(|_| fresh_identifier(&mut rng, &mut taken))
            .collect::<Vec<_>>();
        check_identifiers(&identifiers)?;
        Ok(Vocabulary {
            synonyms,
            topics,
            concept_vectors,
            identifiers,
        })
    }

    fn synonym_count(&self) -> usize {
        self.synonyms.iter().map(Vec::len).sum()
    }

    /// The embedding of a text mentioning `concepts` (with repetition) and `identifiers`.
    fn embed(&self, concepts: &[usize], identifiers: &[&str], rng: &mut SplitMix64) -> Vec<f32> {
        let mut semantic = vec![0.0f32; DIM];
        for &c in concepts {
            add_scaled(&mut semantic, &self.concept_vectors[c], 1.0);
        }
        normalise(&mut semantic);
        for id in identifiers {
            let id_vector = SplitMix64::new(fnv1a(id)).unit_vector(DIM);
            add_scaled(&mut semantic, &id_vector, IDENTIFIER_WEIGHT);
        }
        let noise_scale = NOISE / (DIM as f32).sqrt();
        for x in &mut semantic {
            *x += noise_scale * rng.gaussian();
        }
        normalise(&mut semantic);
        semantic
    }
}

// ----- corpus and queries -------------------------------------------------------------------

/// A generated document.
struct Doc {
    /// Concept mentions: (concept, index of the synonym used).
    mentions: Vec<(usize, usize)>,
    /// Indexes into the identifier pool.
    identifiers: Vec<usize>,
    text: String,
    vector: Vec<f32>,
}

impl Doc {
    fn generate(vocab: &Vocabulary, rng: &mut SplitMix64) -> Self {
        let topic_count = rng.between(2, 3);
        let topics = rng.sample(TOPICS, topic_count);
        let mentions: Vec<(usize, usize)> = (0..rng.between(8, 12))
            .map(|_| {
                let concept = if rng.chance(ON_TOPIC) {
                    let topic = *rng.pick(&topics);
                    *rng.pick(&vocab.topics[topic])
                } else {
                    rng.below(vocab.synonyms.len())
                };
                (concept, rng.below(vocab.synonyms[concept].len()))
            })
            .collect();
        let identifier_count = rng.between(1, 2);
        let identifiers = rng.sample(vocab.identifiers.len(), identifier_count);
        let mut words: Vec<&str> = mentions
            .iter()
            .map(|&(c, s)| vocab.synonyms[c][s].as_str())
            .chain(identifiers.iter().map(|&i| vocab.identifiers[i].as_str()))
            .collect();
        words.extend((0..rng.between(3, 6)).map(|_| *rng.pick(FILLER)));
        rng.shuffle(&mut words);
        let concepts: Vec<usize> = mentions.iter().map(|&(c, _)| c).collect();
        let id_words: Vec<&str> = identifiers
            .iter()
            .map(|&i| vocab.identifiers[i].as_str())
            .collect();
        let vector = vocab.embed(&concepts, &id_words, rng);
        Doc {
            mentions,
            identifiers,
            text: words.join(" "),
            vector,
        }
    }

    /// Distinct concepts, in order of first mention.
    fn concepts(&self) -> Vec<usize> {
        let mut seen = HashSet::new();
        self.mentions
            .iter()
            .map(|&(c, _)| c)
            .filter(|c| seen.insert(*c))
            .collect()
    }
}

/// A generated query and its single relevant document.
struct Query {
    target: usize,
    /// The target's identifier the query carries (an index into the pool), if any.
    identifier: Option<usize>,
    /// How many of the query's concept words the target document also uses.
    shared_words: usize,
    /// How many concept words the query has.
    concept_words: usize,
    text: String,
    vector: Vec<f32>,
}

impl Query {
    fn generate(
        vocab: &Vocabulary,
        doc: &Doc,
        target: usize,
        paraphrase: f64,
        rng: &mut SplitMix64,
    ) -> Self {
        let mut concepts = doc.concepts();
        rng.shuffle(&mut concepts);
        let concept_count = rng.between(3, 5);
        concepts.truncate(concept_count);
        let mut shared_words = 0;
        let mut words: Vec<&str> = concepts
            .iter()
            .map(|&c| {
                let used: Vec<usize> = doc
                    .mentions
                    .iter()
                    .filter(|&&(m, _)| m == c)
                    .map(|&(_, s)| s)
                    .collect();
                let unused: Vec<usize> = (0..vocab.synonyms[c].len())
                    .filter(|s| !used.contains(s))
                    .collect();
                let synonym = if !unused.is_empty() && rng.chance(paraphrase) {
                    *rng.pick(&unused)
                } else {
                    shared_words += 1;
                    *rng.pick(&used)
                };
                vocab.synonyms[c][synonym].as_str()
            })
            .collect();
        let identifier = if rng.chance(QUERY_IDENTIFIER_RATE) {
            Some(*rng.pick(&doc.identifiers))
        } else {
            None
        };
        let id_words: Vec<&str> = identifier
            .iter()
            .map(|&i| vocab.identifiers[i].as_str())
            .collect();
        words.extend(&id_words);
        rng.shuffle(&mut words);
        let vector = vocab.embed(&concepts, &id_words, rng);
        Query {
            target,
            identifier,
            shared_words,
            concept_words: concepts.len(),
            text: words.join(" "),
            vector,
        }
    }
}

/// The public id of document `i`.
fn doc_uuid(i: usize) -> Uuid {
    Uuid::from_u128(i as u128 + 1)
}

// ----- evaluation ---------------------------------------------------------------------------

/// A search mode under evaluation.
#[derive(Clone, Copy)]
enum Mode {
    Keyword,
    Vector,
    HybridRrf,
    HybridWeighted,
}

impl Mode {
    const ALL: [Mode; 4] = [
        Mode::Keyword,
        Mode::Vector,
        Mode::HybridRrf,
        Mode::HybridWeighted,
    ];

    fn name(self) -> &'static str {
        match self {
            Mode::Keyword => "keyword (BM25)",
            Mode::Vector => "vector (flat, exact)",
            Mode::HybridRrf => "hybrid RRF (k=60)",
            Mode::HybridWeighted => "hybrid weighted (alpha=0.5)",
        }
    }

    fn request(self, query: &Query) -> SearchRequest {
        let (vector, text) = (query.vector.clone(), query.text.clone());
        match self {
            Mode::Keyword => SearchRequest::text(text, K),
            Mode::Vector => SearchRequest::new(vector, K),
            Mode::HybridRrf => SearchRequest::hybrid(vector, text, K),
            Mode::HybridWeighted => {
                SearchRequest::hybrid(vector, text, K).with_fusion(Fusion::Weighted { alpha: 0.5 })
            }
        }
    }
}

/// For each query, the 1-based rank of its relevant document in the top [`K`], if there.
fn ranks(col: &Collection, queries: &[Query], mode: Mode) -> quiverdb::Result<Vec<Option<usize>>> {
    let requests: Vec<SearchRequest> = queries.iter().map(|q| mode.request(q)).collect();
    let responses: Vec<SearchResponse> = col.search_batch(&requests)?;
    Ok(queries
        .iter()
        .zip(responses)
        .map(|(query, response)| {
            let target = doc_uuid(query.target);
            response
                .hits
                .iter()
                .position(|hit| hit.id == target)
                .map(|i| i + 1)
        })
        .collect())
}

/// recall@K and MRR@K over the queries `keep` selects.
fn metrics(
    queries: &[Query],
    ranks: &[Option<usize>],
    keep: impl Fn(&Query) -> bool,
) -> (f64, f64) {
    let selected: Vec<Option<usize>> = queries
        .iter()
        .zip(ranks)
        .filter(|(q, _)| keep(q))
        .map(|(_, &r)| r)
        .collect();
    if selected.is_empty() {
        return (f64::NAN, f64::NAN);
    }
    let n = selected.len() as f64;
    let found = selected.iter().filter(|r| r.is_some()).count() as f64;
    // (A fold from +0.0: an empty float `sum` is -0.0.)
    let reciprocal = selected
        .iter()
        .flatten()
        .fold(0.0, |acc, &r| acc + 1.0 / r as f64);
    (found / n, reciprocal / n)
}

// ----- command line -------------------------------------------------------------------------

/// Command-line options.
struct Args {
    docs: usize,
    queries: usize,
    seed: u64,
    /// One paraphrase rate with the detailed table, or `None` for the sweep.
    paraphrase: Option<f64>,
}

/// Paraphrase rates of the default sweep.
const SWEEP: [f64; 5] = [0.0, 0.25, 0.5, 0.75, 1.0];

const USAGE: &str =
    "usage: hybrid_eval [--docs N] [--queries Q] [--seed S] [--paraphrase P (0..=1)]";

impl Args {
    fn parse() -> AnyResult<Args> {
        let mut args = Args {
            docs: 20_000,
            queries: 1_000,
            seed: 42,
            paraphrase: None,
        };
        let mut it = std::env::args().skip(1);
        while let Some(flag) = it.next() {
            if flag == "--help" || flag == "-h" {
                println!("{USAGE}");
                std::process::exit(0);
            }
            let value = it
                .next()
                .ok_or_else(|| format!("{flag} needs a value\n{USAGE}"))?;
            let bad = |e: &dyn std::fmt::Display| format!("{flag} {value:?}: {e}\n{USAGE}");
            match flag.as_str() {
                "--docs" => args.docs = value.parse().map_err(|e| bad(&e))?,
                "--queries" => args.queries = value.parse().map_err(|e| bad(&e))?,
                "--seed" => args.seed = value.parse().map_err(|e| bad(&e))?,
                "--paraphrase" => args.paraphrase = Some(value.parse().map_err(|e| bad(&e))?),
                _ => return Err(format!("unknown argument {flag:?}\n{USAGE}").into()),
            }
        }
        if args.docs == 0 || args.docs > MAX_DOCS {
            return Err(format!("--docs must be in 1..={MAX_DOCS}\n{USAGE}").into());
        }
        if args.queries == 0 || args.queries > args.docs {
            return Err(format!("need 1 <= --queries <= --docs\n{USAGE}").into());
        }
        if args.paraphrase.is_some_and(|p| !(0.0..=1.0).contains(&p)) {
            return Err(format!("--paraphrase must be in [0, 1]\n{USAGE}").into());
        }
        Ok(args)
    }
}

// ----- main ---------------------------------------------------------------------------------

/// Writes the corpus to a new collection (flat vector index, English text index).
fn index_corpus(db: &Database, docs: &[Doc]) -> quiverdb::Result<Collection> {
    let config = CollectionConfig::new(DIM, Metric::Cosine)
        .with_index(IndexConfig::Flat {})
        .with_text_index(true);
    let col = db.create_collection("eval", config)?;
    for (b, chunk) in docs.chunks(BATCH).enumerate() {
        let batch = chunk
            .iter()
            .enumerate()
            .map(|(i, d)| {
                DocumentInput::new(d.vector.clone())
                    .with_text(d.text.as_str())
                    .with_id(doc_uuid(b * BATCH + i))
            })
            .collect();
        col.upsert(batch)?;
    }
    Ok(col)
}

/// How many documents hold each query's identifier, summarised: (unique, shared).
fn identifier_sharing(docs: &[Doc], queries: &[Query], vocab: &Vocabulary) -> (usize, usize) {
    let mut holders = vec![0usize; vocab.identifiers.len()];
    for d in docs {
        d.identifiers.iter().for_each(|&i| holders[i] += 1);
    }
    let (unique, shared): (Vec<usize>, Vec<usize>) = queries
        .iter()
        .filter_map(|q| q.identifier)
        .partition(|&i| holders[i] == 1);
    (unique.len(), shared.len())
}

/// A metric to three decimals, `-` when undefined (an empty subset).
fn fmt_metric(x: f64) -> String {
    if x.is_nan() {
        "-".to_string()
    } else {
        format!("{x:.3}")
    }
}

/// Wall-clock time of each phase, in seconds.
struct Timings {
    generate: f64,
    index: f64,
    search: f64,
}

/// Prints the seed, the sizes of the corpus and the setup.
fn print_setup(
    args: &Args,
    paraphrase: f64,
    vocab: &Vocabulary,
    docs: &[Doc],
    queries: &[Query],
    t: &Timings,
) {
    let with_id = queries.iter().filter(|q| q.identifier.is_some()).count();
    let (unique_ids, shared_ids) = identifier_sharing(docs, queries, vocab);
    let overlapping: usize = queries.iter().map(|q| q.shared_words).sum();
    let concept_words: usize = queries.iter().map(|q| q.concept_words).sum();
    let candidates = SearchRequest::hybrid(vec![1.0], "", K).arm_candidates();
    println!("# hybrid_eval");
    println!();
    println!(
        "seed {}, {} documents, {} queries ({with_id} with an identifier: {unique_ids} held by \
         the target alone, {shared_ids} shared with other documents; {} without)",
        args.seed,
        docs.len(),
        queries.len(),
        queries.len() - with_id
    );
    println!(
        "vocabulary: {} concepts in {TOPICS} topics, {} synonyms, {} identifiers in the pool",
        vocab.synonyms.len(),
        vocab.synonym_count(),
        vocab.identifiers.len(),
    );
    println!(
        "queries: paraphrase rate {}; {overlapping} of {concept_words} query concept words \
         ({:.1}%) also occur in the target",
        paraphrase,
        100.0 * overlapping as f64 / concept_words as f64
    );
    println!(
        "vector index: flat (exact search, no ANN error), {DIM}-D cosine; keyword index: BM25, \
         English tokenizer; hybrid: top {candidates} of each arm fused"
    );
    println!(
        "time: generate {:.1}s, index {:.1}s, search {:.1}s ({} searches)",
        t.generate,
        t.index,
        t.search,
        queries.len() * Mode::ALL.len()
    );
}

/// Prints the header of the sweep table: one row per paraphrase rate, recall@10 / MRR@10 per mode.
fn print_sweep_header() {
    let names: Vec<&str> = Mode::ALL.iter().map(|m| m.name()).collect();
    println!("| paraphrase rate | {} |", names.join(" | "));
    println!("|---:|{}", "---:|".repeat(names.len()));
}

/// Prints one row of the sweep table: `recall@10 / MRR@10` of each mode.
fn print_sweep_row(paraphrase: f64, queries: &[Query], results: &[(Mode, Vec<Option<usize>>)]) {
    let cells: Vec<String> = results
        .iter()
        .map(|(_, ranks)| {
            let (recall, mrr) = metrics(queries, ranks, |_| true);
            format!("{} / {}", fmt_metric(recall), fmt_metric(mrr))
        })
        .collect();
    println!("| {paraphrase} | {} |", cells.join(" | "));
}

/// Prints the metrics of each mode as a Markdown table.
fn print_table(queries: &[Query], results: &[(Mode, Vec<Option<usize>>)]) {
    println!(
        "| mode | recall@10 | MRR@10 | recall@10 with id | MRR@10 with id | recall@10 no id \
         | MRR@10 no id |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|");
    for (mode, ranks) in results {
        let subsets = [
            metrics(queries, ranks, |_| true),
            metrics(queries, ranks, |q| q.identifier.is_some()),
            metrics(queries, ranks, |q| q.identifier.is_none()),
        ];
        let cells: Vec<String> = subsets
            .iter()
            .flat_map(|&(recall, mrr)| [fmt_metric(recall), fmt_metric(mrr)])
            .collect();
        println!("| {} | {} |", mode.name(), cells.join(" | "));
    }
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("hybrid_eval: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Generates the corpus and queries, indexes, searches, and prints the report.
fn run() -> AnyResult<()> {
    let args = Args::parse()?;
    let clock = Instant::now();

    let vocab = Vocabulary::generate(args.seed, args.docs)?;
    let mut doc_rng = SplitMix64::stream(args.seed, 2);
    let docs: Vec<Doc> = (0..args.docs)
        .map(|_| Doc::generate(&vocab, &mut doc_rng))
        .collect();
    let targets = SplitMix64::stream(args.seed, 3).sample(args.docs, args.queries);
    // The same targets at every rate; each rate's queries from the same stream.
    let queries_at = |paraphrase: f64| -> Vec<Query> {
        let mut query_rng = SplitMix64::stream(args.seed, 4);
        targets
            .iter()
            .map(|&t| Query::generate(&vocab, &docs[t], t, paraphrase, &mut query_rng))
            .collect()
    };
    let generate = clock.elapsed().as_secs_f64();

    let dir = tempfile::tempdir()?;
    let db = Database::open(dir.path())?;
    let col = index_corpus(&db, &docs)?;
    let index = clock.elapsed().as_secs_f64() - generate;
    let evaluate = |queries: &[Query]| -> quiverdb::Result<Vec<(Mode, Vec<Option<usize>>)>> {
        Mode::ALL
            .iter()
            .map(|&mode| Ok((mode, ranks(&col, queries, mode)?)))
            .collect()
    };

    match args.paraphrase {
        Some(paraphrase) => {
            let queries = queries_at(paraphrase);
            let results = evaluate(&queries)?;
            let timings = Timings {
                generate,
                index,
                search: clock.elapsed().as_secs_f64() - generate - index,
            };
            print_setup(&args, paraphrase, &vocab, &docs, &queries, &timings);
            println!();
            print_table(&queries, &results);
        }
        None => {
            println!(
                "# hybrid_eval: seed {}, {} documents, {} queries per paraphrase rate \
                 (flat exact vector index, {DIM}-D cosine; BM25 with the English tokenizer; \
                 indexed in {index:.1}s)",
                args.seed, args.docs, args.queries
            );
            println!();
            print_sweep_header();
            for paraphrase in SWEEP {
                let queries = queries_at(paraphrase);
                print_sweep_row(paraphrase, &queries, &evaluate(&queries)?);
            }
            println!();
            println!("(details of one rate: --paraphrase P)");
        }
    }
    drop(col);
    db.close()?;
    Ok(())
}
