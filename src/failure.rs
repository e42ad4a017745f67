//! How a verb fails: the message printed after `archc VERB: ` and the exit status. Every
//! typed error of the libraries converts into one (exit 2), so a verb's body can use `?`
//! and keep the error's own wording, which is part of the interface.

use std::process::ExitCode;

/// A failed verb: what to print and how to exit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// 1: the input is invalid (its diagnostics are already printed); 2: bad arguments,
    /// I/O, import, weight, compile or run errors.
    pub code: u8,
    /// Printed after `archc VERB: `; nothing is printed when it is empty.
    pub message: String,
}

impl Failure {
    /// A usage, I/O or run error (exit 2).
    pub fn new(message: impl Into<String>) -> Failure {
        Failure {
            code: 2,
            message: message.into(),
        }
    }

    /// An invalid input whose diagnostics were printed (exit 1).
    pub fn invalid(message: impl Into<String>) -> Failure {
        Failure {
            code: 1,
            message: message.into(),
        }
    }

    /// Prints the message for `verb` on stderr and gives the exit status.
    pub fn exit(self, verb: &str) -> ExitCode {
        if !self.message.is_empty() {
            eprintln!("archc {verb}: {}", self.message);
        }
        ExitCode::from(self.code)
    }
}

impl<E: std::error::Error> From<E> for Failure {
    fn from(e: E) -> Failure {
        Failure::new(e.to_string())
    }
}

/// The exit status of a verb's result, printing the failure for `verb`.
pub fn exit(result: Result<(), Failure>, verb: &str) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => f.exit(verb),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typed_errors_keep_their_words_and_exit_2() {
        let io = std::io::Error::new(std::io::ErrorKind::NotFound, "no such file");
        let f: Failure = io.into();
        assert_eq!(f, Failure::new("no such file"));
        assert_eq!(Failure::invalid("x.arch: 2 errors").code, 1);
    }
}
