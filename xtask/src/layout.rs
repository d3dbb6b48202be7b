//! The architecture as a test: no module of tracer-core or tracer-user
//! imports a module that imports it back, counting a folder as one module
//! (`crate::report` and everything under it).
//!
//! Imports are read from the source text (`use crate::...`, `use super::...`,
//! `crate::x::y` paths), test modules left out.

#[cfg(test)]
mod tests {
    use std::{
        collections::{BTreeMap, BTreeSet},
        fs,
        path::{Path, PathBuf},
    };

    /// Module path (`report::summary`) of every source file under `src`.
    fn modules(src: &Path) -> BTreeMap<String, PathBuf> {
        let mut out = BTreeMap::new();
        let mut dirs = vec![src.to_path_buf()];
        while let Some(dir) = dirs.pop() {
            for entry in fs::read_dir(&dir).expect("source dir") {
                let path = entry.expect("entry").path();
                if path.is_dir() {
                    dirs.push(path);
                } else if path.extension().is_some_and(|e| e == "rs") {
                    let rel = path
                        .strip_prefix(src)
                        .expect("under src")
                        .with_extension("");
                    let mut parts: Vec<String> = rel
                        .iter()
                        .map(|p| p.to_string_lossy().into_owned())
                        .collect();
                    if matches!(
                        parts.last().map(String::as_str),
                        Some("mod" | "lib" | "main")
                    ) {
                        parts.pop();
                    }
                    out.insert(parts.join("::"), path);
                }
            }
        }
        out
    }

    /// Paths named by `use` items, with `{a, b::{c}}` groups expanded.
    fn use_paths(text: &str) -> Vec<Vec<String>> {
        fn expand(prefix: &[String], s: &str, out: &mut Vec<Vec<String>>) {
            let s = s.trim();
            if let Some(inner) = s.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
                let (mut depth, mut start) = (0, 0);
                for (i, c) in inner.char_indices() {
                    match c {
                        '{' => depth += 1,
                        '}' => depth -= 1,
                        ',' if depth == 0 => {
                            expand(prefix, &inner[start..i], out);
                            start = i + 1;
                        }
                        _ => {}
                    }
                }
                expand(prefix, &inner[start..], out);
            } else if let Some((head, group)) = s.split_once("::{") {
                let mut p = prefix.to_vec();
                p.extend(head.split("::").map(|x| x.trim().to_string()));
                expand(&p, &format!("{{{group}"), out);
            } else if !s.is_empty() {
                let mut p = prefix.to_vec();
                p.extend(s.split("::").map(|x| x.trim().to_string()));
                out.push(p);
            }
        }
        let mut out = Vec::new();
        for item in text.split("use ").skip(1) {
            if let Some(end) = item.find(';') {
                expand(&[], &item[..end], &mut out);
            }
        }
        out
    }

    /// The top-level module (folder) each module imports, other than its own.
    fn folder_imports(src: &Path) -> BTreeMap<String, BTreeSet<String>> {
        let mods = modules(src);
        let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for (module, path) in &mods {
            let text = fs::read_to_string(path).expect("source");
            let text = text.split("#[cfg(test)]").next().unwrap_or("");
            let own: Vec<&str> = module.split("::").filter(|s| !s.is_empty()).collect();
            let mut targets: Vec<Vec<String>> = use_paths(text)
                .into_iter()
                .filter_map(|p| match p.first().map(String::as_str) {
                    Some("crate") => Some(p[1..].to_vec()),
                    Some("super") => {
                        let mut base: Vec<String> = own[..own.len().saturating_sub(1)]
                            .iter()
                            .map(ToString::to_string)
                            .collect();
                        base.extend(p[1..].iter().cloned());
                        Some(base)
                    }
                    _ => None,
                })
                .collect();
            for (i, _) in text.match_indices("crate::") {
                let path: String = text[i + 7..]
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == ':')
                    .collect();
                targets.push(path.split("::").map(str::to_string).collect());
            }
            let from = own.first().copied().unwrap_or("").to_string();
            for t in targets {
                let Some(to) = t.first().filter(|t| mods.contains_key(*t)) else {
                    continue;
                };
                if *to != from && !from.is_empty() {
                    edges.entry(from.clone()).or_default().insert(to.clone());
                }
            }
        }
        edges
    }

    fn reaches(edges: &BTreeMap<String, BTreeSet<String>>, from: &str, to: &str) -> bool {
        let mut seen = BTreeSet::new();
        let mut stack = vec![from.to_string()];
        while let Some(m) = stack.pop() {
            if m == to {
                return true;
            }
            if seen.insert(m.clone()) {
                stack.extend(edges.get(&m).into_iter().flatten().cloned());
            }
        }
        false
    }

    #[test]
    fn no_module_imports_one_that_imports_it_back() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        for krate in ["tracer-core/src", "tracer-user/src"] {
            let edges = folder_imports(&root.join(krate));
            assert!(!edges.is_empty(), "{krate}: no imports found");
            for (from, tos) in &edges {
                for to in tos {
                    assert!(
                        !reaches(&edges, to, from),
                        "{krate}: {from} imports {to}, which imports {from} back"
                    );
                }
            }
        }
    }

    #[test]
    fn use_groups_are_expanded() {
        let paths = use_paths("use crate::{a::B, c::{d, e::F}};\nuse super::g;");
        let joined: Vec<String> = paths.iter().map(|p| p.join("::")).collect();
        assert_eq!(
            joined,
            ["crate::a::B", "crate::c::d", "crate::c::e::F", "super::g"]
        );
    }
}
