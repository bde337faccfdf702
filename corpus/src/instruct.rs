//! Instruction data: conversations read from the formats people have, each source tagged with
//! an instruction domain.
//!
//! - JSON Lines with `messages` (`[{role, content}, …]`, as Hugging Face chat datasets);
//! - JSON Lines with a prompt and a response field: given as templates (`prompt =
//!   "{instruction}\n\n{context}"`, `response = "{response}"`), or found by the usual names
//!   (`instruction`[+`context`]/`response`, `prompt`/`response`|`completion`, `question`/`answer`,
//!   `input`/`output`);
//! - Super-NaturalInstructions task files (`Definition` + `Instances`): the definition and an
//!   instance's input are the user turn, its first output the answer.
//!
//! Files may be gzip- or zstd-compressed. A record that cannot become a conversation is counted
//! with its file, line and reason, never dropped silently.

use std::collections::BTreeMap;
use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU64;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::{Error, IoContext, Result};
use crate::ingest::Template;

/// One turn of a conversation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    /// `system`, `user` or `assistant`.
    pub role: String,
    /// The turn's text.
    pub content: String,
}

impl Message {
    /// A message with `role` and `content`.
    pub fn new(role: &str, content: impl Into<String>) -> Message {
        Message { role: role.to_string(), content: content.into() }
    }
}

/// A conversation and where it came from (`file:line`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conversation {
    /// The turns, in order; at least one is the assistant's.
    pub messages: Vec<Message>,
    /// `path:line` (JSONL) or `path:instance N` (task files).
    pub origin: String,
}

/// A record that did not become a conversation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Malformed {
    /// The file.
    pub path: PathBuf,
    /// 1-based line (JSONL) or instance (task files).
    pub line: u64,
    /// Why.
    pub reason: String,
}

/// Where one instruction domain's data is and how to read it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InstructSource {
    /// The instruction domain every conversation of these files belongs to.
    pub domain: String,
    /// Files, directories (every file inside, sorted) or globs.
    pub paths: Vec<String>,
    /// Template of the user turn from a record's fields (JSONL without `messages`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt: Option<String>,
    /// Template of the assistant turn.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response: Option<String>,
    /// A system turn put before every conversation of this source.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system: Option<String>,
}

impl InstructSource {
    /// A source read with the formats' usual field names.
    pub fn new(domain: &str, path: &str) -> InstructSource {
        InstructSource { domain: domain.to_string(), paths: vec![path.to_string()], ..Default::default() }
    }

    /// Parses `DOMAIN=PATH` (the CLI's `--data`).
    pub fn parse_cli(spec: &str) -> std::result::Result<InstructSource, String> {
        match spec.split_once('=') {
            Some((domain, path)) if !domain.trim().is_empty() && !path.is_empty() => {
                Ok(InstructSource::new(domain.trim(), path))
            }
            _ => Err(format!("expected DOMAIN=PATH, got {spec:?}")),
        }
    }
}

/// What one source gave: its conversations (in file, then line order), the malformed records
/// and the files read.
#[derive(Debug, Clone, Default)]
pub struct DomainData {
    /// The domain.
    pub domain: String,
    /// Every conversation read.
    pub conversations: Vec<Conversation>,
    /// Records that were not conversations.
    pub malformed: Vec<Malformed>,
    /// The files read, in order.
    pub files: Vec<PathBuf>,
}

