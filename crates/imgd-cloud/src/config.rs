//! [`CloudConfig`]: the daemon's `[cloud]` TOML section, overridable by the environment.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::CloudError;
use crate::secret::Secret;

/// The `detail` the image is sent with (OpenAI's `image_url.detail`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Detail {
    /// A 512×512 view of the image at a fixed cost (85 tokens on OpenAI).
    Low,
    /// Tiles of 512 px after scaling: costs grow with the image.
    #[default]
    High,
    /// The provider decides; budgeted as `high`.
    Auto,
}

impl Detail {
    /// The value sent in the request.
    pub const fn as_str(self) -> &'static str {
        match self {
            Detail::Low => "low",
            Detail::High => "high",
            Detail::Auto => "auto",
        }
    }
}

/// Which request field carries the output-token limit. OpenAI's newer models accept only
/// `max_completion_tokens`; many OpenAI-compatible servers know only `max_tokens`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TokenLimitField {
    /// `max_tokens`.
    #[default]
    MaxTokens,
    /// `max_completion_tokens`.
    MaxCompletionTokens,
}

/// One question asked of every image.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PromptConfig {
    /// The key the answer is stored under in `result_cloud.data.answers`.
    pub name: String,
    /// The text sent with the image.
    pub text: String,
    /// A JSON schema the answer must follow; sent as `response_format: {type: "json_schema"}`
    /// and the answer stored as JSON.
    #[serde(default)]
    pub schema: Option<serde_json::Value>,
    /// Whether the provider must follow the schema strictly (`json_schema.strict`).
    #[serde(default = "default_true")]
    pub strict: bool,
}

fn default_true() -> bool {
    true
}

/// The price of one model, in US dollars per million tokens.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Price {
    /// USD per 1M input (prompt) tokens.
    pub input_per_mtok: f64,
    /// USD per 1M output (completion) tokens.
    pub output_per_mtok: f64,
}

impl Price {
    /// The cost of one call.
    pub fn cost(&self, input_tokens: u64, output_tokens: u64) -> f64 {
        (input_tokens as f64 * self.input_per_mtok + output_tokens as f64 * self.output_per_mtok)
            / 1_000_000.0
    }
}

/// The image-token formula of the provider: `base + per_tile × tiles` for `high`, `base` for
/// `low` (OpenAI's GPT-4o family: 85 and 170).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ImageTokens {
    /// Tokens every image costs.
    pub base: u64,
    /// Tokens per 512-px tile at `high` detail.
    pub per_tile: u64,
}

impl Default for ImageTokens {
    fn default() -> Self {
        ImageTokens {
            base: 85,
            per_tile: 170,
        }
    }
}

