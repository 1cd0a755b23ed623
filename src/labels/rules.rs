//! `--label-rule WHAT:PATTERN=SERVICE`: processes whose `WHAT` (`cgroup`, `comm`
//! or `exe`) matches `PATTERN` get `service_name=SERVICE`. A pattern is matched
//! whole; `*` stands for any run of characters (`/` included), nothing else is
//! special. Kept this small on purpose: the common cases are a systemd unit
//! (`cgroup:*/nginx.service`), a container runtime's scope (`cgroup:*/docker-*`)
//! and a program (`exe:/usr/bin/python3*`, `comm:postgres`).

/// What a rule looks at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    /// The cgroup v2 path.
    Cgroup,
    /// The command name.
    Comm,
    /// The executable's path.
    Exe,
}

/// One `--label-rule`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// What it looks at.
    pub field: Field,
    /// The pattern, `*` the only wildcard.
    pub pattern: String,
    /// The service name it gives.
    pub service: String,
}

/// The longest pattern.
const MAX_PATTERN: usize = 512;

impl Rule {
    /// Parses `WHAT:PATTERN=SERVICE`; the error is one line.
    pub fn parse(arg: &str) -> Result<Rule, String> {
        let bad = |why: &str| format!("--label-rule {arg:?}: {why}");
        let (field, rest) = arg
            .split_once(':')
            .ok_or_else(|| bad("expected WHAT:PATTERN=SERVICE (WHAT: cgroup, comm or exe)"))?;
        let field = match field {
            "cgroup" => Field::Cgroup,
            "comm" => Field::Comm,
            "exe" => Field::Exe,
            _ => return Err(bad("WHAT is cgroup, comm or exe")),
        };
        // the service is after the last '=': a pattern may hold '='
        let (pattern, service) = rest
            .rsplit_once('=')
            .ok_or_else(|| bad("expected WHAT:PATTERN=SERVICE"))?;
        if pattern.is_empty() || pattern.len() > MAX_PATTERN {
            return Err(bad(&format!(
                "the pattern must be 1 to {MAX_PATTERN} bytes"
            )));
        }
        super::check_value(&format!("--label-rule {arg:?}"), service)?;
        Ok(Rule {
            field,
            pattern: pattern.to_string(),
            service: service.to_string(),
        })
    }

    /// Whether a process with these facts matches.
    pub fn matches(&self, comm: &str, exe: Option<&str>, cgroup: Option<&str>) -> bool {
        let subject = match self.field {
            Field::Comm => Some(comm),
            Field::Exe => exe,
            Field::Cgroup => cgroup,
        };
        subject.is_some_and(|s| glob(&self.pattern, s))
    }
}

/// Whether `text` matches `pattern` whole, `*` matching any run of bytes.
/// Linear in their lengths (the classic greedy walk with one backtrack point),
/// so a hostile path cannot make it slow.
fn glob(pattern: &str, text: &str) -> bool {
    let (p, t) = (pattern.as_bytes(), text.as_bytes());
    let (mut pi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && p[pi] == b'*' {
            star = Some((pi, ti));
            pi += 1;
        } else if pi < p.len() && p[pi] == t[ti] {
            pi += 1;
            ti += 1;
        } else if let Some((sp, st)) = star {
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&b| b == b'*')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        assert!(glob("*/nginx.service", "/system.slice/nginx.service"));
        assert!(!glob("*/nginx.service", "/system.slice/nginx.service/x"));
        assert!(glob("*docker-*", "/system.slice/docker-abc.scope"));
        assert!(glob("postgres", "postgres"));
        assert!(!glob("postgres", "postgres2"));
        assert!(glob("a*b*c", "aXXbYYc"));
        assert!(!glob("a*b*c", "aXXbYY"));
        assert!(glob("**", ""));
        assert!(!glob("", "x"));
    }

    #[test]
    fn rules_parse_and_match() {
        let r = Rule::parse("cgroup:*/docker-*.scope=containers").unwrap();
        assert!(r.matches("x", None, Some("/system.slice/docker-1.scope")));
        assert!(!r.matches("x", None, None));
        let r = Rule::parse("exe:/usr/bin/python3*=py").unwrap();
        assert!(r.matches("x", Some("/usr/bin/python3.11"), None));
        let r = Rule::parse("comm:a=b=svc").unwrap();
        assert_eq!((r.pattern.as_str(), r.service.as_str()), ("a=b", "svc"));
        for bad in ["nginx", "pid:1=x", "comm:=x", "comm:x=", "comm:x"] {
            assert!(Rule::parse(bad).is_err(), "{bad}");
        }
    }
}
