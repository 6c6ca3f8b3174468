//! Property tests of the zip guard.
//!
//! - Whatever the entry names and symlinks: a zip the model below calls safe unpacks
//!   into exactly the tree the model expects, one it calls unsafe is refused, and
//!   nothing is ever written outside the target folder (links may point out, also to
//!   absolute paths, and are kept as links; nothing is written through them).
//! - Unpacking with a pool of threads and in one thread gives the same tree: names,
//!   kinds, modes, link targets and bytes. The code trees are valid by construction
//!   (unique names), and the test asserts that (nearly) every case reached the unpacker.

use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use immortal_runner::{unpack, unpack_with};
use proptest::prelude::*;
use zip::write::SimpleFileOptions;

#[derive(Debug, Clone)]
enum Entry {
    File(String, Vec<u8>, u32),
    Link(String, String),
    Dir(String),
}

fn segment() -> impl Strategy<Value = String> {
    prop_oneof![
        1 => Just("..".to_owned()),
        1 => Just(".".to_owned()),
        1 => Just(String::new()),
        8 => "[a-c]{1,2}".prop_map(|s| s)
    ]
}

/// A name: mostly plain, sometimes absolute or climbing (refused as entry names, kept
/// as link targets).
fn path() -> impl Strategy<Value = String> {
    (proptest::bool::weighted(0.1), prop::collection::vec(segment(), 1..4)).prop_map(|(abs, parts)| {
        let joined = parts.join("/");
        if abs {
            format!("/{joined}")
        } else {
            joined
        }
    })
}

fn entry() -> impl Strategy<Value = Entry> {
    prop_oneof![
        3 => path().prop_map(|p| Entry::File(p, b"x".to_vec(), 0o644)),
        1 => (path(), path()).prop_map(|(a, b)| Entry::Link(a, b))
    ]
}

/// Writes `entries` as a zip; `None` when the zip writer refuses a name. An absolute
/// link target points into `outer` (outside the target folder, inside the test's own),
/// so a write through it would be seen.
fn write_zip(path: &Path, entries: &[Entry], outer: &Path) -> Option<()> {
    let mut zip = zip::ZipWriter::new(std::fs::File::create(path).unwrap());
    for entry in entries {
        let written = match entry {
            Entry::File(name, data, mode) => {
                // External attributes keep setuid, setgid and sticky bits (unix_permissions drops them).
                let options = SimpleFileOptions::default().external_attributes((0o100000 | mode) << 16);
                zip.start_file(name.as_str(), options)
                    .and_then(|_| Ok(zip.write_all(data)?))
            }
            Entry::Link(name, target) => {
                let target = match target.strip_prefix('/') {
                    Some(rest) => format!("{}/{rest}", outer.display()),
                    None => target.clone(),
                };
                zip.add_symlink(name.as_str(), target, SimpleFileOptions::default())
            }
            Entry::Dir(name) => zip.add_directory(name.as_str(), SimpleFileOptions::default()),
        };
        written.ok()?;
    }
    zip.finish().unwrap();
    Some(())
}

/// What a path of an unpacked tree holds.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Kind {
    Dir,
    File(Vec<u8>, u32),
    Link(PathBuf),
}

/// The tree under `root` (not following links), by relative path.
fn tree(root: &Path) -> BTreeMap<PathBuf, Kind> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_owned()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).unwrap().flatten() {
            let path = e.path();
            let rel = path.strip_prefix(root).unwrap().to_owned();
            let meta = std::fs::symlink_metadata(&path).unwrap();
            let kind = if meta.file_type().is_symlink() {
                Kind::Link(std::fs::read_link(&path).unwrap())
            } else if meta.is_dir() {
                stack.push(path);
                Kind::Dir
            } else {
                Kind::File(std::fs::read(&path).unwrap(), meta.permissions().mode() & 0o7777)
            };
            out.insert(rel, kind);
        }
    }
    out
}

