//! Tracepoint `format` files (`events/<category>/<name>/format`): their parser and the rules for
//! tracepoint names. Reading them from tracefs is the extension's job.

/// Splits `category:name`, refusing anything that is not two plain path components.
pub fn split_name(full: &str) -> Option<(&str, &str)> {
    let plain = |s: &str| !s.is_empty() && s != "." && s != ".." && !s.contains(['/', '\0']);
    match full.split_once(':') {
        Some((category, name)) if plain(category) && plain(name) && !name.contains(':') => {
            Some((category, name))
        }
        _ => None,
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Field {
    pub name: String,
    /// The C type as the file writes it, with any array suffix moved here (`char[16]`).
    pub ty: String,
    pub offset: u32,
    pub size: u32,
    pub signed: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Format {
    pub name: String,
    pub id: u32,
    pub fields: Vec<Field>,
    pub print_fmt: String,
}

impl Format {
    pub fn field(&self, name: &str) -> Option<&Field> {
        self.fields.iter().find(|f| f.name == name)
    }
}

/// Parses the text of a tracepoint `format` file. Errors name the line (1-based).
pub fn parse(text: &str) -> std::result::Result<Format, String> {
    let (mut name, mut id, mut print_fmt) = (None, None, None);
    let mut fields = Vec::new();
    let mut in_format = false;
    for (index, raw) in text.lines().enumerate() {
        let line = raw.trim();
        let at = |msg: String| format!("line {}: {msg}", index + 1);
        if let Some(fmt) = print_fmt.as_mut().filter(|_| !in_format) {
            // The print format is last, and its string may hold newlines (ext4_fc_stats).
            let fmt: &mut String = fmt;
            fmt.push('\n');
            fmt.push_str(raw);
            continue;
        }
        if line.is_empty() {
            continue;
        }
        if let Some(rest) = line.strip_prefix("name:") {
            name = Some(rest.trim().to_owned());
        } else if let Some(rest) = line.strip_prefix("ID:") {
            id = Some(rest.trim().parse::<u32>().map_err(|_| at(format!("bad ID {:?}", rest.trim())))?);
        } else if line == "format:" {
            in_format = true;
        } else if let Some(rest) = line.strip_prefix("print fmt:") {
            print_fmt = Some(rest.trim().to_owned());
            in_format = false;
        } else if line.starts_with("field:") {
            if !in_format {
                return Err(at("field outside the format: section".into()));
            }
            fields.push(parse_field(line).map_err(at)?);
        } else {
            return Err(at(format!("unexpected text {line:?}")));
        }
    }
    let name = name.filter(|n| !n.is_empty()).ok_or("no name: line")?;
    let id = id.ok_or("no ID: line")?;
    if fields.is_empty() {
        return Err("no fields".into());
    }
    let print_fmt = print_fmt.ok_or("no print fmt: line")?.trim_end().to_owned();
    Ok(Format { name, id, fields, print_fmt })
}

/// `field:const char * filename;<TAB>offset:24;<TAB>size:8;<TAB>signed:0;`
fn parse_field(line: &str) -> std::result::Result<Field, String> {
    let (mut decl, mut offset, mut size, mut signed) = (None, None, None, None);
    for part in line.split(';').map(str::trim).filter(|p| !p.is_empty()) {
        let (key, value) = part.split_once(':').ok_or_else(|| format!("bad item {part:?}"))?;
        let number = || value.trim().parse::<u32>().map_err(|_| format!("bad {key} {value:?}"));
        match key.trim() {
            "field" => decl = Some(value.trim()),
            "offset" => offset = Some(number()?),
            "size" => size = Some(number()?),
            "signed" => signed = Some(number()? != 0),
            // Unknown attributes may appear in newer kernels; they do not change the layout.
            _ => {}
        }
    }
    let decl = decl.ok_or("no field declaration")?;
    let (ty, name) = split_declaration(decl).ok_or_else(|| format!("cannot read declaration {decl:?}"))?;
    Ok(Field {
        name,
        ty,
        offset: offset.ok_or("no offset")?,
        size: size.ok_or("no size")?,
        // Old kernels omit `signed:`; unsigned is what they meant for pointers and arrays.
        signed: signed.unwrap_or(false),
    })
}

/// `const char * filename` -> ("const char *", "filename"); `char comm[16]` -> ("char[16]", "comm").
fn split_declaration(decl: &str) -> Option<(String, String)> {
    let (base, suffix) = match decl.strip_suffix(']') {
        Some(_) => decl.rfind('[').map(|i| (&decl[..i], &decl[i..]))?,
        None => (decl, ""),
    };
    let base = base.trim_end();
    let start = base.rfind(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).map_or(0, |i| i + 1);
    let (ty, name) = (base[..start].trim(), &base[start..]);
    if name.is_empty() || ty.is_empty() || name.starts_with(|c: char| c.is_ascii_digit()) {
        return None;
    }
    Some((format!("{ty}{suffix}"), name.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const OPENAT: &str = "name: sys_enter_openat\nID: 700\nformat:\n\
        \tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;\n\
        \tfield:int common_pid;\toffset:4;\tsize:4;\tsigned:1;\n\n\
        \tfield:int __syscall_nr;\toffset:8;\tsize:4;\tsigned:1;\n\
        \tfield:const char * filename;\toffset:24;\tsize:8;\tsigned:0;\n\
        \tfield:char comm[16];\toffset:32;\tsize:16;\tsigned:0;\n\
        \tfield:__data_loc char[] msg;\toffset:48;\tsize:4;\tsigned:0;\n\n\
        print fmt: \"filename: 0x%08lx\", ((unsigned long)(REC->filename))\n";

    #[test]
    fn parses_fields_in_order() {
        let f = parse(OPENAT).unwrap();
        assert_eq!((f.name.as_str(), f.id), ("sys_enter_openat", 700));
        let names: Vec<_> = f.fields.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(names, ["common_type", "common_pid", "__syscall_nr", "filename", "comm", "msg"]);
        let filename = f.field("filename").unwrap();
        assert_eq!(
            (filename.ty.as_str(), filename.offset, filename.size, filename.signed),
            ("const char *", 24, 8, false)
        );
        assert_eq!(f.field("comm").unwrap().ty, "char[16]");
        assert_eq!(f.field("msg").unwrap().ty, "__data_loc char[]");
        assert!(f.field("common_pid").unwrap().signed);
        assert!(f.print_fmt.starts_with("\"filename"));
    }

    #[test]
    fn rejects_malformed_input() {
        for (text, needle) in [
            ("", "no name"),
            ("name: x\nformat:\n\tfield:int a;\toffset:0;\tsize:4;\n print fmt: \"\"", "no ID"),
            ("name: x\nID: 1\nformat:\n\tfield:int a;\toffset:zero;\tsize:4;\n", "line 4: bad offset"),
            ("name: x\nID: 1\nformat:\n\tfield:int;\toffset:0;\tsize:4;\n", "cannot read declaration"),
            ("name: x\nID: nope\n", "line 2: bad ID"),
            ("name: x\nID: 1\nformat:\nprint fmt: \"\"\n", "no fields"),
            ("hello\n", "line 1: unexpected text"),
        ] {
            let err = parse(text).unwrap_err();
            assert!(err.contains(needle), "{text:?}: {err}");
        }
    }

    #[test]
    fn split_name_refuses_paths() {
        assert_eq!(split_name("syscalls:sys_enter_openat"), Some(("syscalls", "sys_enter_openat")));
        for bad in ["syscalls", ":x", "x:", "../x:y", "a:b/c", "a:..", "a:b:c"] {
            assert_eq!(split_name(bad), None, "{bad}");
        }
    }
}
