//! No import cycles between the modules of `src/`. At every folder, the modules in it (a file
//! `x.rs`, a folder `x/`) form a graph: `a → b` when code in `a` names an item of `b`, by a
//! `use` or by a path in the code (`crate::…`, `super::…`, `self::…`). A cycle there means
//! neither module can be understood, tested or moved without the other. An item of the
//! folder's own `mod.rs` is its facade, not a sibling: a name it re-exports counts as the
//! module that defines it. Comments and string literals are not code.
//!
//! A cycle fails the test with the folder, the modules around it and the line of each edge.
//! [`ALLOWED`] lists the cycles known and left on purpose, each to be removed with its cycle.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};

/// Cycles left on purpose, as (folder under `src/`, the modules of the cycle, sorted): none
/// now. An entry must name a cycle that exists (the test fails on a stale one), so the list
/// stays exact.
const ALLOWED: &[(&str, &[&str])] = &[];

#[test]
fn src_has_no_import_cycles_but_the_allowed_ones() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let graph = Graph::of_tree(&src);
    let found = graph.cycles();
    let allowed: BTreeSet<(String, Vec<String>)> = ALLOWED
        .iter()
        .map(|(dir, mods)| {
            (
                dir.to_string(),
                mods.iter().map(|m| m.to_string()).collect(),
            )
        })
        .collect();
    let mut report = String::new();
    for cycle in &found {
        if !allowed.contains(&(cycle.dir.clone(), cycle.members.clone())) {
            report.push_str(&cycle.describe());
        }
    }
    let found_keys: BTreeSet<_> = found
        .iter()
        .map(|c| (c.dir.clone(), c.members.clone()))
        .collect();
    for stale in allowed.difference(&found_keys) {
        report.push_str(&format!(
            "ALLOWED lists a cycle of src/{}/ among {:?} that is not there (any more): remove the entry\n",
            stale.0, stale.1
        ));
    }
    assert!(report.is_empty(), "import cycles in src/:\n{report}");
}