/// Settings of the cloud module: the `[cloud]` section of the daemon's configuration file.
///
/// ```toml
/// [cloud]
/// base_url = "https://api.openai.com/v1"
/// model = "gpt-4o-mini"
/// rpm = 500
/// tpm = 200000
/// concurrency = 8
/// detail = "high"
///
/// [[cloud.prompts]]
/// name = "description"
/// text = "Describe this photo in two sentences."
///
/// [[cloud.prompts]]
/// name = "tags"
/// text = "List up to ten subject tags."
/// schema = { type = "object", properties = { tags = { type = "array", items = { type = "string" } } }, required = ["tags"], additionalProperties = false }
///
/// [cloud.prices."gpt-4o-mini"]
/// input_per_mtok = 0.15
/// output_per_mtok = 0.60
/// ```
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CloudConfig {
    /// The API root, up to and including `/v1`; requests go to `{base_url}/chat/completions`.
    pub base_url: String,
    /// The model name sent in each request (and the `model_id` of the stored rows).
    pub model: String,
    /// The API key, sent as `Authorization: Bearer …`; none for servers that need none.
    pub api_key: Option<Secret>,
    /// The questions asked of every image, one call each.
    pub prompts: Vec<PromptConfig>,
    /// Requests per rate window (per minute unless `rate_window_s` says otherwise).
    pub rpm: u64,
    /// Tokens (input + output) per rate window.
    pub tpm: u64,
    /// The most calls in flight at once.
    pub concurrency: usize,
    /// The output-token limit of each call.
    pub max_output_tokens: u32,
    /// Which request field carries `max_output_tokens`.
    pub token_limit_field: TokenLimitField,
    /// The image detail requested.
    pub detail: Detail,
    /// JPEG quality of the uploaded image, 1–100.
    pub jpeg_quality: u8,
    /// Timeout of one HTTP attempt, in seconds.
    pub timeout_s: f64,
    /// Attempts per call (the first one included) before its job fails.
    pub max_attempts: u32,
    /// Sampling temperature; 0 makes answers as reproducible as the provider allows.
    pub temperature: f64,
    /// Prices by model name.
    pub prices: BTreeMap<String, Price>,
    /// The provider's image-token formula, for the estimates the limiter budgets with.
    pub image_tokens: ImageTokens,
    /// Threads of the module's async runtime (1 or 2 are plenty: the work is waiting).
    pub worker_threads: usize,
    /// The first retry waits up to this long (full jitter), doubling per attempt.
    pub backoff_base_ms: u64,
    /// The longest a backoff waits.
    pub backoff_max_ms: u64,
    /// The length of the provider's rate window in seconds: 60 for per-minute limits.
    pub rate_window_s: f64,
    /// Extra seconds an admitted request stays counted after its window, to absorb the delay
    /// between admitting a request and the provider receiving it.
    pub rate_margin_s: f64,
}

impl Default for CloudConfig {
    fn default() -> Self {
        CloudConfig {
            base_url: "https://api.openai.com/v1".into(),
            model: "gpt-4o-mini".into(),
            api_key: None,
            prompts: vec![PromptConfig {
                name: "description".into(),
                text: "Describe this photo in one or two factual sentences: the subject, the \
                       setting, notable objects and any legible text."
                    .into(),
                schema: None,
                strict: true,
            }],
            rpm: 500,
            tpm: 200_000,
            concurrency: 8,
            max_output_tokens: 300,
            token_limit_field: TokenLimitField::MaxTokens,
            detail: Detail::High,
            jpeg_quality: 85,
            timeout_s: 60.0,
            max_attempts: 5,
            temperature: 0.0,
            prices: BTreeMap::new(),
            image_tokens: ImageTokens::default(),
            worker_threads: 2,
            backoff_base_ms: 500,
            backoff_max_ms: 30_000,
            rate_window_s: 60.0,
            rate_margin_s: 1.0,
        }
    }
}

impl CloudConfig {
    /// Applies the environment overrides, read through `lookup` (the caller reads the
    /// environment; this crate never does): `IMGD_CLOUD_BASE_URL`, `IMGD_CLOUD_API_KEY` (else
    /// `OPENAI_API_KEY`), `IMGD_CLOUD_MODEL`, `IMGD_CLOUD_RPM`, `IMGD_CLOUD_TPM`,
    /// `IMGD_CLOUD_CONCURRENCY`.
    pub fn apply_env_from(
        &mut self,
        lookup: impl Fn(&str) -> Option<String>,
    ) -> Result<(), CloudError> {
        let get = |name: &str| lookup(name).filter(|v| !v.trim().is_empty());
        if let Some(url) = get("IMGD_CLOUD_BASE_URL") {
            self.base_url = url.trim().to_string();
        }
        if let Some(key) = get("IMGD_CLOUD_API_KEY").or_else(|| get("OPENAI_API_KEY")) {
            self.api_key = Some(Secret::new(key.trim()));
        }
        if let Some(model) = get("IMGD_CLOUD_MODEL") {
            self.model = model.trim().to_string();
        }
        let number = |name: &str| -> Result<Option<u64>, CloudError> {
            get(name)
                .map(|v| {
                    v.trim().parse::<u64>().map_err(|_| {
                        CloudError::Config(format!("{name}={v:?} is not a whole number"))
                    })
                })
                .transpose()
        };
        if let Some(rpm) = number("IMGD_CLOUD_RPM")? {
            self.rpm = rpm;
        }
        if let Some(tpm) = number("IMGD_CLOUD_TPM")? {
            self.tpm = tpm;
        }
        if let Some(concurrency) = number("IMGD_CLOUD_CONCURRENCY")? {
            self.concurrency = concurrency as usize;
        }
        Ok(())
    }

