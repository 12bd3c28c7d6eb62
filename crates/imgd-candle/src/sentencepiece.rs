//! SentencePiece model files (`*.model`, a serialised `ModelProto`): the pieces with their
//! scores and types, and the normaliser's precompiled character map. Read by hand (the format
//! is a small protobuf); the `tokenizers` crate then runs the model.

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

/// What a SentencePiece model holds that encoding needs.
#[derive(Debug, Clone, PartialEq)]
pub struct SentencePieceModel {
    /// The pieces, in id order.
    pub pieces: Vec<Piece>,
    /// The normaliser's precompiled character map (NFKC for `nmt_nfkc`); empty when none.
    pub precompiled_charsmap: Vec<u8>,
}

impl SentencePieceModel {
    /// Parses a serialised `ModelProto`: pieces are field 1 (text 1, score 2, type 3, NORMAL
    /// when absent), the normaliser spec field 3 (its precompiled map field 2).
    pub fn parse(bytes: &[u8]) -> Result<Self, String> {
        let mut model = SentencePieceModel {
            pieces: Vec::new(),
            precompiled_charsmap: Vec::new(),
        };
        for field in fields(bytes)? {
            match field {
                (1, Value::Bytes(body)) => model.pieces.push(piece(body)?),
                (3, Value::Bytes(spec)) => {
                    for inner in fields(spec)? {
                        if let (2, Value::Bytes(map)) = inner {
                            model.precompiled_charsmap = map.to_vec();
                        }
                    }
                }
                _ => {}
            }
        }
        Ok(model)
    }

    /// The id of the unknown piece.
    pub fn unk_id(&self) -> Option<usize> {
        self.pieces.iter().position(|p| p.kind == 2)
    }
}

fn piece(body: &[u8]) -> Result<Piece, String> {
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
    Ok(piece)
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

    #[test]
    fn pieces_and_the_normaliser_map_are_read_and_damage_is_an_error() {
        let mut bytes = Vec::new();
        for (piece, score, kind) in [("<unk>", 0.0f32, 2u8), ("▁a", -1.5, 1)] {
            let mut body = vec![0x0A, piece.len() as u8];
            body.extend_from_slice(piece.as_bytes());
            body.push(0x15);
            body.extend_from_slice(&score.to_le_bytes());
            body.extend_from_slice(&[0x18, kind]);
            bytes.push(0x0A);
            bytes.push(body.len() as u8);
            bytes.extend(body);
        }
        // normalizer_spec { name: "x", precompiled_charsmap: [1, 2, 3] }
        bytes.extend_from_slice(&[0x1A, 0x08, 0x0A, 0x01, b'x', 0x12, 0x03, 1, 2, 3]);
        let model = SentencePieceModel::parse(&bytes).unwrap();
        assert_eq!(model.pieces.len(), 2);
        assert_eq!(model.pieces[1].piece, "▁a");
        assert_eq!(model.pieces[1].score, -1.5);
        assert_eq!(model.unk_id(), Some(0));
        assert_eq!(model.precompiled_charsmap, [1, 2, 3]);
        assert!(SentencePieceModel::parse(&[0x0A, 0x05, 0x0A]).is_err());
    }
}
