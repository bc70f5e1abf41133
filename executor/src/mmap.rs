//! Read-only memory maps of files: token shards (`data::shards`) and checkpoints
//! (`checkpoint`) are read through them, so a file larger than host memory is paged in as it
//! is read. The one `unsafe` of the executor outside `gpu` is here.

use std::fs::File;
use std::ops::Deref;
use std::path::Path;

/// The bytes of a whole file, mapped read-only (an empty file maps to an empty slice).
#[derive(Debug)]
pub struct MappedFile {
    map: Option<memmap2::Mmap>,
}

impl MappedFile {
    /// Maps `path` whole.
    pub fn open(path: &Path) -> std::io::Result<MappedFile> {
        let file = File::open(path)?;
        if file.metadata()?.is_dir() {
            return Err(std::io::Error::new(std::io::ErrorKind::IsADirectory, "it is a folder, not a file"));
        }
        if file.metadata()?.len() == 0 {
            return Ok(MappedFile { map: None });
        }
        // SAFETY: the map is read-only and lives as long as this value. What memory-mapping cannot
        // rule out is another process changing the file while it is mapped: a write shows through
        // (we read plain bytes and check every value we use, so that is wrong data, never
        // undefined behaviour of ours beyond that), and truncating the file makes reads past its
        // new end fault (SIGBUS). offplan never writes a file it maps (its writers write
        // temporary names and rename them), and the documented contract for users is the usual
        // one: do not modify a shard or checkpoint while a run reads it.
        let map = unsafe { memmap2::Mmap::map(&file)? };
        #[cfg(unix)]
        {
            // Sequential reads: let the kernel read ahead and drop pages behind (advice only).
            let _ = map.advise(memmap2::Advice::Sequential);
        }
        Ok(MappedFile { map: Some(map) })
    }
}

impl Deref for MappedFile {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        self.map.as_deref().unwrap_or(&[])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_files_and_empty_files() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.bin");
        std::fs::write(&p, [1u8, 2, 3]).unwrap();
        assert_eq!(&*MappedFile::open(&p).unwrap(), &[1, 2, 3]);
        let e = dir.path().join("empty.bin");
        std::fs::write(&e, []).unwrap();
        assert!(MappedFile::open(&e).unwrap().is_empty());
        assert!(MappedFile::open(&dir.path().join("missing")).is_err());
        assert!(MappedFile::open(dir.path()).is_err());
    }
}
