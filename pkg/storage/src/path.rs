//! Where a download may be written: only directly inside the chosen output folder, under a
//! name that passed [`p2p_protocol::validate_file_name`].

use std::path::{Path, PathBuf};

use p2p_protocol::validate_file_name;

use crate::StorageError;

/// Suffix of a download in progress.
pub const PART_SUFFIX: &str = ".part";

/// The final path of `name` inside `out_dir`, refusing names that could point elsewhere.
pub fn output_path(out_dir: &Path, name: &str) -> Result<PathBuf, StorageError> {
    validate_file_name(name)?;
    Ok(out_dir.join(name))
}

#[cfg(test)]
mod tests {
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
}