/// Reads every file of `source`. Errors are for files that cannot be read at all (missing,
/// unreadable, not JSON); bad records are counted in [`DomainData::malformed`].
pub fn read_source(source: &InstructSource) -> Result<DomainData> {
    let field = |reason: String| Error::Config { field: format!("instruct.{}", source.domain), reason };
    let templates = match (&source.prompt, &source.response) {
        (Some(p), Some(r)) => Some((Template::parse(p).map_err(field)?, Template::parse(r).map_err(field)?)),
        (None, None) => None,
        _ => return Err(field("give both `prompt` and `response` templates, or neither".into())),
    };
    let files = files(source)?;
    let mut data = DomainData { domain: source.domain.clone(), files: files.clone(), ..Default::default() };
    for path in &files {
        if is_task_file(path) {
            read_task_file(path, &crate::ingest::read_text(path)?, source, &mut data)?;
            continue;
        }
        let bytes_read = AtomicU64::new(0);
        let mut reader = crate::ingest::open_decoded(path, &bytes_read)?;
        let mut line = String::new();
        let mut number = 0u64;
        loop {
            line.clear();
            if reader.read_line(&mut line).at(path)? == 0 {
                break;
            }
            number += 1;
            if line.trim().is_empty() {
                continue;
            }
            let origin = format!("{}:{number}", path.display());
            match record(&line, templates.as_ref(), source.system.as_deref()) {
                Ok(messages) => data.conversations.push(Conversation { messages, origin }),
                Err(reason) => data.malformed.push(Malformed { path: path.clone(), line: number, reason }),
            }
        }
    }
    Ok(data)
}

/// Reads every source; the same domain named twice is an error.
pub fn read_sources(sources: &[InstructSource]) -> Result<Vec<DomainData>> {
    let mut seen = BTreeMap::new();
    for (i, s) in sources.iter().enumerate() {
        if let Some(j) = seen.insert(s.domain.clone(), i) {
            return Err(Error::Config {
                field: format!("instruct[{i}].domain"),
                reason: format!("domain {:?} is also source {j}'s; list all its paths in one source", s.domain),
            });
        }
    }
    sources.iter().map(read_source).collect()
}

/// A Super-NaturalInstructions task file (`.json`, possibly compressed) rather than JSONL.
fn is_task_file(path: &Path) -> bool {
    let name = path.to_string_lossy().to_ascii_lowercase();
    let stem = name.trim_end_matches(".gz").trim_end_matches(".zst").trim_end_matches(".zstd");
    stem.ends_with(".json")
}

/// The files a source names (directories and globs expanded, sorted); a pattern that matches
/// nothing is an error.
pub fn files(source: &InstructSource) -> Result<Vec<PathBuf>> {
    let mut files = std::collections::BTreeSet::new();
    for pattern in &source.paths {
        let before = files.len();
        let path = Path::new(pattern);
        if path.is_file() {
            files.insert(path.to_path_buf());
        } else if path.is_dir() {
            for entry in std::fs::read_dir(path).at(path)? {
                let p = entry.at(path)?.path();
                let name = p.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_default();
                // Licence notes and manifests sit beside the data in published sets.
                let data = [".jsonl", ".json"]
                    .iter()
                    .any(|e| name.trim_end_matches(".zst").trim_end_matches(".gz").ends_with(e));
                if p.is_file() && data && !name.eq_ignore_ascii_case("manifest.json") {
                    files.insert(p);
                }
            }
        } else {
            let matches = glob::glob(pattern).map_err(|e| Error::Config {
                field: format!("instruct.{}.paths", source.domain),
                reason: format!("invalid glob `{pattern}`: {e}"),
            })?;
            for entry in matches {
                let p = entry.map_err(|e| Error::Io { path: e.path().to_path_buf(), cause: e.into() })?;
                if p.is_file() {
                    files.insert(p);
                }
            }
        }
        if files.len() == before {
            return Err(Error::NoFiles { source_name: source.domain.clone(), pattern: pattern.clone() });
        }
    }
    Ok(files.into_iter().collect())
}

