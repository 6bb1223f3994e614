//! Pins the plugin contract: every public item of this crate, rendered as a signature
//! without bodies or docs, must equal `public-api.txt`. An API change then shows up in
//! review as a diff of that file; bless a deliberate one with
//! `LXMETRICS_BLESS=1 cargo test -p lxmetrics-plugin --test public_api`.
//!
//! The crate keeps its modules private and re-exports at the root, so "public" here is
//! every `pub` item (not `pub(crate)`) of its source files, and a `pub` item the root
//! does not re-export is reported as unreachable.

use std::fmt::Write as _;
use std::path::Path;

use syn::visit_mut::VisitMut;
use syn::{Attribute, Block, Fields, ImplItem, Item, TraitItem, Visibility};

const SNAPSHOT: &str = "public-api.txt";

/// Attributes that change what a caller may do; docs and lints are not API.
fn keep_attr(attr: &Attribute) -> bool {
    [
        "derive",
        "non_exhaustive",
        "macro_export",
        "repr",
        "async_trait",
    ]
    .iter()
    .any(|name| attr.path().is_ident(name))
        || (attr.path().is_ident("doc") && attr.meta.require_list().is_ok())
}

fn is_pub(vis: &Visibility) -> bool {
    matches!(vis, Visibility::Public(_))
}

fn empty_block() -> Block {
    syn::parse_quote!({})
}

/// Strips bodies, docs and private members so only the contract remains.
struct Contract;

impl VisitMut for Contract {
    fn visit_attributes_mut(&mut self, attrs: &mut Vec<Attribute>) {
        attrs.retain(keep_attr);
    }

    fn visit_item_fn_mut(&mut self, f: &mut syn::ItemFn) {
        f.attrs.retain(keep_attr);
        *f.block = empty_block();
    }

    fn visit_fields_mut(&mut self, fields: &mut Fields) {
        match fields {
            Fields::Named(named) => {
                let private = named.named.iter().any(|f| !is_pub(&f.vis));
                named.named = named
                    .named
                    .iter()
                    .filter(|f| is_pub(&f.vis))
                    .cloned()
                    .map(|mut f| {
                        f.attrs.retain(keep_attr);
                        f
                    })
                    .collect();
                if private {
                    // A marker field so the snapshot says there is more.
                    named.named.push(syn::parse_quote!(__private_fields: ()));
                }
            }
            // Private tuple fields keep their place, not their type.
            Fields::Unnamed(unnamed) => {
                for field in unnamed.unnamed.iter_mut() {
                    field.attrs.retain(keep_attr);
                    if !is_pub(&field.vis) {
                        field.ty = syn::parse_quote!(());
                    }
                }
            }
            Fields::Unit => {}
        }
    }

    fn visit_variant_mut(&mut self, v: &mut syn::Variant) {
        v.attrs.retain(keep_attr);
        for f in v.fields.iter_mut() {
            f.attrs.retain(keep_attr);
        }
    }

    fn visit_item_impl_mut(&mut self, i: &mut syn::ItemImpl) {
        i.attrs.retain(keep_attr);
        let is_trait_impl = i.trait_.is_some();
        i.items.retain(|item| match item {
            ImplItem::Fn(f) => is_trait_impl || is_pub(&f.vis),
            ImplItem::Const(c) => is_trait_impl || is_pub(&c.vis),
            ImplItem::Type(_) => true,
            _ => false,
        });
        for item in &mut i.items {
            match item {
                ImplItem::Fn(f) => {
                    f.attrs.retain(keep_attr);
                    f.block = empty_block();
                }
                ImplItem::Const(c) => {
                    c.attrs.retain(keep_attr);
                    c.expr = syn::parse_quote!(_);
                }
                ImplItem::Type(t) => t.attrs.retain(keep_attr),
                _ => {}
            }
        }
    }

