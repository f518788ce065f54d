//! `schema.table` patterns, as the examples' `allow`/`deny`/`tables` keys take
//! them.

use crate::Change;

/// A set of table patterns: `schema.table`, or a bare `table` that matches in
/// any schema. `*` matches any run of characters in either part
/// (`public.*`, `*.audit_*`, `*`).
///
/// Names are compared exactly (case-sensitive), as Postgres sends them: an
/// unquoted `Orders` in SQL is the table `orders`. A pattern is split at its
/// first `.`, so a table whose name has a dot is written `schema.my.table`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TableSet {
    patterns: Vec<(Option<String>, String)>,
}

impl TableSet {
    /// Parses patterns; an empty pattern part (`.orders`, `public.`) is an error.
    pub fn new<S: AsRef<str>>(patterns: &[S]) -> Result<TableSet, String> {
        let patterns = patterns
            .iter()
            .map(|p| {
                let p = p.as_ref();
                let (schema, table) = match p.split_once('.') {
                    Some((s, t)) => (Some(s.to_string()), t.to_string()),
                    None => (None, p.to_string()),
                };
                if table.is_empty() || schema.as_deref() == Some("") {
                    return Err(format!(
                        "bad table pattern `{p}`: want schema.table or table"
                    ));
                }
                Ok((schema, table))
            })
            .collect::<Result<_, _>>()?;
        Ok(TableSet { patterns })
    }

    /// Parses a comma-separated list (`"public.orders, audit_*"`).
    pub fn parse(list: &str) -> Result<TableSet, String> {
        TableSet::new(&crate::config::split_list(list))
    }

    /// No patterns: matches nothing.
    pub fn is_empty(&self) -> bool {
        self.patterns.is_empty()
    }

    /// Whether `schema.table` matches one of the patterns.
    pub fn matches(&self, schema: &str, table: &str) -> bool {
        self.patterns
            .iter()
            .any(|(s, t)| s.as_deref().is_none_or(|s| glob(s, schema)) && glob(t, table))
    }

    /// Whether the change's table matches. Logical messages have no table and
    /// never match.
    pub fn matches_change(&self, change: &Change) -> bool {
        !change.table.is_empty() && self.matches(&change.schema, &change.table)
    }
}

/// `*`-only glob matching. Greedy with backtracking to the last `*`, which
/// is linear enough for identifiers.
fn glob(pattern: &str, name: &str) -> bool {
    let (p, n) = (pattern.as_bytes(), name.as_bytes());
    let (mut pi, mut ni) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ni < n.len() {
        if pi < p.len() && p[pi] == b'*' {
            star = Some((pi, ni));
            pi += 1;
        } else if pi < p.len() && p[pi] == n[ni] {
            pi += 1;
            ni += 1;
        } else if let Some((sp, sn)) = star {
            pi = sp + 1;
            ni = sn + 1;
            star = Some((sp, sn + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == b'*')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        assert!(glob("orders", "orders"));
        assert!(!glob("orders", "orders2"));
        assert!(glob("*", ""));
        assert!(glob("*", "anything"));
        assert!(glob("audit_*", "audit_log"));
        assert!(!glob("audit_*", "xaudit_log"));
        assert!(glob("*_log", "audit_log"));
        assert!(glob("a*b*c", "aXXbYYc"));
        assert!(glob("a*b*c", "abbc"));
        assert!(!glob("a*b*c", "aXXbYY"));
        assert!(glob("a**", "a"));
    }

    #[test]
    fn bare_and_qualified() {
        let s = TableSet::parse("public.orders, customers, audit.*, *.tmp_*").unwrap();
        assert!(s.matches("public", "orders"));
        assert!(!s.matches("sales", "orders"));
        assert!(s.matches("public", "customers"));
        assert!(s.matches("sales", "customers"));
        assert!(s.matches("audit", "anything"));
        assert!(s.matches("x", "tmp_1"));
        assert!(!s.matches("public", "Orders"));
        assert!(!s.matches("public", "items"));
    }

    #[test]
    fn dotted_table_names_split_at_the_first_dot() {
        let s = TableSet::parse("public.my.table").unwrap();
        assert!(s.matches("public", "my.table"));
    }

    #[test]
    fn bad_patterns() {
        assert!(TableSet::parse(".orders").is_err());
        assert!(TableSet::parse("public.").is_err());
        assert!(TableSet::parse("").unwrap().is_empty());
    }
}