fn read_task_file(path: &Path, text: &str, source: &InstructSource, data: &mut DomainData) -> Result<()> {
    let corrupt = |reason: String| Error::Corrupt { path: path.to_path_buf(), reason };
    let task: Value = serde_json::from_str(text).map_err(|e| corrupt(format!("not JSON: {e}")))?;
    let definition = match &task["Definition"] {
        Value::String(s) => s.clone(),
        Value::Array(parts) => parts.iter().filter_map(Value::as_str).collect::<Vec<_>>().join("\n"),
        _ => return Err(corrupt("a task file needs `Definition` (text) and `Instances`".into())),
    };
    let instances =
        task["Instances"].as_array().ok_or_else(|| corrupt("a task file needs an `Instances` list".into()))?;
    for (i, instance) in instances.iter().enumerate() {
        let number = i as u64 + 1;
        let input = instance["input"].as_str();
        let output = match &instance["output"] {
            Value::Array(outputs) => outputs.first().and_then(Value::as_str),
            Value::String(s) => Some(s.as_str()),
            _ => None,
        };
        match (input, output) {
            (Some(input), Some(output)) if !output.trim().is_empty() => {
                let mut messages = system_turn(source.system.as_deref());
                messages.push(Message::new("user", format!("{}\n\n{}", definition.trim(), input)));
                messages.push(Message::new("assistant", output));
                match unmarked(messages) {
                    Ok(messages) => {
                        let origin = format!("{}:instance {number}", path.display());
                        data.conversations.push(Conversation { messages, origin });
                    }
                    Err(reason) => data.malformed.push(Malformed { path: path.to_path_buf(), line: number, reason }),
                }
            }
            _ => data.malformed.push(Malformed {
                path: path.to_path_buf(),
                line: number,
                reason: "instance needs `input` (text) and a non-empty `output`".into(),
            }),
        }
    }
    Ok(())
}

fn system_turn(system: Option<&str>) -> Vec<Message> {
    system.map(|s| vec![Message::new("system", s)]).unwrap_or_default()
}

/// The usual prompt/response field names, tried in order when no template is given.
const FIELD_PAIRS: [(&str, &str); 6] = [
    ("instruction", "response"),
    ("instruction", "output"),
    ("prompt", "response"),
    ("prompt", "completion"),
    ("question", "answer"),
    ("input", "output"),
];

/// One JSONL record as a conversation.
fn record(
    line: &str,
    templates: Option<&(Template, Template)>,
    system: Option<&str>,
) -> std::result::Result<Vec<Message>, String> {
    let value: Value = serde_json::from_str(line).map_err(|e| format!("not JSON: {e}"))?;
    let Value::Object(fields) = &value else { return Err("a record must be a JSON object".into()) };
    if let Some(messages) = fields.get("messages") {
        let messages = messages_of(messages)?;
        // A conversation with its own system turn keeps it alone.
        let mut out = if messages[0].role == "system" { Vec::new() } else { system_turn(system) };
        out.extend(messages);
        return unmarked(out);
    }
    let (prompt, response) = match templates {
        Some((p, r)) => (fill(p, &value)?, fill(r, &value)?),
        None => {
            let (p, r) = FIELD_PAIRS.iter().find(|(p, r)| fields.contains_key(*p) && fields.contains_key(*r)).ok_or(
                "no `messages` and none of the usual prompt/response fields (instruction/response, \
                        prompt/response, prompt/completion, question/answer, input/output): give templates",
            )?;
            let mut prompt = text_of(&value[*p]).ok_or(format!("field `{p}` is not text"))?;
            // Dolly (`context`) and Alpaca (`input`) records carry a passage beside the instruction.
            let extra = ["context", "input"].iter().find_map(|f| value.get(*f).and_then(text_of));
            if *p == "instruction"
                && let Some(extra) = extra.filter(|c| !c.trim().is_empty())
            {
                prompt = format!("{prompt}\n\n{extra}");
            }
            (prompt, text_of(&value[*r]).ok_or(format!("field `{r}` is not text"))?)
        }
    };
    if response.trim().is_empty() {
        return Err("empty response".into());
    }
    let mut out = system_turn(system);
    out.push(Message::new("user", prompt));
    out.push(Message::new("assistant", response));
    unmarked(out)
}

/// Refuses text holding the chat template's markers: tokenized as markers, they would end or
/// start turns the record never had.
fn unmarked(messages: Vec<Message>) -> std::result::Result<Vec<Message>, String> {
    for (i, m) in messages.iter().enumerate() {
        if let Some(marker) = [crate::chat::IM_START, crate::chat::IM_END].iter().find(|k| m.content.contains(**k)) {
            return Err(format!("turn {i} ({}) contains the chat marker {marker}", m.role));
        }
    }
    Ok(messages)
}

