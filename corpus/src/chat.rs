//! The chat template (ChatML): how a conversation becomes text and token ids, which tokens a
//! fine-tune learns, and the same template as Jinja for `tokenizer_config.json`, so that
//! `transformers`' `apply_chat_template` gives the ids training saw.
//!
//! ```text
//! <|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n4<|im_end|>\n
//! ```
//!
//! Learned tokens: every assistant turn's content and its `<|im_end|>` (so the model learns to
//! stop), nothing else.

use std::ops::Range;

use tokenizers::Tokenizer;

use crate::error::{Error, Result};
use crate::instruct::Message;

/// Opens a turn.
pub const IM_START: &str = "<|im_start|>";
/// Closes a turn.
pub const IM_END: &str = "<|im_end|>";

/// [`render`] as a Jinja template (`chat_template` in `tokenizer_config.json`).
pub const JINJA: &str = "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + \
                         '<|im_end|>' + '\\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' \
                         }}{% endif %}";

/// A rendered conversation and the byte ranges a fine-tune learns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendered {
    /// The text.
    pub text: String,
    /// Each assistant turn's content and closing `<|im_end|>`, as byte ranges of `text`.
    pub learned: Vec<Range<usize>>,
}

/// Renders `messages`; with `add_generation_prompt`, ends with an open assistant turn.
pub fn render(messages: &[Message], add_generation_prompt: bool) -> Rendered {
    let mut text = String::new();
    let mut learned = Vec::new();
    for m in messages {
        text.push_str(IM_START);
        text.push_str(&m.role);
        text.push('\n');
        let start = text.len();
        text.push_str(&m.content);
        text.push_str(IM_END);
        if m.role == "assistant" {
            learned.push(start..text.len());
        }
        text.push('\n');
    }
    if add_generation_prompt {
        text.push_str(IM_START);
        text.push_str("assistant\n");
    }
    Rendered { text, learned }
}

/// Token ids of a conversation and, per token, whether a fine-tune learns to predict it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Encoded {
    /// Token ids of the rendered text (no BOS: the template is the whole input).
    pub ids: Vec<u32>,
    /// `learned[i]`: token `i` starts inside an assistant turn (content or its `<|im_end|>`).
    pub learned: Vec<bool>,
}

/// Checks that `tokenizer` has the template's markers as single tokens.
pub fn check_tokenizer(tokenizer: &Tokenizer) -> Result<()> {
    for marker in [IM_START, IM_END] {
        // In the vocabulary and read as one token in text (an added token), not split.
        let id = tokenizer.token_to_id(marker);
        let encoded = tokenizer.encode(marker, false).map(|e| e.get_ids().to_vec()).unwrap_or_default();
        if id.is_none() || encoded != id.into_iter().collect::<Vec<_>>() {
            return Err(Error::Tokenizer {
                path: "(chat template)".into(),
                message: format!(
                    "the tokenizer does not read {marker} as one token; the chat template needs {IM_START} and \
                     {IM_END} as added special tokens (mixforge's trained tokenizers have them; add them to yours)"
                ),
            });
        }
    }
    Ok(())
}

/// Renders and tokenizes a conversation the way `apply_chat_template(tokenize=True)` does: the
/// whole text at once, without the post-processor's special tokens.
pub fn encode(tokenizer: &Tokenizer, messages: &[Message]) -> Result<Encoded> {
    let rendered = render(messages, false);
    let encoding = tokenizer
        .encode(rendered.text.as_str(), false)
        .map_err(|e| Error::Tokenizer { path: "(chat template)".into(), message: e.to_string() })?;
    let learned =
        encoding.get_offsets().iter().map(|&(start, _)| rendered.learned.iter().any(|r| r.contains(&start))).collect();
    Ok(Encoded { ids: encoding.get_ids().to_vec(), learned })
}

/// Token ids of a prompt that ends with an open assistant turn (generation).
pub fn encode_prompt(tokenizer: &Tokenizer, messages: &[Message]) -> Result<Vec<u32>> {
    let rendered = render(messages, true);
    let encoding = tokenizer
        .encode(rendered.text.as_str(), false)
        .map_err(|e| Error::Tokenizer { path: "(chat template)".into(), message: e.to_string() })?;
    Ok(encoding.get_ids().to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_chatml_and_marks_assistant_turns() {
        let messages = [
            Message::new("system", "S"),
            Message::new("user", "Q1"),
            Message::new("assistant", "A1"),
            Message::new("user", "Q2"),
            Message::new("assistant", "A2"),
        ];
        let r = render(&messages, false);
        assert_eq!(
            r.text,
            "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nQ1<|im_end|>\n<|im_start|>assistant\nA1<|im_end|>\n\
             <|im_start|>user\nQ2<|im_end|>\n<|im_start|>assistant\nA2<|im_end|>\n"
        );
        let learned: Vec<&str> = r.learned.iter().map(|s| &r.text[s.clone()]).collect();
        assert_eq!(learned, ["A1<|im_end|>", "A2<|im_end|>"]);
        assert!(render(&messages[..2], true).text.ends_with("<|im_end|>\n<|im_start|>assistant\n"));
    }
}
