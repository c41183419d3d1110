//! Files kctl writes on the workstation: its cluster records, keys,
//! known hosts and snapshots. Each is written whole through a file of an
//! unguessable name beside it, made new with mode 0600 (so nothing planted
//! there, such as a link, is followed, and no one else reads it even for a
//! moment), then renamed over: a crash leaves the old file or the new one,
//! never half of one.

use std::io::Write as _;
use std::path::{Path, PathBuf};

/// Writes `bytes` to `path` as described above; the rename is made
/// durable too.
pub fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut partial = tempfile::Builder::new()
        .prefix(&format!(".{name}."))
        .suffix(".partial")
        .tempfile_in(dir)?;
    partial.write_all(bytes)?;
    partial.as_file().sync_all()?;
    partial.persist(path).map_err(|e| e.error)?;
    std::fs::File::open(dir)?.sync_all()
}

/// The first ancestor of `path` (itself included) that others may write
/// or that belongs to another user (root's excepted): a file kctl keeps
/// there (a key, a record helpers trust) could be swapped by them. sshd
/// refuses keys below such a directory for the same reason.
pub fn unsafe_ancestor(path: &Path) -> Option<PathBuf> {
    use std::os::unix::fs::MetadataExt as _;
    let me = std::fs::metadata("/proc/self").map(|m| m.uid()).ok()?;
    path.ancestors()
        .filter_map(|p| std::fs::metadata(p).ok().map(|m| (p, m)))
        .find(|(_, m)| m.mode() & 0o022 != 0 || (m.uid() != me && m.uid() != 0))
        .map(|(p, _)| p.to_path_buf())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt as _;

    #[test]
    fn written_whole_private_and_through_no_planted_link() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cluster.json");
        // A link planted at the old fixed temp name leads nowhere now.
        let victim = dir.path().join("victim");
        std::fs::write(&victim, "keep").unwrap();
        std::os::unix::fs::symlink(&victim, dir.path().join(".cluster.json.tmp")).unwrap();
        write_private(&path, b"{}\n").unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "{}\n");
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "keep");
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        write_private(&path, b"second").unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "second");
        // Nothing partial is left beside it.
        let left: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".partial"))
            .collect();
        assert!(left.is_empty(), "{left:?}");
    }

    #[test]
    fn a_directory_others_can_write_is_unsafe() {
        let dir = tempfile::tempdir().unwrap();
        let home = dir.path().join("home");
        std::fs::create_dir(&home).unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
        // The system temp directory above is world-writable (sticky).
        assert!(unsafe_ancestor(&home).is_some());
        std::fs::set_permissions(&home, std::fs::Permissions::from_mode(0o777)).unwrap();
        assert_eq!(unsafe_ancestor(&home.join("clusters")), Some(home.clone()));
    }
}
