//! The `[[instances.source]]` pattern language, parsed in this one place for the
//! configuration check and for discovery: a cgroup path whose components may hold
//! `{name}` (exactly once), `{project}` and `{_}` (anything, captured nowhere).

/// One piece of a pattern component.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PatternPiece {
    /// Text that must appear as it is.
    Literal(String),
    /// `{name}`: the instance name.
    Name,
    /// `{project}`: the project.
    Project,
    /// `{_}`: matches anything, captured nowhere (libvirt's domain id).
    Any,
}

/// A parsed pattern: the pieces of each path component.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CgroupPattern {
    /// One entry per `/`-separated component (empty components dropped).
    pub components: Vec<Vec<PatternPiece>>,
}

impl CgroupPattern {
    /// Parses `pattern`; the error says what is wrong, quoting the pattern.
    pub fn parse(pattern: &str) -> Result<CgroupPattern, String> {
        let mut names = 0;
        let mut components = Vec::new();
        for component in pattern.split('/').filter(|c| !c.is_empty()) {
            let mut pieces = Vec::new();
            let mut rest = component;
            while let Some(open) = rest.find('{') {
                if open > 0 {
                    pieces.push(PatternPiece::Literal(rest[..open].to_owned()));
                }
                let close = rest[open..]
                    .find('}')
                    .map(|c| open + c)
                    .ok_or_else(|| format!("pattern \"{pattern}\": unclosed '{{'"))?;
                pieces.push(match &rest[open + 1..close] {
                    "name" => {
                        names += 1;
                        PatternPiece::Name
                    }
                    "project" => PatternPiece::Project,
                    "_" => PatternPiece::Any,
                    other => {
                        return Err(format!(
                            "pattern \"{pattern}\": unknown placeholder {{{other}}} \
                             (use {{name}}, {{project}} and {{_}})"
                        ))
                    }
                });
                rest = &rest[close + 1..];
            }
            if !rest.is_empty() {
                pieces.push(PatternPiece::Literal(rest.to_owned()));
            }
            components.push(pieces);
        }
        if names != 1 {
            return Err(format!(
                "pattern \"{pattern}\": needs {{name}} exactly once"
            ));
        }
        Ok(CgroupPattern { components })
    }

    /// Literal characters: the more, the more specific the pattern.
    pub fn specificity(&self) -> usize {
        self.components
            .iter()
            .flatten()
            .map(|p| match p {
                PatternPiece::Literal(l) => l.len(),
                _ => 0,
            })
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_parse_into_pieces_or_say_what_is_wrong() {
        let p = CgroupPattern::parse("vms/{project}/qemu-{_}-{name}.scope").unwrap();
        assert_eq!(p.components.len(), 3);
        assert_eq!(
            p.components[2],
            [
                PatternPiece::Literal("qemu-".into()),
                PatternPiece::Any,
                PatternPiece::Literal("-".into()),
                PatternPiece::Name,
                PatternPiece::Literal(".scope".into()),
            ]
        );
        assert_eq!(p.specificity(), "vmsqemu--.scope".len());
        for (bad, why) in [
            ("no-placeholder", "exactly once"),
            ("{name}/{name}", "exactly once"),
            ("{name}/{oops}", "unknown placeholder {oops}"),
            ("x{name", "unclosed"),
        ] {
            let e = CgroupPattern::parse(bad).unwrap_err();
            assert!(e.contains(why), "{bad}: {e}");
        }
    }
}
