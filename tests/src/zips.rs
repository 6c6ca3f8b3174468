//! Builds code zips in tests.

use std::io::Write;
use std::path::Path;

use zip::write::SimpleFileOptions;

/// One entry of a zip under construction.
pub enum Entry<'a> {
    /// A regular file with its mode.
    File(&'a str, &'a [u8], u32),
    /// A directory.
    Dir(&'a str),
    /// A symlink and its target.
    Symlink(&'a str, &'a str),
}

/// Writes a zip with `entries` to `path`, deflated like cargo lambda's.
pub fn write_zip(path: &Path, entries: &[Entry<'_>]) {
    let file = std::fs::File::create(path).expect("create zip");
    let mut zip = zip::ZipWriter::new(file);
    for entry in entries {
        match entry {
            Entry::File(name, data, mode) => {
                let options = SimpleFileOptions::default()
                    .compression_method(zip::CompressionMethod::Deflated)
                    .unix_permissions(*mode);
                zip.start_file(*name, options).expect("start file");
                zip.write_all(data).expect("write entry");
            }
            Entry::Dir(name) => {
                zip.add_directory(*name, SimpleFileOptions::default()).expect("add dir");
            }
            Entry::Symlink(name, target) => {
                zip.add_symlink(*name, *target, SimpleFileOptions::default())
                    .expect("add symlink");
            }
        }
    }
    zip.finish().expect("finish zip");
}

/// A zip holding `binary` as an executable `bootstrap`, as cargo lambda packages it.
pub fn bootstrap_zip(binary: &Path, dest: &Path) {
    let data = std::fs::read(binary).expect("read binary");
    write_zip(dest, &[Entry::File("bootstrap", &data, 0o755)]);
}

/// A zip (in memory) holding `binary` as an executable `bootstrap`.
pub fn bootstrap_zip_bytes(binary: &Path) -> Vec<u8> {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("code.zip");
    bootstrap_zip(binary, &path);
    std::fs::read(path).expect("read zip")
}

/// A zip (in memory) with `entries`.
pub fn zip_bytes(entries: &[Entry<'_>]) -> Vec<u8> {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("code.zip");
    write_zip(&path, entries);
    std::fs::read(path).expect("read zip")
}

/// A zip (in memory) of `files` (paths relative to `dir`, kept as entry names), each
/// with mode 644: what `zip -r fn.zip .` makes of a handler's folder.
pub fn folder_zip(dir: &Path, files: &[&str]) -> Vec<u8> {
    let contents: Vec<Vec<u8>> = files
        .iter()
        .map(|f| std::fs::read(dir.join(f)).unwrap_or_else(|e| panic!("{}: {e}", dir.join(f).display())))
        .collect();
    let entries: Vec<Entry<'_>> = files
        .iter()
        .zip(&contents)
        .map(|(name, data)| Entry::File(name, data, 0o644))
        .collect();
    zip_bytes(&entries)
}