/// `src/cli/`: each command is a leaf. It may use the shared modules (flag groups, environment
/// helpers, the progress renderer), never another command, so a command can be read, changed
/// or removed alone.
#[test]
fn cli_commands_import_only_the_shared_modules() {
    const SHARED: [&str; 3] = ["args", "env", "progress"];
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let graph = Graph::of_tree(&src);
    let mut wrong = Vec::new();
    for (from, tos) in graph
        .edges
        .get(&vec!["cli".to_string()])
        .into_iter()
        .flatten()
    {
        for (to, e) in tos {
            let shared_to_command =
                SHARED.contains(&from.as_str()) && !SHARED.contains(&to.as_str());
            if !SHARED.contains(&to.as_str()) || shared_to_command {
                wrong.push(format!(
                    "  {from} -> {to}: {}:{} uses {}",
                    e.file, e.line, e.path
                ));
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "src/cli/: a command may import only {SHARED:?}, and those no command:\n{}",
        wrong.join("\n")
    );
}

/// The checker itself, on a made-up crate: it must see a cycle through a `use` in one file and
/// a path in the code of the other, resolve a name re-exported by `mod.rs`, and ignore what is
/// not an import (comments, strings, a test module's `use super::*`, a child's use of its
/// parent's items).
#[test]
fn the_checker_finds_a_cycle_and_nothing_else() {
    let tmp = tempfile::tempdir().unwrap();
    let files = [
        ("lib.rs", "pub mod a;\npub mod b;\npub mod c;\n"),
        // a → b by a `use` of a name b's mod.rs re-exports from b/inner.rs.
        ("a.rs", "use crate::b::Thing;\npub fn f() {}\n"),
        (
            "b/mod.rs",
            "mod inner;\npub use inner::Thing;\npub fn g() { crate::c::h() }\n",
        ),
        // b → a only through a path in code, inside a macro call; c names a and b in text only.
        (
            "b/inner.rs",
            "pub struct Thing;\nfn x() { assert!(true, \"{}\", { crate::a::f(); 1 }); }\n\
             #[cfg(test)]\nmod tests { use super::*; use super::super::g; }\n",
        ),
        (
            "c.rs",
            "// crate::a::f() in a comment\n/* crate::b::g() */\n\
             pub fn h() { let _ = \"crate::a::f\"; let _ = r#\"crate::b\"#; let _ = 'x'; }\n",
        ),
    ];
    for (path, text) in files {
        let p = tmp.path().join(path);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }
    let cycles = Graph::of_tree(tmp.path()).cycles();
    let got: Vec<_> = cycles
        .iter()
        .map(|c| (c.dir.as_str(), c.members.clone()))
        .collect();
    assert_eq!(got, [("", vec!["a".to_string(), "b".to_string()])]);
    let text = cycles[0].describe();
    assert!(text.contains("a -> b -> a"), "{text}");
    assert!(text.contains("src/a.rs:1"), "{text}");
    assert!(text.contains("src/b/inner.rs:2"), "{text}");
}

// ---- the graph -------------------------------------------------------------------------------

/// A module's path from the crate root (`["build", "stage"]`).
type ModPath = Vec<String>;

/// Where an edge comes from: the file, the line and the path as written.
#[derive(Debug, Clone)]
struct Evidence {
    file: String,
    line: usize,
    path: String,
}

#[derive(Debug)]
struct Cycle {
    /// The folder, relative to `src/` ("" for `src/` itself).
    dir: String,
    /// The modules in the cycle, sorted.
    members: Vec<String>,
    /// One way around, starting and ending at the first member.
    path: Vec<String>,
    /// The edges between members, with where each is made.
    edges: Vec<(String, String, Evidence)>,
}

impl Cycle {
    fn describe(&self) -> String {
        let dir = if self.dir.is_empty() {
            "src/".to_string()
        } else {
            format!("src/{}/", self.dir)
        };
        let mut s = format!(
            "cycle among the modules of {dir}: {}\n",
            self.path.join(" -> ")
        );
        for (from, to, e) in &self.edges {
            s.push_str(&format!(
                "  {from} -> {to}: {}:{} uses {}\n",
                e.file, e.line, e.path
            ));
        }
        s
    }
}

#[derive(Default)]
struct Graph {
    /// Every module that is a file or a folder.
    modules: BTreeSet<ModPath>,
    /// Per module: the names its top-level `use`s bring in, to the absolute path they name.
    imports: HashMap<ModPath, HashMap<String, ModPath>>,
    /// Per module: its top-level glob imports (`pub use model::*`).
    globs: HashMap<ModPath, Vec<ModPath>>,
    /// Per module: the names of the items it defines at its top level.
    defines: HashMap<ModPath, BTreeSet<String>>,
    /// Per folder: `from → to → the first place that makes the edge`.
    edges: BTreeMap<ModPath, BTreeMap<String, BTreeMap<String, Evidence>>>,
}

impl Graph {
    /// Reads every `.rs` file under `src` (the library crate; `main.rs` is another crate).
    fn of_tree(src: &Path) -> Graph {
        let files: Vec<(ModPath, PathBuf)> = rust_files(src)
            .into_iter()
            .filter(|p| p != &src.join("main.rs"))
            .map(|p| (module_of(src, &p), p))
            .collect();
        let mut g = Graph {
            modules: files.iter().map(|(m, _)| m.clone()).collect(),
            ..Graph::default()
        };
        let scanned: Vec<(ModPath, String, Scan)> = files
            .iter()
            .map(|(m, p)| {
                let text = std::fs::read_to_string(p).unwrap();
                let name = format!("src/{}", p.strip_prefix(src).unwrap().display());
                (m.clone(), name, Scan::of(&lex(&text), m, &g.modules))
            })
            .collect();
        for (m, _, scan) in &scanned {
            g.imports.insert(m.clone(), scan.imports.clone());
            g.globs.insert(m.clone(), scan.globs.clone());
            g.defines.insert(m.clone(), scan.defines.clone());
        }
        for (m, file, scan) in &scanned {
            for r in &scan.refs {
                let target = g.resolve(&r.path, 0);
                g.add_edge(m, &target, file, r);
            }
        }
        g
    }

    /// The module an absolute path names: its longest prefix that is a module, following
    /// re-exports (`pub use`, globs) of the modules on the way.
    fn resolve(&self, path: &[String], hops: usize) -> ModPath {
        let mut cur: ModPath = Vec::new();
        for (i, seg) in path.iter().enumerate() {
            let mut next = cur.clone();
            next.push(seg.clone());
            if self.modules.contains(&next) {
                cur = next;
                continue;
            }
            if hops > 16 || self.defines.get(&cur).is_some_and(|d| d.contains(seg)) {
                return cur;
            }
            let rest = &path[i + 1..];
            if let Some(target) = self.imports.get(&cur).and_then(|m| m.get(seg)) {
                return self.resolve(&[target.as_slice(), rest].concat(), hops + 1);
            }
            for glob in self.globs.get(&cur).into_iter().flatten() {
                let g = self.resolve(glob, hops + 1);
                let mut child = g.clone();
                child.push(seg.clone());
                let has = self.defines.get(&g).is_some_and(|d| d.contains(seg))
                    || self.imports.get(&g).is_some_and(|m| m.contains_key(seg))
                    || self.modules.contains(&child);
                if has {
                    return self.resolve(&[g.as_slice(), &path[i..]].concat(), hops + 1);
                }
            }
            return cur;
        }
        cur
    }

    /// The edge `from → target` counts at the folder where their paths part: between the two
    /// modules of that folder that hold them. A module naming its own items, an ancestor's
    /// (its facade) or a descendant's makes no edge.
    fn add_edge(&mut self, from: &[String], target: &[String], file: &str, r: &Ref) {
        let common = from.iter().zip(target).take_while(|(a, b)| a == b).count();
        if common >= from.len() || common >= target.len() {
            return;
        }
        let evidence = Evidence {
            file: file.to_string(),
            line: r.line,
            path: r.path_text.clone(),
        };
        self.edges
            .entry(from[..common].to_vec())
            .or_default()
            .entry(from[common].clone())
            .or_default()
            .entry(target[common].clone())
            .or_insert(evidence);
    }

    /// Every strongly connected component of more than one module, folder by folder.
    fn cycles(&self) -> Vec<Cycle> {
        let mut out = Vec::new();
        for (dir, edges) in &self.edges {
            for members in components(edges) {
                let set: BTreeSet<&String> = members.iter().collect();
                let mut inside = Vec::new();
                for (from, tos) in edges.iter().filter(|(f, _)| set.contains(f)) {
                    for (to, e) in tos.iter().filter(|(t, _)| set.contains(t)) {
                        inside.push((from.clone(), to.clone(), e.clone()));
                    }
                }
                out.push(Cycle {
                    dir: dir.join("/"),
                    path: way_around(&members[0], edges, &set),
                    members,
                    edges: inside,
                });
            }
        }
        out
    }
}

type Edges = BTreeMap<String, BTreeMap<String, Evidence>>;

/// Tarjan's strongly connected components with more than one node, each sorted.
fn components(edges: &Edges) -> Vec<Vec<String>> {
    struct State<'a> {
        edges: &'a Edges,
        index: HashMap<&'a str, usize>,
        low: HashMap<&'a str, usize>,
        stack: Vec<&'a str>,
        on_stack: BTreeSet<&'a str>,
        out: Vec<Vec<String>>,
    }
    fn visit<'a>(s: &mut State<'a>, v: &'a str) {
        let i = s.index.len();
        s.index.insert(v, i);
        s.low.insert(v, i);
        s.stack.push(v);
        s.on_stack.insert(v);
        let edges: &'a Edges = s.edges;
        for w in edges.get(v).into_iter().flat_map(|t| t.keys()) {
            if !s.index.contains_key(w.as_str()) {
                visit(s, w);
                let low = s.low[v].min(s.low[w.as_str()]);
                s.low.insert(v, low);
            } else if s.on_stack.contains(w.as_str()) {
                let low = s.low[v].min(s.index[w.as_str()]);
                s.low.insert(v, low);
            }
        }
        if s.low[v] == s.index[v] {
            let mut component = Vec::new();
            while let Some(w) = s.stack.pop() {
                s.on_stack.remove(w);
                component.push(w.to_string());
                if w == v {
                    break;
                }
            }
            if component.len() > 1 {
                component.sort();
                s.out.push(component);
            }
        }
    }
    let mut s = State {
        edges,
        index: HashMap::new(),
        low: HashMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        out: Vec::new(),
    };
    for v in edges.keys() {
        if !s.index.contains_key(v.as_str()) {
            visit(&mut s, v);
        }
    }
    s.out.sort();
    s.out
}

