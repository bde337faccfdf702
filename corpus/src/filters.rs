//! Heuristic quality rules (Gopher quality and repetition, C4, FineWeb) over [`Signals`].

use serde::{Deserialize, Serialize};

use crate::config::FilterConfig;
use crate::signals::Signals;

/// A quality rule. Its name appears in `filter_flags`, in `filter:<rule>` drop reasons and in
/// per-rule counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[repr(u8)]
pub enum Rule {
    /// Gopher: too few words.
    MinWords,
    /// Gopher: too many words.
    MaxWords,
    /// Gopher: mean word length out of range.
    MeanWordLen,
    /// Gopher: too many `#`/ellipses per word.
    SymbolWordRatio,
    /// Gopher: too many bullet lines.
    BulletLines,
    /// Gopher: too many lines ending with an ellipsis.
    EllipsisLines,
    /// Gopher: too few words with letters.
    AlphaWords,
    /// Gopher: too few stop words.
    StopWords,
    /// Gopher repetition: repeated lines.
    DupLines,
    /// Gopher repetition: repeated paragraphs.
    DupParagraphs,
    /// Gopher repetition: characters in repeated lines.
    DupLineChars,
    /// Gopher repetition: characters in repeated paragraphs.
    DupParagraphChars,
    /// Gopher repetition: a dominant 2-, 3- or 4-gram.
    TopNgram,
    /// Gopher repetition: repeated 5- to 10-grams.
    DupNgram,
    /// C4: "lorem ipsum".
    LoremIpsum,
    /// C4: a curly brace.
    CurlyBrace,
    /// FineWeb: too few lines ending in terminal punctuation.
    TerminalPunct,
    /// FineWeb: too many short lines.
    ShortLines,
}

impl Rule {
    /// Every rule, in evaluation order.
    pub const ALL: [Rule; 18] = [
        Rule::MinWords,
        Rule::MaxWords,
        Rule::MeanWordLen,
        Rule::SymbolWordRatio,
        Rule::BulletLines,
        Rule::EllipsisLines,
        Rule::AlphaWords,
        Rule::StopWords,
        Rule::DupLines,
        Rule::DupParagraphs,
        Rule::DupLineChars,
        Rule::DupParagraphChars,
        Rule::TopNgram,
        Rule::DupNgram,
        Rule::LoremIpsum,
        Rule::CurlyBrace,
        Rule::TerminalPunct,
        Rule::ShortLines,
    ];

    /// snake_case name.
    pub fn name(self) -> &'static str {
        match self {
            Rule::MinWords => "gopher_min_words",
            Rule::MaxWords => "gopher_max_words",
            Rule::MeanWordLen => "gopher_mean_word_len",
            Rule::SymbolWordRatio => "gopher_symbol_word_ratio",
            Rule::BulletLines => "gopher_bullet_lines",
            Rule::EllipsisLines => "gopher_ellipsis_lines",
            Rule::AlphaWords => "gopher_alpha_words",
            Rule::StopWords => "gopher_stop_words",
            Rule::DupLines => "gopher_dup_lines",
            Rule::DupParagraphs => "gopher_dup_paragraphs",
            Rule::DupLineChars => "gopher_dup_line_chars",
            Rule::DupParagraphChars => "gopher_dup_paragraph_chars",
            Rule::TopNgram => "gopher_top_ngram",
            Rule::DupNgram => "gopher_dup_ngram",
            Rule::LoremIpsum => "c4_lorem_ipsum",
            Rule::CurlyBrace => "c4_curly_brace",
            Rule::TerminalPunct => "fineweb_terminal_punct",
            Rule::ShortLines => "fineweb_short_lines",
        }
    }
}

/// The set of rules a document failed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuleSet(u32);

impl RuleSet {
    /// No failed rule.
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    fn insert(&mut self, rule: Rule) {
        self.0 |= 1 << rule as u8;
    }

    /// Whether `rule` failed.
    pub fn contains(self, rule: Rule) -> bool {
        self.0 & (1 << rule as u8) != 0
    }

