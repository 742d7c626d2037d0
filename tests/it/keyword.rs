//! Keyword (BM25) and hybrid search: scores against an independent BM25, visibility of every
//! acknowledged write, a model of random writes, filters inside both arms, fusion against
//! hand-computed values, persistence and rebuilds of a damaged index.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use proptest::prelude::*;
use quiverdb::query::fusion::DEFAULT_RRF_K;
use quiverdb::sync::Recovery;
use quiverdb::{
    Collection, CollectionConfig, Database, DocumentInput, Error, Filter, Fusion, Hit, IndexConfig,
    Metric, PayloadKind, SearchRequest, TextTokenizer,
};
use serde_json::json;
use uuid::Uuid;

use crate::common::{brute_force, Rng};

const DIM: usize = 8;

fn id(i: usize) -> Uuid {
    Uuid::from_u128(i as u128 + 1)
}

fn text_collection(db: &Database, tokenizer: TextTokenizer) -> Collection {
    let config = CollectionConfig::new(DIM, Metric::L2)
        .with_text_index(true)
        .with_text_tokenizer(tokenizer)
        .with_payload_field("group", PayloadKind::Integer);
    db.create_collection("docs", config).unwrap()
}

fn keyword(c: &Collection, text: &str, k: usize) -> Vec<Hit> {
    c.search(&SearchRequest::text(text, k)).unwrap().hits
}

fn ids(hits: &[Hit]) -> Vec<Uuid> {
    hits.iter().map(|h| h.id).collect()
}

/// Words of `text` as the `simple` tokenizer should see them: runs of alphanumerics, lower-cased.
fn reference_tokens(text: &str) -> Vec<String> {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|t| !t.is_empty())
        .map(str::to_lowercase)
        .collect()
}

/// Okapi BM25 (k1 = 1.2, b = 0.75, idf = ln(1 + (N − n + 0.5) / (n + 0.5))), written from the
/// formula, for the query terms of `query` over `docs`.
fn reference_bm25(docs: &[(Uuid, String)], query: &str) -> BTreeMap<Uuid, f64> {
    let tokenized: Vec<(Uuid, Vec<String>)> = docs
        .iter()
        .map(|(id, text)| (*id, reference_tokens(text)))
        .collect();
    let n = tokenized.len() as f64;
    let avgdl = tokenized.iter().map(|(_, t)| t.len()).sum::<usize>() as f64 / n;
    let terms: BTreeSet<String> = reference_tokens(query).into_iter().collect();
    let mut scores = BTreeMap::new();
    for term in &terms {
        let df = tokenized.iter().filter(|(_, t)| t.contains(term)).count() as f64;
        if df == 0.0 {
            continue;
        }
        let idf = (1.0 + (n - df + 0.5) / (df + 0.5)).ln();
        for (id, tokens) in &tokenized {
            let tf = tokens.iter().filter(|t| *t == term).count() as f64;
            if tf > 0.0 {
                let dl = tokens.len() as f64;
                let part = idf * tf * 2.2 / (tf + 1.2 * (0.25 + 0.75 * dl / avgdl));
                *scores.entry(*id).or_insert(0.0) += part;
            }
        }
    }
    scores
}

const WORDS: &[&str] = &[
    "apple", "banana", "cherry", "delta", "echo", "falcon", "garden", "harbor", "island", "jungle",
    "kernel", "lemon", "meadow", "nectar", "ocean", "pepper",
];

fn random_text(rng: &mut Rng, max_words: usize) -> String {
    let n = 1 + rng.below(max_words);
    (0..n)
        .map(|_| WORDS[rng.below(WORDS.len())])
        .collect::<Vec<_>>()
        .join(if rng.below(2) == 0 { " " } else { ", " })
}