/// A shortest way from `start` back to itself inside the component (breadth first).
fn way_around(start: &str, edges: &Edges, set: &BTreeSet<&String>) -> Vec<String> {
    let mut came_from: HashMap<String, String> = HashMap::new();
    let mut queue = std::collections::VecDeque::from([start.to_string()]);
    while let Some(v) = queue.pop_front() {
        for w in edges.get(&v).into_iter().flat_map(|t| t.keys()) {
            if !set.contains(w) {
                continue;
            }
            if w == start {
                let mut way = vec![start.to_string(), v.clone()];
                while let Some(p) = came_from.get(way.last().unwrap()) {
                    way.push(p.clone());
                }
                if way.last().map(String::as_str) != Some(start) {
                    way.push(start.to_string());
                }
                way.reverse();
                way.dedup();
                if way.len() == 1 {
                    way.push(start.to_string());
                }
                return way;
            }
            if !came_from.contains_key(w) && w != start {
                came_from.insert(w.clone(), v.clone());
                queue.push_back(w.clone());
            }
        }
    }
    vec![start.to_string()]
}

fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(rust_files(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
    out.sort();
    out
}

/// `src/build/stage.rs` → `["build", "stage"]`; `mod.rs` and `lib.rs` are their folder's.
fn module_of(src: &Path, file: &Path) -> ModPath {
    let rel = file.strip_prefix(src).unwrap().with_extension("");
    let mut parts: ModPath = rel
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    if matches!(parts.last().map(String::as_str), Some("mod" | "lib")) {
        parts.pop();
    }
    parts
}

// ---- reading a file --------------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Ident(String),
    /// `::`
    Sep,
    Punct(char),
}

