//! Column types: which decoder a column's text goes through.
//!
//! pgoutput's Relation message gives each column's type oid. Builtin types
//! have fixed oids (they are part of the catalog's bootstrap data), so
//! [`builtin_type`] maps them without a catalog query. Domains, enums and
//! arrays of those need the catalog; the caller resolves them and builds the
//! [`TypeInfo`] with [`TypeInfo::domain`], [`TypeInfo::enumeration`] and
//! [`TypeInfo::array`].

use std::sync::Arc;

/// Oids of the builtin types we know (from `pg_type.dat`; stable across
/// Postgres versions).
pub mod oid {
    pub const BOOL: u32 = 16;
    pub const BYTEA: u32 = 17;
    pub const CHAR: u32 = 18;
    pub const NAME: u32 = 19;
    pub const INT8: u32 = 20;
    pub const INT2: u32 = 21;
    pub const INT2VECTOR: u32 = 22;
    pub const INT4: u32 = 23;
    pub const REGPROC: u32 = 24;
    pub const TEXT: u32 = 25;
    pub const OID: u32 = 26;
    pub const TID: u32 = 27;
    pub const XID: u32 = 28;
    pub const CID: u32 = 29;
    pub const OIDVECTOR: u32 = 30;
    pub const JSON: u32 = 114;
    pub const XML: u32 = 142;
    pub const POINT: u32 = 600;
    pub const LSEG: u32 = 601;
    pub const PATH: u32 = 602;
    pub const BOX: u32 = 603;
    pub const POLYGON: u32 = 604;
    pub const LINE: u32 = 628;
    pub const CIDR: u32 = 650;
    pub const FLOAT4: u32 = 700;
    pub const FLOAT8: u32 = 701;
    pub const CIRCLE: u32 = 718;
    pub const MACADDR8: u32 = 774;
    pub const MONEY: u32 = 790;
    pub const MACADDR: u32 = 829;
    pub const INET: u32 = 869;
    pub const BPCHAR: u32 = 1042;
    pub const VARCHAR: u32 = 1043;
    pub const DATE: u32 = 1082;
    pub const TIME: u32 = 1083;
    pub const TIMESTAMP: u32 = 1114;
    pub const TIMESTAMPTZ: u32 = 1184;
    pub const INTERVAL: u32 = 1186;
    pub const TIMETZ: u32 = 1266;
    pub const BIT: u32 = 1560;
    pub const VARBIT: u32 = 1562;
    pub const NUMERIC: u32 = 1700;
    pub const REFCURSOR: u32 = 1790;
    pub const REGPROCEDURE: u32 = 2202;
    pub const REGOPER: u32 = 2203;
    pub const REGOPERATOR: u32 = 2204;
    pub const REGCLASS: u32 = 2205;
    pub const REGTYPE: u32 = 2206;
    pub const UUID: u32 = 2950;
    pub const TXID_SNAPSHOT: u32 = 2970;
    pub const PG_LSN: u32 = 3220;
    pub const TSVECTOR: u32 = 3614;
    pub const TSQUERY: u32 = 3615;
    pub const REGCONFIG: u32 = 3734;
    pub const REGDICTIONARY: u32 = 3769;
    pub const JSONB: u32 = 3802;
    pub const INT4RANGE: u32 = 3904;
    pub const NUMRANGE: u32 = 3906;
    pub const TSRANGE: u32 = 3908;
    pub const TSTZRANGE: u32 = 3910;
    pub const DATERANGE: u32 = 3912;
    pub const INT8RANGE: u32 = 3926;
    pub const JSONPATH: u32 = 4072;
    pub const REGNAMESPACE: u32 = 4089;
    pub const REGROLE: u32 = 4096;
    pub const REGCOLLATION: u32 = 4191;
    pub const INT4MULTIRANGE: u32 = 4451;
    pub const NUMMULTIRANGE: u32 = 4532;
    pub const TSMULTIRANGE: u32 = 4533;
    pub const TSTZMULTIRANGE: u32 = 4534;
    pub const DATEMULTIRANGE: u32 = 4535;
    pub const INT8MULTIRANGE: u32 = 4536;
    pub const XID8: u32 = 5069;
}

