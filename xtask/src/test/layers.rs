//! The layer check: no module of `agent/src` imports a module above it.
//!
//! The order is written once, in the "Layers" section of
//! `docs/design-notes.md`: a fenced block with one layer per line, bottom
//! first, each line naming the top-level modules of that layer. A module
//! may name (through `use crate::...`, an inline `crate::` path or a
//! `super::` chain that leaves its top-level module) only modules of lower
//! layers; modules of one layer do not name each other, so no two
//! top-level modules can import each other. Every top-level module must be
//! in the order, so a new one is placed on purpose.
//!
//! The scan is textual (comments and string literals removed first), which
//! is enough for paths: a macro that builds a path from pieces would escape
//! it, and none does.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context, Result, bail};

/// Where the order is written, relative to the workspace root.
pub(crate) const NOTES: &str = "docs/design-notes.md";
/// The heading of the section holding the order.
const HEADING: &str = "## Layers";
/// The name given to the crate root (`lib.rs`) in the order.
const ROOT: &str = "lib";

/// The documented order: each top-level module and its layer (0 = bottom).
#[derive(Debug)]
pub(crate) struct Order {
    layer: BTreeMap<String, usize>,
}

impl Order {
    /// Reads the first fenced block after the "## Layers" heading of the
    /// design notes' text. Errors when there is no such block, it is empty
    /// or names a module twice.
    pub(crate) fn parse(notes: &str) -> Result<Order> {
        let mut lines = notes.lines().skip_while(|l| l.trim() != HEADING);
        if lines.next().is_none() {
            bail!("{NOTES} has no '{HEADING}' section");
        }
        let mut lines = lines.skip_while(|l| !l.trim_start().starts_with("```"));
        if lines.next().is_none() {
            bail!("the '{HEADING}' section of {NOTES} has no fenced block");
        }
        let mut layer = BTreeMap::new();
        let mut n = 0;
        for line in lines.take_while(|l| !l.trim_start().starts_with("```")) {
            // "3 policy  # comment": an optional number, then the modules.
            let line = line.split('#').next().unwrap_or_default();
            let names: Vec<&str> = line
                .split(|c: char| c.is_whitespace() || c == ',')
                .filter(|w| !w.is_empty() && !w.chars().all(|c| c.is_ascii_digit() || c == ':'))
                .collect();
            if names.is_empty() {
                continue;
            }
            for name in names {
                if layer.insert(name.to_string(), n).is_some() {
                    bail!("{NOTES}: module {name} is named twice in the layer order");
                }
            }
            n += 1;
        }
        if layer.is_empty() {
            bail!("the layer order in {NOTES} is empty");
        }
        Ok(Order { layer })
    }

    fn of(&self, module: &str) -> Option<usize> {
        self.layer.get(module).copied()
    }
}

/// One import that goes against the order.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Violation {
    pub(crate) file: String,
    pub(crate) line: usize,
    pub(crate) from: String,
    pub(crate) to: String,
    pub(crate) why: &'static str,
}

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}:{}: {} imports {} ({})",
            self.file, self.line, self.from, self.to, self.why
        )
    }
}

/// Checks every `.rs` file under `src` (the agent's `src/`; `main.rs` is
/// its own crate and skipped) against the order in `notes`.
pub(crate) fn check_dir(src: &Path, notes: &str) -> Result<Vec<Violation>> {
    let order = Order::parse(notes)?;
    let mut files = Vec::new();
    collect(src, &mut files)?;
    files.sort();
    let moved = path_attributes(src, &files)?;
    let mut top: Vec<String> = Vec::new();
    let mut out = Vec::new();
    for path in &files {
        let rel = path.strip_prefix(src).unwrap_or(path);
        let Some(module) = moved.get(path).cloned().or_else(|| module_path(rel)) else {
            continue;
        };
        if let Some(first) = module.first()
            && !top.contains(first)
        {
            top.push(first.clone());
        }
        let text =
            std::fs::read_to_string(path).with_context(|| format!("read {}", path.display()))?;
        let name = format!("agent/src/{}", rel.display());
        out.extend(check_file(&name, &module, &text, &order));
    }
    for m in top {
        if order.of(&m).is_none() {
            out.push(Violation {
                file: format!("agent/src/{m}"),
                line: 0,
                from: m.clone(),
                to: m,
                why: "module missing from the layer order",
            });
        }
    }
    Ok(out)
}