/// The model of the guard, stated on its own: the tree a zip unpacks to, or `None`
/// when the zip must be refused. Names and kinds as the zip records them.
fn expected(zip_path: &Path) -> Option<BTreeMap<PathBuf, Kind>> {
    let mut zip = zip::ZipArchive::new(std::fs::File::open(zip_path).unwrap()).unwrap();
    let mut model: BTreeMap<PathBuf, Kind> = BTreeMap::new();
    for i in 0..zip.len() {
        let mut entry = zip.by_index(i).unwrap();
        let name = entry.name().unwrap().into_owned();
        let mut rel = PathBuf::new();
        for c in Path::new(&name).components() {
            match c {
                Component::Normal(part) => rel.push(part),
                Component::CurDir => {}
                // Traversal or an absolute name: refused.
                _ => return None,
            }
        }
        if rel.as_os_str().is_empty() {
            continue;
        }
        for ancestor in rel.ancestors().skip(1).filter(|a| !a.as_os_str().is_empty()) {
            match model.get(ancestor) {
                // Under a link or a file of the same zip: refused.
                Some(Kind::Link(_) | Kind::File(..)) => return None,
                _ => {
                    model.insert(ancestor.to_owned(), Kind::Dir);
                }
            }
        }
        let kind = if entry.is_dir() {
            Kind::Dir
        } else if entry.is_symlink() {
            let mut target = String::new();
            std::io::Read::read_to_string(&mut entry, &mut target).unwrap();
            if target.is_empty() {
                return None;
            }
            Kind::Link(PathBuf::from(target))
        } else {
            let mut data = vec![];
            std::io::Read::read_to_end(&mut entry, &mut data).unwrap();
            let mode = entry
                .unix_mode()
                .map(|m| m & 0o777)
                .filter(|m| *m != 0)
                .unwrap_or(0o644);
            Kind::File(data, mode & !umask())
        };
        match (model.get(&rel), &kind) {
            (Some(Kind::Dir), Kind::Dir) => {}
            // Both a folder and a file or link: refused.
            (Some(Kind::Dir), _) | (Some(_), Kind::Dir) => return None,
            // A later file or link replaces an earlier one.
            _ => {
                model.insert(rel, kind);
            }
        }
    }
    Some(model)
}

/// The process's file mode mask (read, not set: tests run in parallel threads).
fn umask() -> u32 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find_map(|l| l.strip_prefix("Umask:")).unwrap();
    u32::from_str_radix(line.trim(), 8).unwrap()
}

/// Every path under `root`, not following links, relative.
fn everything(root: &Path) -> Vec<PathBuf> {
    tree(root).into_keys().collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]
    #[test]
    fn safe_zips_unpack_as_modelled_and_unsafe_ones_are_refused_with_nothing_outside(
        entries in prop::collection::vec(entry(), 1..7)
    ) {
        let outer = tempfile::tempdir().unwrap();
        // Deep enough that a link climbing out of `dest` still lands under `outer`.
        let dest = outer.path().join("l1/l2/l3/l4/dest");
        std::fs::create_dir_all(&dest).unwrap();
        let zip_path = outer.path().join("in.zip");
        // The zip writer refuses some names (a duplicate, say): counted as rejects
        // (capped by proptest), never as passes.
        prop_assume!(write_zip(&zip_path, &entries, outer.path()).is_some());
        let model = expected(&zip_path);
        let result = unpack(&zip_path, &dest, 1 << 20);
        match &model {
            Some(model) => {
                prop_assert!(result.is_ok(), "a safe zip is refused: {:?}", result);
                prop_assert_eq!(&tree(&dest), model);
            }
            None => prop_assert!(result.is_err(), "an unsafe zip unpacks to {:?}", tree(&dest)),
        }
        // Only the zip and the folder chain exist outside the target folder.
        let inside = Path::new("l1/l2/l3/l4/dest");
        let outside: Vec<PathBuf> = everything(outer.path()).into_iter().filter(|p| p == inside || !p.starts_with(inside)).collect();
        let want: Vec<PathBuf> = ["in.zip", "l1", "l1/l2", "l1/l2/l3", "l1/l2/l3/l4", "l1/l2/l3/l4/dest"].iter().map(PathBuf::from).collect();
        prop_assert_eq!(outside, want);
    }
}

/// Folders of a code tree (never named like a file or a link below, so entries only
/// collide as a later file replacing an earlier one).
fn folder() -> impl Strategy<Value = String> {
    prop::collection::vec(prop_oneof!["[a-d]", "[a-d]{2}", Just("node_modules".to_owned())], 0..4)
        .prop_map(|p| p.join("/"))
}

fn under(folder: String, name: String) -> String {
    if folder.is_empty() {
        name
    } else {
        format!("{folder}/{name}")
    }
}