#[derive(Debug, Clone)]
struct Token {
    tok: Tok,
    line: usize,
}

/// Rust tokens enough for paths: identifiers, `::` and punctuation, without comments, string
/// and character literals.
fn lex(text: &str) -> Vec<Token> {
    let c: Vec<char> = text.chars().collect();
    let (mut i, mut line, mut out) = (0, 1, Vec::new());
    let at = |i: usize| c.get(i).copied().unwrap_or('\0');
    while i < c.len() {
        let ch = c[i];
        if ch == '\n' {
            line += 1;
            i += 1;
        } else if ch.is_whitespace() {
            i += 1;
        } else if ch == '/' && at(i + 1) == '/' {
            while i < c.len() && c[i] != '\n' {
                i += 1;
            }
        } else if ch == '/' && at(i + 1) == '*' {
            let mut depth = 0;
            while i < c.len() {
                if c[i] == '/' && at(i + 1) == '*' {
                    depth += 1;
                    i += 2;
                } else if c[i] == '*' && at(i + 1) == '/' {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    line += usize::from(c[i] == '\n');
                    i += 1;
                }
            }
        } else if ch == '"' {
            i += 1;
            while i < c.len() && c[i] != '"' {
                line += usize::from(c[i] == '\n');
                i += if c[i] == '\\' { 2 } else { 1 };
            }
            i += 1;
        } else if ch == '\'' {
            // A char literal ('x', '\n', '\u{1F600}'), else a lifetime ('a).
            if at(i + 1) == '\\' {
                i += 2;
                while i < c.len() && c[i] != '\'' {
                    i += 1;
                }
                i += 1;
            } else if at(i + 2) == '\'' {
                i += 3;
            } else {
                i += 1;
            }
        } else if ch.is_alphanumeric() || ch == '_' {
            let start = i;
            while i < c.len() && (c[i].is_alphanumeric() || c[i] == '_') {
                i += 1;
            }
            let word: String = c[start..i].iter().collect();
            let hashes = c[i..].iter().take_while(|&&h| h == '#').count();
            if matches!(word.as_str(), "r" | "br" | "cr") && at(i + hashes) == '"' {
                // A raw string: up to the quote followed by as many #.
                i += hashes + 1;
                let close: String = std::iter::once('"')
                    .chain("#".repeat(hashes).chars())
                    .collect();
                while i < c.len() && !c[i..].iter().collect::<String>().starts_with(&close) {
                    line += usize::from(c[i] == '\n');
                    i += 1;
                }
                i += close.len();
            } else {
                out.push(Token {
                    tok: Tok::Ident(word),
                    line,
                });
            }
        } else if ch == ':' && at(i + 1) == ':' {
            out.push(Token {
                tok: Tok::Sep,
                line,
            });
            i += 2;
        } else {
            out.push(Token {
                tok: Tok::Punct(ch),
                line,
            });
            i += 1;
        }
    }
    out
}

