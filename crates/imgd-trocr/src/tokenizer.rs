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

/// One piece of a SentencePiece model.
#[derive(Debug, Clone, PartialEq)]
pub struct Piece {
    /// Its text (`▁` marks a word start).
    pub piece: String,
    /// Its unigram log probability.
    pub score: f32,
    /// SentencePiece's type: 1 normal, 2 unknown, 3 control, 4 user-defined, 5 unused, 6 byte.
    pub kind: u64,
}

/// The pieces of a serialised SentencePiece `ModelProto` (field 1; a piece's text is field 1,
/// its score field 2, its type field 3, NORMAL when absent).
pub fn sentencepiece_pieces(bytes: &[u8]) -> Result<Vec<Piece>, String> {
    let mut pieces = Vec::new();
    for field in fields(bytes)? {
        if let (1, Value::Bytes(body)) = field {
            let mut piece = Piece {
                piece: String::new(),
                score: 0.0,
                kind: 1,
            };
            for inner in fields(body)? {
                match inner {
                    (1, Value::Bytes(text)) => {
                        piece.piece = String::from_utf8(text.to_vec())
                            .map_err(|_| "a piece is not UTF-8".to_string())?;
                    }
                    (2, Value::Fixed32(bits)) => piece.score = f32::from_bits(bits),
                    (3, Value::Varint(kind)) => piece.kind = kind,
                    _ => {}
                }
            }
            pieces.push(piece);
        }
    }
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

enum Value<'a> {
    Varint(u64),
    Fixed64,
    Bytes(&'a [u8]),
    Fixed32(u32),
}

fn varint(bytes: &[u8], at: &mut usize) -> Result<u64, String> {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        let byte = *bytes.get(*at).ok_or("truncated varint")?;
        *at += 1;
        value |= u64::from(byte & 0x7F) << shift;
        if byte & 0x80 == 0 {
            return Ok(value);
        }
    }
    Err("varint too long".into())
}

/// The fields of one protobuf message: (number, value).
fn fields(bytes: &[u8]) -> Result<Vec<(u64, Value<'_>)>, String> {
    let mut out = Vec::new();
    let mut at = 0;
    while at < bytes.len() {
        let key = varint(bytes, &mut at)?;
        let value = match key & 7 {
            0 => Value::Varint(varint(bytes, &mut at)?),
            1 => {
                at += 8;
                Value::Fixed64
            }
            2 => {
                let len = varint(bytes, &mut at)? as usize;
                let body = bytes
                    .get(at..at.checked_add(len).ok_or("length overflow")?)
                    .ok_or("truncated field")?;
                at += len;
                Value::Bytes(body)
            }
            5 => {
                let raw = bytes.get(at..at + 4).ok_or("truncated fixed32")?;
                at += 4;
                Value::Fixed32(u32::from_le_bytes([raw[0], raw[1], raw[2], raw[3]]))
            }
            wire => return Err(format!("unsupported protobuf wire type {wire}")),
        };
        if at > bytes.len() {
            return Err("truncated field".into());
        }
        out.push((key >> 3, value));
    }
    Ok(out)
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
