//! Just enough HTML to read the proxy's form_post error page the way a browser would submit it.

/// The first `<form>` of a page and its `<input>` fields, values unescaped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HtmlForm {
    pub method: String,
    pub action: String,
    pub fields: Vec<(String, String)>,
}

impl HtmlForm {
    pub fn field(&self, name: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Parses the first form of `html`; `None` when there is none.
pub fn parse_html_form(html: &str) -> Option<HtmlForm> {
    // ASCII lowercasing keeps byte offsets, so positions found in `lower` index `html`.
    let lower = html.to_ascii_lowercase();
    let form_start = lower.find("<form")?;
    let form_end = lower[form_start..]
        .find("</form")
        .map_or(html.len(), |i| form_start + i);
    let form_attrs = tag_attributes(&html[form_start + "<form".len()..]);
    let mut fields = Vec::new();
    let mut at = form_start;
    while let Some(i) = lower[at..form_end].find("<input") {
        let start = at + i + "<input".len();
        let attrs = tag_attributes(&html[start..]);
        if let Some(name) = attr(&attrs, "name") {
            fields.push((
                name.to_string(),
                attr(&attrs, "value").unwrap_or("").to_string(),
            ));
        }
        at = start;
    }
    Some(HtmlForm {
        method: attr(&form_attrs, "method").unwrap_or("get").to_string(),
        action: attr(&form_attrs, "action").unwrap_or("").to_string(),
        fields,
    })
}

fn attr<'a>(attrs: &'a [(String, String)], name: &str) -> Option<&'a str> {
    attrs
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
}

/// Attributes of a tag whose name has been consumed, up to its closing `>`; values unescaped.
fn tag_attributes(rest: &str) -> Vec<(String, String)> {
    let mut attrs = Vec::new();
    let mut chars = rest.char_indices().peekable();
    loop {
        while chars
            .next_if(|(_, c)| c.is_whitespace() || *c == '/')
            .is_some()
        {}
        let Some(&(start, c)) = chars.peek() else {
            break;
        };
        if c == '>' {
            break;
        }
        let mut end = start;
        while let Some((i, c)) = chars.next_if(|(_, c)| !c.is_whitespace() && !"=>/".contains(*c)) {
            end = i + c.len_utf8();
        }
        let name = rest[start..end].to_ascii_lowercase();
        if name.is_empty() {
            // A stray character: skip it rather than loop forever.
            chars.next();
            continue;
        }
        while chars.next_if(|(_, c)| c.is_whitespace()).is_some() {}
        if chars.next_if(|(_, c)| *c == '=').is_none() {
            attrs.push((name, String::new()));
            continue;
        }
        while chars.next_if(|(_, c)| c.is_whitespace()).is_some() {}
        let value = match chars.peek() {
            Some(&(i, q)) if q == '"' || q == '\'' => {
                chars.next();
                let close = rest[i + 1..].find(q).map_or(rest.len(), |j| i + 1 + j);
                while chars.next_if(|(j, _)| *j <= close).is_some() {}
                &rest[i + 1..close]
            }
            Some(&(i, _)) => {
                let mut end = i;
                while let Some((j, c)) = chars.next_if(|(_, c)| !c.is_whitespace() && *c != '>') {
                    end = j + c.len_utf8();
                }
                &rest[i..end]
            }
            None => "",
        };
        attrs.push((name, unescape(value)));
    }
    attrs
}

/// Decodes character references: the named ones an escaper emits and numeric ones.
pub fn unescape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(amp) = rest.find('&') {
        out.push_str(&rest[..amp]);
        rest = &rest[amp..];
        let decoded = rest.find(';').and_then(|semi| {
            let entity = &rest[1..semi];
            let c = match entity {
                "amp" => Some('&'),
                "lt" => Some('<'),
                "gt" => Some('>'),
                "quot" => Some('"'),
                "apos" => Some('\''),
                _ => entity
                    .strip_prefix("#x")
                    .or_else(|| entity.strip_prefix("#X"))
                    .map(|hex| u32::from_str_radix(hex, 16))
                    .or_else(|| entity.strip_prefix('#').map(str::parse::<u32>))
                    .and_then(Result::ok)
                    .and_then(char::from_u32),
            };
            c.map(|c| (c, semi + 1))
        });
        match decoded {
            Some((c, len)) => {
                out.push(c);
                rest = &rest[len..];
            }
            None => {
                out.push('&');
                rest = &rest[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_form_fields_and_unescapes_them() {
        let page = "<html><body><FORM method=\"post\" action='https://a.example/cb?x=1&amp;y=2'>\
                    <input type=\"hidden\" name=\"state\" value=\"&quot;&gt;&lt;script&gt;&#x27;&#39;&amp;\">\
                    <input type=hidden name=error value=invalid_request />\
                    <button>go</button></form><input name=\"outside\" value=\"x\"></body></html>";
        let form = parse_html_form(page).unwrap();
        assert_eq!(form.method, "post");
        assert_eq!(form.action, "https://a.example/cb?x=1&y=2");
        assert_eq!(
            form.fields,
            vec![
                ("state".to_string(), "\"><script>''&".to_string()),
                ("error".to_string(), "invalid_request".to_string()),
            ]
        );
    }

    #[test]
    fn leaves_unknown_references_alone() {
        assert_eq!(unescape("a & b &bogus; &#xZZ;"), "a & b &bogus; &#xZZ;");
    }
}
