//! Which instances a response may show: the projects a caller's certificate holds,
//! narrowed by `?project=`. Series without a project (host and daemon series) pass only
//! the unrestricted filter.

use std::sync::Arc;

/// Which instances a response may show: everything, or only some projects.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum ProjectFilter {
    /// Every series.
    All,
    /// Only series whose `project` label is one of these (sorted, no duplicates); series
    /// without a project are hidden too.
    Only(Arc<[String]>),
}

impl ProjectFilter {
    /// A filter for the given projects.
    pub fn only<I: IntoIterator<Item = String>>(projects: I) -> Self {
        let mut list: Vec<String> = projects.into_iter().collect();
        list.sort();
        list.dedup();
        ProjectFilter::Only(list.into())
    }

    /// The filter that lets through what both let through.
    pub fn intersect(&self, other: &ProjectFilter) -> ProjectFilter {
        match (self, other) {
            (ProjectFilter::All, f) | (f, ProjectFilter::All) => f.clone(),
            (ProjectFilter::Only(a), ProjectFilter::Only(b)) => {
                ProjectFilter::only(a.iter().filter(|p| b.contains(p)).cloned())
            }
        }
    }

    /// Whether a series of this project is shown.
    pub fn allows(&self, project: Option<&str>) -> bool {
        match self {
            ProjectFilter::All => true,
            ProjectFilter::Only(list) => {
                project.is_some_and(|p| list.binary_search_by(|x| x.as_str().cmp(p)).is_ok())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn project_filters() {
        let f = ProjectFilter::only(["b".to_string(), "a".to_string(), "a".to_string()]);
        assert!(f.allows(Some("a")) && f.allows(Some("b")));
        assert!(!f.allows(Some("c")) && !f.allows(None));
        assert!(ProjectFilter::All.allows(None));
        let g = ProjectFilter::only(["c".to_string(), "b".to_string()]);
        assert_eq!(f.intersect(&g), ProjectFilter::only(["b".to_string()]));
        assert_eq!(ProjectFilter::All.intersect(&g), g);
        // A restricted certificate asking for another project gets nothing.
        let none = f.intersect(&ProjectFilter::only(["z".to_string()]));
        assert!(!none.allows(Some("a")) && !none.allows(Some("z")));
    }
}
