//! The help centre: articles (`help/<slug>.md` with `id`, `title`, `tags` front matter, then
//! paragraphs separated by blank lines) and passage retrieval.
//!
//! Retrieval scores every paragraph with BM25 over words (the article's title and tags count as
//! part of each of its paragraphs); when the sentence encoder is available, the cosine between
//! the question and the paragraph embeddings is blended in. The answer is extractive: the best
//! paragraph, cited by its article's title.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use switchboard_router::encoder::BertEncoder;

/// One article.
#[derive(Debug, Clone, PartialEq)]
pub struct Article {
    /// Id from the front matter.
    pub id: String,
    /// Title.
    pub title: String,
    /// Tags.
    pub tags: Vec<String>,
    /// Paragraphs of the body.
    pub paragraphs: Vec<String>,
}

/// Why the help centre could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum FaqError {
    /// An unreadable folder or file.
    #[error("{path}: {source}")]
    Io {
        /// The path.
        path: String,
        /// The error.
        source: std::io::Error,
    },
    /// A malformed article.
    #[error("{path}:{line}: {message}")]
    Malformed {
        /// The file.
        path: String,
        /// 1-based line.
        line: usize,
        /// What is wrong.
        message: String,
    },
}

/// Parses one article.
///
/// # Errors
/// [`FaqError::Malformed`] without front matter, `id` or `title`, or with no paragraph.
pub fn parse_article(text: &str, path: &str) -> Result<Article, FaqError> {
    let bad = |line: usize, message: &str| FaqError::Malformed { path: path.into(), line, message: message.into() };
    let mut lines = text.lines().enumerate();
    match lines.next() {
        Some((_, l)) if l.trim() == "---" => {}
        _ => return Err(bad(1, "expected front matter starting with `---`")),
    }
    let (mut id, mut title, mut tags) = (None, None, Vec::new());
    let mut body_start = None;
    for (i, l) in lines.by_ref() {
        if l.trim() == "---" {
            body_start = Some(i + 1);
            break;
        }
        let Some((k, v)) = l.split_once(':') else {
            if l.trim().is_empty() {
                continue;
            }
            return Err(bad(i + 1, "expected `key: value` in the front matter"));
        };
        let v = v.trim().trim_matches('"').to_string();
        match k.trim() {
            "id" => id = Some(v),
            "title" => title = Some(v),
            "tags" => {
                tags = v
                    .trim_start_matches('[')
                    .trim_end_matches(']')
                    .split(',')
                    .map(|t| t.trim().trim_matches('"').trim_matches('\'').to_string())
                    .filter(|t| !t.is_empty())
                    .collect();
            }
            _ => {}
        }
    }
    let start = body_start.ok_or_else(|| bad(1, "front matter is not closed with `---`"))?;
    let id = id.ok_or_else(|| bad(1, "front matter lacks `id`"))?;
    let title = title.ok_or_else(|| bad(1, "front matter lacks `title`"))?;
    let body: Vec<&str> = text.lines().skip(start).collect();
    let paragraphs: Vec<String> = body
        .split(|l| l.trim().is_empty())
        .map(|p| p.iter().map(|l| l.trim()).collect::<Vec<_>>().join(" "))
        .map(|p| p.trim_start_matches('#').trim().to_string())
        .filter(|p| !p.is_empty())
        .collect();
    if paragraphs.is_empty() {
        return Err(bad(start + 1, "the article has no paragraph"));
    }
    Ok(Article { id, title, tags, paragraphs })
}

/// A retrieved passage.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Passage {
    /// Article id.
    pub article_id: String,
    /// Article title (the citation).
    pub title: String,
    /// The paragraph.
    pub text: String,
    /// Relevance (higher is better; BM25 normalised to `[0, 1]`, blended with cosine).
    pub score: f32,
}

struct Doc {
    article: usize,
    text: String,
    tf: HashMap<String, f32>,
    len: f32,
    embedding: Option<Vec<f32>>,
}

/// The help centre with its index.
pub struct HelpCentre {
    articles: Vec<Article>,
    docs: Vec<Doc>,
    df: HashMap<String, f32>,
    avg_len: f32,
    encoder: Option<Arc<BertEncoder>>,
}

impl std::fmt::Debug for HelpCentre {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HelpCentre")
            .field("articles", &self.articles.len())
            .field("passages", &self.docs.len())
            .finish()
    }
}

const STOP: &[&str] = &[
    "a", "an", "the", "is", "are", "i", "my", "me", "you", "your", "to", "of", "in", "on", "and", "or", "it", "do",
    "does", "can", "how", "what", "for", "with", "be", "this", "that", "at", "we", "our", "as", "if", "by", "from",
    "there", "any", "have", "has", "will", "was", "please", "about", "when", "which", "who", "why", "where", "so",
    "not",
];

