//! WIDER FACE ground truth: the official `wider_face_val_bbx_gt.txt`.
//!
//! The file is a sequence of records: a relative image path line, a count line, then
//! `count` lines `x y w h blur expression illumination invalid occlusion pose`. An image
//! without faces has count `0` followed by one placeholder line of zeros (some releases
//! write count `1` with an all-zero line instead). Boxes with `w <= 0` or `h <= 0` are
//! dropped here: they cannot be matched at any IoU, and the all-zero placeholders are such
//! rows. Boxes are converted to `[x1, y1, x2, y2] = [x, y, x + w, y + h]` (continuous
//! convention, as [`crate::eval::iou`] uses).
//!
//! Only part of the validation set is usually present on disk, so [`load_wider_gt`] keeps
//! the images that exist under the given images folder.

use std::path::Path;

use crate::error::{Error, Result};

/// Ground truth of one image.
#[derive(Debug, Clone, PartialEq)]
pub struct GtImage {
    /// Path relative to the `images/` folder, as written in the file (`0--Parade/x.jpg`).
    pub path: String,
    /// Face boxes `[x1, y1, x2, y2]` in pixels.
    pub boxes: Vec<[f32; 4]>,
    /// The WIDER `invalid` attribute of each box (same length as `boxes`).
    pub invalid: Vec<bool>,
}

fn parse_err(file: &Path, line: usize, reason: impl std::fmt::Display) -> Error {
    Error::Msg(format!("{}:{}: {}", file.display(), line, reason))
}

/// Parses the text of a WIDER ground-truth file; `file` names it in error messages.
pub fn parse_wider_gt_str(text: &str, file: &Path) -> Result<Vec<GtImage>> {
    // (1-based line number, trimmed content); blank lines are skipped
    let mut lines = text
        .lines()
        .enumerate()
        .map(|(i, l)| (i + 1, l.trim()))
        .filter(|(_, l)| !l.is_empty())
        .peekable();
    let mut images = Vec::new();
    while let Some((path_line, path)) = lines.next() {
        if path.split_whitespace().count() != 1 || !path.contains('.') {
            return Err(parse_err(
                file,
                path_line,
                format!("expected an image path, got `{path}`"),
            ));
        }
        let (count_line, count_text) = lines
            .next()
            .ok_or_else(|| parse_err(file, path_line, format!("`{path}`: missing face count")))?;
        let count: usize = count_text.parse().map_err(|_| {
            parse_err(
                file,
                count_line,
                format!("expected a face count, got `{count_text}`"),
            )
        })?;
        let mut img = GtImage {
            path: path.to_string(),
            boxes: Vec::with_capacity(count),
            invalid: Vec::with_capacity(count),
        };
        // count 0 is followed by a single placeholder line of numbers (zeros)
        let rows = if count == 0 {
            match lines.peek() {
                Some((_, l)) if l.split_whitespace().all(|t| t.parse::<f64>().is_ok()) => 1,
                _ => 0,
            }
        } else {
            count
        };
        for _ in 0..rows {
            let (ln, row) = lines.next().ok_or_else(|| {
                parse_err(
                    file,
                    count_line,
                    format!("`{path}`: file ends before its {count} box lines"),
                )
            })?;
            let vals: Vec<f32> = row
                .split_whitespace()
                .map(|t| t.parse::<f32>())
                .collect::<std::result::Result<_, _>>()
                .map_err(|_| parse_err(file, ln, format!("expected numbers, got `{row}`")))?;
            if vals.len() < 10 {
                return Err(parse_err(
                    file,
                    ln,
                    format!("expected 10 values per box, got {} in `{row}`", vals.len()),
                ));
            }
            if count == 0 {
                continue; // the placeholder
            }
            let [x, y, w, h] = [vals[0], vals[1], vals[2], vals[3]];
            if w > 0.0 && h > 0.0 {
                img.boxes.push([x, y, x + w, y + h]);
                img.invalid.push(vals[7] != 0.0);
            }
        }
        images.push(img);
    }
    Ok(images)
}

/// Reads and parses a WIDER ground-truth file (all images listed in it).
pub fn parse_wider_gt(file: &Path) -> Result<Vec<GtImage>> {
    let text = std::fs::read_to_string(file).map_err(|e| Error::io(file, e))?;
    parse_wider_gt_str(&text, file)
}

/// Parses `gt_file` and keeps the images present under `images_dir`
/// (`images_dir.join(path)` is a file), in file order.
pub fn load_wider_gt(gt_file: &Path, images_dir: &Path) -> Result<Vec<GtImage>> {
    if !images_dir.is_dir() {
        return Err(Error::io(
            images_dir,
            std::io::Error::new(std::io::ErrorKind::NotFound, "images folder not found"),
        ));
    }
    let mut all = parse_wider_gt(gt_file)?;
    all.retain(|g| images_dir.join(&g.path).is_file());
    Ok(all)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    const TOY: &str = "a--A/a_1.jpg\n2\n10 20 30 40 0 0 0 0 0 0 \n1 2 3 4 2 0 0 1 0 0 \n\
                       b--B/b_1.jpg\n0\n0 0 0 0 0 0 0 0 0 0 \n\
                       c--C/c_1.jpg\n1\n0 0 0 0 0 0 0 0 0 0 \n\
                       d--D/d_1.jpg\n0\ne--E/e_1.jpg\n1\n5 5 10 10 0 0 0 0 0 0\n";

    #[test]
    fn parses_toy_file() {
        let g = parse_wider_gt_str(TOY, Path::new("toy.txt")).unwrap();
        assert_eq!(g.len(), 5);
        assert_eq!(g[0].path, "a--A/a_1.jpg");
        assert_eq!(
            g[0].boxes,
            vec![[10.0, 20.0, 40.0, 60.0], [1.0, 2.0, 4.0, 6.0]]
        );
        assert_eq!(g[0].invalid, vec![false, true]);
        assert!(g[1].boxes.is_empty()); // count 0 + placeholder
        assert!(g[2].boxes.is_empty()); // count 1 with an all-zero box
        assert!(g[3].boxes.is_empty()); // count 0 without placeholder
        assert_eq!(g[4].boxes, vec![[5.0, 5.0, 15.0, 15.0]]);
    }

    #[test]
    fn errors_name_file_and_line() {
        let e = parse_wider_gt_str("x.jpg\n2\n1 2 3 4 0 0 0 0 0 0\n", Path::new("gt.txt"))
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("gt.txt:2:"), "{e}");
        let e = parse_wider_gt_str("x.jpg\nthree\n", Path::new("gt.txt"))
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("gt.txt:2:") && e.contains("three"), "{e}");
        let e = parse_wider_gt_str("x.jpg\n1\n1 2 3 4 0\n", Path::new("gt.txt"))
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("gt.txt:3:"), "{e}");
    }

    fn shared() -> Option<PathBuf> {
        let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared");
        if p.is_dir() {
            return Some(p);
        }
        let p = PathBuf::from("/work/shared");
        p.is_dir().then_some(p)
    }

    #[test]
    fn real_val_file() {
        let Some(s) = shared() else {
            eprintln!("SKIPPED: shared folder not found");
            return;
        };
        let w = s.join("data/detection/wider_face");
        let gt = w.join("wider_face_split/wider_face_val_bbx_gt.txt");
        assert_eq!(parse_wider_gt(&gt).unwrap().len(), 3226);
        let present = load_wider_gt(&gt, &w.join("WIDER_val/images")).unwrap();
        assert_eq!(present.len(), 394);
        assert!(present.iter().all(|g| g.boxes.len() == g.invalid.len()));
    }
}