#[test]
fn bm25_scores_match_an_independent_implementation() {
    let seed = 7;
    eprintln!("seed {seed}");
    let mut rng = Rng(seed);
    let dir = tempfile::tempdir().unwrap();
    let db = Database::open(dir.path()).unwrap();
    let c = text_collection(&db, TextTokenizer::Simple);
    // Short texts (≤ 30 tokens), whose lengths tantivy stores exactly.
    let docs: Vec<(Uuid, String)> = (0..300)
        .map(|i| (id(i), random_text(&mut rng, 30)))
        .collect();
    c.upsert(
        docs.iter()
            .map(|(id, text)| {
                DocumentInput::new(rng.vector(DIM))
                    .with_id(*id)
                    .with_text(text.clone())
            })
            .collect(),
    )
    .unwrap();
    for query in [
        "apple",
        "Cherry ocean",
        "kernel lemon pepper apple",
        "nothing here",
    ] {
        let expected = reference_bm25(&docs, query);
        let response = c.search(&SearchRequest::text(query, 1000)).unwrap();
        assert_eq!(response.strategy, "keyword_bm25");
        assert!(response.exhaustive);
        assert_eq!(
            response.examined,
            expected.len(),
            "{query}: matching documents"
        );
        assert_eq!(response.hits.len(), expected.len(), "{query}");
        let mut previous = f32::INFINITY;
        for hit in &response.hits {
            let score = hit.score.expect("keyword hits carry a score");
            assert!(hit.distance.is_none());
            assert!(score <= previous, "{query}: hits out of order");
            previous = score;
            let want = expected[&hit.id];
            assert!(
                (f64::from(score) - want).abs() <= 1e-4 * want.max(1.0),
                "{query}: {} scored {score}, reference {want}",
                hit.id
            );
        }
        // The top k is the reference's top k (up to ties at the cut).
        let top = keyword(&c, query, 5);
        let mut by_reference: Vec<(Uuid, f64)> = expected.into_iter().collect();
        by_reference.sort_by(|a, b| b.1.total_cmp(&a.1));
        for (hit, (_, want)) in top.iter().zip(&by_reference) {
            assert!((f64::from(hit.score.unwrap()) - want).abs() <= 1e-4 * want.max(1.0));
        }
    }
}

#[test]
fn exact_term_matches_rank_first_and_stemming_follows_the_tokenizer() {
    let dir = tempfile::tempdir().unwrap();
    let db = Database::open(dir.path()).unwrap();
    let c = text_collection(&db, TextTokenizer::English);
    let texts = [
        "The runner was running along the river",
        "Rivers and lakes of the north",
        "A quiet evening with tea and a book",
        "Runners run: a guide to running shoes",
    ];
    let mut rng = Rng(3);
    c.upsert(
        texts
            .iter()
            .enumerate()
            .map(|(i, t)| {
                DocumentInput::new(rng.vector(DIM))
                    .with_id(id(i))
                    .with_text(*t)
            })
            .collect(),
    )
    .unwrap();
    // "runs" stems to "run": both documents about running, the one saying it three times first.
    assert_eq!(ids(&keyword(&c, "runs", 10)), vec![id(3), id(0)]);
    assert_eq!(ids(&keyword(&c, "river", 10)).len(), 2);
    assert_eq!(ids(&keyword(&c, "tea", 10)), vec![id(2)]);
    assert!(keyword(&c, "volcano", 10).is_empty());
    assert!(keyword(&c, "?! ...", 10).is_empty(), "no terms, no hits");

    let ws_dir = tempfile::tempdir().unwrap();
    let ws_db = Database::open(ws_dir.path()).unwrap();
    let ws = text_collection(&ws_db, TextTokenizer::Whitespace);
    ws.upsert(vec![
        DocumentInput::new(rng.vector(DIM))
            .with_id(id(0))
            .with_text("error ERR-42 in v1.2"),
        DocumentInput::new(rng.vector(DIM))
            .with_id(id(1))
            .with_text("err 42"),
    ])
    .unwrap();
    assert_eq!(ids(&keyword(&ws, "ERR-42", 10)), vec![id(0)]);
    assert!(
        keyword(&ws, "err-42", 10).is_empty(),
        "whitespace keeps case"
    );
    assert_eq!(ids(&keyword(&ws, "42", 10)), vec![id(1)]);
}

