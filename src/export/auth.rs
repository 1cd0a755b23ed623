//! Credentials for the backends: a bearer token or basic auth, read from a file
//! or an environment variable, never from the command line (every user sees a
//! process's arguments in `ps` and /proc/PID/cmdline).

use std::path::{Path, PathBuf};

use base64::Engine as _;

/// The environment variable that may hold a bearer token.
pub const TOKEN_VAR: &str = "FLAMEBPF_EXPORT_TOKEN";
/// The environment variable that may hold `user:password`.
pub const BASIC_VAR: &str = "FLAMEBPF_EXPORT_BASIC_AUTH";

/// How requests authenticate.
#[derive(Clone, Default, PartialEq, Eq)]
pub enum Auth {
    /// Nothing sent.
    #[default]
    None,
    /// `Authorization: Bearer TOKEN`.
    Bearer(String),
    /// `Authorization: Basic base64(user:password)`.
    Basic(String),
}

// Never printed: the derive would show the secret in a debug log.
impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Auth::None => "None",
            Auth::Bearer(_) => "Bearer(…)",
            Auth::Basic(_) => "Basic(…)",
        })
    }
}

impl Auth {
    /// The Authorization header's value.
    pub fn header(&self) -> Option<String> {
        match self {
            Auth::None => None,
            Auth::Bearer(t) => Some(format!("Bearer {t}")),
            Auth::Basic(up) => Some(format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(up)
            )),
        }
    }
}

/// Where the credentials come from. A file is read again for every request, so
/// a token that is rotated in place (a Kubernetes projected token, a renewed
/// secret) is picked up without a restart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// Read once (the environment, or nothing).
    Fixed(Auth),
    /// A bearer token's file.
    TokenFile(PathBuf),
    /// A `user:password` file.
    BasicFile(PathBuf),
}

impl Source {
    /// The credentials now.
    pub fn current(&self) -> Result<Auth, String> {
        let auth = match self {
            Source::Fixed(a) => return Ok(a.clone()),
            Source::TokenFile(f) => Auth::Bearer(secret(f, "--export-token-file")?),
            Source::BasicFile(f) => Auth::Basic(secret(f, "--export-basic-auth-file")?),
        };
        check(&auth)?;
        Ok(auth)
    }
}

/// What the flags and the environment say; `argv_token`/`argv_basic` are the
/// refused command-line forms. `env` reads a variable (the process environment
/// outside tests).
pub fn load(
    token_file: Option<&Path>,
    basic_file: Option<&Path>,
    argv_token: bool,
    argv_basic: bool,
    env: impl Fn(&str) -> Option<String>,
) -> Result<Source, String> {
    if argv_token {
        return Err(format!("--export-token: a token on the command line is visible to every user (ps); put it in a file for --export-token-file, or in {TOKEN_VAR}"));
    }
    if argv_basic {
        return Err(format!("--export-basic-auth: credentials on the command line are visible to every user (ps); put user:password in a file for --export-basic-auth-file, or in {BASIC_VAR}"));
    }
    let from_env = |var: &str| env(var).filter(|v| !v.is_empty());
    let source = match (token_file, basic_file) {
        (Some(f), _) => Source::TokenFile(f.to_path_buf()),
        (None, Some(f)) => Source::BasicFile(f.to_path_buf()),
        (None, None) => Source::Fixed(match (from_env(TOKEN_VAR), from_env(BASIC_VAR)) {
            (Some(_), Some(_)) => {
                return Err(format!(
                    "both {TOKEN_VAR} and {BASIC_VAR} are set: keep one"
                ))
            }
            (Some(t), None) => Auth::Bearer(t.trim().to_string()),
            (None, Some(b)) => Auth::Basic(b.trim().to_string()),
            (None, None) => Auth::None,
        }),
    };
    // a file that is unreadable now is one line before sampling starts
    source.current()?;
    Ok(source)
}

/// A file's first line, which must not be empty.
fn secret(path: &Path, flag: &str) -> Result<String, String> {
    let text =
        std::fs::read_to_string(path).map_err(|e| format!("{flag} {}: {e}", path.display()))?;
    let line = text.lines().next().unwrap_or("").trim();
    if line.is_empty() {
        return Err(format!("{flag} {}: the file is empty", path.display()));
    }
    Ok(line.to_string())
}

/// A header value must be visible ASCII; basic auth needs its colon.
fn check(auth: &Auth) -> Result<(), String> {
    let (value, what) = match auth {
        Auth::None => return Ok(()),
        Auth::Bearer(t) => (t, "the export token"),
        Auth::Basic(b) => {
            if !b.contains(':') {
                return Err("the export basic auth must be user:password".into());
            }
            (b, "the export basic auth")
        }
    };
    if value.bytes().any(|b| !(0x20..0x7f).contains(&b)) {
        return Err(format!("{what} holds characters a header cannot carry"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_env(_: &str) -> Option<String> {
        None
    }

    #[test]
    fn a_token_on_the_command_line_is_refused() {
        let e = load(None, None, true, false, no_env).unwrap_err();
        assert!(e.contains("visible to every user") && e.contains("--export-token-file"));
        assert!(load(None, None, false, true, no_env).is_err());
    }

    #[test]
    fn files_and_variables_give_the_header() {
        let dir = tempfile::tempdir().unwrap();
        let t = dir.path().join("t");
        std::fs::write(&t, "s3cret\n").unwrap();
        let source = load(Some(&t), None, false, false, no_env).unwrap();
        let a = source.current().unwrap();
        assert_eq!(a.header().unwrap(), "Bearer s3cret");
        assert_eq!(format!("{a:?}"), "Bearer(…)");
        // rotated in place: the next request has the new one
        std::fs::write(&t, "rotated\n").unwrap();
        assert_eq!(
            source.current().unwrap().header().unwrap(),
            "Bearer rotated"
        );
        let env = |v: &str| (v == BASIC_VAR).then(|| "alice:pw".to_string());
        let a = load(None, None, false, false, env)
            .unwrap()
            .current()
            .unwrap();
        assert_eq!(a.header().unwrap(), "Basic YWxpY2U6cHc=");
        std::fs::write(&t, "\n").unwrap();
        assert!(load(Some(&t), None, false, false, no_env)
            .unwrap_err()
            .contains("empty"));
        let missing = dir.path().join("none");
        assert!(load(None, Some(&missing), false, false, no_env).is_err());
        assert_eq!(
            load(None, None, false, false, no_env).unwrap(),
            Source::Fixed(Auth::None)
        );
    }
}
