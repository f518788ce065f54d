//! The names `format_type` prints for the builtin type oids (WIT `host.type-name`).

/// `(oid, name)`, sorted by oid.
const NAMES: &[(u32, &str)] = &[
    (16, "boolean"),
    (17, "bytea"),
    (18, "\"char\""),
    (19, "name"),
    (20, "bigint"),
    (21, "smallint"),
    (23, "integer"),
    (25, "text"),
    (26, "oid"),
    (114, "json"),
    (142, "xml"),
    (199, "json[]"),
    (600, "point"),
    (650, "cidr"),
    (700, "real"),
    (701, "double precision"),
    (790, "money"),
    (829, "macaddr"),
    (869, "inet"),
    (1000, "boolean[]"),
    (1001, "bytea[]"),
    (1005, "smallint[]"),
    (1007, "integer[]"),
    (1009, "text[]"),
    (1014, "character[]"),
    (1015, "character varying[]"),
    (1016, "bigint[]"),
    (1021, "real[]"),
    (1022, "double precision[]"),
    (1041, "inet[]"),
    (1042, "character"),
    (1043, "character varying"),
    (1082, "date"),
    (1083, "time without time zone"),
    (1114, "timestamp without time zone"),
    (1115, "timestamp without time zone[]"),
    (1182, "date[]"),
    (1183, "time without time zone[]"),
    (1184, "timestamp with time zone"),
    (1185, "timestamp with time zone[]"),
    (1186, "interval"),
    (1187, "interval[]"),
    (1231, "numeric[]"),
    (1266, "time with time zone"),
    (1270, "time with time zone[]"),
    (1560, "bit"),
    (1562, "bit varying"),
    (1700, "numeric"),
    (2950, "uuid"),
    (2951, "uuid[]"),
    (3802, "jsonb"),
    (3807, "jsonb[]"),
    (3904, "int4range"),
    (3910, "tstzrange"),
    (3912, "daterange"),
    (3926, "int8range"),
];

/// The name of a builtin type oid; `None` for any other oid.
pub fn type_name(oid: u32) -> Option<&'static str> {
    NAMES
        .binary_search_by_key(&oid, |&(o, _)| o)
        .ok()
        .map(|i| NAMES[i].1)
}

#[cfg(test)]
mod tests {
    #[test]
    fn sorted_and_found() {
        assert!(super::NAMES.windows(2).all(|w| w[0].0 < w[1].0));
        assert_eq!(super::type_name(1184), Some("timestamp with time zone"));
        assert_eq!(super::type_name(99_999), None);
    }
}