#[test]
fn updates_and_deletes_change_keyword_results_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let db = Database::open(dir.path()).unwrap();
    let c = text_collection(&db, TextTokenizer::English);
    let v = vec![0.5; DIM];
    c.upsert(vec![DocumentInput::new(v.clone())
        .with_id(id(0))
        .with_text("alpha particle")])
        .unwrap();
    assert_eq!(ids(&keyword(&c, "alpha", 5)), vec![id(0)]);
    // Replaced text: the old term leaves, the new one arrives.
    c.upsert(vec![DocumentInput::new(v.clone())
        .with_id(id(0))
        .with_text("beta decay")])
        .unwrap();
    assert!(keyword(&c, "alpha", 5).is_empty());
    assert_eq!(ids(&keyword(&c, "beta", 5)), vec![id(0)]);
    // A metadata update or a vector update keeps the text searchable.
    c.update_metadata(id(0), json!({"group": 1})).unwrap();
    c.update_vector(id(0), vec![0.25; DIM]).unwrap();
    assert_eq!(ids(&keyword(&c, "decay", 5)), vec![id(0)]);
    // A document written without text leaves the keyword index.
    c.upsert(vec![DocumentInput::new(v.clone()).with_id(id(0))])
        .unwrap();
    assert!(keyword(&c, "beta", 5).is_empty());
    c.upsert(vec![DocumentInput::new(v)
        .with_id(id(0))
        .with_text("gamma ray")])
        .unwrap();
    assert_eq!(ids(&keyword(&c, "gamma", 5)), vec![id(0)]);
    c.delete(&[id(0)]).unwrap();
    assert!(keyword(&c, "gamma", 5).is_empty());
    assert!(db.check(None).unwrap().ok());
}

#[derive(Clone, Debug)]
enum Op {
    Upsert {
        doc: usize,
        text: Option<String>,
        group: i64,
    },
    Delete {
        doc: usize,
    },
    DeleteWhere {
        group: i64,
    },
    Patch {
        doc: usize,
        group: i64,
    },
    Reopen,
}

