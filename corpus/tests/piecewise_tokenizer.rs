//! The piecewise encoder for SentencePiece-style BPE gives `tokenizers`' ids exactly: on every
//! text of the shared corpus and on edge cases (space runs, byte fallback, added tokens in the
//! text, pieces too long to cache), with and without special tokens. Tokenizers it cannot
//! reproduce stay on `tokenizers`' pipeline.

use corpus::tokenize::{self, Encoder};

use crate::common::{gsm8k, shared_data, wiki_articles};

fn llama() -> tokenizers::Tokenizer {
    tokenize::load(&shared_data().join("tokenizers/llama-test-tokenizer.json")).unwrap()
}

/// Every text of the shared corpus: web and code records, wiki articles, book paragraphs, GSM8K.
fn shared_texts() -> Vec<String> {
    let mut texts = Vec::new();
    for file in ["web/cc_en_head-0091.jsonl", "web/cc_en_head-0174.jsonl", "code/rust-crates.jsonl"] {
        let lines = std::fs::read_to_string(shared_data().join("corpus").join(file)).unwrap();
        for line in lines.lines() {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            texts.push(v["text"].as_str().unwrap().to_string());
        }
    }
    texts.extend(wiki_articles());
    let books = std::fs::read_to_string(shared_data().join("corpus/books/tinyshakespeare.txt")).unwrap();
    texts.extend(books.split("\n\n").map(str::to_string));
    texts.extend(gsm8k(usize::MAX));
    texts
}

fn edge_cases() -> Vec<String> {
    let mut texts: Vec<String> = [
        "",
        " ",
        "   ",
        "a",
        "a  b   c    d",
        " leading space",
        "trailing space ",
        "tabs\tand\nnew\r\nlines\n\n\n",
        "emoji 🎉🚀 CJK 漢字かな Ω ß é (e + combining) é",
        "<s> a literal start token </s> and <unk>",
        "▁ a metaspace already ▁▁ in the text▁",
        "x▁▁y ▁x",
        "\u{0}\u{1}\u{7f} control\u{200b}zero-width",
        "fn main() {\n    let x = 1;\n        // indented\n}\n",
    ]
    .map(str::to_string)
    .to_vec();
    texts.push("abc".repeat(400));
    texts.push(format!("{} {}", "longword".repeat(40), "x".repeat(300)));
    texts.push("🎉".repeat(100));
    texts
}

#[test]
fn piecewise_encoding_equals_the_tokenizers_pipeline() {
    let tokenizer = llama();
    let encoder = Encoder::new(&tokenizer);
    assert!(encoder.is_piecewise(), "the Llama tokenizer is SentencePiece-style BPE");
    let mut texts = shared_texts();
    assert!(texts.len() > 7000, "{} texts", texts.len());
    texts.extend(edge_cases());
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let ours = encoder.encode_batch(&refs, false).unwrap();
    let theirs = encoder.encode_by_pipeline(&refs, false).unwrap();
    for ((text, a), b) in texts.iter().zip(&ours).zip(&theirs) {
        assert_eq!(a, b, "ids of {:?}", text.chars().take(80).collect::<String>());
    }
    // With special tokens (BOS): on the edge cases and a sample.
    let some: Vec<&str> = refs.iter().step_by(50).chain(&refs[refs.len() - 17..]).copied().collect();
    assert_eq!(encoder.encode_batch(&some, true).unwrap(), encoder.encode_by_pipeline(&some, true).unwrap());
    assert_eq!(encoder.encode_batch(&[""], true).unwrap(), vec![vec![1]], "BOS alone");
}

#[test]
fn tokenizers_it_cannot_reproduce_stay_on_the_pipeline() {
    let neox = tokenize::load(&shared_data().join("tokenizers/gpt-neo-test-tokenizer.json")).unwrap();
    assert!(!Encoder::new(&neox).is_piecewise(), "byte-level BPE has a pre-tokenizer");
    let trained = tokenize::train_bpe(&gsm8k(200), 600).unwrap();
    assert!(!Encoder::new(&trained).is_piecewise());
    // A token that joins a character to a following `▁` could span two pieces.
    let mut json: serde_json::Value = serde_json::from_str(&llama().to_string(false).unwrap()).unwrap();
    json["model"]["vocab"]["e▁"] = 32000.into();
    let joined: tokenizers::Tokenizer = json.to_string().parse().unwrap();
    assert!(!Encoder::new(&joined).is_piecewise());
    // Merge dropout makes encoding random.
    let mut json: serde_json::Value = serde_json::from_str(&llama().to_string(false).unwrap()).unwrap();
    json["model"]["dropout"] = 0.1.into();
    let dropout: tokenizers::Tokenizer = json.to_string().parse().unwrap();
    assert!(!Encoder::new(&dropout).is_piecewise());
    // Unknown characters dropped (no byte fallback, no unk) or no `▁` symbol: symbols could meet
    // across a boundary ("é x" is [▁▁, x] by the pipeline, [▁, ▁x] piece by piece).
    let tiny = |vocab: serde_json::Value, unk: Option<&str>| -> tokenizers::Tokenizer {
        let json = serde_json::json!({
            "version": "1.0", "truncation": null, "padding": null, "added_tokens": [],
            "normalizer": {"type": "Sequence", "normalizers": [
                {"type": "Prepend", "prepend": "▁"},
                {"type": "Replace", "pattern": {"String": " "}, "content": "▁"}]},
            "pre_tokenizer": null, "post_processor": null, "decoder": null,
            "model": {"type": "BPE", "dropout": null, "unk_token": unk, "continuing_subword_prefix": null,
                      "end_of_word_suffix": null, "fuse_unk": true, "byte_fallback": false, "ignore_merges": false,
                      "vocab": vocab, "merges": [["▁", "▁"], ["▁", "x"]]}
        });
        json.to_string().parse().unwrap()
    };
    let dropping = tiny(serde_json::json!({"▁": 0, "x": 1, "▁▁": 2, "▁x": 3}), None);
    assert_eq!(Encoder::new(&dropping).encode_by_pipeline(&["é x"], false).unwrap(), vec![vec![2, 1]]);
    assert!(!Encoder::new(&dropping).is_piecewise());
    let with_unk = tiny(serde_json::json!({"▁": 0, "x": 1, "▁▁": 2, "▁x": 3, "<unk>": 4}), Some("<unk>"));
    assert!(Encoder::new(&with_unk).is_piecewise(), "unknown characters become unk, kept in place");
    let texts = ["é x", "x é  éx", "ééé x"];
    assert_eq!(
        Encoder::new(&with_unk).encode_batch(&texts, false).unwrap(),
        Encoder::new(&with_unk).encode_by_pipeline(&texts, false).unwrap()
    );
}
