//! Routes each change by the value of one column. See README.md.

use cdc_guest::{Change, Config, Transform};

/// A parsed template: literal text and placeholders, in order.
enum Part {
    Literal(String),
    Schema,
    Table,
    Op,
    Value,
    /// The transaction's replication origin, `local` for one made on this server.
    Origin,
}

struct RouteByColumn {
    column: String,
    template: Vec<Part>,
    default: Option<String>,
}

impl Transform for RouteByColumn {
    fn init(config: Config) -> Result<Self, String> {
        config.check_keys(&["column", "template", "default"])?;
        Ok(RouteByColumn {
            column: config.require("column")?.trim().to_string(),
            template: parse(config.get_or("template", "{schema}.{table}.{value}"))?,
            default: config.get("default").map(str::to_string),
        })
    }

    fn transform(&mut self, mut changes: Vec<Change>) -> Result<Vec<Change>, String> {
        for c in &mut changes {
            match c.column_text(&self.column) {
                Some(value) => c.route = Some(self.render(c, &value)),
                // Absent or null: the default if set, else the sink decides.
                None => c.route = self.default.clone().or(c.route.take()),
            }
        }
        Ok(changes)
    }
}

impl RouteByColumn {
    fn render(&self, c: &Change, value: &str) -> String {
        // Asked of the host only when the template uses it.
        let origin = self
            .template
            .iter()
            .any(|p| matches!(p, Part::Origin))
            .then(|| c.origin())
            .flatten();
        let parts = self.template.iter().map(|p| match p {
            Part::Literal(s) => s.as_str(),
            Part::Schema => &c.schema,
            Part::Table => &c.table,
            Part::Op => c.op.as_str(),
            Part::Value => value,
            Part::Origin => origin.as_deref().unwrap_or("local"),
        });
        parts.collect()
    }
}

/// Splits `a.{value}.b` into parts; an unknown or unclosed `{...}` is an error.
fn parse(template: &str) -> Result<Vec<Part>, String> {
    let mut parts = Vec::new();
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        let close = rest[open..]
            .find('}')
            .ok_or(format!("unclosed `{{` in template `{template}`"))?;
        parts.push(Part::Literal(rest[..open].to_string()));
        parts.push(match &rest[open + 1..open + close] {
            "schema" => Part::Schema,
            "table" => Part::Table,
            "op" => Part::Op,
            "value" => Part::Value,
            "origin" => Part::Origin,
            other => {
                let help = "use {schema} {table} {op} {value} {origin}";
                return Err(format!(
                    "unknown placeholder `{{{other}}}` in template: {help}"
                ));
            }
        });
        rest = &rest[open + close + 1..];
    }
    parts.push(Part::Literal(rest.to_string()));
    Ok(parts)
}

cdc_guest::export!(RouteByColumn);

#[cfg(test)]
mod tests;
