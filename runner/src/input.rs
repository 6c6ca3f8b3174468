//! Reads the `--event` / `--context` values: inline JSON, `@FILE`, or `-` for stdin.

use std::io::Read;

use crate::error::RunnerError;

/// Where one half of the envelope comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// The JSON text itself.
    Inline(String),
    /// `@path`: a file holding the JSON.
    File(std::path::PathBuf),
    /// `-`: standard input.
    Stdin,
}

impl Source {
    /// Interprets a command-line value.
    pub fn parse(value: &str) -> Source {
        if value == "-" {
            Source::Stdin
        } else if let Some(path) = value.strip_prefix('@') {
            Source::File(path.into())
        } else {
            Source::Inline(value.to_owned())
        }
    }

    /// Reads the text; `what` names the option in errors.
    pub fn read(&self, what: &str) -> Result<String, RunnerError> {
        match self {
            Source::Inline(text) => Ok(text.clone()),
            Source::File(path) => std::fs::read_to_string(path)
                .map_err(|e| RunnerError::Usage(format!("cannot read the {what} file {}: {e}", path.display()))),
            Source::Stdin => {
                let mut text = String::new();
                std::io::stdin()
                    .read_to_string(&mut text)
                    .map_err(|e| RunnerError::Usage(format!("cannot read the {what} from stdin: {e}")))?;
                Ok(text)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms() {
        assert_eq!(Source::parse("-"), Source::Stdin);
        assert_eq!(Source::parse("@e.json"), Source::File("e.json".into()));
        assert_eq!(Source::parse("{}"), Source::Inline("{}".into()));
        let err = Source::parse("@/nonexistent/e.json").read("event").unwrap_err();
        assert!(err
            .to_string()
            .contains("cannot read the event file /nonexistent/e.json"));
    }
}