    /// Checks the settings; the error names the offending key.
    pub fn validate(&self) -> Result<(), CloudError> {
        let bad = |message: String| Err(CloudError::Config(message));
        if !(self.base_url.starts_with("http://") || self.base_url.starts_with("https://")) {
            return bad(format!(
                "cloud.base_url {:?} is not an http(s) URL",
                self.base_url
            ));
        }
        if self.model.trim().is_empty() {
            return bad("cloud.model is empty".into());
        }
        if self.prompts.is_empty() {
            return bad("cloud.prompts is empty: configure at least one prompt".into());
        }
        let mut names = std::collections::BTreeSet::new();
        for prompt in &self.prompts {
            if prompt.name.trim().is_empty() || prompt.text.trim().is_empty() {
                return bad("every cloud prompt needs a name and a text".into());
            }
            if !names.insert(prompt.name.as_str()) {
                return bad(format!("cloud prompt name {:?} is repeated", prompt.name));
            }
            if let Some(schema) = &prompt.schema
                && !schema.is_object()
            {
                return bad(format!(
                    "the schema of cloud prompt {:?} is not a JSON object",
                    prompt.name
                ));
            }
        }
        if self.rpm == 0 || self.tpm == 0 {
            return bad("cloud.rpm and cloud.tpm must be at least 1".into());
        }
        if self.concurrency == 0 {
            return bad("cloud.concurrency must be at least 1".into());
        }
        if self.max_output_tokens == 0 {
            return bad("cloud.max_output_tokens must be at least 1".into());
        }
        if !(1..=100).contains(&self.jpeg_quality) {
            return bad(format!(
                "cloud.jpeg_quality {} is not in 1..=100",
                self.jpeg_quality
            ));
        }
        if !(self.timeout_s.is_finite() && self.timeout_s > 0.0) {
            return bad("cloud.timeout_s must be positive".into());
        }
        if self.max_attempts == 0 {
            return bad("cloud.max_attempts must be at least 1".into());
        }
        if !(1..=8).contains(&self.worker_threads) {
            return bad("cloud.worker_threads must be in 1..=8".into());
        }
        if !(self.rate_window_s.is_finite() && self.rate_window_s > 0.0) {
            return bad("cloud.rate_window_s must be positive".into());
        }
        if !(self.rate_margin_s.is_finite() && self.rate_margin_s >= 0.0) {
            return bad("cloud.rate_margin_s must not be negative".into());
        }
        if !(self.temperature.is_finite() && self.temperature >= 0.0) {
            return bad("cloud.temperature must not be negative".into());
        }
        Ok(())
    }

    /// The chat-completions URL.
    pub fn endpoint(&self) -> String {
        format!("{}/chat/completions", self.base_url.trim_end_matches('/'))
    }

    /// The timeout of one attempt.
    pub fn timeout(&self) -> Duration {
        Duration::from_secs_f64(self.timeout_s)
    }

    /// The rate window.
    pub fn rate_window(&self) -> Duration {
        Duration::from_secs_f64(self.rate_window_s)
    }