    fn visit_item_trait_mut(&mut self, t: &mut syn::ItemTrait) {
        t.attrs.retain(keep_attr);
        for item in &mut t.items {
            match item {
                TraitItem::Fn(f) => {
                    f.attrs.retain(keep_attr);
                    f.default = None;
                    f.semi_token = Some(Default::default());
                }
                TraitItem::Type(ty) => ty.attrs.retain(keep_attr),
                TraitItem::Const(c) => {
                    c.attrs.retain(keep_attr);
                    c.default = None;
                }
                _ => {}
            }
        }
    }

    fn visit_item_const_mut(&mut self, c: &mut syn::ItemConst) {
        c.attrs.retain(keep_attr);
        c.expr = syn::parse_quote!(_);
    }
}

/// Whether an item is part of the public surface (and what a trait impl is about: impls
/// of private types are not).
fn public_item(item: &Item, private_types: &[String]) -> bool {
    match item {
        Item::Fn(f) => is_pub(&f.vis),
        Item::Struct(s) => is_pub(&s.vis),
        Item::Enum(e) => is_pub(&e.vis),
        Item::Trait(t) => is_pub(&t.vis),
        Item::Type(t) => is_pub(&t.vis),
        Item::Const(c) => is_pub(&c.vis),
        Item::Static(s) => is_pub(&s.vis),
        Item::Mod(m) => is_pub(&m.vis),
        Item::Use(u) => is_pub(&u.vis),
        Item::Macro(m) => m.attrs.iter().any(|a| a.path().is_ident("macro_export")),
        Item::Impl(i) => {
            let self_ty = quote_type(&i.self_ty);
            !private_types
                .iter()
                .any(|p| self_ty == *p || self_ty.starts_with(&format!("{p}<")))
                && (i.trait_.is_some()
                    || i.items.iter().any(|item| match item {
                        ImplItem::Fn(f) => is_pub(&f.vis),
                        ImplItem::Const(c) => is_pub(&c.vis),
                        _ => false,
                    }))
        }
        _ => false,
    }
}