fn stem(w: &str) -> String {
    let w = w.trim_matches('\'');
    for suf in ["ing", "es", "ed", "s"] {
        if w.len() > suf.len() + 3
            && let Some(s) = w.strip_suffix(suf)
        {
            return s.to_string();
        }
    }
    w.to_string()
}

/// Lower-cased, stop-word-free, lightly stemmed words.
pub fn terms(text: &str) -> Vec<String> {
    text.to_lowercase()
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty() && !STOP.contains(w))
        .map(stem)
        .collect()
}

fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let na: f32 = a.iter().map(|x| x * x).sum::<f32>().sqrt();
    let nb: f32 = b.iter().map(|x| x * x).sum::<f32>().sqrt();
    if na == 0.0 || nb == 0.0 { 0.0 } else { dot / (na * nb) }
}

const K1: f32 = 1.2;
const B: f32 = 0.75;
/// Bonus for passages of articles that match the routed intent (see [`HelpCentre::search_for`]).
pub const INTENT_BONUS: f32 = 0.2;
/// A second passage of the same article joins the answer when it scores at least this share of
/// the best one.
const SECOND_PASSAGE: f32 = 0.8;
/// Weight of the cosine next to BM25 when the encoder is available.
const COSINE_WEIGHT: f32 = 0.5;