/// How a column's text is decoded.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum TypeKind {
    Bool,
    Int2,
    Int4,
    Int8,
    Float4,
    Float8,
    Numeric,
    Text,
    Bytea,
    Json,
    Jsonb,
    Uuid,
    Date,
    Time,
    TimeTz,
    Timestamp,
    TimestampTz,
    Interval,
    /// An array; the element type decodes each element.
    Array(Arc<TypeInfo>),
    Enum,
    /// A composite (row) type, or a domain over one: its fields by name. Values become the
    /// object `to_jsonb()` makes of them (see `text::record`).
    Composite(Arc<Composite>),
    /// The `hstore` extension's type: values become the object of its cast to json
    /// (`{"key": "value", "other": null}`), which is what `to_jsonb()` uses.
    Hstore,
    /// An extension type kept as text (like [`TypeKind::Other`]) whose binary send format
    /// is that text, after a version byte `1` when `versioned`: `citext` (its send function
    /// is `textsend`), `ltree` and `lquery` (`ltree_send`). Known by the input function,
    /// since an extension's oids differ per database.
    ExtText {
        versioned: bool,
    },
    /// Not decoded: kept as text (rendered as a JSON string, as `to_jsonb`
    /// does for every type it has no special case for).
    Other,
}

impl TypeKind {
    /// A short name for error messages.
    pub fn name(&self) -> &'static str {
        match self {
            TypeKind::Bool => "bool",
            TypeKind::Int2 => "int2",
            TypeKind::Int4 => "int4",
            TypeKind::Int8 => "int8",
            TypeKind::Float4 => "float4",
            TypeKind::Float8 => "float8",
            TypeKind::Numeric => "numeric",
            TypeKind::Text => "text",
            TypeKind::Bytea => "bytea",
            TypeKind::Json => "json",
            TypeKind::Jsonb => "jsonb",
            TypeKind::Uuid => "uuid",
            TypeKind::Date => "date",
            TypeKind::Time => "time",
            TypeKind::TimeTz => "timetz",
            TypeKind::Timestamp => "timestamp",
            TypeKind::TimestampTz => "timestamptz",
            TypeKind::Interval => "interval",
            TypeKind::Array(_) => "array",
            TypeKind::Enum => "enum",
            TypeKind::Composite(_) => "composite",
            TypeKind::Hstore => "hstore",
            TypeKind::ExtText { .. } | TypeKind::Other => "other",
        }
    }
}

/// The fields of a composite type, in attribute order, dropped attributes left out (as
/// `record_out` and `to_jsonb` skip them).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Composite {
    pub fields: Vec<Field>,
}

/// One field of a composite type.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Field {
    pub name: Arc<str>,
    pub ty: TypeInfo,
}

/// A column type: its oid and how to decode it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TypeInfo {
    pub oid: u32,
    pub kind: TypeKind,
}

impl TypeInfo {
    pub fn new(oid: u32, kind: TypeKind) -> Self {
        TypeInfo { oid, kind }
    }

    /// A user-defined enum type.
    pub fn enumeration(oid: u32) -> Self {
        TypeInfo::new(oid, TypeKind::Enum)
    }

    /// A type we keep as text (extensions, composites, ranges, ...).
    pub fn other(oid: u32) -> Self {
        TypeInfo::new(oid, TypeKind::Other)
    }

    /// A composite type `oid` with these fields.
    pub fn composite(oid: u32, fields: Vec<Field>) -> Self {
        TypeInfo::new(oid, TypeKind::Composite(Arc::new(Composite { fields })))
    }

    /// An extension type kept as text whose send format is its text (see
    /// [`TypeKind::ExtText`]).
    pub fn ext_text(oid: u32, versioned: bool) -> Self {
        TypeInfo::new(oid, TypeKind::ExtText { versioned })
    }

    /// The `hstore` type (an extension's: its oid differs per database).
    pub fn hstore(oid: u32) -> Self {
        TypeInfo::new(oid, TypeKind::Hstore)
    }

    /// An array type `oid` whose elements are `elem`.
    pub fn array(oid: u32, elem: TypeInfo) -> Self {
        TypeInfo::new(oid, TypeKind::Array(Arc::new(elem)))
    }

    /// A domain over `base`. It *is* the base type: domains have the base
    /// type's text format, and `to_jsonb` renders a domain value as its base
    /// type. The result keeps the base oid, so values of an undecoded base
    /// (`Value::Other`) report the base oid too.
    pub fn domain(base: &TypeInfo) -> Self {
        base.clone()
    }

    /// The element type, if this is an array.
    pub fn element(&self) -> Option<&TypeInfo> {
        match &self.kind {
            TypeKind::Array(elem) => Some(elem),
            _ => None,
        }
    }

    /// The delimiter between elements of an array of this type
    /// (`pg_type.typdelim`): `;` for `box`, whose text contains commas, and
    /// `,` for every other builtin.
    pub fn array_delimiter(&self) -> u8 {
        if self.oid == oid::BOX {
            b';'
        } else {
            b','
        }
    }
}