fn code_entry() -> impl Strategy<Value = Entry> {
    let mode = prop_oneof![
        Just(0o644u32),
        Just(0o755),
        Just(0o600),
        Just(0o4755),
        Just(0o2711),
        Just(0o1777)
    ];
    let target = prop_oneof![
        Just("f1.js"),
        Just("../f2.js"),
        Just("/usr/bin/python3"),
        Just("../../../x")
    ];
    prop_oneof![
        8 => (folder(), "f[0-9]{1,2}\\.js", prop::collection::vec(any::<u8>(), 0..3000), mode)
            .prop_map(|(f, n, d, m)| Entry::File(under(f, n), d, m)),
        1 => (folder(), "l[0-9]", target).prop_map(|(f, n, t)| Entry::Link(under(f, n), t.to_owned())),
        1 => folder().prop_filter("a folder", |f| !f.is_empty()).prop_map(|f| Entry::Dir(format!("{f}/"))),
    ]
}

/// Gives each entry a name no earlier entry has: a repeated file or link name gets its
/// index added, a repeated folder is dropped. Names of folders, files and links never
/// coincide (see [`folder`]), so the zip writer accepts every tree so made.
fn unique(entries: Vec<Entry>) -> Vec<Entry> {
    let mut seen = std::collections::BTreeSet::new();
    let mut out = Vec::new();
    for (i, entry) in entries.into_iter().enumerate() {
        let entry = match entry {
            Entry::Dir(name) if !seen.insert(name.clone()) => continue,
            Entry::Dir(name) => Entry::Dir(name),
            Entry::File(name, data, mode) if seen.contains(&name) => Entry::File(format!("{name}.{i}"), data, mode),
            Entry::Link(name, target) if seen.contains(&name) => Entry::Link(format!("{name}-{i}"), target),
            other => other,
        };
        let (Entry::File(name, ..) | Entry::Link(name, _) | Entry::Dir(name)) = &entry;
        seen.insert(name.clone());
        out.push(entry);
    }
    out
}

/// Cases drawn, and cases that reached `unpack_with`.
static DRAWN: AtomicUsize = AtomicUsize::new(0);
static UNPACKED: AtomicUsize = AtomicUsize::new(0);

#[test]
fn parallel_and_sequential_unpacking_make_the_same_tree() {
    let strategy = prop::collection::vec(code_entry(), 40..160).prop_map(unique);
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig::with_cases(40));
    runner.run(&strategy, parallel_equals_sequential).unwrap();
    let (drawn, unpacked) = (DRAWN.load(Ordering::Relaxed), UNPACKED.load(Ordering::Relaxed));
    eprintln!("{unpacked} of {drawn} drawn code trees were unpacked both ways");
    assert!(
        drawn >= 40 && unpacked * 10 >= drawn * 9,
        "{unpacked} of {drawn} reached unpack_with"
    );
}

fn parallel_equals_sequential(entries: Vec<Entry>) -> Result<(), TestCaseError> {
    DRAWN.fetch_add(1, Ordering::Relaxed);
    let outer = tempfile::tempdir().unwrap();
    let zip_path = outer.path().join("in.zip");
    prop_assert!(
        write_zip(&zip_path, &entries, outer.path()).is_some(),
        "a code tree with unique names is a valid zip: {:?}",
        entries
    );
    let (one, many) = (outer.path().join("one"), outer.path().join("many"));
    std::fs::create_dir(&one).unwrap();
    std::fs::create_dir(&many).unwrap();
    let sequential = unpack_with(&zip_path, &one, 1 << 30, 1);
    let parallel = unpack_with(&zip_path, &many, 1 << 30, 6);
    UNPACKED.fetch_add(1, Ordering::Relaxed);
    prop_assert!(sequential.is_ok(), "a zip of a code tree unpacks: {:?}", sequential);
    match (&sequential, &parallel) {
        (Ok(a), Ok(b)) => {
            prop_assert_eq!(a, b, "bytes written");
            let tree = tree(&one);
            prop_assert_eq!(&tree, &crate::tree(&many));
            prop_assert!(
                tree.values().all(|k| !matches!(k, Kind::File(_, m) if m & 0o7000 != 0)),
                "no setuid, setgid or sticky bit"
            );
            prop_assert_eq!(Some(tree), expected(&zip_path));
        }
        _ => prop_assert!(false, "sequential {:?}, parallel {:?}", sequential, parallel),
    }
    Ok(())
}
