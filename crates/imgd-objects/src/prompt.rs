//! The text side of GroundingDINO: the configured phrases as one caption, tokenised with the
//! model's BERT WordPiece tokenizer, and which phrase each token belongs to.
//!
//! The reference joins phrases as `"cat . dog . street sign ."` (lower case, each followed by
//! ` .`); the model splits its text attention at `[CLS]`, `[SEP]`, `.` and `?`, so every phrase
//! is scored on its own tokens. Phrase grounding then reads, for each box, the probabilities of
//! the tokens of each phrase.

use std::path::Path;

use tokenizers::Tokenizer;

use crate::ObjectsError;

/// The caption built from the phrases, tokenised.
#[derive(Debug, Clone)]
pub struct Prompt {
    /// The phrases, in order, as configured (trimmed).
    pub phrases: Vec<String>,
    /// The caption the model reads.
    pub text: String,
    /// Its token ids, `[CLS]` … `[SEP]`.
    pub input_ids: Vec<i64>,
    /// For each token, the index in `phrases` of the phrase it belongs to (`None` for
    /// `[CLS]`, `[SEP]` and the `.` separators).
    pub phrase_of_token: Vec<Option<usize>>,
}

impl Prompt {
    /// Tokenises `phrases` with the tokenizer in `tokenizer_json`; an error when the caption
    /// is longer than `max_tokens` (the model's `max_text_len`, 256 for the released models).
    pub fn new(
        tokenizer_json: &Path,
        phrases: &[String],
        max_tokens: usize,
    ) -> Result<Prompt, ObjectsError> {
        let tokenizer =
            Tokenizer::from_file(tokenizer_json).map_err(|e| ObjectsError::Tokenizer {
                path: tokenizer_json.to_path_buf(),
                message: e.to_string(),
            })?;
        Prompt::with_tokenizer(&tokenizer, phrases, max_tokens).map_err(|message| {
            ObjectsError::Tokenizer {
                path: tokenizer_json.to_path_buf(),
                message,
            }
        })
    }

    /// [`Prompt::new`] with a loaded tokenizer; the error is a message.
    pub fn with_tokenizer(
        tokenizer: &Tokenizer,
        phrases: &[String],
        max_tokens: usize,
    ) -> Result<Prompt, String> {
        let phrases: Vec<String> = phrases
            .iter()
            .map(|p| p.replace(['.', '?'], " ").trim().to_string())
            .filter(|p| !p.is_empty())
            .collect();
        if phrases.is_empty() {
            return Err("no prompts: list at least one phrase in [objects] prompts".into());
        }
        let text = phrases
            .iter()
            .map(|p| format!("{} .", p.to_lowercase()))
            .collect::<Vec<_>>()
            .join(" ");
        let encoding = tokenizer
            .encode(text.as_str(), true)
            .map_err(|e| e.to_string())?;
        let id = |token: &str| {
            tokenizer
                .token_to_id(token)
                .ok_or_else(|| format!("the tokenizer has no `{token}` token"))
        };
        let (cls, sep, dot) = (id("[CLS]")?, id("[SEP]")?, id(".")?);
        let ids = encoding.get_ids();
        if ids.len() > max_tokens {
            return Err(format!(
                "{} prompts make {} tokens, more than the model's {max_tokens}: list fewer",
                phrases.len(),
                ids.len()
            ));
        }
        let mut phrase = 0usize;
        let mut phrase_of_token = Vec::with_capacity(ids.len());
        for &token in ids {
            if token == cls || token == sep {
                phrase_of_token.push(None);
            } else if token == dot {
                phrase_of_token.push(None);
                phrase += 1;
            } else {
                phrase_of_token.push((phrase < phrases.len()).then_some(phrase));
            }
        }
        Ok(Prompt {
            phrases,
            text,
            input_ids: ids.iter().map(|&i| i64::from(i)).collect(),
            phrase_of_token,
        })
    }
}
