//! Opens counted per file, as the CLI's `--summary` shows them: one row per file, most opened
//! first, as aligned text or one JSON object per line (paths as the event lines write them).
use crate::{
    errno,
    schema::Value,
    text::{self, Align, JsonObject},
};

/// One file's counts.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FileCount {
    pub path: Vec<u8>,
    pub opens: u64,
    pub failed: u64,
    /// (errno, how many), by errno.
    pub errors: Vec<(i32, u64)>,
}

/// The header of [`write_line`]'s lines.
pub const HEADER: &str = "  OPENS  FAILED ERRORS           PATH\n";

/// The rows in the order they are shown: most opened first, then by path.
pub fn sort(rows: &mut [FileCount]) {
    rows.sort_by(|a, b| b.opens.cmp(&a.opens).then_with(|| a.path.cmp(&b.path)));
}

/// An errno's name (`ENOENT`), or its number where the table has no name.
fn error_name(code: i32) -> String {
    errno::name(code).map_or_else(|| code.to_string(), str::to_owned)
}

/// `OPENS FAILED ERRORS PATH`: the errors' names joined by commas, `-` for none.
pub fn write_line(row: &FileCount, out: &mut String) {
    text::push_uint(out, row.opens, 7, Align::Right);
    out.push(' ');
    text::push_uint(out, row.failed, 7, Align::Right);
    out.push(' ');
    let names: Vec<String> = row.errors.iter().map(|(code, _)| error_name(*code)).collect();
    let seen = if names.is_empty() { "-".to_owned() } else { names.join(",") };
    out.push_str(&format!("{seen:<16} "));
    text::printable(&row.path, out);
    out.push('\n');
}

/// `{"path": ..., "opens": N, "failed": N, "errors": {"ENOENT": N}}` on one line (`path_b64`
/// after a path that is not UTF-8, as in the event lines).
pub fn write_json(row: &FileCount, out: &mut String) {
    let mut object = JsonObject::new(out);
    object.field("path", Value::Text(&row.path));
    object.field("opens", Value::UInt(row.opens));
    object.field("failed", Value::UInt(row.failed));
    object.key("errors");
    let mut errors = JsonObject::new(object.out());
    for (code, count) in &row.errors {
        errors.field(&error_name(*code), Value::UInt(*count));
    }
    errors.end();
    object.end();
    out.push('\n');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(path: &[u8], opens: u64, errors: &[(i32, u64)]) -> FileCount {
        let failed = errors.iter().map(|(_, n)| n).sum();
        FileCount { path: path.to_vec(), opens, failed, errors: errors.to_vec() }
    }

    #[test]
    fn most_opened_first_then_by_path() {
        let mut rows = vec![row(b"/b", 1, &[]), row(b"/c", 5, &[]), row(b"/a", 1, &[])];
        sort(&mut rows);
        let paths: Vec<&[u8]> = rows.iter().map(|r| r.path.as_slice()).collect();
        assert_eq!(paths, [b"/c".as_slice(), b"/a", b"/b"]);
    }

    #[test]
    fn lines_and_json() {
        let mut out = String::new();
        write_line(&row(b"/etc/x", 12, &[(libc::ENOENT, 2), (libc::EACCES, 1)]), &mut out);
        write_line(&row(b"/ok", 3, &[]), &mut out);
        assert_eq!(out, "     12       3 ENOENT,EACCES    /etc/x\n      3       0 -                /ok\n");
        out.clear();
        write_json(&row(b"/tmp/\xff", 2, &[(libc::ENOENT, 2), (9999, 1)]), &mut out);
        assert_eq!(
            out,
            "{\"path\": \"/tmp/\\udcff\", \"path_b64\": \"L3RtcC//\", \"opens\": 2, \"failed\": 3, \
             \"errors\": {\"ENOENT\": 2, \"9999\": 1}}\n"
        );
    }
}
