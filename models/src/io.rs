//! Writing files so that a failure leaves nothing half-written.

use std::io::Write;
use std::path::{Path, PathBuf};

/// Writes `bytes` to a temporary name beside `path`, then renames it over `path`.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let name = path.file_name().ok_or_else(|| std::io::Error::other("path has no file name"))?;
    let tmp = dir.join(format!(".{}.{}.tmp", name.to_string_lossy(), std::process::id()));
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// An output folder written all or nothing: every file goes into a staging folder inside the
/// destination first, and [`StagedDir::commit`] moves them all into place at the end. Made
/// before any work, so that an unwritable destination is found at once; dropped without a
/// commit, it removes what it wrote (and the destination, if it made it).
pub struct StagedDir {
    dest: PathBuf,
    tmp: PathBuf,
    created: bool,
    committed: bool,
}

impl StagedDir {
    pub fn new(dest: &Path) -> std::io::Result<StagedDir> {
        if dest.exists() && !dest.is_dir() {
            return Err(std::io::Error::other(format!("{} exists and is not a folder", dest.display())));
        }
        let created = !dest.exists();
        std::fs::create_dir_all(dest)?;
        let tmp = dest.join(format!(".offplan-staging-{}", std::process::id()));
        let made = std::fs::create_dir_all(&tmp).and_then(|_| {
            // Writable, not only creatable (a read-only folder can hold a folder made earlier).
            let probe = tmp.join(".probe");
            std::fs::write(&probe, b"")?;
            std::fs::remove_file(probe)
        });
        if let Err(e) = made {
            let _ = std::fs::remove_dir_all(&tmp);
            if created {
                let _ = std::fs::remove_dir(dest);
            }
            return Err(e);
        }
        Ok(StagedDir { dest: dest.to_path_buf(), tmp, created, committed: false })
    }

    /// Where the files go until the commit.
    pub fn path(&self) -> &Path {
        &self.tmp
    }

    /// The destination.
    pub fn dest(&self) -> &Path {
        &self.dest
    }

    /// Moves every staged file into the destination (each rename replaces a file of that name)
    /// and returns their final paths.
    pub fn commit(mut self) -> std::io::Result<Vec<PathBuf>> {
        let mut names: Vec<std::ffi::OsString> =
            std::fs::read_dir(&self.tmp)?.map(|e| e.map(|e| e.file_name())).collect::<Result<_, _>>()?;
        names.sort();
        let mut out = Vec::with_capacity(names.len());
        for n in names {
            let to = self.dest.join(&n);
            std::fs::rename(self.tmp.join(&n), &to)?;
            out.push(to);
        }
        std::fs::remove_dir(&self.tmp)?;
        self.committed = true;
        Ok(out)
    }
}

impl Drop for StagedDir {
    fn drop(&mut self) {
        if !self.committed {
            let _ = std::fs::remove_dir_all(&self.tmp);
            if self.created {
                let _ = std::fs::remove_dir(&self.dest);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn writes_and_replaces() {
        let dir = std::env::temp_dir().join(format!("offplan-io-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("a.txt");
        super::write_atomic(&p, b"one").unwrap();
        super::write_atomic(&p, b"two").unwrap();
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "two");
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 1, "no temporary left");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn staged_dir_is_all_or_nothing() {
        let root = std::env::temp_dir().join(format!("offplan-staged-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        // Dropped without a commit: nothing left, not even the folder it made.
        {
            let s = super::StagedDir::new(&root).unwrap();
            std::fs::write(s.path().join("a.txt"), b"half").unwrap();
        }
        assert!(!root.exists());
        // Committed: the files, and nothing else.
        let s = super::StagedDir::new(&root).unwrap();
        std::fs::write(s.path().join("a.txt"), b"one").unwrap();
        std::fs::write(s.path().join("b.txt"), b"two").unwrap();
        let out = s.commit().unwrap();
        assert_eq!(out.len(), 2);
        let names: Vec<_> = std::fs::read_dir(&root).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names.len(), 2);
        // A failed second write leaves the first whole.
        {
            let s = super::StagedDir::new(&root).unwrap();
            std::fs::write(s.path().join("a.txt"), b"new").unwrap();
        }
        assert_eq!(std::fs::read_to_string(root.join("a.txt")).unwrap(), "one");
        // A file where the folder should be.
        assert!(super::StagedDir::new(&root.join("a.txt")).is_err());
        std::fs::remove_dir_all(&root).unwrap();
    }
}