impl HelpCentre {
    /// Loads every `*.md` of a folder (sorted by name).
    ///
    /// # Errors
    /// [`FaqError`] for unreadable or malformed files.
    pub fn load(dir: &Path, encoder: Option<Arc<BertEncoder>>) -> Result<Self, FaqError> {
        let io = |source| FaqError::Io { path: dir.display().to_string(), source };
        let mut files: Vec<_> = std::fs::read_dir(dir)
            .map_err(io)?
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|e| e == "md"))
            .collect();
        files.sort();
        let mut articles = Vec::new();
        for f in files {
            let text =
                std::fs::read_to_string(&f).map_err(|source| FaqError::Io { path: f.display().to_string(), source })?;
            articles.push(parse_article(&text, &f.display().to_string())?);
        }
        Ok(Self::new(articles, encoder))
    }

    /// Indexes articles.
    pub fn new(articles: Vec<Article>, encoder: Option<Arc<BertEncoder>>) -> Self {
        let mut docs = Vec::new();
        let mut df: HashMap<String, f32> = HashMap::new();
        for (ai, a) in articles.iter().enumerate() {
            let head = format!("{} {}", a.title, a.tags.join(" "));
            for p in &a.paragraphs {
                let mut tf: HashMap<String, f32> = HashMap::new();
                let ts = terms(&format!("{head} {p}"));
                for t in &ts {
                    *tf.entry(t.clone()).or_default() += 1.0;
                }
                for t in tf.keys() {
                    *df.entry(t.clone()).or_default() += 1.0;
                }
                docs.push(Doc { article: ai, text: p.clone(), len: ts.len() as f32, tf, embedding: None });
            }
        }
        if let Some(enc) = &encoder {
            let texts: Vec<String> =
                docs.iter().map(|d| format!("{}. {}", articles[d.article].title, d.text)).collect();
            let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
            match enc.encode(&refs) {
                Ok(e) => {
                    for (d, v) in docs.iter_mut().zip(e.vectors) {
                        d.embedding = Some(v);
                    }
                }
                Err(e) => tracing::warn!(error = %e, "help centre: embedding failed; lexical retrieval only"),
            }
        }
        let avg_len = if docs.is_empty() { 1.0 } else { docs.iter().map(|d| d.len).sum::<f32>() / docs.len() as f32 };
        Self { articles, docs, df, avg_len, encoder }
    }

    /// The articles.
    pub fn articles(&self) -> &[Article] {
        &self.articles
    }

    /// The `k` best passages for a question, best first.
    pub fn search(&self, question: &str, k: usize) -> Vec<Passage> {
        self.search_for(question, None, k)
    }

    /// The answer to a question: its best passage and, when another passage of the same article
    /// is nearly as relevant, that one too (in article order), so an answer split over two
    /// paragraphs is not cut in half. `None` below `min_score`.
    pub fn answer(&self, question: &str, intent: Option<&str>, min_score: f32) -> Option<Passage> {
        let found = self.search_for(question, intent, 8);
        let best = found.first().filter(|p| p.score >= min_score)?.clone();
        let Some(second) =
            found.iter().skip(1).find(|p| p.article_id == best.article_id && p.score >= SECOND_PASSAGE * best.score)
        else {
            return Some(best);
        };
        let article = self.articles.iter().find(|a| a.id == best.article_id)?;
        let pos = |t: &str| article.paragraphs.iter().position(|p| p == t).unwrap_or(usize::MAX);
        let text = if pos(&best.text) <= pos(&second.text) {
            format!("{}\n\n{}", best.text, second.text)
        } else {
            format!("{}\n\n{}", second.text, best.text)
        };
        Some(Passage { text, ..best })
    }

    /// [`Self::search`], with the routed intent (when the router named one): articles whose id or
    /// tags share words with the intent's name (`staking`, `tax_documents`) get a bonus of up to
    /// [`INTENT_BONUS`], so the router's decision and the retrieval agree.
    pub fn search_for(&self, question: &str, intent: Option<&str>, k: usize) -> Vec<Passage> {
        let q = terms(question);
        let n = self.docs.len() as f32;
        let mut scores: Vec<f32> = self
            .docs
            .iter()
            .map(|d| {
                q.iter()
                    .map(|t| {
                        let f = d.tf.get(t).copied().unwrap_or(0.0);
                        if f == 0.0 {
                            return 0.0;
                        }
                        let df = self.df.get(t).copied().unwrap_or(0.0);
                        let idf = ((n - df + 0.5) / (df + 0.5) + 1.0).ln();
                        idf * f * (K1 + 1.0) / (f + K1 * (1.0 - B + B * d.len / self.avg_len))
                    })
                    .sum()
            })
            .collect();
        // Normalise by the best possible score of the query (every term matched once in an
        // average-length passage), so `min_score` means the same for any question.
        let ideal: f32 = q
            .iter()
            .map(|t| {
                let df = self.df.get(t).copied().unwrap_or(0.0);
                ((n - df + 0.5) / (df + 0.5) + 1.0).ln()
            })
            .sum::<f32>()
            .max(1e-6);
        for s in &mut scores {
            *s = (*s / ideal).min(1.0);
        }
        if let Some(enc) = &self.encoder
            && self.docs.iter().all(|d| d.embedding.is_some())
            && let Ok(e) = enc.encode(&[question])
            && let Some(qv) = e.vectors.first()
        {
            for (s, d) in scores.iter_mut().zip(&self.docs) {
                let c = d.embedding.as_deref().map_or(0.0, |v| cosine(qv, v)).max(0.0);
                *s = (1.0 - COSINE_WEIGHT) * *s + COSINE_WEIGHT * c;
            }
        }
        if let Some(intent) = intent {
            let want = terms(&intent.replace('_', " "));
            if !want.is_empty() {
                for (sc, d) in scores.iter_mut().zip(&self.docs) {
                    let a = &self.articles[d.article];
                    let have = terms(&format!("{} {}", a.id.replace('-', " "), a.tags.join(" ")));
                    let hits = want.iter().filter(|w| have.contains(w)).count();
                    if *sc > 0.0 {
                        *sc += INTENT_BONUS * hits as f32 / want.len() as f32;
                    }
                }
            }
        }
        let mut order: Vec<usize> = (0..self.docs.len()).collect();
        order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]));
        order
            .into_iter()
            .take(k)
            .filter(|&i| scores[i] > 0.0)
            .map(|i| {
                let d = &self.docs[i];
                let a = &self.articles[d.article];
                Passage { article_id: a.id.clone(), title: a.title.clone(), text: d.text.clone(), score: scores[i] }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn art(id: &str, title: &str, tags: &str, body: &str) -> Article {
        parse_article(&format!("---\nid: {id}\ntitle: {title}\ntags: [{tags}]\n---\n\n{body}\n"), "t.md").unwrap()
    }

    #[test]
    fn parses_front_matter_and_paragraphs() {
        let a = art("fees", "Trading fees", "fees, trading", "First para\ncontinues.\n\nSecond para.");
        assert_eq!(a.tags, vec!["fees", "trading"]);
        assert_eq!(a.paragraphs, vec!["First para continues.", "Second para."]);
        assert!(parse_article("no front matter", "x.md").is_err());
    }

    #[test]
    fn best_paragraph_of_the_right_article() {
        let h = HelpCentre::new(
            vec![
                art("fees", "Trading fees", "fees", "Maker fees are 0.1%.\n\nTaker fees are 0.2% of the order value."),
                art("cards", "Card delivery times", "card, delivery", "Cards arrive in 5 to 7 business days."),
            ],
            None,
        );
        let p = h.search("how long does card delivery take", 1);
        assert_eq!(p[0].title, "Card delivery times");
        let p = h.search("what is the taker fee", 1);
        assert!(p[0].text.starts_with("Taker"), "{p:?}");
        assert!(h.search("zebra giraffe", 1).is_empty());
    }
}
