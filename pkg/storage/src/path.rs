//! Where a download may be written: only directly inside the chosen output folder, under a
//! name that passed [`p2p_protocol::validate_file_name`]; and the one name a shared folder
//! goes by ([`folder_name`]).

use std::path::{Path, PathBuf};

use p2p_protocol::validate_file_name;

use crate::StorageError;
use crate::tree::Tree;

/// Suffix of a download in progress.
pub const PART_SUFFIX: &str = ".part";

/// The final path of `name` inside `out_dir`, refusing names that could point elsewhere.
pub fn output_path(out_dir: &Path, name: &str) -> Result<PathBuf, StorageError> {
    validate_file_name(name)?;
    Ok(out_dir.join(name))
}

/// The name a shared folder goes by: the last part of its path with every symlink resolved
/// ([`Tree::root`]). So `album`, `album/`, `./album`, `/abs/album`, `.` inside it and a path
/// through a symlinked parent all name it `album`, and a download recreates it as
/// `<out>/album/...` whichever spelling the sharer typed. Every place that names a folder
/// (its head, the printed line, its manifest file and that file's name) asks here.
///
/// `/`, a name that is not UTF-8, or one a downloader would refuse
/// ([`validate_file_name`]) is [`StorageError::FolderName`].
pub fn folder_name(tree: &Tree) -> Result<String, StorageError> {
    name_of_root(tree.root())
}

fn name_of_root(root: &Path) -> Result<String, StorageError> {
    let refused = |reason: String| StorageError::FolderName {
        path: root.to_owned(),
        reason,
    };
    let name = root
        .file_name()
        .ok_or_else(|| refused("it is the root of the file system".into()))?
        .to_str()
        .ok_or_else(|| refused("its name is not UTF-8".into()))?;
    validate_file_name(name).map_err(|e| refused(e.to_string()))?;
    Ok(name.to_owned())
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::symlink;

    use super::*;

    #[test]
    fn names_stay_inside_the_folder() {
        let out = Path::new("/tmp/out");
        assert_eq!(
            output_path(out, "a.txt").unwrap(),
            Path::new("/tmp/out/a.txt")
        );
        for bad in ["../a", "/etc/passwd", "a/../../b", "..", "c:\\x", ""] {
            assert!(output_path(out, bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn every_spelling_of_a_folder_gives_its_own_name() {
        let base = tempfile::tempdir().unwrap();
        let album = base.path().join("album");
        std::fs::create_dir_all(album.join("inner")).unwrap();
        symlink(base.path(), base.path().join("parent-link")).unwrap();
        let spellings = [
            album.clone(),
            PathBuf::from(format!("{}/", album.display())),
            album.join("."),
            album.join("inner/.."),
            base.path().join("parent-link/album"),
            base.path().join("./album/"),
        ];
        for spelling in spellings {
            let tree = Tree::open(&spelling).unwrap();
            assert_eq!(
                folder_name(&tree).unwrap(),
                "album",
                "{}",
                spelling.display()
            );
        }
    }

    #[test]
    fn the_root_and_unsafe_names_are_refused() {
        let err = folder_name(&Tree::open(Path::new("/")).unwrap()).unwrap_err();
        assert_eq!(
            err.to_string(),
            "the folder / has no name it can be shared under: it is the root of the file system"
        );
        let err = name_of_root(Path::new("/tmp/nul")).unwrap_err();
        assert!(matches!(err, StorageError::FolderName { .. }), "{err}");
    }
}
