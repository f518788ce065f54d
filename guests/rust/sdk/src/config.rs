//! The `[transforms.config]` table as `init` receives it.

/// A transform's configuration: the `[transforms.config]` table of
/// pipeline.toml, every value a string.
///
/// Lookups are linear: a config has a handful of keys and is read once, in
/// `init`, so a map would buy nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Config {
    entries: Vec<(String, String)>,
}

impl Config {
    /// Wraps the key/value pairs `init` received (the export glue does this).
    pub fn new(entries: Vec<(String, String)>) -> Config {
        Config { entries }
    }

    /// Builds a config from literal pairs, for tests.
    pub fn from_pairs(pairs: &[(&str, &str)]) -> Config {
        Config::new(
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
    }

    /// The value of `key`, if set. The last one wins if a key appears twice.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.entries
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// The value of `key`, or `default` when it is not set.
    pub fn get_or<'a>(&'a self, key: &str, default: &'a str) -> &'a str {
        self.get(key).unwrap_or(default)
    }

    /// The value of `key`, or an error naming the missing key.
    pub fn require(&self, key: &str) -> Result<&str, String> {
        match self.get(key) {
            Some(v) if !v.trim().is_empty() => Ok(v),
            Some(_) => Err(format!("config key `{key}` is empty")),
            None => Err(format!("config key `{key}` is required")),
        }
    }

    /// `key` as a comma-separated list: items trimmed, empty items dropped
    /// (so `"a, b,"` is `["a", "b"]`). Empty when the key is not set.
    pub fn get_list(&self, key: &str) -> Vec<String> {
        self.get(key).map(split_list).unwrap_or_default()
    }

    /// `key` as a comma-separated list that must have at least one item.
    pub fn require_list(&self, key: &str) -> Result<Vec<String>, String> {
        self.require(key)?;
        match self.get_list(key) {
            list if list.is_empty() => Err(format!("config key `{key}` is an empty list")),
            list => Ok(list),
        }
    }

    /// `key` as a boolean (`true`/`false`, `yes`/`no`, `on`/`off`, `1`/`0`),
    /// or `default` when it is not set. Anything else is an error: a typo in
    /// a flag should stop the pipeline, not silently mean `false`.
    pub fn get_bool(&self, key: &str, default: bool) -> Result<bool, String> {
        let Some(v) = self.get(key) else {
            return Ok(default);
        };
        match v.trim().to_ascii_lowercase().as_str() {
            "true" | "yes" | "on" | "1" => Ok(true),
            "false" | "no" | "off" | "0" => Ok(false),
            _ => Err(format!(
                "config key `{key}` must be true or false, not `{v}`"
            )),
        }
    }

    /// Fails on a key not in `known`, so a misspelt key (`colums`) is
    /// reported instead of being ignored.
    pub fn check_keys(&self, known: &[&str]) -> Result<(), String> {
        match self
            .entries
            .iter()
            .find(|(k, _)| !known.contains(&k.as_str()))
        {
            Some((k, _)) => Err(format!(
                "unknown config key `{k}` (known keys: {})",
                known.join(", ")
            )),
            None => Ok(()),
        }
    }

    /// All pairs, in the order the host passed them.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.entries.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// No keys at all.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// Splits a comma-separated list, trimming items and dropping empty ones.
pub(crate) fn split_list(s: &str) -> Vec<String> {
    s.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn get_and_require() {
        let c = Config::from_pairs(&[("a", "1"), ("empty", " "), ("a", "2")]);
        assert_eq!(c.get("a"), Some("2"));
        assert_eq!(c.get("b"), None);
        assert_eq!(c.get_or("b", "x"), "x");
        assert_eq!(c.require("a"), Ok("2"));
        assert_eq!(c.require("b").unwrap_err(), "config key `b` is required");
        assert_eq!(
            c.require("empty").unwrap_err(),
            "config key `empty` is empty"
        );
    }

    #[test]
    fn lists_are_trimmed() {
        let c = Config::from_pairs(&[("cols", " email, phone ,, ssn,")]);
        assert_eq!(c.get_list("cols"), ["email", "phone", "ssn"]);
        assert!(c.get_list("none").is_empty());
        assert!(Config::from_pairs(&[("x", " , ")]).get_list("x").is_empty());
        assert_eq!(c.require_list("cols").unwrap(), ["email", "phone", "ssn"]);
        let err = Config::from_pairs(&[("x", " , ")]).require_list("x");
        assert_eq!(err.unwrap_err(), "config key `x` is an empty list");
    }

    #[test]
    fn booleans() {
        let c = Config::from_pairs(&[("a", "TRUE"), ("b", "no"), ("c", "maybe")]);
        assert_eq!(c.get_bool("a", false), Ok(true));
        assert_eq!(c.get_bool("b", true), Ok(false));
        assert_eq!(c.get_bool("d", true), Ok(true));
        assert!(c.get_bool("c", false).unwrap_err().contains("`maybe`"));
    }

    #[test]
    fn unknown_keys() {
        let c = Config::from_pairs(&[("columns", "a"), ("mdoe", "hash")]);
        let err = c.check_keys(&["columns", "mode"]).unwrap_err();
        assert_eq!(err, "unknown config key `mdoe` (known keys: columns, mode)");
        assert!(c.check_keys(&["columns", "mdoe"]).is_ok());
    }
}