struct Builtin {
    oid: u32,
    array_oid: u32,
    kind: TypeKind,
}

const fn b(oid: u32, array_oid: u32, kind: TypeKind) -> Builtin {
    Builtin {
        oid,
        array_oid,
        kind,
    }
}

/// Builtin scalar types and their array types (`pg_type.typarray`).
static BUILTINS: &[Builtin] = &[
    b(oid::BOOL, 1000, TypeKind::Bool),
    b(oid::BYTEA, 1001, TypeKind::Bytea),
    b(oid::CHAR, 1002, TypeKind::Text),
    b(oid::NAME, 1003, TypeKind::Text),
    b(oid::INT8, 1016, TypeKind::Int8),
    b(oid::INT2, 1005, TypeKind::Int2),
    b(oid::INT4, 1007, TypeKind::Int4),
    b(oid::TEXT, 1009, TypeKind::Text),
    b(oid::JSON, 199, TypeKind::Json),
    b(oid::FLOAT4, 1021, TypeKind::Float4),
    b(oid::FLOAT8, 1022, TypeKind::Float8),
    b(oid::BPCHAR, 1014, TypeKind::Text),
    b(oid::VARCHAR, 1015, TypeKind::Text),
    b(oid::DATE, 1182, TypeKind::Date),
    b(oid::TIME, 1183, TypeKind::Time),
    b(oid::TIMESTAMP, 1115, TypeKind::Timestamp),
    b(oid::TIMESTAMPTZ, 1185, TypeKind::TimestampTz),
    b(oid::INTERVAL, 1187, TypeKind::Interval),
    b(oid::TIMETZ, 1270, TypeKind::TimeTz),
    b(oid::NUMERIC, 1231, TypeKind::Numeric),
    b(oid::UUID, 2951, TypeKind::Uuid),
    b(oid::JSONB, 3807, TypeKind::Jsonb),
    // Builtins kept as text. Listing them lets arrays of them decode into
    // JSON arrays of strings, which is what `to_jsonb` produces. (`oid` is a
    // string too: `to_jsonb` has no number case for it.)
    b(oid::REGPROC, 1008, TypeKind::Other),
    b(oid::OID, 1028, TypeKind::Other),
    b(oid::TID, 1010, TypeKind::Other),
    b(oid::XID, 1011, TypeKind::Other),
    b(oid::CID, 1012, TypeKind::Other),
    b(oid::XML, 143, TypeKind::Other),
    b(oid::POINT, 1017, TypeKind::Other),
    b(oid::LSEG, 1018, TypeKind::Other),
    b(oid::PATH, 1019, TypeKind::Other),
    b(oid::BOX, 1020, TypeKind::Other),
    b(oid::POLYGON, 1027, TypeKind::Other),
    b(oid::LINE, 629, TypeKind::Other),
    b(oid::CIDR, 651, TypeKind::Other),
    b(oid::CIRCLE, 719, TypeKind::Other),
    b(oid::MACADDR8, 775, TypeKind::Other),
    b(oid::MONEY, 791, TypeKind::Other),
    b(oid::MACADDR, 1040, TypeKind::Other),
    b(oid::INET, 1041, TypeKind::Other),
    b(oid::BIT, 1561, TypeKind::Other),
    b(oid::VARBIT, 1563, TypeKind::Other),
    b(oid::REFCURSOR, 2201, TypeKind::Other),
    b(oid::REGPROCEDURE, 2207, TypeKind::Other),
    b(oid::REGOPER, 2208, TypeKind::Other),
    b(oid::REGOPERATOR, 2209, TypeKind::Other),
    b(oid::REGCLASS, 2210, TypeKind::Other),
    b(oid::REGTYPE, 2211, TypeKind::Other),
    b(oid::TXID_SNAPSHOT, 2949, TypeKind::Other),
    b(oid::PG_LSN, 3221, TypeKind::Other),
    b(oid::TSVECTOR, 3643, TypeKind::Other),
    b(oid::TSQUERY, 3645, TypeKind::Other),
    b(oid::REGCONFIG, 3735, TypeKind::Other),
    b(oid::REGDICTIONARY, 3770, TypeKind::Other),
    b(oid::INT4RANGE, 3905, TypeKind::Other),
    b(oid::NUMRANGE, 3907, TypeKind::Other),
    b(oid::TSRANGE, 3909, TypeKind::Other),
    b(oid::TSTZRANGE, 3911, TypeKind::Other),
    b(oid::DATERANGE, 3913, TypeKind::Other),
    b(oid::INT8RANGE, 3927, TypeKind::Other),
    b(oid::JSONPATH, 4073, TypeKind::Other),
    b(oid::REGNAMESPACE, 4090, TypeKind::Other),
    b(oid::REGROLE, 4097, TypeKind::Other),
    b(oid::REGCOLLATION, 4192, TypeKind::Other),
    b(oid::INT4MULTIRANGE, 6150, TypeKind::Other),
    b(oid::NUMMULTIRANGE, 6151, TypeKind::Other),
    b(oid::TSMULTIRANGE, 6152, TypeKind::Other),
    b(oid::TSTZMULTIRANGE, 6153, TypeKind::Other),
    b(oid::DATEMULTIRANGE, 6155, TypeKind::Other),
    b(oid::INT8MULTIRANGE, 6157, TypeKind::Other),
    b(oid::XID8, 271, TypeKind::Other),
];