/// Files included with `#[path = "x.rs"] mod name;`, with the module path
/// that gives them (the declaring file's path plus `name`).
fn path_attributes(
    src: &Path,
    files: &[std::path::PathBuf],
) -> Result<BTreeMap<std::path::PathBuf, Vec<String>>> {
    let mut out = BTreeMap::new();
    for path in files {
        let rel = path.strip_prefix(src).unwrap_or(path);
        let Some(module) = module_path(rel) else {
            continue;
        };
        let text =
            std::fs::read_to_string(path).with_context(|| format!("read {}", path.display()))?;
        let mut rest = text.as_str();
        while let Some(at) = rest.find("#[path = \"") {
            rest = rest.get(at + 10..).unwrap_or_default();
            let Some(end) = rest.find('"') else { break };
            let file = rest.get(..end).unwrap_or_default();
            let after = rest.get(end..).unwrap_or_default();
            let name = after
                .find("mod ")
                .and_then(|m| after.get(m + 4..))
                .map(|a| a.chars().take_while(|c| c.is_alphanumeric() || *c == '_'))
                .map(String::from_iter)
                .unwrap_or_default();
            if let Some(dir) = path.parent() {
                let mut m = module.clone();
                m.push(name);
                out.insert(dir.join(file), m);
            }
        }
    }
    Ok(out)
}