/// A path naming something of this crate, made absolute.
#[derive(Debug)]
struct Ref {
    path: ModPath,
    path_text: String,
    line: usize,
}

/// What one file says: the crate paths it names, and (at its top level) what it imports and
/// defines.
#[derive(Default)]
struct Scan {
    refs: Vec<Ref>,
    imports: HashMap<String, ModPath>,
    globs: Vec<ModPath>,
    defines: BTreeSet<String>,
}

/// One leaf of a `use` tree: the path and the name it binds (`None` for a glob).
struct UseLeaf {
    path: Vec<String>,
    name: Option<String>,
}

impl Scan {
    fn of(toks: &[Token], module: &[String], modules: &BTreeSet<ModPath>) -> Scan {
        let mut scan = Scan::default();
        // Inline modules (`mod tests { … }`) with the brace depth they opened at.
        let mut inline: Vec<(String, usize)> = Vec::new();
        let mut depth = 0;
        let ident = |i: usize| match toks.get(i).map(|t| &t.tok) {
            Some(Tok::Ident(s)) => Some(s.as_str()),
            _ => None,
        };
        let mut i = 0;
        while i < toks.len() {
            let here: ModPath = module
                .iter()
                .cloned()
                .chain(inline.iter().map(|(n, _)| n.clone()))
                .collect();
            match &toks[i].tok {
                Tok::Punct('{') => depth += 1,
                Tok::Punct('}') => {
                    depth -= 1;
                    if inline.last().is_some_and(|(_, d)| *d == depth) {
                        inline.pop();
                    }
                }
                Tok::Ident(w) if w == "mod" => {
                    if let (Some(name), Some(Tok::Punct('{'))) =
                        (ident(i + 1), toks.get(i + 2).map(|t| &t.tok))
                    {
                        inline.push((name.to_string(), depth));
                        depth += 1;
                        i += 3;
                        continue;
                    }
                    if depth == 0
                        && let Some(name) = ident(i + 1)
                    {
                        scan.defines.insert(name.to_string());
                    }
                }
                Tok::Ident(w)
                    if w == "use" && toks.get(i + 1).map(|t| &t.tok) != Some(&Tok::Punct('<')) =>
                {
                    let line = toks[i].line;
                    let (leaves, end) = use_tree(toks, i + 1, &[]);
                    for leaf in leaves {
                        let Some(abs) = absolute(&leaf.path, &here, modules, true) else {
                            continue;
                        };
                        if depth == 0 && inline.is_empty() {
                            match &leaf.name {
                                Some(n) => {
                                    scan.imports.insert(n.clone(), abs.clone());
                                }
                                None => scan.globs.push(abs.clone()),
                            }
                        }
                        scan.refs.push(Ref {
                            path_text: leaf.path.join("::"),
                            path: abs,
                            line,
                        });
                    }
                    i = end;
                    continue;
                }
                Tok::Ident(w)
                    if matches!(
                        w.as_str(),
                        "fn" | "struct" | "enum" | "type" | "trait" | "const" | "static" | "union"
                    ) =>
                {
                    if depth == 0
                        && let Some(name) = ident(i + 1)
                    {
                        scan.defines.insert(name.to_string());
                    }
                }
                Tok::Ident(w)
                    if matches!(w.as_str(), "crate" | "super" | "self")
                        && toks.get(i + 1).map(|t| &t.tok) == Some(&Tok::Sep)
                        && !macro_var_or_visibility(toks, i) =>
                {
                    let mut path = vec![w.clone()];
                    let mut j = i + 1;
                    while toks.get(j).map(|t| &t.tok) == Some(&Tok::Sep) {
                        let Some(next) = ident(j + 1) else { break };
                        path.push(next.to_string());
                        j += 2;
                    }
                    if let Some(abs) = absolute(&path, &here, modules, false) {
                        scan.refs.push(Ref {
                            path_text: path.join("::"),
                            path: abs,
                            line: toks[i].line,
                        });
                    }
                    i = j;
                    continue;
                }
                _ => {}
            }
            i += 1;
        }
        scan
    }
}