/// The [`TypeInfo`] of a builtin type or builtin array type, or `None` for
/// an oid we do not know (user-defined types: the caller consults the
/// catalog, then falls back to [`TypeInfo::other`]).
///
/// Called once per column per Relation message, not per row, so a linear
/// scan is fine.
pub fn builtin_type(type_oid: u32) -> Option<TypeInfo> {
    if let Some(vector) = vector_type(type_oid) {
        return Some(vector);
    }
    BUILTINS.iter().find_map(|t| {
        if t.oid == type_oid {
            Some(TypeInfo::new(t.oid, t.kind.clone()))
        } else if t.array_oid == type_oid {
            let elem = TypeInfo::new(t.oid, t.kind.clone());
            Some(TypeInfo::array(type_oid, elem))
        } else {
            None
        }
    })
}

/// `int2vector` and `oidvector` (used in system catalogs) are arrays to
/// Postgres (`to_jsonb` renders `'1 2'::int2vector` as `[1, 2]`) but print as
/// space-separated values; the array parser knows them by oid.
fn vector_type(type_oid: u32) -> Option<TypeInfo> {
    let vector = |oid, elem| TypeInfo::array(oid, TypeInfo::new(elem, TypeKind::Other));
    let int2vector = || TypeInfo::array(oid::INT2VECTOR, TypeInfo::new(oid::INT2, TypeKind::Int2));
    match type_oid {
        oid::INT2VECTOR => Some(int2vector()),
        oid::OIDVECTOR => Some(vector(oid::OIDVECTOR, oid::OID)),
        1006 => Some(TypeInfo::array(1006, int2vector())),
        1013 => Some(TypeInfo::array(1013, vector(oid::OIDVECTOR, oid::OID))),
        _ => None,
    }
}

impl TypeInfo {
    /// Whether this is `int2vector`/`oidvector`, whose text is
    /// space-separated elements rather than an array literal.
    pub(crate) fn is_vector(&self) -> bool {
        matches!(self.oid, oid::INT2VECTOR | oid::OIDVECTOR)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scalars_and_arrays() {
        assert_eq!(builtin_type(23), Some(TypeInfo::new(23, TypeKind::Int4)));
        let arr = builtin_type(1007).unwrap();
        assert_eq!(arr.oid, 1007);
        assert_eq!(arr.element(), Some(&TypeInfo::new(23, TypeKind::Int4)));
        assert_eq!(
            builtin_type(3807).unwrap().element().unwrap().kind,
            TypeKind::Jsonb
        );
        assert_eq!(
            builtin_type(1041).unwrap().element().unwrap().oid,
            oid::INET
        );
        assert_eq!(builtin_type(oid::OID).unwrap().kind, TypeKind::Other);
        assert_eq!(
            builtin_type(1020)
                .unwrap()
                .element()
                .unwrap()
                .array_delimiter(),
            b';'
        );
        assert_eq!(builtin_type(99999), None);
        let vectors = builtin_type(1006).unwrap();
        assert!(vectors.element().unwrap().is_vector());
        assert_eq!(
            vectors.element().unwrap().element().unwrap().kind,
            TypeKind::Int2
        );
    }

    #[test]
    fn oids_are_unique() {
        let mut all: Vec<u32> = BUILTINS.iter().flat_map(|t| [t.oid, t.array_oid]).collect();
        let n = all.len();
        all.sort_unstable();
        all.dedup();
        assert_eq!(all.len(), n);
    }

    #[test]
    fn constructors() {
        let e = TypeInfo::enumeration(50000);
        assert_eq!(e.kind, TypeKind::Enum);
        let d = TypeInfo::domain(&builtin_type(oid::NUMERIC).unwrap());
        assert_eq!(d, TypeInfo::new(oid::NUMERIC, TypeKind::Numeric));
        let a = TypeInfo::array(50001, e.clone());
        assert_eq!(a.element(), Some(&e));
    }
}
