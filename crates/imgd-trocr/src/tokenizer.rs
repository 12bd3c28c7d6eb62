//! The tokenizer, for decoding generated ids to text.
//!
//! A model folder holds either HF's `tokenizer.json` (read by the `tokenizers` crate as is) or,
//! as `microsoft/trocr-small-printed` ships it, only the SentencePiece model
//! `sentencepiece.bpe.model` of its `XLMRobertaTokenizer`. From the latter this module builds
//! what transformers' `XLMRobertaTokenizer` converts it to: a unigram model over fairseq's
//! layout of the pieces (`<s>` 0, `<pad>` 1, `</s>` 2, `<unk>` 3, then the SentencePiece pieces
//! from the fourth on, each one id higher than in SentencePiece, and `<mask>` last), the
//! Metaspace `▁` pre-tokenizer and decoder with a prefix space, and the five special tokens.
//! Decoding needs nothing else (the normaliser only matters for encoding), so the text of any
//! ids is what `TrOCRProcessor.batch_decode(…, skip_special_tokens=True)` gives.

use std::fs;
use std::path::Path;

pub use imgd_candle::sentencepiece::Piece;
use imgd_candle::sentencepiece::SentencePieceModel;
use serde_json::json;
use tokenizers::Tokenizer;

use crate::TrocrError;

/// HF's tokenizer file.
pub const TOKENIZER_JSON: &str = "tokenizer.json";
/// The SentencePiece model of XLM-R-style tokenizers (trocr-small).
pub const SENTENCEPIECE_MODEL: &str = "sentencepiece.bpe.model";

/// Whether `dir` holds a tokenizer this module reads.
pub fn has_tokenizer(dir: &Path) -> bool {
    dir.join(TOKENIZER_JSON).is_file() || dir.join(SENTENCEPIECE_MODEL).is_file()
}

/// The tokenizer of the model in `dir`: `tokenizer.json`, else `sentencepiece.bpe.model`.
pub fn load_tokenizer(dir: &Path) -> Result<Tokenizer, TrocrError> {
    let json = dir.join(TOKENIZER_JSON);
    if json.is_file() {
        return Tokenizer::from_file(&json)
            .map_err(|e| TrocrError::Tokenizer(format!("{}: {e}", json.display())));
    }
    let spm = dir.join(SENTENCEPIECE_MODEL);
    if spm.is_file() {
        let bytes = fs::read(&spm).map_err(|source| TrocrError::Io {
            path: spm.clone(),
            source,
        })?;
        return xlm_roberta_from_sentencepiece(&bytes)
            .map_err(|e| TrocrError::Tokenizer(format!("{}: {e}", spm.display())));
    }
    Err(TrocrError::MissingFile(json))
}

/// The pieces of a serialised SentencePiece `ModelProto`, checked to start with the three
/// special pieces (`<unk>`, `<s>`, `</s>`).
pub fn sentencepiece_pieces(bytes: &[u8]) -> Result<Vec<Piece>, String> {
    let pieces = SentencePieceModel::parse(bytes)?.pieces;
    if pieces.len() < 4 {
        return Err(format!(
            "{} pieces: not a SentencePiece model with <unk>, <s> and </s> first",
            pieces.len()
        ));
    }
    Ok(pieces)
}

/// The `XLMRobertaTokenizer` of a SentencePiece model, as transformers converts it.
pub fn xlm_roberta_from_sentencepiece(bytes: &[u8]) -> Result<Tokenizer, String> {
    let pieces = sentencepiece_pieces(bytes)?;
    let specials = ["<s>", "<pad>", "</s>", "<unk>"];
    let mut vocab: Vec<serde_json::Value> = specials.iter().map(|s| json!([s, 0.0])).collect();
    vocab.extend(
        pieces[3..]
            .iter()
            .map(|p| json!([p.piece, f64::from(p.score)])),
    );
    let mask = vocab.len();
    vocab.push(json!(["<mask>", 0.0]));
    let added: Vec<serde_json::Value> = specials
        .iter()
        .enumerate()
        .map(|(id, s)| (id, *s))
        .chain(std::iter::once((mask, "<mask>")))
        .map(|(id, content)| {
            json!({"id": id, "content": content, "single_word": false, "lstrip": false,
                   "rstrip": false, "normalized": false, "special": true})
        })
        .collect();
    let metaspace = json!({"type": "Metaspace", "replacement": "▁", "prepend_scheme": "always",
                           "split": true});
    let tokenizer = json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": added,
        "normalizer": null,
        "pre_tokenizer": {"type": "Sequence", "pretokenizers": [{"type": "WhitespaceSplit"}, metaspace]},
        "post_processor": null,
        "decoder": metaspace,
        "model": {"type": "Unigram", "unk_id": 3, "vocab": vocab, "byte_fallback": false},
    });
    Tokenizer::from_bytes(tokenizer.to_string().as_bytes()).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(pieces: &[(&str, f32, u64)]) -> Vec<u8> {
        let mut out = Vec::new();
        for (piece, score, kind) in pieces {
            let mut body = vec![0x0A, piece.len() as u8];
            body.extend_from_slice(piece.as_bytes());
            body.push(0x15);
            body.extend_from_slice(&score.to_le_bytes());
            body.extend_from_slice(&[0x18, *kind as u8]);
            out.push(0x0A);
            out.push(body.len() as u8);
            out.extend(body);
        }
        // An unrelated field (trainer_spec) is skipped.
        out.extend_from_slice(&[0x12, 0x02, 0x18, 0x01]);
        out
    }

    #[test]
    fn sentencepiece_pieces_become_fairseqs_layout_and_decode_with_metaspace() {
        let bytes = message(&[
            ("<unk>", 0.0, 2),
            ("<s>", 0.0, 3),
            ("</s>", 0.0, 3),
            ("▁Bus", -1.0, 1),
            ("▁stop", -2.0, 1),
            ("s", -3.0, 1),
        ]);
        let pieces = sentencepiece_pieces(&bytes).unwrap();
        assert_eq!(pieces[3].piece, "▁Bus");
        assert_eq!(pieces[4].score, -2.0);
        let tokenizer = xlm_roberta_from_sentencepiece(&bytes).unwrap();
        assert_eq!(tokenizer.get_vocab_size(true), 8);
        assert_eq!(tokenizer.token_to_id("▁Bus"), Some(4));
        assert_eq!(tokenizer.token_to_id("<mask>"), Some(7));
        let text = tokenizer.decode(&[0, 4, 5, 6, 2, 1], true).unwrap();
        assert_eq!(text, "Bus stops");
        assert!(sentencepiece_pieces(&[0x0A, 0x05, 0x0A]).is_err());
    }
}