fn collect(dir: &Path, out: &mut Vec<std::path::PathBuf>) -> Result<()> {
    for entry in std::fs::read_dir(dir).with_context(|| format!("read {}", dir.display()))? {
        let path = entry?.path();
        if path.is_dir() {
            collect(&path, out)?;
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
    Ok(())
}

/// The module path of a file relative to `src/`: `policy/eval.rs` ->
/// `[policy, eval]`, `policy/mod.rs` -> `[policy]`, `lib.rs` -> `[]`;
/// `None` for `main.rs` (the binary crate).
fn module_path(rel: &Path) -> Option<Vec<String>> {
    let s = rel.to_string_lossy().replace('\\', "/");
    if s == "main.rs" {
        return None;
    }
    let s = s.strip_suffix(".rs").unwrap_or(&s);
    let mut parts: Vec<String> = s.split('/').map(str::to_string).collect();
    if parts.last().is_some_and(|p| p == "mod" || p == "lib") {
        parts.pop();
    }
    Some(parts)
}

/// Checks one file's text; `module` is its module path (`[]` for the root).
pub(crate) fn check_file(
    name: &str,
    module: &[String],
    text: &str,
    order: &Order,
) -> Vec<Violation> {
    let from = module.first().map_or(ROOT, String::as_str);
    let Some(from_layer) = order.of(from) else {
        // Reported once per module by check_dir.
        return Vec::new();
    };
    let code = strip(text);
    let mut out = Vec::new();
    for (line, first) in references(&code, module) {
        // A name that is no module of the order is an item of the root.
        let to = if order.of(&first).is_some() {
            first
        } else {
            ROOT.to_string()
        };
        if to == from {
            continue;
        }
        let why = match order.of(&to) {
            None => "the crate root is not in the layer order",
            Some(l) if l > from_layer => "goes up the layer order",
            Some(l) if l == from_layer => "same layer",
            Some(_) => continue,
        };
        out.push(Violation {
            file: name.to_string(),
            line,
            from: from.to_string(),
            to,
            why,
        });
    }
    out
}

/// Every top-level module named by a path in `code` (already stripped),
/// with its 1-based line: `crate::x`, `crate::{x, y}` and `super::` chains
/// that leave `module`. Items of the crate root count as `lib`.
fn references(code: &str, module: &[String]) -> Vec<(usize, String)> {
    let toks = tokens(code);
    let mut out = Vec::new();
    // Inline `mod name {` blocks: (name, brace depth inside them).
    let mut inline: Vec<usize> = Vec::new();
    let mut path: Vec<String> = module.to_vec();
    let mut depth = 0usize;
    let mut i = 0;
    while let Some(t) = toks.get(i) {
        match t.text.as_str() {
            "{" => depth += 1,
            "}" => {
                depth = depth.saturating_sub(1);
                if inline.last().is_some_and(|d| *d > depth) {
                    inline.pop();
                    path.pop();
                }
            }
            "mod" => {
                if let (Some(name), Some(open)) = (toks.get(i + 1), toks.get(i + 2))
                    && open.text == "{"
                {
                    path.push(name.text.clone());
                    depth += 1;
                    inline.push(depth);
                    i += 3;
                    continue;
                }
            }
            "crate" if toks.get(i.wrapping_sub(1)).is_none_or(|p| p.text != "$") => {
                for (line, first) in after_sep(&toks, i + 1) {
                    out.push((line, top_of(&[], &first)));
                }
            }
            "super" if toks.get(i.wrapping_sub(1)).is_none_or(|p| p.text != "::") => {
                let mut ups = 1;
                let mut j = i + 1;
                while toks.get(j).is_some_and(|t| t.text == "::")
                    && toks.get(j + 1).is_some_and(|t| t.text == "super")
                {
                    ups += 1;
                    j += 2;
                }
                if ups <= path.len() {
                    let base = path.get(..path.len() - ups).unwrap_or_default();
                    if base.is_empty() {
                        for (line, first) in after_sep(&toks, j) {
                            out.push((line, top_of(base, &first)));
                        }
                    }
                }
            }
            _ => {}
        }
        i += 1;
    }
    out
}

/// The top-level module `first` names when it follows the path `base`.
fn top_of(base: &[String], first: &str) -> String {
    base.first().cloned().unwrap_or_else(|| first.to_string())
}

/// After `::` at `i`: the first segment, or each first segment of a
/// `{a::b, c}` group (nested groups are reduced to their first segment).
fn after_sep(toks: &[Tok], i: usize) -> Vec<(usize, String)> {
    if toks.get(i).is_none_or(|t| t.text != "::") {
        return Vec::new();
    }
    let Some(next) = toks.get(i + 1) else {
        return Vec::new();
    };
    if next.text != "{" {
        return vec![(next.line, next.text.clone())];
    }
    let mut out = Vec::new();
    let mut depth = 0usize;
    let mut expect = true;
    for t in toks.iter().skip(i + 1) {
        match t.text.as_str() {
            "{" => depth += 1,
            "}" => {
                depth -= 1;
                if depth == 0 {
                    break;
                }
            }
            "," if depth == 1 => expect = true,
            s if depth == 1 && expect => {
                expect = false;
                if s != "self" {
                    out.push((t.line, s.to_string()));
                }
            }
            _ => {}
        }
    }
    out
}

#[derive(Debug)]
struct Tok {
    text: String,
    line: usize,
}

/// Identifiers, `::` and single punctuation, each with its line.
fn tokens(code: &str) -> Vec<Tok> {
    let mut out = Vec::new();
    let mut line = 1;
    let mut chars = code.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\n' {
            line += 1;
        } else if c.is_alphanumeric() || c == '_' {
            let mut s = String::from(c);
            while let Some(&n) = chars.peek() {
                if n.is_alphanumeric() || n == '_' {
                    s.push(n);
                    chars.next();
                } else {
                    break;
                }
            }
            out.push(Tok { text: s, line });
        } else if c == ':' && chars.peek() == Some(&':') {
            chars.next();
            out.push(Tok {
                text: "::".into(),
                line,
            });
        } else if !c.is_whitespace() {
            out.push(Tok {
                text: c.to_string(),
                line,
            });
        }
    }
    out
}