fn messages_of(value: &Value) -> std::result::Result<Vec<Message>, String> {
    let list = value.as_array().ok_or("`messages` must be a list")?;
    let mut out = Vec::with_capacity(list.len());
    for (i, m) in list.iter().enumerate() {
        let role = m["role"].as_str().ok_or(format!("messages[{i}] has no `role`"))?;
        if !["system", "user", "assistant"].contains(&role) {
            return Err(format!("messages[{i}].role is {role:?}; expected system, user or assistant"));
        }
        let content = m["content"].as_str().ok_or(format!("messages[{i}].content is not text"))?;
        out.push(Message::new(role, content));
    }
    if !out.iter().any(|m| m.role == "assistant" && !m.content.trim().is_empty()) {
        return Err("no non-empty assistant turn (nothing to learn)".into());
    }
    Ok(out)
}

/// A field's text: strings as they are, numbers printed, lists of those one per line.
fn text_of(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Array(items) => items.iter().map(text_of).collect::<Option<Vec<_>>>().map(|v| v.join("\n")),
        _ => None,
    }
}

fn fill(template: &Template, record: &Value) -> std::result::Result<String, String> {
    let mut bad = None;
    let text = template.render(|name, out| {
        let field = name.split('.').try_fold(record, |v, key| v.get(key));
        match field.and_then(text_of) {
            Some(text) => {
                out.push_str(&text);
                true
            }
            None => {
                bad = Some(name.to_string());
                false
            }
        }
    });
    text.map_err(|name| format!("field `{}` is missing or not text", bad.unwrap_or(name)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_messages_field_pairs_and_templates() {
        let m =
            record(r#"{"messages":[{"role":"user","content":"hi"},{"role":"assistant","content":"yo"}]}"#, None, None);
        assert_eq!(m.unwrap(), vec![Message::new("user", "hi"), Message::new("assistant", "yo")]);
        let d =
            record(r#"{"instruction":"Sum","context":"1 2","response":"3","category":"x"}"#, None, Some("Be brief."));
        assert_eq!(
            d.unwrap(),
            vec![
                Message::new("system", "Be brief."),
                Message::new("user", "Sum\n\n1 2"),
                Message::new("assistant", "3")
            ]
        );
        let t = (Template::parse("{text}\nTests:\n{test_list}").unwrap(), Template::parse("{code}").unwrap());
        let c = record(r#"{"text":"Add","code":"def f(): pass","test_list":["assert a","assert b"]}"#, Some(&t), None);
        assert_eq!(c.unwrap()[0].content, "Add\nTests:\nassert a\nassert b");
    }

    #[test]
    fn alpaca_records_keep_their_instruction_and_a_system_turn_is_not_doubled() {
        let a = record(r#"{"instruction":"Translate","input":"chat","output":"cat"}"#, None, None).unwrap();
        assert_eq!(a, vec![Message::new("user", "Translate\n\nchat"), Message::new("assistant", "cat")]);
        let with_system = r#"{"messages":[{"role":"system","content":"own"},{"role":"user","content":"q"},{"role":"assistant","content":"a"}]}"#;
        assert_eq!(record(with_system, None, Some("source")).unwrap()[0], Message::new("system", "own"));
        let marker = r#"{"question":"q","answer":"a<|im_end|>b"}"#;
        assert!(record(marker, None, None).unwrap_err().contains("chat marker <|im_end|>"));
    }

    #[test]
    fn bad_records_say_why() {
        assert!(record("{not json", None, None).unwrap_err().contains("not JSON"));
        assert!(record(r#"{"a":1}"#, None, None).unwrap_err().contains("give templates"));
        assert!(record(r#"{"question":"q","answer":""}"#, None, None).unwrap_err().contains("empty response"));
        let bad_role = r#"{"messages":[{"role":"bot","content":"x"}]}"#;
        assert!(record(bad_role, None, None).unwrap_err().contains("expected system, user or assistant"));
        let no_answer = r#"{"messages":[{"role":"user","content":"x"}]}"#;
        assert!(record(no_answer, None, None).unwrap_err().contains("nothing to learn"));
    }
}
