//! `config/eam-proxy.toml` and the README's configuration reference show the code's defaults:
//! the structs' `Default`s, serialized, are what both are held to.

use filters::CloudPolicy;
use toml::{Table, Value};

use super::{App, Config};

const EXAMPLE: &str = include_str!("../../../config/eam-proxy.toml");
const README: &str = include_str!("../../../README.md");

/// The code's default of each key of `table` (`server`, `upstream.x5c`, `clouds.global`…);
/// a key without a default is absent.
fn defaults(table: &str) -> Table {
    if let Some(name) = table.strip_prefix("clouds.") {
        let Some(cloud) = CloudPolicy::builtin(name) else {
            return Table::new();
        };
        let mut t = Table::new();
        t.insert(
            "jwks_url".into(),
            CloudPolicy::builtin_jwks_url(name).unwrap().into(),
        );
        t.insert("issuer_template".into(), cloud.issuer_template.into());
        t.insert("redirect_uris".into(), cloud.redirect_uris.into());
        return t;
    }
    match table {
        "apps" => {
            // client_id is required: the one key given.
            let app: App = toml::from_str("client_id = \"\"").unwrap();
            let mut t = Table::try_from(app).unwrap();
            t.remove("client_id");
            t
        }
        // Every key of these entries is required.
        "upstream.x5c" | "authorize.extra_claims" => Table::new(),
        _ => {
            let all = Table::try_from(Config::default()).unwrap();
            table
                .split('.')
                .try_fold(&all, |t, name| t.get(name)?.as_table())
                .unwrap_or_else(|| panic!("no table [{table}] in the schema"))
                .clone()
        }
    }
}

/// Tables of entries (`[[apps]]`): their keys without a default are required.
const ARRAY_TABLES: [&str; 3] = ["apps", "upstream.x5c", "authorize.extra_claims"];

/// A `key = value` line of the example, commented or not.
struct Shown {
    line: usize,
    table: String,
    key: String,
    value: Value,
    commented: bool,
    /// Under a commented header: an example of a table that has none by default.
    table_commented: bool,
    /// The line as TOML, without its `#`.
    text: String,
}

/// `[server]` → `server`, `# [[apps]]` → `apps`.
fn header(body: &str) -> Option<String> {
    let name = body
        .strip_prefix('[')?
        .strip_suffix(']')?
        .trim_matches(['[', ']']);
    name.bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'.')
        .then(|| name.to_string())
}

fn shown(text: &str) -> Vec<Shown> {
    let uncomment = |raw: &str| raw.trim_start().trim_start_matches('#').trim().to_string();
    let mut found = Vec::new();
    let (mut table, mut table_commented) = (String::new(), false);
    let mut lines = text.lines().enumerate().peekable();
    while let Some((n, raw)) = lines.next() {
        let commented = raw.trim_start().starts_with('#');
        let mut body = uncomment(raw);
        if let Some(name) = header(&body) {
            (table, table_commented) = (name, commented);
            continue;
        }
        let Some((key, value)) = body.split_once('=') else {
            continue;
        };
        let key = key.trim().to_string();
        if key.is_empty() || !key.bytes().all(|b| b.is_ascii_lowercase() || b == b'_') {
            continue;
        }
        // An array may run over several lines (routing_headers).
        if value.trim_start().starts_with('[') {
            while toml::from_str::<Table>(&body).is_err() {
                let Some((_, next)) = lines.next_if(|(_, l)| !l.trim().is_empty()) else {
                    break;
                };
                body = format!("{body}\n{}", uncomment(next));
            }
        }
        // Prose that happens to hold an `=`.
        let Ok(mut parsed) = toml::from_str::<Table>(&body) else {
            continue;
        };
        found.push(Shown {
            line: n + 1,
            table: table.clone(),
            value: parsed.remove(&key).unwrap(),
            key,
            commented,
            table_commented,
            text: body,
        });
    }
    found
}

/// The example's own convention (its header): "Keys that are commented out have no default, or
/// show an alternative to the line above them"; every other key shows its default.
#[test]
fn the_example_shows_the_code_defaults() {
    let shown = shown(EXAMPLE);
    assert!(shown.len() > 50, "only {} keys found", shown.len());
    for (i, s) in shown.iter().enumerate() {
        let at = format!(
            "config/eam-proxy.toml line {}: {}.{}",
            s.line, s.table, s.key
        );
        let alternative = s.commented
            && shown[..i]
                .iter()
                .any(|o| o.table == s.table && o.key == s.key && !o.commented);
        match defaults(&s.table).get(&s.key) {
            Some(default) if s.value == *default => assert!(
                !s.commented || s.table_commented,
                "{at} is the default ({default}) but commented out: uncomment it"
            ),
            Some(_) if alternative => {}
            Some(default) => panic!(
                "{at} shows {}, but the code's default is {default}",
                s.value
            ),
            None => assert!(
                s.commented || ARRAY_TABLES.contains(&s.table.as_str()),
                "{at} has no default in the code: comment it out"
            ),
        }
    }
}

/// Commented keys too are keys of the schema, with values of the right type: each table, its
/// lines uncommented (the first of each key), parses.
#[test]
fn the_example_shows_only_keys_of_the_schema() {
    let shown = shown(EXAMPLE);
    let mut tables: Vec<&str> = shown.iter().map(|s| s.table.as_str()).collect();
    tables.dedup();
    for table in tables {
        let mut keys = Vec::new();
        let mut text = if ARRAY_TABLES.contains(&table) {
            format!("[[{table}]]\n")
        } else {
            format!("[{table}]\n")
        };
        for s in shown.iter().filter(|s| s.table == table) {
            if !keys.contains(&&s.key) {
                keys.push(&s.key);
                text = format!("{text}{}\n", s.text);
            }
        }
        if let Err(e) = Config::parse(&text) {
            panic!("config/eam-proxy.toml [{table}]: {e}\n{text}");
        }
    }
}

/// README "Configuration reference": a default written as one TOML value is the code's.
#[test]
fn the_readme_shows_the_code_defaults() {
    let reference = README
        .split("## Configuration reference")
        .nth(1)
        .and_then(|r| r.split("\n## ").next())
        .expect("README has a configuration reference");
    let mut table = None;
    let mut checked = 0;
    for line in reference.lines() {
        if line.starts_with("### ") {
            table = line
                .strip_prefix("### `")
                .and_then(|h| header(h.trim_end_matches('`')));
            continue;
        }
        let Some(table) = &table else { continue };
        let cells: Vec<&str> = line
            .split(" | ")
            .map(|c| c.trim_matches(['|', ' ']))
            .collect();
        let [key, _, default, ..] = cells[..] else {
            continue;
        };
        let (Some(key), Some(default)) = (one_code_span(key), one_code_span(default)) else {
            continue;
        };
        let Ok(value) = toml::from_str::<Table>(&format!("v = {default}")) else {
            continue;
        };
        let code = defaults(table).remove(key);
        assert_eq!(
            code.as_ref(),
            value.get("v"),
            "README [{table}] {key}: the code's default differs"
        );
        checked += 1;
    }
    assert!(checked >= 40, "only {checked} README defaults found");
}

/// `` `x` `` → `x`; `None` for anything else (prose, several spans, `—`).
fn one_code_span(cell: &str) -> Option<&str> {
    let inner = cell.strip_prefix('`')?.strip_suffix('`')?;
    (!inner.contains('`')).then_some(inner)
}