fn quote_type(ty: &syn::Type) -> String {
    prettyplease::unparse(&syn::parse_quote!(type T = #ty;))
        .trim()
        .trim_start_matches("type T = ")
        .trim_end_matches(';')
        .to_owned()
}

/// Names of the types a file declares without `pub`.
fn private_types(items: &[Item]) -> Vec<String> {
    items
        .iter()
        .filter_map(|item| match item {
            Item::Struct(s) if !is_pub(&s.vis) => Some(s.ident.to_string()),
            Item::Enum(e) if !is_pub(&e.vis) => Some(e.ident.to_string()),
            _ => None,
        })
        .collect()
}

fn render_file(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let file = syn::parse_file(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let private = private_types(&file.items);
    let mut items: Vec<Item> = Vec::new();
    for item in file.items {
        let Item::Mod(module) = &item else {
            if public_item(&item, &private) {
                items.push(item);
            }
            continue;
        };
        // Inline modules: tests are not API; a public inline module is, with its items.
        if module.ident == "tests" || !is_pub(&module.vis) {
            continue;
        }
        let mut module = module.clone();
        if let Some((_, inner)) = &mut module.content {
            let private = private_types(inner);
            inner.retain(|i| public_item(i, &private));
        }
        items.push(Item::Mod(module));
    }
    let mut file = syn::File {
        shebang: None,
        attrs: Vec::new(),
        items,
    };
    Contract.visit_file_mut(&mut file);
    prettyplease::unparse(&file)
}

fn rendered_api() -> String {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files: Vec<_> = std::fs::read_dir(&src)
        .expect("src/")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "rs"))
        .collect();
    files.sort();
    let mut out = String::from(
        "# The public API of lxmetrics-plugin: every public item, without bodies or docs.\n\
         # Regenerate with LXMETRICS_BLESS=1 cargo test -p lxmetrics-plugin --test public_api\n",
    );
    for file in files {
        let name = file
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default()
            .to_owned();
        let rendered = render_file(&file);
        if rendered.trim().is_empty() {
            continue;
        }
        let _ = write!(out, "\n// src/{name}\n{rendered}");
    }
    out
}

#[test]
fn the_public_api_matches_the_committed_snapshot() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(SNAPSHOT);
    let actual = rendered_api();
    if std::env::var_os("LXMETRICS_BLESS").is_some() {
        std::fs::write(&path, &actual).expect("write snapshot");
        return;
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_default();
    if expected != actual {
        let diff: Vec<String> = diff_lines(&expected, &actual);
        panic!(
            "the public API of lxmetrics-plugin changed ({} differing lines):\n{}\n\n\
             If the change is deliberate, bless it with\n  \
             LXMETRICS_BLESS=1 cargo test -p lxmetrics-plugin --test public_api\n\
             and commit {SNAPSHOT}: plugin authors compile against it.",
            diff.len(),
            diff.join("\n")
        );
    }
}

/// Lines only in one of the two texts, `-` for the snapshot, `+` for the source.
fn diff_lines(expected: &str, actual: &str) -> Vec<String> {
    let old: Vec<&str> = expected.lines().collect();
    let new: Vec<&str> = actual.lines().collect();
    let mut out: Vec<String> = old
        .iter()
        .filter(|l| !new.contains(l))
        .map(|l| format!("- {l}"))
        .collect();
    out.extend(
        new.iter()
            .filter(|l| !old.contains(l))
            .map(|l| format!("+ {l}")),
    );
    out
}

/// Every `pub` item is reachable from the crate root: the crate's modules are private,
/// so a public item that lib.rs does not re-export is dead API.
#[test]
fn every_public_item_is_reexported_at_the_root() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let lib = std::fs::read_to_string(src.join("lib.rs")).expect("lib.rs");
    let lib = syn::parse_file(&lib).expect("lib.rs parses");
    let mut exported = Vec::new();
    for item in &lib.items {
        if let Item::Use(u) = item {
            if is_pub(&u.vis) {
                collect_use_names(&u.tree, &mut exported);
            }
        }
    }
    let mut missing = Vec::new();
    for entry in std::fs::read_dir(&src).expect("src/") {
        let path = entry.expect("entry").path();
        if path.file_name().is_some_and(|n| n == "lib.rs") {
            continue;
        }
        let text = std::fs::read_to_string(&path).expect("source");
        let file = syn::parse_file(&text).expect("parses");
        for item in &file.items {
            let name = match item {
                Item::Fn(f) if is_pub(&f.vis) => f.sig.ident.to_string(),
                Item::Struct(s) if is_pub(&s.vis) => s.ident.to_string(),
                Item::Enum(e) if is_pub(&e.vis) => e.ident.to_string(),
                Item::Trait(t) if is_pub(&t.vis) => t.ident.to_string(),
                Item::Type(t) if is_pub(&t.vis) => t.ident.to_string(),
                Item::Const(c) if is_pub(&c.vis) => c.ident.to_string(),
                Item::Mod(m) if is_pub(&m.vis) => m.ident.to_string(),
                _ => continue,
            };
            if !exported.contains(&name) {
                missing.push(format!("{}: {name}", path.display()));
            }
        }
    }
    assert!(
        missing.is_empty(),
        "public but not re-exported from lib.rs: {missing:?}"
    );
}

fn collect_use_names(tree: &syn::UseTree, out: &mut Vec<String>) {
    match tree {
        syn::UseTree::Path(p) => collect_use_names(&p.tree, out),
        syn::UseTree::Name(n) => out.push(n.ident.to_string()),
        syn::UseTree::Rename(r) => out.push(r.ident.to_string()),
        syn::UseTree::Group(g) => g.items.iter().for_each(|t| collect_use_names(t, out)),
        syn::UseTree::Glob(_) => {}
    }
}
