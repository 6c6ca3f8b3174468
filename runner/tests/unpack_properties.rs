//! Property test of the zip guard: whatever the entry names and symlinks, unpacking
//! either succeeds with everything inside the target folder or refuses, and never
//! writes outside it.

use std::io::Write;
use std::path::Path;

use immortal_runner::artifact::unpack::unpack;
use proptest::prelude::*;
use zip::write::SimpleFileOptions;

#[derive(Debug, Clone)]
enum Entry {
    File(String),
    Link(String, String),
}

fn segment() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("..".to_owned()),
        Just(".".to_owned()),
        Just(String::new()),
        "[a-c]{1,2}".prop_map(|s| s)
    ]
}

fn path() -> impl Strategy<Value = String> {
    (proptest::bool::ANY, prop::collection::vec(segment(), 1..4)).prop_map(|(abs, parts)| {
        let joined = parts.join("/");
        if abs {
            format!("/{joined}")
        } else {
            joined
        }
    })
}

fn entry() -> impl Strategy<Value = Entry> {
    prop_oneof![3 => path().prop_map(Entry::File), 1 => (path(), path()).prop_map(|(a, b)| Entry::Link(a, b))]
}

/// Every file under `root` (not following links).
fn files(root: &Path) -> Vec<std::path::PathBuf> {
    let mut out = vec![];
    let mut stack = vec![root.to_owned()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let p = e.path();
            out.push(p.clone());
            if p.is_dir() && !p.is_symlink() {
                stack.push(p);
            }
        }
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]
    #[test]
    fn nothing_is_written_outside_the_folder(entries in prop::collection::vec(entry(), 1..6)) {
        let outer = tempfile::tempdir().unwrap();
        let dest = outer.path().join("dest");
        std::fs::create_dir(&dest).unwrap();
        let zip_path = outer.path().join("in.zip");
        {
            let mut zip = zip::ZipWriter::new(std::fs::File::create(&zip_path).unwrap());
            for entry in &entries {
                let written = match entry {
                    Entry::File(name) => zip.start_file(name.as_str(), SimpleFileOptions::default()).and_then(|_| Ok(zip.write_all(b"x")?)),
                    Entry::Link(name, target) => zip.add_symlink(name.as_str(), target.as_str(), SimpleFileOptions::default()),
                };
                if written.is_err() {
                    return Ok(()); // the writer refused the name: nothing to test
                }
            }
            zip.finish().unwrap();
        }
        let _ = unpack(&zip_path, &dest, 1 << 20);
        // Only the zip and the folder exist at the outer level, and every link in the
        // folder resolves inside it.
        let outside: Vec<_> = std::fs::read_dir(outer.path()).unwrap().flatten().map(|e| e.file_name()).collect();
        prop_assert_eq!(outside.len(), 2, "{:?}", outside);
        let root = dest.canonicalize().unwrap();
        for file in files(&dest) {
            if let Ok(real) = file.canonicalize() {
                prop_assert!(real.starts_with(&root), "{} resolves to {}", file.display(), real.display());
            }
        }
    }
}
