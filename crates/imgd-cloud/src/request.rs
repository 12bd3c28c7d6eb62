//! What is sent: the JPEG data URL, the request body, and the token estimate the limiter
//! budgets with before the call.
//!
//! **Token estimate.** `ceil(chars / 4)` of the prompt text and of the JSON schema (OpenAI's
//! rule of thumb: about four characters per English token), plus
//! [`MESSAGE_OVERHEAD_TOKENS`] for the chat framing, plus the image by the provider's
//! documented formula ([`image_tokens`]), plus the output limit (`max_output_tokens`), which
//! the provider also reserves against the tokens-per-minute limit. The usage the response
//! reports replaces the estimate afterwards.

use base64::Engine as _;
use image::RgbImage;
use image::codecs::jpeg::JpegEncoder;
use serde::Serialize;

use crate::config::{CloudConfig, Detail, ImageTokens, PromptConfig, TokenLimitField};

/// Tokens budgeted for the chat framing of one request (role markers, message separators and
/// the reply primer: OpenAI's documented 3 per message + 3 per reply, rounded up).
pub const MESSAGE_OVERHEAD_TOKENS: u64 = 10;

/// An image encoded for upload.
#[derive(Debug, Clone)]
pub struct EncodedImage {
    /// `data:image/jpeg;base64,…`.
    pub data_url: String,
    /// The pixel width sent.
    pub width: u32,
    /// The pixel height sent.
    pub height: u32,
}

/// Encodes `image` as a baseline JPEG of `quality` (1–100) and wraps it in a data URL. The
/// same pixels and quality always give the same bytes.
pub fn encode_jpeg(image: &RgbImage, quality: u8) -> Result<EncodedImage, String> {
    let mut jpeg = Vec::with_capacity((image.width() * image.height()) as usize / 4 + 1024);
    JpegEncoder::new_with_quality(&mut jpeg, quality.clamp(1, 100))
        .encode_image(image)
        .map_err(|e| format!("cannot encode the image as JPEG: {e}"))?;
    let mut data_url = String::with_capacity(jpeg.len() * 4 / 3 + 32);
    data_url.push_str("data:image/jpeg;base64,");
    base64::engine::general_purpose::STANDARD.encode_string(&jpeg, &mut data_url);
    Ok(EncodedImage {
        data_url,
        width: image.width(),
        height: image.height(),
    })
}

/// Image tokens by OpenAI's documented formula: `low` costs `base`; `high` (and `auto`,
/// budgeted as `high`) scales the image down to fit 2048×2048, then down so its short side is
/// at most 768 px, and costs `base + per_tile × ⌈w/512⌉ × ⌈h/512⌉`.
pub fn image_tokens(width: u32, height: u32, detail: Detail, formula: ImageTokens) -> u64 {
    if detail == Detail::Low || width == 0 || height == 0 {
        return formula.base;
    }
    let (mut w, mut h) = (f64::from(width), f64::from(height));
    let fit = (2048.0 / w.max(h)).min(1.0);
    w *= fit;
    h *= fit;
    let short = (768.0 / w.min(h)).min(1.0);
    w *= short;
    h *= short;
    let tiles = (w / 512.0).ceil() as u64 * (h / 512.0).ceil() as u64;
    formula.base + formula.per_tile * tiles
}

/// `ceil(chars / 4)`.
pub fn text_tokens(text: &str) -> u64 {
    (text.chars().count() as u64).div_ceil(4)
}

/// The estimated input tokens of one call (text, schema, framing and image).
pub fn estimate_input_tokens(
    prompt: &PromptConfig,
    image: &EncodedImage,
    config: &CloudConfig,
) -> u64 {
    let schema = prompt
        .schema
        .as_ref()
        .map_or(0, |s| text_tokens(&s.to_string()));
    text_tokens(&prompt.text)
        + schema
        + MESSAGE_OVERHEAD_TOKENS
        + image_tokens(
            image.width,
            image.height,
            config.detail,
            config.image_tokens,
        )
}

/// The tokens budgeted before a call: input estimate + the output limit.
pub fn estimate_tokens(prompt: &PromptConfig, image: &EncodedImage, config: &CloudConfig) -> u64 {
    estimate_input_tokens(prompt, image, config) + u64::from(config.max_output_tokens)
}

// The request body. Typed structs with a fixed field order (and `BTreeMap`-ordered user
// schemas) make the serialised bytes a pure function of the config, the prompt and the image.

#[derive(Serialize)]
struct Body<'a> {
    model: &'a str,
    messages: [Message<'a>; 1],
    #[serde(skip_serializing_if = "Option::is_none")]
    max_tokens: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_completion_tokens: Option<u32>,
    temperature: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    response_format: Option<ResponseFormat<'a>>,
}

#[derive(Serialize)]
struct Message<'a> {
    role: &'static str,
    content: [Content<'a>; 2],
}

#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Content<'a> {
    Text { text: &'a str },
    ImageUrl { image_url: ImageUrl<'a> },
}

#[derive(Serialize)]
struct ImageUrl<'a> {
    url: &'a str,
    detail: &'static str,
}

#[derive(Serialize)]
struct ResponseFormat<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    json_schema: JsonSchema<'a>,
}

#[derive(Serialize)]
struct JsonSchema<'a> {
    name: String,
    schema: &'a serde_json::Value,
    strict: bool,
}