/// `text` without comments, string and char literals (newlines kept, so
/// lines still count right).
fn strip(text: &str) -> String {
    let b: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    let at = |i: usize| b.get(i).copied().unwrap_or('\0');
    while i < b.len() {
        let c = at(i);
        if c == '/' && at(i + 1) == '/' {
            while i < b.len() && at(i) != '\n' {
                i += 1;
            }
        } else if c == '/' && at(i + 1) == '*' {
            let mut nest = 0;
            while i < b.len() {
                if at(i) == '/' && at(i + 1) == '*' {
                    nest += 1;
                    i += 2;
                } else if at(i) == '*' && at(i + 1) == '/' {
                    nest -= 1;
                    i += 2;
                    if nest == 0 {
                        break;
                    }
                } else {
                    if at(i) == '\n' {
                        out.push('\n');
                    }
                    i += 1;
                }
            }
        } else if c == 'r'
            && (at(i + 1) == '"' || at(i + 1) == '#')
            && !at(i.wrapping_sub(1)).is_alphanumeric()
        {
            // Raw string r#"..."#.
            let mut j = i + 1;
            let mut hashes = 0;
            while at(j) == '#' {
                hashes += 1;
                j += 1;
            }
            if at(j) != '"' {
                out.push(c);
                i += 1;
                continue;
            }
            j += 1;
            loop {
                if j >= b.len() {
                    break;
                }
                if at(j) == '"' && (1..=hashes).all(|k| at(j + k) == '#') {
                    j += 1 + hashes;
                    break;
                }
                if at(j) == '\n' {
                    out.push('\n');
                }
                j += 1;
            }
            out.push_str("\"\"");
            i = j;
        } else if c == '"' {
            i += 1;
            while i < b.len() && at(i) != '"' {
                if at(i) == '\\' {
                    i += 1;
                }
                if at(i) == '\n' {
                    out.push('\n');
                }
                i += 1;
            }
            i += 1;
            out.push_str("\"\"");
        } else if c == '\'' {
            // A char literal ('x', '\n', '\u{..}') or a lifetime ('a).
            if at(i + 1) == '\\' {
                let mut j = i + 2;
                while j < b.len() && at(j) != '\'' {
                    j += 1;
                }
                i = j + 1;
                out.push_str("' '");
            } else if at(i + 2) == '\'' {
                i += 3;
                out.push_str("' '");
            } else {
                out.push(c);
                i += 1;
            }
        } else {
            out.push(c);
            i += 1;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOTES_FIXTURE: &str = "# notes\n\n## Layers\n\nBottom first.\n\n```\n0 text net\n1 identity   # flows\n2 policy\n3 cli\n```\n";

    fn order() -> Order {
        Order::parse(NOTES_FIXTURE).unwrap_or_else(|e| panic!("{e}"))
    }

    fn path(p: &[&str]) -> Vec<String> {
        p.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn an_import_down_the_order_passes() {
        let src = "use crate::identity::FlowIdentity;\nuse crate::{text::quote, net};\nfn f() { crate::text::x(); }\n";
        assert_eq!(
            check_file("policy/eval.rs", &path(&["policy", "eval"]), src, &order()),
            vec![]
        );
    }

    #[test]
    fn a_deliberately_bad_import_is_named_with_file_line_and_modules() {
        let src = "//! doc\nuse crate::text;\nuse crate::{\n    identity::Flow,\n    cli::ExplainArgs,\n};\n";
        let v = check_file(
            "policy/explain.rs",
            &path(&["policy", "explain"]),
            src,
            &order(),
        );
        assert_eq!(
            v,
            vec![Violation {
                file: "policy/explain.rs".into(),
                line: 5,
                from: "policy".into(),
                to: "cli".into(),
                why: "goes up the layer order",
            }]
        );
        assert_eq!(
            v.first().map(|v| v.to_string()).unwrap_or_default(),
            "policy/explain.rs:5: policy imports cli (goes up the layer order)"
        );
    }

    #[test]
    fn inline_paths_super_chains_and_same_layer_imports_are_caught() {
        let src = "fn f() {\n    let a = crate::cli::run();\n    super::super::policy::x();\n    crate::net::y();\n}\n";
        let v = check_file("text/a/b.rs", &path(&["text", "a", "b"]), src, &order());
        let got: Vec<(usize, &str, &str)> =
            v.iter().map(|v| (v.line, v.to.as_str(), v.why)).collect();
        assert_eq!(
            got,
            vec![
                (2, "cli", "goes up the layer order"),
                (4, "net", "same layer"),
            ]
        );
        // From text/a.rs, super::super leaves `text` for the root.
        let v = check_file("text/a.rs", &path(&["text", "a"]), src, &order());
        assert_eq!(v.len(), 3);
    }

    #[test]
    fn comments_strings_inline_test_modules_and_macros_are_not_imports() {
        let src = "// use crate::cli;\n/* crate::cli */\nconst S: &str = \"crate::cli::x\";\nconst R: &str = r#\"crate::cli\"#;\nmacro_rules! m { () => { $crate::cli::x() } }\nfn f<'a>(c: char) -> bool { c == '{' }\n#[cfg(test)]\nmod tests {\n    use super::*;\n    use super::super::eval;\n}\n";
        assert_eq!(
            check_file(
                "policy/explain.rs",
                &path(&["policy", "explain"]),
                src,
                &order()
            ),
            vec![]
        );
    }

    #[test]
    fn root_items_are_the_top_layer() {
        let src = "use crate::classify_sql;\nuse crate::Thing;\n";
        let v = check_file(
            "policy/explain.rs",
            &path(&["policy", "explain"]),
            src,
            &order(),
        );
        let got: Vec<(usize, &str)> = v.iter().map(|v| (v.line, v.to.as_str())).collect();
        assert_eq!(got, vec![(1, "lib"), (2, "lib")]);
        let with_root = NOTES_FIXTURE.replace("3 cli\n", "3 cli\n4 lib\n");
        let order = Order::parse(&with_root).unwrap_or_else(|e| panic!("{e}"));
        let v = check_file(
            "policy/explain.rs",
            &path(&["policy", "explain"]),
            src,
            &order,
        );
        assert!(
            v.iter().all(|v| v.why == "goes up the layer order"),
            "{v:?}"
        );
        assert!(check_file("lib.rs", &[], "use crate::policy::x;\n", &order).is_empty());
    }

    #[test]
    fn a_module_missing_from_the_order_is_reported() {
        let dir = std::env::temp_dir().join(format!("layers-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("policy")).unwrap_or_else(|e| panic!("{e}"));
        let write = |p: &str, s: &str| {
            std::fs::write(dir.join(p), s).unwrap_or_else(|e| panic!("{e}"));
        };
        write("lib.rs", "mod policy;\nmod extra;\n");
        write("extra.rs", "use crate::text;\n");
        write("text.rs", "");
        write("cli.rs", "");
        write("policy/mod.rs", "mod eval;\n");
        write(
            "policy/eval.rs",
            "#[path = \"eval_tests.rs\"]\nmod tests;\n",
        );
        // policy::eval::tests: super::super is policy, not the root.
        write("policy/eval_tests.rs", "use super::super::cli;\n");
        let notes = NOTES_FIXTURE.replace("3 cli\n", "3 cli\n4 lib\n");
        let v = check_dir(&dir, &notes).unwrap_or_else(|e| panic!("{e}"));
        let _ = std::fs::remove_dir_all(&dir);
        let got: Vec<String> = v.iter().map(ToString::to_string).collect();
        assert_eq!(
            got,
            vec![
                "agent/src/extra:0: extra imports extra (module missing from the layer order)"
                    .to_string()
            ]
        );
    }

    #[test]
    fn the_order_must_exist_and_name_each_module_once() {
        assert!(Order::parse("# notes\n").is_err());
        assert!(Order::parse("## Layers\n```\na\nb a\n```\n").is_err());
        assert_eq!(order().of("identity"), Some(1));
        assert_eq!(order().of("net"), Some(0));
    }
}