fn op() -> impl Strategy<Value = Op> {
    let text = proptest::option::weighted(
        0.85,
        proptest::collection::vec(proptest::sample::select(WORDS), 1..6).prop_map(|w| w.join(" ")),
    );
    prop_oneof![
        6 => (0..40usize, text, 0..4i64).prop_map(|(doc, text, group)| Op::Upsert { doc, text, group }),
        2 => (0..40usize).prop_map(|doc| Op::Delete { doc }),
        1 => (0..4i64).prop_map(|group| Op::DeleteWhere { group }),
        2 => (0..40usize, 0..4i64).prop_map(|(doc, group)| Op::Patch { doc, group }),
        1 => Just(Op::Reopen),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    /// After any sequence of writes (and reopens), a keyword search for each word returns
    /// exactly the live documents whose text contains it, also under a filter.
    #[test]
    fn keyword_results_follow_a_naive_model(ops in proptest::collection::vec(op(), 1..40)) {
        let dir = tempfile::tempdir().unwrap();
        let mut db = Database::open(dir.path()).unwrap();
        let mut c = text_collection(&db, TextTokenizer::Simple);
        // doc → (text, group)
        let mut model: HashMap<usize, (Option<String>, i64)> = HashMap::new();
        for op in ops {
            match op {
                Op::Upsert { doc, text, group } => {
                    let mut input = DocumentInput::new(vec![doc as f32; DIM])
                        .with_id(id(doc))
                        .with_metadata(json!({"group": group}));
                    if let Some(t) = &text {
                        input = input.with_text(t.clone());
                    }
                    c.upsert(vec![input]).unwrap();
                    model.insert(doc, (text, group));
                }
                Op::Delete { doc } => {
                    c.delete(&[id(doc)]).unwrap();
                    model.remove(&doc);
                }
                Op::DeleteWhere { group } => {
                    c.delete_where(&Filter::field("group").eq(group)).unwrap();
                    model.retain(|_, (_, g)| *g != group);
                }
                Op::Patch { doc, group } => {
                    let result = c.update_metadata(id(doc), json!({"group": group}));
                    match model.get_mut(&doc) {
                        Some(entry) => { result.unwrap(); entry.1 = group; }
                        None => prop_assert!(matches!(result, Err(Error::DocumentNotFound(_)))),
                    }
                }
                Op::Reopen => {
                    drop(c);
                    db.close().unwrap();
                    db = Database::open(dir.path()).unwrap();
                    c = db.collection("docs").unwrap();
                }
            }
        }
        for word in WORDS {
            let has = |t: &Option<String>| t.as_deref().is_some_and(|t| t.split(' ').any(|w| w == *word));
            let expected: BTreeSet<Uuid> = model.iter().filter(|(_, (t, _))| has(t)).map(|(d, _)| id(*d)).collect();
            let got: BTreeSet<Uuid> = ids(&keyword(&c, word, 100)).into_iter().collect();
            prop_assert_eq!(&got, &expected, "word {}", word);
            let in_group: BTreeSet<Uuid> = model.iter().filter(|(_, (t, g))| has(t) && *g == 1).map(|(d, _)| id(*d)).collect();
            let request = SearchRequest::text(*word, 100).with_filter(Filter::field("group").eq(1));
            let response = c.search(&request).unwrap();
            let got: BTreeSet<Uuid> = ids(&response.hits).into_iter().collect();
            prop_assert_eq!(&got, &in_group, "word {} in group 1", word);
        }
        let report = db.check(None).unwrap();
        prop_assert!(report.ok(), "{:?}", report);
    }
}

/// A corpus document: id, vector, text, group.
type CorpusDoc = (Uuid, Vec<f32>, String, i64);

/// A collection of `n` documents: text = one topic word (of 4) + a serial word, group = i % 20,
/// a random vector.
fn corpus(db: &Database, n: usize, rng: &mut Rng) -> (Collection, Vec<CorpusDoc>) {
    let c = db
        .create_collection(
            "docs",
            CollectionConfig::new(DIM, Metric::L2)
                .with_index(IndexConfig::hnsw())
                .with_text_index(true)
                .with_payload_field("group", PayloadKind::Integer),
        )
        .unwrap();
    let docs: Vec<CorpusDoc> = (0..n)
        .map(|i| {
            let text = format!("{} item{i}", ["red", "green", "blue", "amber"][i % 4]);
            (id(i), rng.vector(DIM), text, (i % 20) as i64)
        })
        .collect();
    for chunk in docs.chunks(1000) {
        c.upsert(
            chunk
                .iter()
                .map(|(id, v, t, g)| {
                    DocumentInput::new(v.clone())
                        .with_id(*id)
                        .with_text(t.clone())
                        .with_metadata(json!({ "group": g }))
                })
                .collect(),
        )
        .unwrap();
    }
    (c, docs)
}

#[test]
fn filters_apply_inside_both_arms_and_return_k_hits_when_k_match() {
    let seed = 11;
    eprintln!("seed {seed}");
    let mut rng = Rng(seed);
    let dir = tempfile::tempdir().unwrap();
    let db = Database::open(dir.path()).unwrap();
    let (c, docs) = corpus(&db, 4000, &mut rng);
    // group 3 has 200 documents, all "amber" (i % 4 == 3); "red" matches none of them.
    let group3 = Filter::field("group").eq(3);
    for k in [1, 10, 50] {
        let response = c
            .search(&SearchRequest::text("amber", k).with_filter(group3.clone()))
            .unwrap();
        assert_eq!(response.hits.len(), k, "keyword arm, k {k}");
        assert_eq!(response.filter_matches, Some(200));
        assert_eq!(response.examined, 200, "every match scored");
        let query = rng.vector(DIM);
        let response = c
            .search(&SearchRequest::hybrid(query.clone(), "amber", k).with_filter(group3.clone()))
            .unwrap();
        assert_eq!(response.hits.len(), k, "hybrid, k {k}");
        for hit in &response.hits {
            let i = (hit.id.as_u128() - 1) as usize;
            assert_eq!(docs[i].3, 3, "hybrid hit outside the filter");
            let arms = hit.arms.expect("hybrid hits carry arms");
            assert!(arms.vector.is_some() || arms.keyword.is_some());
        }
        // A keyword arm that matches nothing under the filter leaves the vector arm's hits.
        let response = c
            .search(&SearchRequest::hybrid(query, "red", k).with_filter(group3.clone()))
            .unwrap();
        assert_eq!(response.hits.len(), k);
        assert!(response
            .hits
            .iter()
            .all(|h| h.arms.unwrap().keyword.is_none()));
    }
    // Fewer matches than k: all of them.
    let response = c
        .search(&SearchRequest::text("item3 item8 item27", 10).with_filter(group3))
        .unwrap();
    assert_eq!(ids(&response.hits), vec![id(3)]);
}

#[test]
fn hybrid_scores_are_the_rrf_and_weighted_fusion_of_the_arms() {
    let seed = 5;
    let mut rng = Rng(seed);
    let dir = tempfile::tempdir().unwrap();
    let db = Database::open(dir.path()).unwrap();
    let (c, docs) = corpus(&db, 600, &mut rng);
    let expected_vectors: Vec<(Uuid, Vec<f32>)> =
        docs.iter().map(|(id, v, _, _)| (*id, v.clone())).collect();
    let query = rng.vector(DIM);
    let text = "green item4 item9 item10";
    let depth = 30;
    // Each arm on its own, exactly: brute force for the vector arm, the keyword search itself.
    let vector_arm = brute_force(Metric::L2, &expected_vectors, &query, depth);
    let keyword_arm = keyword(&c, text, depth);
    let vector_rank: HashMap<Uuid, usize> = vector_arm
        .iter()
        .enumerate()
        .map(|(r, (id, _))| (*id, r + 1))
        .collect();
    let keyword_rank: HashMap<Uuid, usize> = keyword_arm
        .iter()
        .enumerate()
        .map(|(r, h)| (h.id, r + 1))
        .collect();

    let mut request = SearchRequest::hybrid(query.clone(), text, 10).with_ef(400);
    request.candidates = Some(depth);
    let response = c.search(&request).unwrap();
    assert!(
        response.strategy.starts_with("hybrid_rrf("),
        "{}",
        response.strategy
    );
    let mut expected: Vec<(Uuid, f64)> = vector_rank
        .keys()
        .chain(keyword_rank.keys())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .map(|id| {
            let rrf = |rank: Option<&usize>| rank.map_or(0.0, |&r| 1.0 / (60.0 + r as f64));
            (*id, rrf(vector_rank.get(id)) + rrf(keyword_rank.get(id)))
        })
        .collect();
    expected.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    assert_eq!(DEFAULT_RRF_K, 60.0);
    assert_eq!(response.hits.len(), 10);
    for (hit, (want_id, want)) in response.hits.iter().zip(&expected) {
        let score = f64::from(hit.score.unwrap());
        assert!(
            (score - want).abs() < 1e-6,
            "{} fused {score}, expected {want}",
            hit.id
        );
        assert_eq!(hit.id, *want_id);
        let arms = hit.arms.unwrap();
        assert_eq!(
            arms.vector.map(|a| a.rank),
            vector_rank.get(&hit.id).copied()
        );
        assert_eq!(
            arms.keyword.map(|a| a.rank),
            keyword_rank.get(&hit.id).copied()
        );
    }

    // Weighted, alpha 1: the vector arm's order; alpha 0: the keyword arm's order.
    let weighted = |alpha: f32| {
        let mut r = SearchRequest::hybrid(query.clone(), text, 5)
            .with_ef(400)
            .with_fusion(Fusion::Weighted { alpha });
        r.candidates = Some(depth);
        c.search(&r).unwrap().hits
    };
    let vector_only: Vec<Uuid> = vector_arm.iter().take(5).map(|(id, _)| *id).collect();
    assert_eq!(ids(&weighted(1.0)), vector_only);
    let keyword_top: Vec<Uuid> = ids(&keyword_arm[..5]);
    assert_eq!(ids(&weighted(0.0))[0], keyword_top[0]);
    let best = weighted(0.5);
    assert!(best[0].score.unwrap() <= 1.0 && best[0].score.unwrap() > 0.0);
}

#[test]
fn keyword_index_survives_reopen_and_is_rebuilt_when_damaged() {
    let mut rng = Rng(21);
    let dir = tempfile::tempdir().unwrap();
    let db = Database::open(dir.path()).unwrap();
    let (c, _) = corpus(&db, 800, &mut rng);
    c.delete(&[id(1), id(5)]).unwrap();
    let queries = ["red", "green item5 item6", "blue amber item100"];
    let before: Vec<Vec<Hit>> = queries.iter().map(|q| keyword(&c, q, 20)).collect();
    drop(c);
    db.close().unwrap();

    let db = Database::open(dir.path()).unwrap();
    let c = db.collection("docs").unwrap();
    let info = c.info().unwrap().keyword_index.unwrap();
    assert!(
        matches!(info.recovery, Recovery::Loaded { .. }),
        "{:?}",
        info.recovery
    );
    assert_eq!(info.documents, 798);
    let after: Vec<Vec<Hit>> = queries.iter().map(|q| keyword(&c, q, 20)).collect();
    assert_eq!(before, after);
    // Writes after the last commit are replayed from the change log on open.
    c.upsert(vec![DocumentInput::new(vec![0.0; DIM])
        .with_id(id(5))
        .with_text("violet")])
        .unwrap();
    drop(c);
    db.close().unwrap();

    // Damage: flip bytes in every segment file, then remove meta.json of a second copy.
    let keyword_dir = std::fs::read_dir(dir.path().join("collections"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path()
        .join("keyword");
    for entry in std::fs::read_dir(&keyword_dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        if name.ends_with(".idx") || name.ends_with(".term") {
            let mut bytes = std::fs::read(&path).unwrap();
            let middle = bytes.len() / 2;
            bytes[middle] ^= 0x5a;
            std::fs::write(&path, bytes).unwrap();
        }
    }
    let db = Database::open(dir.path()).unwrap();
    let c = db.collection("docs").unwrap();
    let info = c.info().unwrap().keyword_index.unwrap();
    assert!(
        matches!(info.recovery, Recovery::Rebuilt { .. }),
        "{:?}",
        info.recovery
    );
    assert_eq!(ids(&keyword(&c, "violet", 5)), vec![id(5)]);
    assert_eq!(ids(&keyword(&c, "item100", 5)), vec![id(100)]);
    let red = c.search(&SearchRequest::text("red", 5)).unwrap();
    assert_eq!(red.examined, 200, "every red document is back");
    assert!(db.check(None).unwrap().ok());
    drop(c);
    db.close().unwrap();

    std::fs::remove_file(keyword_dir.join("meta.json")).unwrap();
    let db = Database::open(dir.path()).unwrap();
    let c = db.collection("docs").unwrap();
    let info = c.info().unwrap().keyword_index.unwrap();
    assert!(
        matches!(info.recovery, Recovery::Rebuilt { .. }),
        "{:?}",
        info.recovery
    );
    assert_eq!(info.documents, 799);
    assert!(db.check(None).unwrap().ok());
}

#[test]
fn text_requests_are_validated() {
    let dir = tempfile::tempdir().unwrap();
    let db = Database::open(dir.path()).unwrap();
    let plain = db
        .create_collection("plain", CollectionConfig::new(DIM, Metric::L2))
        .unwrap();
    let err = plain.search(&SearchRequest::text("hello", 5)).unwrap_err();
    assert!(err.to_string().contains("no text index"), "{err}");
    let c = text_collection(&db, TextTokenizer::English);
    let v = vec![0.1; DIM];
    let bad = [
        SearchRequest::hybrid(v.clone(), "x", 5).with_fusion(Fusion::Weighted { alpha: 1.5 }),
        SearchRequest::hybrid(v.clone(), "x", 5).with_fusion(Fusion::Weighted { alpha: f32::NAN }),
        SearchRequest::hybrid(v.clone(), "x", 5).with_fusion(Fusion::Rrf { k: 0.0 }),
        SearchRequest::hybrid(vec![0.1; DIM + 1], "x", 5),
        SearchRequest::text("x".repeat(quiverdb::query::MAX_TEXT_BYTES + 1), 5),
        SearchRequest::text("x", 0),
    ];
    for request in bad {
        assert!(
            matches!(
                c.search(&request),
                Err(Error::InvalidArgument(_) | Error::DimensionMismatch { .. })
            ),
            "{request:?} accepted"
        );
    }
    for line in [
        r#"{"k": 3}"#,
        r#"{"text": "a", "fusion": "rrf", "alpha": 0.3}"#,
        r#"{"text": "a", "fusion": "weighted", "rrf_k": 10}"#,
        r#"{"text": "a", "candidates": 0}"#,
    ] {
        let request: SearchRequest = serde_json::from_str(line).unwrap();
        assert!(c.search(&request).is_err(), "{line} accepted");
    }
    assert!(serde_json::from_str::<SearchRequest>(r#"{"text": "a", "fusion": "max"}"#).is_err());
    // A text query with terms but no matches is not an error.
    assert!(c
        .search(&SearchRequest::text("anything", 5))
        .unwrap()
        .hits
        .is_empty());
}

#[test]
fn concurrent_searches_see_every_acknowledged_write() {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::sync::Arc;

    let dir = tempfile::tempdir().unwrap();
    let db = Database::open(dir.path()).unwrap();
    let c = text_collection(&db, TextTokenizer::English);
    let acked = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(AtomicBool::new(false));
    let readers: Vec<_> = (0..4)
        .map(|r| {
            let (c, acked, done) = (c.clone(), acked.clone(), done.clone());
            std::thread::spawn(move || {
                let mut searches = 0;
                while !done.load(Ordering::Acquire) {
                    let before = acked.load(Ordering::Acquire);
                    let request = if r % 2 == 0 {
                        SearchRequest::text("common", 1)
                    } else {
                        SearchRequest::hybrid(vec![0.5; DIM], "common", 1)
                    };
                    let response = c.search(&request).unwrap();
                    let matched = if r % 2 == 0 {
                        response.examined
                    } else {
                        // Hybrid: examined = vector examined + keyword matches; check the text arm.
                        c.search(&SearchRequest::text("common", 1))
                            .unwrap()
                            .examined
                    };
                    assert!(
                        matched >= before,
                        "reader {r}: {matched} < {before} acknowledged"
                    );
                    searches += 1;
                }
                searches
            })
        })
        .collect();
    for i in 0..150 {
        c.upsert(vec![DocumentInput::new(vec![i as f32; DIM])
            .with_id(id(i))
            .with_text(format!("common w{i}"))])
            .unwrap();
        acked.store(i + 1, Ordering::Release);
    }
    done.store(true, Ordering::Release);
    let searches: usize = readers.into_iter().map(|r| r.join().unwrap()).sum();
    assert!(searches > 0);
    assert_eq!(
        c.search(&SearchRequest::text("common", 1))
            .unwrap()
            .examined,
        150
    );
    assert!(db.check(None).unwrap().ok());
}