/// `$crate::…` in a macro, or the `in super::super` of `pub(in …)`: not a use of anything.
fn macro_var_or_visibility(toks: &[Token], i: usize) -> bool {
    let before = |k: usize| i.checked_sub(k).map(|j| &toks[j].tok);
    before(1) == Some(&Tok::Punct('$'))
        || (before(1) == Some(&Tok::Ident("in".into())) && before(2) == Some(&Tok::Punct('(')))
}

/// Parses the use tree starting at `i`, under `prefix`; returns its leaves and the index
/// after it.
fn use_tree(toks: &[Token], mut i: usize, prefix: &[String]) -> (Vec<UseLeaf>, usize) {
    let mut path = prefix.to_vec();
    let mut leaves = Vec::new();
    // `a::{self, b}`: `self` names the prefix itself.
    let mut is_self = false;
    while let Some(t) = toks.get(i) {
        match &t.tok {
            Tok::Sep => i += 1,
            Tok::Ident(w) if w == "self" && !path.is_empty() => {
                is_self = true;
                i += 1;
            }
            Tok::Ident(w) if w == "as" => {
                let name = match toks.get(i + 1).map(|t| &t.tok) {
                    Some(Tok::Ident(n)) => n.clone(),
                    _ => "_".into(),
                };
                leaves.push(UseLeaf {
                    path: path.clone(),
                    name: Some(name),
                });
                return (leaves, i + 2);
            }
            Tok::Ident(w) => {
                path.push(w.clone());
                i += 1;
            }
            Tok::Punct('*') => {
                leaves.push(UseLeaf {
                    path: path.clone(),
                    name: None,
                });
                return (leaves, i + 1);
            }
            Tok::Punct('{') => {
                i += 1;
                loop {
                    match toks.get(i).map(|t| &t.tok) {
                        Some(Tok::Punct('}')) => return (leaves, i + 1),
                        Some(Tok::Punct(',')) => i += 1,
                        None => return (leaves, i),
                        Some(_) => {
                            let (sub, end) = use_tree(toks, i, &path);
                            leaves.extend(sub);
                            i = end;
                        }
                    }
                }
            }
            // `;`, `,` or `}` ends this leaf.
            Tok::Punct(_) => break,
        }
    }
    if path.len() > prefix.len() || is_self {
        leaves.push(UseLeaf {
            name: path.last().cloned(),
            path,
        });
    }
    (leaves, i)
}

/// A path as written, made absolute from the module it is written in; `None` when it names
/// another crate. Only a `use` may start with a child module's bare name.
fn absolute(
    path: &[String],
    here: &[String],
    modules: &BTreeSet<ModPath>,
    in_use: bool,
) -> Option<ModPath> {
    let first = path.first()?;
    let mut abs: ModPath = match first.as_str() {
        "crate" => Vec::new(),
        "self" => here.to_vec(),
        "super" => {
            let ups = path.iter().take_while(|s| *s == "super").count();
            let rest = &path[ups..];
            let base = &here[..here.len().checked_sub(ups)?];
            return Some([base, rest].concat());
        }
        _ if in_use && modules.contains(&[here, &path[..1]].concat()) => {
            return Some([here, path].concat());
        }
        _ => return None,
    };
    abs.extend_from_slice(&path[1..]);
    Some(abs)
}
