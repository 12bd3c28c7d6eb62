//! Text in and out of BLIP-2: the language model's tokenizer (`tokenizer.json`), prompts in the
//! form the BLIP-2 paper uses for questions, and answers decoded back to text.

use std::path::Path;

use imgd_candle::ModelError;
use tokenizers::Tokenizer;

use crate::Result;

/// The prompt of a question, as BLIP-2 was trained to answer it.
pub fn question_prompt(question: &str) -> String {
    format!("Question: {} Answer:", question.trim())
}

/// The tokenizer of a BLIP-2 checkpoint's language model.
pub struct TextCodec {
    tokenizer: Tokenizer,
    bos: Option<u32>,
}

impl TextCodec {
    /// Loads `dir/tokenizer.json`; `bos` is the language model's beginning-of-sequence token,
    /// put before every prompt (OPT's; Flan-T5 has none, its tokenizer ends a prompt with its
    /// end token).
    pub fn load(dir: &Path, bos: Option<u32>) -> Result<Self> {
        let path = imgd_candle::model_info::require(dir, "tokenizer.json")?;
        let tokenizer = Tokenizer::from_file(&path)
            .map_err(|e| ModelError::Tokenizer(format!("{}: {e}", path.display())))?;
        Ok(TextCodec { tokenizer, bos })
    }

    /// The token ids of a prompt as the tokenizer makes them, the beginning-of-sequence token
    /// first when the model has one (OPT's tokenizer adds it itself; it is added here when a
    /// tokenizer does not).
    pub fn prompt(&self, text: &str) -> Result<Vec<u32>> {
        let encoding = self
            .tokenizer
            .encode(text, true)
            .map_err(|e| ModelError::Tokenizer(e.to_string()))?;
        let mut ids = encoding.get_ids().to_vec();
        if let Some(bos) = self.bos
            && ids.first() != Some(&bos)
        {
            ids.insert(0, bos);
        }
        Ok(ids)
    }

    /// The text of generated ids, special tokens left out, surrounding white space trimmed.
    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        let text = self
            .tokenizer
            .decode(ids, true)
            .map_err(|e| ModelError::Tokenizer(e.to_string()))?;
        Ok(text.trim().to_string())
    }
}
