//! The `# py:<name>` line that routes a program to a named Python environment.
//!
//! It is looked for in the whole program, not only on the first line: the host puts a preamble
//! of its own in front of watcher-action code (protocol.md §4.2). The form is exact: a comment
//! line holding nothing but `py:` and a name, with any whitespace after the `#`.

/// A routing directive found in a program.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Directive<'a> {
    pub name: &'a str,
    /// 1-based line of the first occurrence.
    pub line: usize,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DirectiveError {
    #[error("line {line}: `# py:{name}` does not name an environment: {reason}")]
    BadName {
        line: usize,
        name: String,
        reason: String,
    },
    #[error(
        "the program names two environments, `# py:{first}` (line {first_line}) and \
         `# py:{second}` (line {second_line}); keep one"
    )]
    Conflict {
        first: String,
        first_line: usize,
        second: String,
        second_line: usize,
    },
}

/// Why `name` cannot be an environment name, if it cannot.
pub fn name_problem(name: &str) -> Option<String> {
    let mut chars = name.chars();
    match chars.next() {
        None => Some("the name is empty".into()),
        Some(first) if !first.is_ascii_lowercase() => {
            Some("names start with a lower-case letter (a-z)".into())
        }
        _ if !chars
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-') =>
        {
            Some("names hold only a-z, 0-9, '_' and '-'".into())
        }
        _ => None,
    }
}

/// The name a line routes to, if the line is a directive (valid name or not).
fn directive_on(line: &str) -> Option<&str> {
    let rest = line.trim_start().strip_prefix('#')?.trim_start();
    let name = rest.strip_prefix("py:")?.trim_end();
    // `# py:bio and more` is prose, not a directive.
    (!name.contains(char::is_whitespace)).then_some(name)
}

/// The program's directive: none, one (possibly repeated), or an error for a malformed name or
/// two different names.
pub fn find(code: &str) -> Result<Option<Directive<'_>>, DirectiveError> {
    let mut found: Option<Directive<'_>> = None;
    for (index, line) in code.lines().enumerate() {
        let Some(name) = directive_on(line) else {
            continue;
        };
        let line = index + 1;
        if let Some(reason) = name_problem(name) {
            return Err(DirectiveError::BadName {
                line,
                name: name.to_owned(),
                reason,
            });
        }
        match &found {
            None => found = Some(Directive { name, line }),
            Some(first) if first.name == name => {}
            Some(first) => {
                return Err(DirectiveError::Conflict {
                    first: first.name.to_owned(),
                    first_line: first.line,
                    second: name.to_owned(),
                    second_line: line,
                })
            }
        }
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(code: &str) -> Option<&str> {
        find(code).unwrap().map(|d| d.name)
    }

    #[test]
    fn the_exact_form_with_any_whitespace_after_the_hash() {
        assert_eq!(name("# py:bio\nx = 1"), Some("bio"));
        assert_eq!(name("#py:data"), Some("data"));
        assert_eq!(name("#\t  py:ml-2_x  \r\nx"), Some("ml-2_x"));
        assert_eq!(
            name("    # py:bio"),
            Some("bio"),
            "indented comment lines count"
        );
    }

    #[test]
    fn anywhere_in_the_program() {
        let code = "import json\n_attestation_json = '{}'\nattestation = json.loads(_attestation_json)\n# py:data\nprint(1)";
        let directive = find(code).unwrap().unwrap();
        assert_eq!((directive.name, directive.line), ("data", 4));
    }

    #[test]
    fn not_directives() {
        for code in [
            "x = 1",
            "# py: bio",
            "# py:bio is the environment",
            "x = 1  # py:bio",
            "# python:bio",
            "## py",
            "s = '# py:bio'",
        ] {
            assert_eq!(name(code), None, "{code:?}");
        }
    }

    #[test]
    fn repeated_is_fine_two_names_are_not() {
        assert_eq!(name("# py:bio\n# py:bio"), Some("bio"));
        let error = find("# py:bio\nx = 1\n# py:data").unwrap_err();
        assert_eq!(
            error.to_string(),
            "the program names two environments, `# py:bio` (line 1) and `# py:data` (line 3); keep one"
        );
    }

    #[test]
    fn malformed_names_are_errors() {
        for bad in ["# py:Bio", "# py:1x", "# py:b.io", "# py:"] {
            assert!(
                matches!(find(bad), Err(DirectiveError::BadName { .. })),
                "{bad}"
            );
        }
    }
}
