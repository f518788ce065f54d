//! `routes` of a `[[sinks]]` entry: which transform-set routes a sink receives.

/// Route patterns of a sink (`routes = ["audit.*", "orders.>"]`): `.`-separated tokens,
/// `*` matches one token, `>` (last) the rest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteFilter(Vec<String>);

impl RouteFilter {
    pub fn new(patterns: &[String]) -> Result<Self, String> {
        if patterns.is_empty() {
            return Err("needs at least one pattern (omit it to receive every change)".into());
        }
        for p in patterns {
            let tokens: Vec<&str> = p.split('.').collect();
            if tokens.iter().any(|t| t.is_empty()) {
                return Err(format!("pattern {p:?} has an empty token"));
            }
            if let Some(i) = tokens.iter().position(|t| *t == ">") {
                if i + 1 != tokens.len() {
                    return Err(format!("pattern {p:?}: '>' must be the last token"));
                }
            }
        }
        Ok(RouteFilter(patterns.to_vec()))
    }

    /// Whether `route` matches any pattern.
    pub fn matches(&self, route: &str) -> bool {
        self.0.iter().any(|p| {
            let mut r = route.split('.');
            for t in p.split('.') {
                match (t, r.next()) {
                    (">", Some(_)) => return true,
                    ("*", Some(_)) => {}
                    (t, Some(x)) if t == x => {}
                    _ => return false,
                }
            }
            r.next().is_none()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn route_patterns_match_like_nats_subjects() {
        let f =
            RouteFilter::new(&["audit.*".into(), "orders.>".into(), "exact.one".into()]).unwrap();
        for yes in ["audit.users", "orders.eu", "orders.eu.created", "exact.one"] {
            assert!(f.matches(yes), "{yes}");
        }
        for no in [
            "audit",
            "audit.users.x",
            "orders",
            "exact.one.two",
            "exact",
            "other",
        ] {
            assert!(!f.matches(no), "{no}");
        }
        assert!(RouteFilter::new(&[]).is_err());
        assert!(RouteFilter::new(&["a.>.b".into()]).is_err());
        assert!(RouteFilter::new(&["a..b".into()]).is_err());
    }
}