    /// The price of the configured model, if the table has it.
    pub fn price(&self) -> Option<Price> {
        self.prices.get(&self.model).copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_documented_example_parses_and_validates() {
        let text = r#"
            base_url = "https://api.openai.com/v1"
            model = "gpt-4o-mini"
            api_key = "sk-test-000000"
            rpm = 500
            tpm = 200000
            detail = "low"

            [[prompts]]
            name = "description"
            text = "Describe this photo."

            [[prompts]]
            name = "tags"
            text = "List tags."
            schema = { type = "object", properties = { tags = { type = "array", items = { type = "string" } } }, required = ["tags"], additionalProperties = false }

            [prices."gpt-4o-mini"]
            input_per_mtok = 0.15
            output_per_mtok = 0.60
        "#;
        let config: CloudConfig = toml::from_str(text).unwrap();
        config.validate().unwrap();
        assert_eq!(config.detail, Detail::Low);
        assert_eq!(config.prompts.len(), 2);
        assert!(config.prompts[1].schema.is_some());
        assert_eq!(config.price().unwrap().input_per_mtok, 0.15);
        assert_eq!(config.temperature, 0.0);
        assert_eq!(config.jpeg_quality, 85);
        assert_eq!(
            config.endpoint(),
            "https://api.openai.com/v1/chat/completions"
        );
        assert!(!format!("{config:?}").contains("sk-test-000000"));

        let unknown: Result<CloudConfig, _> = toml::from_str("rpmm = 3\n");
        assert!(unknown.is_err());
    }

    #[test]
    fn the_environment_overrides_the_file() {
        let mut config = CloudConfig::default();
        let env: BTreeMap<&str, &str> = [
            ("IMGD_CLOUD_BASE_URL", "http://127.0.0.1:9/v1"),
            ("OPENAI_API_KEY", "sk-openai-111111"),
            ("IMGD_CLOUD_MODEL", "local-vlm"),
            ("IMGD_CLOUD_RPM", "42"),
            ("IMGD_CLOUD_TPM", "4200"),
            ("IMGD_CLOUD_CONCURRENCY", "3"),
        ]
        .into();
        config
            .apply_env_from(|name| env.get(name).map(|v| v.to_string()))
            .unwrap();
        assert_eq!(config.base_url, "http://127.0.0.1:9/v1");
        assert_eq!(
            config.api_key.as_ref().unwrap().expose(),
            "sk-openai-111111"
        );
        assert_eq!(config.model, "local-vlm");
        assert_eq!((config.rpm, config.tpm, config.concurrency), (42, 4200, 3));

        // IMGD_CLOUD_API_KEY wins over OPENAI_API_KEY.
        let env2: BTreeMap<&str, &str> = [
            ("IMGD_CLOUD_API_KEY", "sk-imgd-222222"),
            ("OPENAI_API_KEY", "sk-openai-111111"),
        ]
        .into();
        config
            .apply_env_from(|name| env2.get(name).map(|v| v.to_string()))
            .unwrap();
        assert_eq!(config.api_key.as_ref().unwrap().expose(), "sk-imgd-222222");

        let err = config
            .apply_env_from(|name| (name == "IMGD_CLOUD_RPM").then(|| "lots".to_string()))
            .unwrap_err();
        assert!(err.to_string().contains("IMGD_CLOUD_RPM"), "{err}");
    }

    #[test]
    fn bad_settings_are_named() {
        let config = CloudConfig {
            jpeg_quality: 0,
            ..CloudConfig::default()
        };
        assert!(
            config
                .validate()
                .unwrap_err()
                .to_string()
                .contains("jpeg_quality")
        );
        let mut config = CloudConfig::default();
        config.prompts.push(config.prompts[0].clone());
        assert!(
            config
                .validate()
                .unwrap_err()
                .to_string()
                .contains("repeated")
        );
        let config = CloudConfig {
            base_url: "api.openai.com".into(),
            ..CloudConfig::default()
        };
        assert!(
            config
                .validate()
                .unwrap_err()
                .to_string()
                .contains("base_url")
        );
    }
}
