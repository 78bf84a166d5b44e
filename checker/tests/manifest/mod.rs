//! The manifests of hand-made histories with a witness column (`bank-handmade/`,
//! `cache-handmade/`): each row names a history, the verdict of one checker alone, the
//! verdict of the checkers its header chooses, the witness, and why.

use helios_checker::check::{check_file, CheckError, CheckOptions, Report};
use helios_checker::format::Format;
use helios_checker::select::CheckerKind;
use helios_checker::InputError;
use std::path::{Path, PathBuf};

/// The `histories/` folder.
pub fn histories() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../histories")
}

/// One manifest row.
#[derive(Debug)]
pub struct Row {
    pub path: String,
    pub format: Option<Format>,
    pub checker: CheckerKind,
    pub expected: String,
    pub combined: String,
    pub witness: String,
    pub why: String,
}

/// The rows of `folder/manifest.tsv`.
pub fn rows(folder: &str) -> Vec<Row> {
    let text = std::fs::read_to_string(histories().join(folder).join("manifest.tsv")).unwrap();
    text.lines()
        .filter(|line| !line.starts_with('#') && !line.trim().is_empty())
        .map(|line| {
            let columns: Vec<&str> = line.split('\t').collect();
            let [path, format, checker, expected, combined, witness, why] = columns[..] else {
                panic!("manifest line has the wrong columns: {line}");
            };
            assert!(!why.trim().is_empty(), "{path} needs a why");
            Row {
                path: path.to_string(),
                format: Some(Format::parse(format).unwrap_or_else(|| panic!("format {format}"))),
                checker: CheckerKind::parse(checker).unwrap(),
                expected: expected.to_string(),
                combined: combined.to_string(),
                witness: witness.to_string(),
                why: why.to_string(),
            }
        })
        .collect()
}

/// Checks the history of `row` with `checkers` (chosen from the history when `None`).
pub fn check(row: &Row, checkers: Option<Vec<CheckerKind>>) -> Result<Report, CheckError> {
    let options = CheckOptions {
        checkers,
        format: row.format,
        ..CheckOptions::default()
    };
    check_file(&histories().join(&row.path), &options)
}

/// The verdict as the manifest spells it, and the witness in the manifest's words, given how
/// to say a report's witness.
pub fn outcome(
    result: &Result<Report, CheckError>,
    witness: impl Fn(&Report) -> Option<String>,
) -> (String, String) {
    match result {
        Ok(report) => (
            report.verdict.to_string(),
            witness(report).unwrap_or_else(|| "-".to_string()),
        ),
        Err(CheckError::Input(InputError::Malformed { location, .. })) => (
            "shape-error".to_string(),
            format!(
                "line={} field={}",
                location.line,
                location.field.as_deref().unwrap_or("-")
            ),
        ),
        Err(other) => panic!("not a located input error: {other}"),
    }
}

/// Every row gets its expected verdict (its checker alone, and the checkers its header
/// chooses) and its witness. Returns the number of rows checked.
pub fn check_all(folder: &str, witness: impl Fn(&Report) -> Option<String> + Copy) -> usize {
    let rows = rows(folder);
    for row in &rows {
        let alone = check(row, Some(vec![row.checker]));
        let (verdict, found) = outcome(&alone, witness);
        assert_eq!(
            (verdict.as_str(), found.as_str()),
            (row.expected.as_str(), row.witness.as_str()),
            "{} with the {} checker alone: {}",
            row.path,
            row.checker,
            row.why
        );
        let (combined, _) = outcome(&check(row, None), witness);
        assert_eq!(
            combined, row.combined,
            "{} with the checkers its header chooses: {}",
            row.path, row.why
        );
    }
    rows.len()
}
