//! Text templates such as `"{question}\n{answer}"` that build a document from several fields.

/// A parsed template: literal text and field references, in order.
#[derive(Debug, Clone, PartialEq)]
pub struct Template {
    parts: Vec<Part>,
}

#[derive(Debug, Clone, PartialEq)]
enum Part {
    Literal(String),
    /// A field name; dots address nested JSON objects (`metadata.url`).
    Field(String),
}

impl Template {
    /// Parses `{field}` references; `{{` and `}}` are literal braces.
    pub fn parse(template: &str) -> Result<Template, String> {
        let mut parts = Vec::new();
        let mut literal = String::new();
        let mut chars = template.chars().peekable();
        while let Some(c) = chars.next() {
            match c {
                '{' if chars.peek() == Some(&'{') => {
                    chars.next();
                    literal.push('{');
                }
                '}' if chars.peek() == Some(&'}') => {
                    chars.next();
                    literal.push('}');
                }
                '{' => {
                    let mut name = String::new();
                    loop {
                        match chars.next() {
                            Some('}') => break,
                            Some(c) => name.push(c),
                            None => return Err(format!("unclosed `{{` in template {template:?}")),
                        }
                    }
                    if name.trim().is_empty() {
                        return Err(format!("empty field name `{{}}` in template {template:?}"));
                    }
                    if !literal.is_empty() {
                        parts.push(Part::Literal(std::mem::take(&mut literal)));
                    }
                    parts.push(Part::Field(name.trim().to_string()));
                }
                '}' => return Err(format!("unmatched `}}` in template {template:?} (write `}}}}` for a brace)")),
                c => literal.push(c),
            }
        }
        if !literal.is_empty() {
            parts.push(Part::Literal(literal));
        }
        if !parts.iter().any(|p| matches!(p, Part::Field(_))) {
            return Err(format!("template {template:?} names no field"));
        }
        Ok(Template { parts })
    }

    /// A template that is just one field.
    pub fn field(name: &str) -> Template {
        Template { parts: vec![Part::Field(name.to_string())] }
    }

    /// The field names referenced, in order.
    pub fn fields(&self) -> impl Iterator<Item = &str> {
        self.parts.iter().filter_map(|p| match p {
            Part::Field(name) => Some(name.as_str()),
            Part::Literal(_) => None,
        })
    }

    /// Fills the template; `write_field` appends a field's text to the output and returns
    /// `false` when the field is missing. The error is the first missing field's name.
    pub fn render(&self, mut write_field: impl FnMut(&str, &mut String) -> bool) -> Result<String, String> {
        let mut out = String::new();
        for part in &self.parts {
            match part {
                Part::Literal(text) => out.push_str(text),
                Part::Field(name) => {
                    if !write_field(name, &mut out) {
                        return Err(name.clone());
                    }
                }
            }
        }
        Ok(out)
    }

    /// The field name when the template is exactly one field (the common `text_field` case,
    /// where the value can be moved instead of copied).
    pub fn single_field(&self) -> Option<&str> {
        match self.parts.as_slice() {
            [Part::Field(name)] => Some(name),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_fields_and_escapes() {
        let t = Template::parse("Q: {question}\n{{A}}: {answer}").unwrap();
        assert_eq!(t.fields().collect::<Vec<_>>(), ["question", "answer"]);
        let text = t.render(|name, out| {
            out.push_str(&name.to_uppercase());
            true
        });
        assert_eq!(text.unwrap(), "Q: QUESTION\n{A}: ANSWER");
    }

    #[test]
    fn rejects_bad_templates() {
        assert!(Template::parse("{open").unwrap_err().contains("unclosed"));
        assert!(Template::parse("no fields").unwrap_err().contains("names no field"));
        assert!(Template::parse("x } y {a}").unwrap_err().contains("unmatched"));
        assert!(Template::parse("{}").unwrap_err().contains("empty field"));
    }

    #[test]
    fn missing_field_is_named() {
        let t = Template::parse("{a} {b}").unwrap();
        let err = t.render(|name, _| name == "a").unwrap_err();
        assert_eq!(err, "b");
    }
}