/// The name OpenAI accepts for a schema: `[a-zA-Z0-9_-]{1,64}`.
fn schema_name(prompt: &str) -> String {
    let name: String = prompt
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .take(64)
        .collect();
    if name.is_empty() {
        "answer".into()
    } else {
        name
    }
}

/// The JSON body of one chat-completions call: one user message with the prompt text and the
/// image, the output limit, the temperature and, for a prompt with a schema,
/// `response_format: {type: "json_schema", json_schema: {name, schema, strict}}`.
pub fn request_body(config: &CloudConfig, prompt: &PromptConfig, image: &EncodedImage) -> Vec<u8> {
    let limit = config.max_output_tokens;
    let body = Body {
        model: &config.model,
        messages: [Message {
            role: "user",
            content: [
                Content::Text { text: &prompt.text },
                Content::ImageUrl {
                    image_url: ImageUrl {
                        url: &image.data_url,
                        detail: config.detail.as_str(),
                    },
                },
            ],
        }],
        max_tokens: (config.token_limit_field == TokenLimitField::MaxTokens).then_some(limit),
        max_completion_tokens: (config.token_limit_field == TokenLimitField::MaxCompletionTokens)
            .then_some(limit),
        temperature: config.temperature,
        response_format: prompt.schema.as_ref().map(|schema| ResponseFormat {
            kind: "json_schema",
            json_schema: JsonSchema {
                name: schema_name(&prompt.name),
                schema,
                strict: prompt.strict,
            },
        }),
    };
    serde_json::to_vec(&body).expect("the request body serialises")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image(width: u32, height: u32) -> RgbImage {
        RgbImage::from_fn(width, height, |x, y| {
            image::Rgb([
                (x * 7 % 256) as u8,
                (y * 3 % 256) as u8,
                ((x ^ y) % 256) as u8,
            ])
        })
    }

    #[test]
    fn image_tokens_follow_the_documented_examples() {
        let f = ImageTokens::default();
        // OpenAI's worked examples: 1024×1024 high → 768×768 → 4 tiles → 765 tokens;
        // 2048×4096 high → 1024×2048 → 768×1536 → 6 tiles → 1105; any low → 85.
        assert_eq!(image_tokens(1024, 1024, Detail::High, f), 765);
        assert_eq!(image_tokens(2048, 4096, Detail::High, f), 1105);
        assert_eq!(image_tokens(4096, 8192, Detail::Low, f), 85);
        // Small images are not scaled up: one tile.
        assert_eq!(image_tokens(64, 48, Detail::High, f), 255);
        // The 1568-px tier of a 3:2 photo: 1568×1045 → 1152×768 → 3×2 tiles.
        assert_eq!(image_tokens(1568, 1045, Detail::High, f), 85 + 170 * 6);
        assert_eq!(image_tokens(1568, 1045, Detail::Auto, f), 85 + 170 * 6);
    }

    #[test]
    fn the_same_image_and_prompt_give_the_same_bytes() {
        let mut config = CloudConfig::default();
        config.prompts.push(PromptConfig {
            name: "tags list".into(),
            text: "List tags.".into(),
            schema: Some(serde_json::json!({
                "type": "object",
                "required": ["tags"],
                "properties": {"tags": {"type": "array", "items": {"type": "string"}}},
                "additionalProperties": false
            })),
            strict: true,
        });
        let pixels = image(96, 64);
        let a = encode_jpeg(&pixels, 85).unwrap();
        let b = encode_jpeg(&pixels.clone(), 85).unwrap();
        assert_eq!(a.data_url, b.data_url);
        for prompt in &config.prompts {
            let first = request_body(&config, prompt, &a);
            let second = request_body(&config.clone(), &prompt.clone(), &b);
            assert_eq!(first, second);
        }
        // The exact shape, key order included.
        let body = String::from_utf8(request_body(&config, &config.prompts[1], &a)).unwrap();
        let expected_prefix = r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":[{"type":"text","text":"List tags."},{"type":"image_url","image_url":{"url":"data:image/jpeg;base64,"#;
        assert!(body.starts_with(expected_prefix), "{body:.200}");
        let tail = &body[body.find(r#"","detail""#).unwrap()..];
        assert_eq!(
            tail,
            r#"","detail":"high"}}]}],"max_tokens":300,"temperature":0.0,"response_format":{"type":"json_schema","json_schema":{"name":"tags_list","schema":{"additionalProperties":false,"properties":{"tags":{"items":{"type":"string"},"type":"array"}},"required":["tags"],"type":"object"},"strict":true}}}"#
        );
        // A prompt without a schema has no response_format; the other limit field works.
        config.token_limit_field = TokenLimitField::MaxCompletionTokens;
        let plain = String::from_utf8(request_body(&config, &config.prompts[0], &a)).unwrap();
        assert!(!plain.contains("response_format"));
        assert!(plain.contains(r#""max_completion_tokens":300"#));
        assert!(!plain.contains(r#""max_tokens""#));
    }

    #[test]
    fn the_estimate_covers_text_schema_image_and_output() {
        let config = CloudConfig::default();
        let encoded = encode_jpeg(&image(64, 48), 85).unwrap();
        let prompt = &config.prompts[0];
        assert_eq!(
            estimate_tokens(prompt, &encoded, &config),
            text_tokens(&prompt.text) + MESSAGE_OVERHEAD_TOKENS + 255 + 300
        );
        assert_eq!(text_tokens("abcd"), 1);
        assert_eq!(text_tokens("abcde"), 2);
        assert_eq!(schema_name("a b/c"), "a_b_c");
    }
}