    /// Failed rules in evaluation order.
    pub fn iter(self) -> impl Iterator<Item = Rule> {
        Rule::ALL.into_iter().filter(move |&r| self.contains(r))
    }

    /// The first failed rule, which names the drop reason.
    pub fn first(self) -> Option<Rule> {
        self.iter().next()
    }

    /// Comma-separated rule names (the profile's `filter_flags`), `None` when empty.
    pub fn names(self) -> Option<String> {
        (!self.is_empty()).then(|| self.iter().map(Rule::name).collect::<Vec<_>>().join(","))
    }
}

/// Evaluates every enabled rule.
pub fn evaluate(config: &FilterConfig, s: &Signals) -> RuleSet {
    let mut failed = RuleSet::default();
    let mut check = |rule: Rule, fails: bool| {
        if fails {
            failed.insert(rule);
        }
    };
    let above = |value: f32, max: Option<f64>| max.is_some_and(|m| f64::from(value) > m);
    let below = |value: f32, min: Option<f64>| min.is_some_and(|m| f64::from(value) < m);
    check(Rule::MinWords, config.min_words.is_some_and(|m| s.words < m));
    check(Rule::MaxWords, config.max_words.is_some_and(|m| s.words > m));
    check(
        Rule::MeanWordLen,
        below(s.mean_word_len, config.min_mean_word_len) || above(s.mean_word_len, config.max_mean_word_len),
    );
    check(Rule::SymbolWordRatio, above(s.symbol_word_ratio, config.max_symbol_word_ratio));
    check(Rule::BulletLines, above(s.bullet_line_frac, config.max_bullet_lines));
    check(Rule::EllipsisLines, above(s.ellipsis_line_frac, config.max_ellipsis_lines));
    check(Rule::AlphaWords, below(s.alpha_word_frac, config.min_alpha_words));
    check(Rule::StopWords, config.min_stop_words.is_some_and(|m| s.stop_words < m));
    check(Rule::DupLines, above(s.dup_line_frac, config.max_dup_line_frac));
    check(Rule::DupParagraphs, above(s.dup_para_frac, config.max_dup_para_frac));
    check(Rule::DupLineChars, above(s.dup_line_char_frac, config.max_dup_line_char_frac));
    check(Rule::DupParagraphChars, above(s.dup_para_char_frac, config.max_dup_para_char_frac));
    check(
        Rule::TopNgram,
        config.max_top_ngram_frac.is_some_and(|max| s.top_ngram_frac.iter().zip(max).any(|(&v, m)| f64::from(v) > m)),
    );
    check(
        Rule::DupNgram,
        config.max_dup_ngram_frac.is_some_and(|max| s.dup_ngram_frac.iter().zip(max).any(|(&v, m)| f64::from(v) > m)),
    );
    check(Rule::LoremIpsum, config.lorem_ipsum && s.lorem_ipsum);
    check(Rule::CurlyBrace, config.curly_brace && s.curly_brace);
    check(Rule::TerminalPunct, below(s.terminal_punct_line_frac, config.min_terminal_punct_lines));
    check(Rule::ShortLines, above(s.short_line_frac, config.max_short_lines));
    failed
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::signals::{Scratch, compute};

    #[test]
    fn prose_passes_and_junk_fails() {
        let config = FilterConfig::default();
        let prose = "The quick brown fox jumps over the lazy dog, and that is how the story of the fox begins. "
            .to_string()
            + "It was a cold morning with frost on the fields. The farmer had to walk to the barn before dawn. "
            + "He found the fox waiting there, patient as ever, and the two of them looked at each other for a long time. "
            + "Nobody in the village believed him when he told them about it later that day.";
        let s = compute(&prose, &mut Scratch::default());
        assert_eq!(evaluate(&config, &s).names(), None);
        let junk = compute("buy now buy now buy now buy now buy now", &mut Scratch::default());
        let failed = evaluate(&config, &junk);
        assert!(failed.contains(Rule::MinWords));
        assert!(failed.contains(Rule::TopNgram));
        assert_eq!(failed.first(), Some(Rule::MinWords));
    }
}
