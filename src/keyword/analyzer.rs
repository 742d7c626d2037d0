//! Text analysis: the tokenizer a collection chose, for indexing and for queries alike.

use tantivy::tokenizer::{
    Language, LowerCaser, RemoveLongFilter, SimpleTokenizer, Stemmer, TextAnalyzer,
    WhitespaceTokenizer,
};

use crate::config::TextTokenizer;

/// Name under which the collection's analyzer is registered in its tantivy index.
pub(super) const ANALYZER_NAME: &str = "quiver";

/// Tokens longer than this many bytes are dropped (they are rarely words and bloat the index).
const MAX_TOKEN_BYTES: usize = 64;

/// Most distinct terms a query keeps (the rest are ignored).
pub const MAX_QUERY_TERMS: usize = 1024;

/// The tantivy analyzer for `tokenizer`.
pub(super) fn analyzer(tokenizer: TextTokenizer) -> TextAnalyzer {
    match tokenizer {
        TextTokenizer::English => TextAnalyzer::builder(SimpleTokenizer::default())
            .filter(RemoveLongFilter::limit(MAX_TOKEN_BYTES + 1))
            .filter(LowerCaser)
            .filter(Stemmer::new(Language::English))
            .build(),
        TextTokenizer::Simple => TextAnalyzer::builder(SimpleTokenizer::default())
            .filter(RemoveLongFilter::limit(MAX_TOKEN_BYTES + 1))
            .filter(LowerCaser)
            .build(),
        TextTokenizer::Whitespace => TextAnalyzer::builder(WhitespaceTokenizer::default())
            .filter(RemoveLongFilter::limit(MAX_TOKEN_BYTES + 1))
            .build(),
    }
}

/// The distinct terms of `text` under `tokenizer`, in order of first appearance (at most
/// [`MAX_QUERY_TERMS`]).
pub fn terms(tokenizer: TextTokenizer, text: &str) -> Vec<String> {
    terms_with(&analyzer(tokenizer), text)
}

/// The distinct terms of `text` under a built analyzer (see [`terms`]).
pub(super) fn terms_with(analyzer: &TextAnalyzer, text: &str) -> Vec<String> {
    let mut analyzer = analyzer.clone();
    let mut stream = analyzer.token_stream(text);
    let mut seen = std::collections::HashSet::new();
    let mut terms = Vec::new();
    while stream.advance() && terms.len() < MAX_QUERY_TERMS {
        let term = &stream.token().text;
        if seen.insert(term.clone()) {
            terms.push(term.clone());
        }
    }
    terms
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn english_lowercases_and_stems() {
        assert_eq!(
            terms(TextTokenizer::English, "Running runners RUN, run!"),
            vec!["run", "runner"]
        );
    }

    #[test]
    fn simple_lowercases_without_stemming() {
        assert_eq!(
            terms(TextTokenizer::Simple, "Running runners"),
            vec!["running", "runners"]
        );
    }

    #[test]
    fn whitespace_keeps_tokens_exactly() {
        assert_eq!(
            terms(TextTokenizer::Whitespace, "ERR-42 err-42  v1.2"),
            vec!["ERR-42", "err-42", "v1.2"]
        );
    }

    #[test]
    fn overlong_tokens_are_dropped() {
        let long = "x".repeat(MAX_TOKEN_BYTES + 1);
        assert_eq!(
            terms(TextTokenizer::Simple, &format!("{long} ok")),
            vec!["ok"]
        );
    }
}
